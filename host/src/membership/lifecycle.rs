//! A member's part in the membership: once running it publishes its name and client URLs through
//! the leader (until then other members list it as unstarted), and once removed from the cluster
//! it stops, as etcd does, rather than call elections no one will answer.

use std::sync::{Arc, Weak};
use std::time::Duration;

use conclave_proto::conclave::raft::member_change_request::Change;
use conclave_proto::conclave::raft::{MemberAttributes, MemberChangeRequest};
use openraft::StoredMembership;

use crate::node::Node;
use crate::raft::{MemberNode, NodeId};

/// Pause between attempts to publish (e.g. while a joining member has no leader yet).
const PUBLISH_RETRY: Duration = Duration::from_millis(200);
/// Quiet election timeouts in a row without a leader before the other members are asked.
const LEADERLESS_CHECKS: u32 = 3;
/// How long a removed member keeps running before it stops (etcd waits a second too): the answer
/// to the request that removed it may still be on its way, e.g. a removed leader's answer to the
/// member that forwarded the removal, and the others may still need the commit it leads.
const REMOVED_LINGER: Duration = Duration::from_secs(1);

/// Publish this member's attributes, retrying until its view of the membership has them.
pub async fn publish(node: Weak<Node>) {
    loop {
        let Some(node) = node.upgrade() else { return };
        let attributes = MemberAttributes {
            id: node.identity.member_id,
            name: node.config.name.clone(),
            client_urls: node.config.advertise_client_urls.clone(),
        };
        if is_published(&node, &attributes) {
            return;
        }
        if let Err(status) = node.change_membership(MemberChangeRequest { change: Some(Change::Publish(attributes)) }).await {
            tracing::debug!(error = %status, "publishing this member's attributes failed; retrying");
        }
        drop(node);
        tokio::time::sleep(PUBLISH_RETRY).await;
    }
}

/// Whether the local view of the membership has this member with `attributes`.
fn is_published(node: &Node, attributes: &MemberAttributes) -> bool {
    let metrics = node.raft.metrics();
    let metrics = metrics.borrow();
    let ours = metrics.membership_config.membership().get_node(&attributes.id).cloned();
    ours.is_some_and(|ours| ours.name == attributes.name && ours.client_urls == attributes.client_urls)
}

/// Watch for this member's removal from the cluster and signal `node.removed` when it happens:
/// either the applied membership no longer lists this member, or, while no leader is heard
/// from, another member's newer membership does not. (A removed leader keeps leading the others
/// until it stops, so this is also what hands leadership over.)
pub async fn watch_removal(node: Weak<Node>) {
    let Some(strong) = node.upgrade() else { return };
    // Raft's server metrics change only with the membership, leader or state; its full metrics
    // are sent again after each message raft handles, several times per write. The applied
    // index is followed only while a removal waits to be applied.
    let mut server = strong.raft.server_metrics();
    let mut data = strong.raft.data_metrics();
    let mut tick = tokio::time::interval(Duration::from_millis(strong.config.election_timeout));
    // A member of the initial cluster is listed from the start; a joining member only once it
    // has caught up with its own addition.
    let mut was_listed = !strong.identity.joined;
    drop(strong);
    let mut leaderless = 0;
    let mut removal_unapplied = false;
    loop {
        let ticked = tokio::select! {
            changed = server.changed() => {
                if changed.is_err() {
                    return;
                }
                false
            }
            changed = data.changed(), if removal_unapplied => {
                if changed.is_err() {
                    return;
                }
                false
            }
            _ = tick.tick() => true,
        };
        let Some(node) = node.upgrade() else { return };
        let me = node.identity.member_id;
        let (config, leader) = {
            let m = server.borrow_and_update();
            (m.membership_config.clone(), m.current_leader)
        };
        let applied = data.borrow_and_update().last_applied;
        let listed = config.membership().get_node(&me).is_some();
        was_listed |= listed;
        let committed = config.log_id().is_some() && config.log_id() <= &applied;
        removal_unapplied = was_listed && !listed && !committed;
        let removed = if was_listed && !listed && committed {
            true
        } else if !ticked {
            false
        } else if leader.is_none() {
            leaderless += 1;
            leaderless >= LEADERLESS_CHECKS && removed_per_peers(&node, &config).await
        } else {
            leaderless = 0;
            false
        };
        if removed {
            tracing::error!("this member has been removed from the cluster; stopping in {REMOVED_LINGER:?}");
            tokio::time::sleep(REMOVED_LINGER).await;
            node.removed.notify_one();
            return;
        }
    }
}

/// Whether another member of `ours` (this member's membership) knows a newer membership without
/// this member.
async fn removed_per_peers(node: &Arc<Node>, ours: &StoredMembership<NodeId, MemberNode>) -> bool {
    let me = node.identity.member_id;
    let our_config_index = ours.log_id().map_or(0, |id| id.index);
    let others = ours.membership().nodes().filter(|(id, _)| **id != me);
    let urls: Vec<String> = others.map(|(_, n)| n.peer_url().to_string()).collect();
    let wait = Duration::from_millis(node.config.election_timeout);
    for url in urls {
        let Ok(theirs) = node.peers.membership(&url, wait).await else { continue };
        if theirs.cluster_id == node.identity.cluster_id
            && theirs.config_index > our_config_index
            && theirs.members.iter().all(|m| m.id != me)
        {
            return true;
        }
    }
    false
}
