//! Certificates made for a test (rcgen): a CA, a server certificate for 127.0.0.1/localhost, a
//! client certificate, and the bad ones a server must refuse (another CA's, an expired one).

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, date_time_ymd,
};
use tempfile::TempDir;

/// The files, in a temporary directory: `ca.pem`; `server.pem`/`server.key`;
/// `client.pem`/`client.key`; `other-client.*` (signed by another CA, `other-ca.pem`);
/// `expired-client.*` (signed by the CA, expired in 2001).
pub struct Pki {
    dir: TempDir,
}

impl Pki {
    pub fn new() -> Pki {
        let pki = Pki { dir: tempfile::Builder::new().prefix("conclave-pki-").tempdir().expect("a temp dir") };
        let ca = authority("conclave test CA");
        let other = authority("another CA");
        pki.write("ca.pem", &ca.pem());
        pki.write("other-ca.pem", &other.pem());
        pki.leaf("server", &ca, Leaf::Server);
        pki.leaf("client", &ca, Leaf::Client { expired: false });
        pki.leaf("other-client", &other, Leaf::Client { expired: false });
        pki.leaf("expired-client", &ca, Leaf::Client { expired: true });
        pki
    }

    /// The path of one of the files, e.g. `pki.path("ca.pem")`.
    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Server flags serving the client port with the server certificate, requiring client
    /// certificates from the CA.
    pub fn client_port_args(&self) -> Vec<String> {
        let mut args = vec!["--cert-file", "server.pem", "--key-file", "server.key", "--trusted-ca-file", "ca.pem"]
            .into_iter()
            .enumerate()
            .map(|(i, a)| if i % 2 == 1 { self.path(a) } else { a.to_string() })
            .collect::<Vec<_>>();
        args.push("--client-cert-auth".to_string());
        args
    }

    /// The same for the peer port (members present the server certificate to each other too).
    pub fn peer_port_args(&self) -> Vec<String> {
        vec![
            "--peer-cert-file".to_string(),
            self.path("server.pem"),
            "--peer-key-file".to_string(),
            self.path("server.key"),
            "--peer-trusted-ca-file".to_string(),
            self.path("ca.pem"),
            "--peer-client-cert-auth".to_string(),
        ]
    }

    /// curl's flags presenting `client` (e.g. "client", "other-client") and trusting the CA.
    pub fn curl_args(&self, client: &str) -> Vec<String> {
        vec![
            "--cacert".to_string(),
            self.path("ca.pem"),
            "--cert".to_string(),
            self.path(&format!("{client}.pem")),
            "--key".to_string(),
            self.path(&format!("{client}.key")),
        ]
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.dir.path().join(name), text).expect("writing a certificate");
    }

    fn leaf(&self, name: &str, issuer: &CertifiedIssuer<'static, KeyPair>, leaf: Leaf) {
        let key = KeyPair::generate().expect("a key");
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).expect("names");
        params.distinguished_name.push(DnType::CommonName, name);
        // A member presents its peer certificate as a server and as a client.
        params.extended_key_usages = match leaf {
            Leaf::Server => vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
            Leaf::Client { .. } => vec![ExtendedKeyUsagePurpose::ClientAuth],
        };
        if let Leaf::Client { expired: true } = leaf {
            params.not_before = date_time_ymd(2000, 1, 1);
            params.not_after = date_time_ymd(2001, 1, 1);
        }
        let cert = params.signed_by(&key, issuer).expect("signing");
        self.write(&format!("{name}.pem"), &cert.pem());
        self.write(&format!("{name}.key"), &key.serialize_pem());
    }
}

impl Default for Pki {
    fn default() -> Self {
        Pki::new()
    }
}

#[derive(Clone, Copy)]
enum Leaf {
    Server,
    Client { expired: bool },
}

fn authority(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("no names");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("a key")).expect("a CA")
}
