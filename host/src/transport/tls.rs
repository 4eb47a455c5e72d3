//! TLS with rustls for the client and peer ports, as etcd configures it: a certificate and key
//! from files (or a self-signed one with `--auto-tls`), client certificates required and checked
//! against a trusted CA with `--client-cert-auth`, and the same for members dialing each other.

use std::collections::HashSet;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

/// One side's TLS settings (client port or peer port), as etcd's flags give them.
#[derive(Clone, Debug, Default)]
pub struct TlsFiles {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub trusted_ca_file: Option<PathBuf>,
    pub client_cert_auth: bool,
    pub auto_tls: bool,
}

impl TlsFiles {
    /// Whether these settings ask for TLS on this side (a certificate, or half of one: refused).
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some() || self.key_file.is_some() || self.auto_tls
    }
}

/// The rustls provider every config uses (ring: no C toolchain beyond what the build has).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certificates = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading certificates from {}", path.display()))?;
    if certificates.is_empty() {
        bail!("no certificate in {}", path.display());
    }
    Ok(certificates)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path).with_context(|| format!("reading the private key from {}", path.display()))
}

fn roots(path: &Path) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for certificate in certificates(path)? {
        roots.add(certificate).with_context(|| format!("a CA certificate in {} is not usable", path.display()))?;
    }
    Ok(roots)
}

/// A certificate and key: from the files, or self-signed for `hosts` with auto TLS.
fn identity(files: &TlsFiles, hosts: &[String]) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    match (&files.cert_file, &files.key_file) {
        (Some(cert), Some(key)) => Ok((certificates(cert)?, private_key(key)?)),
        (Some(_), None) | (None, Some(_)) => bail!("a TLS certificate needs both its cert file and its key file"),
        (None, None) => {
            let generated = rcgen::generate_simple_self_signed(hosts.to_vec()).context("generating a self-signed certificate")?;
            let key = PrivateKeyDer::try_from(generated.signing_key.serialize_der()).map_err(anyhow::Error::msg)?;
            Ok((vec![generated.cert.der().clone()], key))
        }
    }
}

/// The server side of a port, `None` if it serves in the clear. `hosts` name the certificate
/// generated for auto TLS.
pub fn server_config(files: &TlsFiles, hosts: &[String]) -> Result<Option<Arc<ServerConfig>>> {
    if !files.enabled() {
        return Ok(None);
    }
    let (chain, key) = identity(files, hosts)?;
    let builder = ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = match (&files.trusted_ca_file, files.client_cert_auth) {
        (Some(ca), true) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider()).build()?;
            builder.with_client_cert_verifier(verifier)
        }
        (None, true) => bail!("client certificate authentication needs a trusted CA file"),
        (_, false) => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).context("the TLS certificate does not match its key")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(Arc::new(config)))
}

/// The client side of a connection: verifying the server with `trusted_ca` (or not at all, for
/// members using auto TLS), presenting `files`' certificate if it has one.
pub fn client_config(trusted_ca: Option<&Path>, identity_files: Option<&TlsFiles>, verify: bool) -> Result<Arc<ClientConfig>> {
    let builder = ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = match (verify, trusted_ca) {
        (false, _) => builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyServer(provider()))),
        (true, Some(ca)) => builder.with_root_certificates(roots(ca)?),
        (true, None) => bail!("verifying a TLS server needs a trusted CA file (system roots are not read)"),
    };
    let mut config = match identity_files.filter(|files| files.cert_file.is_some()) {
        Some(files) => {
            let (chain, key) = identity(files, &[])?;
            builder.with_client_auth_cert(chain, key).context("the TLS client certificate does not match its key")?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// The name a server's certificate must carry for `host` (a DNS name or an IP address).
pub fn server_name(host: &str) -> io::Result<ServerName<'static>> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{host}: {e}")))
}

/// Accepts any server certificate: what etcd does for members with `--peer-auto-tls` and for
/// etcdctl's `--insecure-skip-tls-verify` (the connection is encrypted, not authenticated).
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Why a handshake failed, in words that stay the same on every retry (rustls's own message for
/// an expired certificate names the current time).
pub fn reason(error: &io::Error) -> String {
    use rustls::CertificateError::{Expired, ExpiredContext, NotValidYet, NotValidYetContext};
    match error.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(Expired | ExpiredContext { .. })) => "the certificate has expired".to_string(),
        Some(rustls::Error::InvalidCertificate(NotValidYet | NotValidYetContext { .. })) => "the certificate is not valid yet".to_string(),
        _ => error.to_string(),
    }
}

/// Refused handshakes, logged once per remote address and reason rather than once per retry
/// (a client without a certificate retries every second).
#[derive(Default)]
pub struct Rejections {
    logged: Mutex<HashSet<(IpAddr, String)>>,
}

/// Addresses remembered before the table starts over.
const REMEMBERED: usize = 1024;

impl Rejections {
    pub fn record(&self, port: &str, remote: IpAddr, reason: &str) {
        let mut logged = self.logged.lock().unwrap_or_else(|e| e.into_inner());
        let seen = (remote, reason.to_string());
        if logged.contains(&seen) {
            tracing::debug!(%remote, "rejected a {port} connection again: {reason}");
            return;
        }
        if logged.len() >= REMEMBERED {
            logged.clear();
        }
        logged.insert(seen);
        tracing::warn!(%remote, "rejected a {port} connection: {reason} (further rejections of this address for this reason are logged at debug level)");
    }
}

/// The hosts of `urls`, for the names of an auto-TLS certificate.
fn hosts(urls: &[&String]) -> Vec<String> {
    let mut hosts: Vec<String> = urls
        .iter()
        .filter_map(|url| url::Url::parse(url).ok()?.host_str().map(|h| h.trim_start_matches('[').trim_end_matches(']').to_string()))
        .collect();
    hosts.sort();
    hosts.dedup();
    hosts
}

/// The server side of a member's two ports, built once at start from its flags.
pub struct MemberTls {
    pub client: Option<Arc<ServerConfig>>,
    pub peer: Option<Arc<ServerConfig>>,
}

impl MemberTls {
    pub fn new(config: &crate::config::Config) -> Result<Self> {
        let client_hosts = hosts(&config.listen_client_urls.iter().chain(&config.advertise_client_urls).collect::<Vec<_>>());
        let peer_hosts = hosts(&config.listen_peer_urls.iter().chain(&config.initial_advertise_peer_urls).collect::<Vec<_>>());
        Ok(MemberTls {
            client: server_config(&config.tls.client(), &client_hosts).context("client TLS")?,
            peer: server_config(&config.tls.peer(), &peer_hosts).context("peer TLS")?,
        })
    }
}

/// How a member dials the others' `https://` peer URLs: with its peer certificate, verifying
/// theirs with the peer CA (not at all with `--peer-auto-tls`, as etcd); `None` without peer TLS.
pub fn peer_client(config: &crate::config::Config) -> Result<Option<Arc<ClientConfig>>> {
    let files = config.tls.peer();
    if !files.enabled() {
        return Ok(None);
    }
    if !files.auto_tls && files.trusted_ca_file.is_none() {
        bail!("--peer-cert-file needs --peer-trusted-ca-file to verify the other members (system roots are not read)");
    }
    client_config(files.trusted_ca_file.as_deref(), Some(&files), !files.auto_tls).context("peer TLS").map(Some)
}
