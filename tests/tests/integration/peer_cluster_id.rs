//! The peer port serves only members of the same cluster: every peer call but the membership
//! question must carry this cluster's id, so a member of another cluster (or anything else that
//! reaches the port) can never propose writes, read the read index, renew leases or change the
//! membership or make this member campaign.

use conclave_proto::conclave::raft::peer_client::PeerClient;
use conclave_proto::conclave::raft::raft_request::Request as Req;
use conclave_proto::conclave::raft::{
    CampaignRequest, MemberChangeRequest, MembershipRequest, PeerMessage, RaftBatch, RaftRequest, ReadIndexRequest,
};
use conclave_proto::etcdserverpb::{LeaseKeepAliveRequest, LeaseTimeToLiveRequest, MemberRemoveRequest, PutRequest};
use conclave_proto::conclave::raft::member_change_request::Change;
use conclave_tests::{Kind, Node};
use tonic::{Code, Status};

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
        let put = PutRequest { key: b"intruder".to_vec(), value: b"x".to_vec(), ..Default::default() };
        let batch = RaftBatch { requests: vec![RaftRequest { id: 0, request: Some(Req::Put(put)) }] };
        assert_refused("Propose", peer.propose(from_other_cluster(batch, other)).await);
        assert_refused("ReadIndex", peer.read_index(from_other_cluster(ReadIndexRequest {}, other)).await);
        assert_refused("LeaseKeepAlive", peer.lease_keep_alive(from_other_cluster(LeaseKeepAliveRequest { id: lease }, other)).await);
        let ttl = LeaseTimeToLiveRequest { id: lease, keys: false };
        assert_refused("LeaseTimeToLive", peer.lease_time_to_live(from_other_cluster(ttl, other)).await);
        let remove = MemberChangeRequest { change: Some(Change::Remove(MemberRemoveRequest { id: 1 })) };
        assert_refused("ChangeMembership", peer.change_membership(from_other_cluster(remove, other)).await);
        let vote = PeerMessage { body: Vec::new() };
        assert_refused("Vote", peer.vote(from_other_cluster(vote, other)).await);
        assert_refused("Campaign", peer.campaign(from_other_cluster(CampaignRequest { term: 1 }, other)).await);
    }

    // Nothing was written, and the member still answers what any member may ask.
    assert_eq!(client.get("intruder", None).await.unwrap().kvs().len(), 0);
    let known = peer.membership(from_other_cluster(MembershipRequest {}, None)).await.unwrap().into_inner();
    assert_eq!(known.members.len(), 1);
    assert!(node.log().contains("cluster ID mismatch"), "the refusals are logged:\n{}", node.log());
}
