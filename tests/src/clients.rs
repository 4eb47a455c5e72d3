//! Running one client-driven check against real etcd and against the server under test.

use std::fmt::Debug;
use std::future::Future;

use etcd_client::Client;

use crate::{Kind, Node};

/// Runs `check` against etcd, then against the subject, each a fresh node with `server_args`.
/// Assertions inside `check` are thereby proven to be etcd's behaviour before they judge the
/// subject.
pub async fn on_etcd_then_subject<F, Fut>(server_args: &[&str], check: F)
where
    F: Fn(Client) -> Fut,
    Fut: Future<Output = ()>,
{
    same_on_etcd_and_subject(server_args, check).await;
}

/// Runs `check` against a fresh etcd, then a fresh subject (each with `server_args`), and
/// asserts that both produced the same transcript. Returns it.
pub async fn same_on_etcd_and_subject<F, Fut, T>(server_args: &[&str], check: F) -> T
where
    F: Fn(Client) -> Fut,
    Fut: Future<Output = T>,
    T: PartialEq + Debug,
{
    let check = &check;
    let on_node = |node: Node| async move {
        println!("--- at {}", node.endpoint());
        let client = Client::connect([node.endpoint()], None).await.expect("connect");
        // `node` lives (and its process runs) until the check is done.
        check(client).await
    };
    same_on_both(|kind| Node::start(kind, server_args), on_node).await
}

/// Runs `check` on what `start` sets up for etcd, then on what it sets up for the subject, and
/// asserts that both produced the same transcript. Returns it.
pub async fn same_on_both<S, F, Fut, T>(start: impl Fn(Kind) -> anyhow::Result<S>, check: F) -> T
where
    F: Fn(S) -> Fut,
    Fut: Future<Output = T>,
    T: PartialEq + Debug,
{
    let mut transcripts = Vec::new();
    for kind in [Kind::Etcd, Kind::subject()] {
        let setup = start(kind).unwrap_or_else(|e| panic!("{e:#}"));
        // Printed before the checks, so a failing assertion's output names the server.
        println!("--- against {kind:?}");
        transcripts.push(check(setup).await);
    }
    let subject = transcripts.pop().unwrap();
    let etcd = transcripts.pop().unwrap();
    assert_eq!(
        etcd,
        subject,
        "left: etcd, right: {:?} — transcripts differ",
        Kind::subject()
    );
    subject
}
