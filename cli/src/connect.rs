//! Dialing the cluster: the first of `--endpoints` to answer within `--dial-timeout`.
//! TLS options will join `Dial` and apply where `endpoint` builds each one.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tonic::transport::{Channel, Endpoint};

use crate::rpc::DEADLINE_EXCEEDED;

pub struct Dial {
    pub endpoints: Vec<String>,
    pub timeout: Duration,
}

pub async fn connect(dial: &Dial) -> Result<Channel> {
    let endpoints = urls(&dial.endpoints)?
        .into_iter()
        .map(|url| endpoint(url, dial.timeout))
        .collect::<Result<Vec<_>>>()?;
    // All at once, so one blackholed endpoint does not use up the others' time.
    let mut attempts: FuturesUnordered<_> = endpoints.iter().map(Endpoint::connect).collect();
    let first = async {
        while let Some(attempt) = attempts.next().await {
            if let Ok(channel) = attempt {
                return Some(channel);
            }
        }
        None
    };
    match tokio::time::timeout(dial.timeout, first).await {
        Ok(Some(channel)) => Ok(channel),
        // etcdctl's words whether endpoints refused or never answered.
        _ => bail!(DEADLINE_EXCEEDED),
    }
}

fn endpoint(url: String, timeout: Duration) -> Result<Endpoint> {
    let what = url.clone();
    Ok(Endpoint::from_shared(url).with_context(|| format!("invalid endpoint {what}"))?.connect_timeout(timeout))
}

/// `--endpoints` entries as URLs; empty entries (a trailing comma) are skipped.
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

/// `host:port` or `http://host:port[/]` to `http://host:port`.
fn normalise(endpoint: &str) -> Result<String> {
    if endpoint.starts_with("https://") {
        bail!("endpoint {endpoint}: TLS is not supported yet");
    }
    let address = endpoint.strip_prefix("http://").unwrap_or(endpoint).trim_end_matches('/');
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
        let got = urls(&strings(&["127.0.0.1:2379", "http://localhost:22379/", " [::1]:2379 "])).unwrap();
        assert_eq!(got, ["http://127.0.0.1:2379", "http://localhost:22379", "http://[::1]:2379"]);
    }

    #[test]
    fn empty_entries_are_skipped_but_none_is_an_error() {
        assert_eq!(urls(&strings(&["a:1", ""])).unwrap(), ["http://a:1"]);
        assert_eq!(urls(&strings(&[""])).unwrap_err().to_string(), "no endpoints given");
    }

    #[test]
    fn bad_endpoints_are_refused() {
        for bad in ["localhost", "host:port", ":2379", "https://a:1", "unix://a:1", "host:99999"] {
            assert!(urls(&strings(&[bad])).is_err(), "{bad} accepted");
        }
    }

    #[tokio::test]
    async fn nothing_listening_is_a_deadline() {
        let dial = Dial { endpoints: strings(&["127.0.0.1:1"]), timeout: Duration::from_millis(200) };
        assert_eq!(connect(&dial).await.unwrap_err().to_string(), DEADLINE_EXCEEDED);
    }
}
