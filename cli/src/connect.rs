//! Dialing the cluster: the first of `--endpoints` to answer within `--dial-timeout`, over TLS
//! when the endpoints are `https://` or a certificate is given, as etcdctl decides.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use conclave_host::transport;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tonic::transport::Channel;

use crate::rpc::DEADLINE_EXCEEDED;

#[derive(Clone)]
pub struct Dial {
    pub endpoints: Vec<String>,
    pub timeout: Duration,
    /// How to dial over TLS; `None` dials in the clear.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

pub async fn connect(dial: &Dial) -> Result<Channel> {
    let scheme = if dial.tls.is_some() { "https" } else { "http" };
    let urls = urls(&dial.endpoints)?.into_iter().map(|url| url.replacen("http", scheme, 1)).collect::<Vec<_>>();
    let endpoints = urls
        .iter()
        .map(|url| Ok((transport::dial(url, dial.tls.as_ref()).with_context(|| format!("invalid endpoint {url}"))?.connect_timeout(dial.timeout), url)))
        .collect::<Result<Vec<_>>>()?;
    // All at once, so one blackholed endpoint does not use up the others' time.
    let mut attempts: FuturesUnordered<_> =
        endpoints.into_iter().map(|(endpoint, url)| transport::connect(endpoint, url, dial.tls.clone())).collect();
    let mut refused_tls = None;
    let first = async {
        while let Some(attempt) = attempts.next().await {
            match attempt {
                Ok(channel) => return Some(channel),
                Err(e) => refused_tls = tls_failure(&e).or(refused_tls.take()),
            }
        }
        None
    };
    match tokio::time::timeout(dial.timeout, first).await {
        Ok(Some(channel)) => Ok(channel),
        // etcdctl's words whether endpoints refused or never answered; with why TLS failed, if it did.
        _ => match refused_tls {
            Some(why) => bail!("{DEADLINE_EXCEEDED} (TLS: {why})"),
            None => bail!(DEADLINE_EXCEEDED),
        },
    }
}

/// Why a connection attempt's TLS handshake failed, if that is what failed.
fn tls_failure(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(io) = error.downcast_ref::<std::io::Error>()
            && io.get_ref().is_some_and(|inner| inner.is::<rustls::Error>())
        {
            return Some(transport::tls::reason(io));
        }
        cause = error.source();
    }
    None
}

/// `--endpoints` entries as `http://host:port` URLs (made `https://` when dialing TLS); empty
/// entries (a trailing comma) are skipped.
pub fn urls(endpoints: &[String]) -> Result<Vec<String>> {
    let urls: Vec<String> = endpoints
        .iter()
        .map(|e| e.trim())
        .filter(|e| !e.is_empty())
        .map(normalise)
        .collect::<Result<_>>()?;
    if urls.is_empty() {
        bail!("no endpoints given");
    }
    Ok(urls)
}

/// Whether any endpoint asks for TLS by its scheme.
pub fn any_https(endpoints: &[String]) -> bool {
    endpoints.iter().any(|e| e.trim().starts_with("https://"))
}

/// `host:port` or `http(s)://host:port[/]` to `http://host:port`.
fn normalise(endpoint: &str) -> Result<String> {
    let address = endpoint.strip_prefix("https://").or_else(|| endpoint.strip_prefix("http://")).unwrap_or(endpoint);
    let address = address.trim_end_matches('/');
    if address.contains("://") {
        bail!("endpoint {endpoint}: unsupported scheme");
    }
    let port_ok = address.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !port_ok {
        bail!("endpoint {endpoint}: expected host:port");
    }
    Ok(format!("http://{address}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn endpoints_with_or_without_http() {
        let got = urls(&strings(&["127.0.0.1:2379", "http://localhost:22379/", " [::1]:2379 ", "https://a:1"])).unwrap();
        assert_eq!(got, ["http://127.0.0.1:2379", "http://localhost:22379", "http://[::1]:2379", "http://a:1"]);
        assert!(any_https(&strings(&["a:1", "https://a:1"])) && !any_https(&strings(&["a:1"])));
    }

    #[test]
    fn empty_entries_are_skipped_but_none_is_an_error() {
        assert_eq!(urls(&strings(&["a:1", ""])).unwrap(), ["http://a:1"]);
        assert_eq!(urls(&strings(&[""])).unwrap_err().to_string(), "no endpoints given");
    }

    #[test]
    fn bad_endpoints_are_refused() {
        for bad in ["localhost", "host:port", ":2379", "unix://a:1", "host:99999"] {
            assert!(urls(&strings(&[bad])).is_err(), "{bad} accepted");
        }
    }

    #[tokio::test]
    async fn nothing_listening_is_a_deadline() {
        let dial = Dial { endpoints: strings(&["127.0.0.1:1"]), timeout: Duration::from_millis(200), tls: None };
        assert_eq!(connect(&dial).await.unwrap_err().to_string(), DEADLINE_EXCEEDED);
    }
}
