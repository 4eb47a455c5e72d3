//! TLS on the client and peer ports, with certificates made in the test: accepted with a valid
//! client certificate (curl, etcdctl, the etcd-client crate, conclavectl); refused without one,
//! with another CA's, with an expired one, and in plaintext, each logged once; etcdctl over TLS
//! as with etcd 3.4; a 3-member cluster talking TLS to itself.

use std::time::Duration;

use conclave_tests::certs::Pki;
use conclave_tests::curl::{Answer, post};
use conclave_tests::{Cluster, Kind, Node, Normalizer, Schemes, conclavectl, etcdctl};
use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

const TLS_CLIENT: Schemes = Schemes { client: "https", peer: "http" };
const TLS_BOTH: Schemes = Schemes { client: "https", peer: "https" };

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

fn put(node: &Node, pki: &Pki, client: Option<&str>, extra: &[&str]) -> Answer {
    let mut args = client.map(|c| pki.curl_args(c)).unwrap_or_else(|| vec!["--cacert".into(), pki.path("ca.pem")]);
    args.extend(extra.iter().map(|s| s.to_string()));
    post(&node.endpoint(), "/v3/kv/put", r#"{"key":"Zm9v","value":"YmFy"}"#, &strs(&args))
}

async fn tls_client(node: &Node, pki: &Pki) -> Client {
    let read = |name: &str| std::fs::read(pki.path(name)).unwrap();
    let tls = TlsOptions::new()
        .ca_certificate(Certificate::from_pem(read("ca.pem")))
        .identity(Identity::from_pem(read("client.pem"), read("client.key")));
    Client::connect([node.endpoint()], Some(ConnectOptions::new().with_tls(tls))).await.expect("connecting over TLS")
}

#[tokio::test]
async fn client_certificates_are_required_and_checked() {
    let pki = Pki::new();
    let node = Node::start_with(Kind::subject(), &strs(&pki.client_port_args()), TLS_CLIENT).unwrap();

    let ok = put(&node, &pki, Some("client"), &[]);
    assert_eq!(ok.status, 200, "{}", ok.body);
    let mut client = tls_client(&node, &pki).await;
    let got = client.get("foo", None).await.unwrap();
    assert_eq!(got.kvs()[0].value(), b"bar");

    for attempt in 0..3 {
        let refused = put(&node, &pki, None, &[]);
        // curl fails (its words depend on when the server's alert arrives).
        assert_eq!(refused.status, 0, "attempt {attempt} without a certificate: {refused:?}");
    }
    let other_ca = put(&node, &pki, Some("other-client"), &[]);
    assert_eq!(other_ca.status, 0, "another CA's certificate: {other_ca:?}");
    let expired = put(&node, &pki, Some("expired-client"), &[]);
    assert_eq!(expired.status, 0, "an expired certificate: {expired:?}");
    let plain = post(&node.endpoint().replace("https", "http"), "/v3/kv/put", "{}", &[]);
    assert!(plain.body.contains("Client sent an HTTP request to an HTTPS server."), "{plain:?}");

    let log = node.log();
    assert_eq!(log.matches("rejected a client connection: TLS handshake failed: peer sent no certificates").count(), 1, "{log}");
    assert!(log.contains("rejected a client connection: TLS handshake failed: invalid peer certificate: UnknownIssuer"), "{log}");
    assert!(log.contains("rejected a client connection: TLS handshake failed: the certificate has expired"), "{log}");
    assert!(log.contains("rejected a client connection: the client is not using TLS on this TLS port"), "{log}");

    // conclavectl with etcdctl's flags.
    let ctl = |args: &[&str]| conclavectl::run(&node.endpoint(), args);
    let tls = pki.curl_args("client");
    let with_cert = [&strs(&tls)[..], &["plugin", "list"]].concat();
    assert!(conclavectl::ok(ctl(&with_cert)).contains("lock"));
    let without = conclavectl::failed(ctl(&["--cacert", &pki.path("ca.pem"), "plugin", "list"]));
    assert!(!without.is_empty());
    let (cert, key) = (pki.path("client.pem"), pki.path("client.key"));
    let wrong_ca = conclavectl::failed(ctl(&["--cacert", &pki.path("other-ca.pem"), "--cert", &cert, "--key", &key, "plugin", "list"]));
    assert!(wrong_ca.contains("context deadline exceeded (TLS: invalid peer certificate: UnknownIssuer)"), "{wrong_ca}");
}

#[tokio::test]
async fn plaintext_urls_refuse_to_start_without_certificates_and_auto_tls_serves() {
    let refused = Node::start_with(Kind::subject(), &[], TLS_CLIENT).err().expect("https without a certificate");
    assert!(format!("{refused:#}").contains("must be provided for client url https://"), "{refused:#}");

    let node = Node::start_with(Kind::subject(), &["--auto-tls"], TLS_CLIENT).unwrap();
    let answer = post(&node.endpoint(), "/v3/kv/put", r#"{"key":"Zm9v","value":"YmFy"}"#, &["-k"]);
    assert_eq!(answer.status, 200, "{answer:?}");
    let verified = post(&node.endpoint(), "/v3/kv/put", "{}", &[]);
    assert_eq!(verified.status, 0, "a self-signed certificate is not trusted without -k: {verified:?}");
}

#[tokio::test]
async fn etcdctl_over_tls_matches_etcd() {
    let pki = Pki::new();
    let mut transcripts = Vec::new();
    for kind in [Kind::Etcd, Kind::subject()] {
        let node = Node::start_with(kind, &strs(&pki.client_port_args()), TLS_CLIENT).unwrap();
        let tls = pki.curl_args("client");
        let mut normalizer = Normalizer::new();
        let mut transcript = Vec::new();
        for command in [&["put", "foo", "bar"][..], &["get", "foo", "-w", "json"], &["del", "foo"], &["member", "list"]] {
            let args = [&strs(&tls)[..], command].concat();
            let out = etcdctl(&node.endpoint(), &args, None).unwrap();
            transcript.push((command.join(" "), out.code, normalizer.output(&out.stdout)));
        }
        let no_cert = etcdctl(&node.endpoint(), &["--cacert", &pki.path("ca.pem"), "--command-timeout", "2s", "get", "foo"], None).unwrap();
        transcript.push(("get without a certificate".into(), no_cert.code, String::new()));
        transcripts.push(transcript);
    }
    assert_eq!(transcripts[0], transcripts[1], "left: etcd, right: {:?}", Kind::subject());
}

#[tokio::test]
async fn a_cluster_talks_tls_between_members() {
    let pki = Pki::new();
    let args = [pki.client_port_args(), pki.peer_port_args()].concat();
    let cluster = Cluster::start_with(Kind::subject(), 3, &strs(&args), TLS_BOTH).unwrap();
    let mut first = tls_client(&cluster.members[0], &pki).await;
    first.put("across", "tls", None).await.unwrap();
    // A linearizable read on another member goes through the leader over the TLS peer port.
    let mut last = tls_client(&cluster.members[2], &pki).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let got = last.get("across", None).await.unwrap();
        if got.kvs().first().map(|kv| kv.value()) == Some(&b"tls"[..]) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "member 2 never saw the write");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let members = first.member_list().await.unwrap();
    assert_eq!(members.members().len(), 3);
    assert!(members.members().iter().all(|m| m.peer_urls()[0].starts_with("https://")));
}
