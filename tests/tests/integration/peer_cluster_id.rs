//! The peer port serves only members of the same cluster: every peer call but the membership
//! question must carry this cluster's id, so a member of another cluster (or anything else that
//! reaches the port) can never learn a lease's TTL, change the membership or make this member
//! campaign; nor append to its raft log, propose writes, read the read index or renew leases over
//! the direct connections that share the peer port.

use conclave_proto::conclave::raft::peer_client::PeerClient;
use conclave_proto::conclave::raft::{CampaignRequest, MemberChangeRequest, MembershipRequest, PeerMessage};
use conclave_proto::etcdserverpb::{LeaseTimeToLiveRequest, MemberRemoveRequest};
use conclave_proto::conclave::raft::member_change_request::Change;
use conclave_tests::{Kind, Node};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::{Code, Status};

/// How long a member may take to print what it logged.
const LOGGED: std::time::Duration = std::time::Duration::from_secs(10);

/// What a member says to a call from another cluster.
fn assert_refused<T: std::fmt::Debug>(what: &str, outcome: Result<tonic::Response<T>, Status>) {
    let status = outcome.expect_err(&format!("{what} from another cluster must be refused"));
    assert_eq!((status.code(), status.message()), (Code::FailedPrecondition, "etcdserver: cluster ID mismatch"), "{what}");
}

/// `message` as another cluster's member (cluster id `other`, or none at all) sends it.
fn from_other_cluster<T>(message: T, other: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(id) = other {
        request.metadata_mut().insert("conclave-cluster-id", id.parse().unwrap());
    }
    request
}

#[tokio::test]
async fn peer_calls_from_another_cluster_are_refused() {
    let node = Node::start(Kind::Conclave, &[]).unwrap();
    let mut peer = PeerClient::connect(node.peer_url()).await.unwrap();
    let mut client = etcd_client::Client::connect([node.endpoint()], None).await.unwrap();
    let lease = client.lease_grant(60, None).await.unwrap().id();

    for other in [Some("deadbeef"), None] {
        let ttl = LeaseTimeToLiveRequest { id: lease, keys: false };
        assert_refused("LeaseTimeToLive", peer.lease_time_to_live(from_other_cluster(ttl, other)).await);
        let remove = MemberChangeRequest { change: Some(Change::Remove(MemberRemoveRequest { id: 1 })) };
        assert_refused("ChangeMembership", peer.change_membership(from_other_cluster(remove, other)).await);
        let vote = PeerMessage { body: Vec::new() };
        assert_refused("Vote", peer.vote(from_other_cluster(vote, other)).await);
        assert_refused("Campaign", peer.campaign(from_other_cluster(CampaignRequest { term: 1 }, other)).await);
    }

    // The member still answers what any member may ask.
    let known = peer.membership(from_other_cluster(MembershipRequest {}, None)).await.unwrap().into_inner();
    assert_eq!(known.members.len(), 1);
    assert!(node.logged("cluster ID mismatch", LOGGED).await, "the refusals are logged:\n{}", node.log());
}

#[tokio::test]
async fn direct_connections_from_another_cluster_are_refused() {
    let node = Node::start(Kind::Conclave, &[]).unwrap();
    let address = node.peer_url().trim_start_matches("http://").to_string();
    for magic in [b"conclave-append1", b"conclave-propose", b"conclave-readidx", b"conclave-keepalv"] {
        let mut tcp = tokio::net::TcpStream::connect(&address).await.unwrap();
        // A direct connection's opening: the magic of its kind, then the sender's cluster id.
        let mut hello = magic.to_vec();
        hello.extend_from_slice(&0xdead_beef_u64.to_be_bytes());
        tcp.write_all(&hello).await.unwrap();
        let mut answer = Vec::new();
        tcp.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, [0], "refused, then closed");
    }
    assert!(node.logged("cluster ID mismatch", LOGGED).await, "the refusal is logged:\n{}", node.log());
    let mut client = etcd_client::Client::connect([node.endpoint()], None).await.unwrap();
    client.put("after", "refusal", None).await.expect("the member still serves");
}
