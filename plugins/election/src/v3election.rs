//! v3electionpb's Campaign, Proclaim, Leader, Observe and Resign in protobuf, as etcd's election
//! service serves them.

use concurrency::Deadline;
use concurrency::wire::{ResponseHeader, WireKeyValue, decode};
use conclave_guest::{Error, Result, emit};
use prost::Message;

use crate::election::{self, Leader};

#[derive(Clone, PartialEq, Message)]
struct CampaignRequest {
    #[prost(bytes = "vec", tag = "1")]
    name: Vec<u8>,
    #[prost(int64, tag = "2")]
    lease: i64,
    #[prost(bytes = "vec", tag = "3")]
    value: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
struct CampaignResponse {
    #[prost(message, optional, tag = "1")]
    header: Option<ResponseHeader>,
    #[prost(message, optional, tag = "2")]
    leader: Option<LeaderKey>,
}

#[derive(Clone, PartialEq, Message)]
struct LeaderKey {
    #[prost(bytes = "vec", tag = "1")]
    name: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    key: Vec<u8>,
    #[prost(int64, tag = "3")]
    rev: i64,
    #[prost(int64, tag = "4")]
    lease: i64,
}

#[derive(Clone, PartialEq, Message)]
struct LeaderRequest {
    #[prost(bytes = "vec", tag = "1")]
    name: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
struct LeaderResponse {
    #[prost(message, optional, tag = "1")]
    header: Option<ResponseHeader>,
    #[prost(message, optional, tag = "2")]
    kv: Option<WireKeyValue>,
}

#[derive(Clone, PartialEq, Message)]
struct ResignRequest {
    #[prost(message, optional, tag = "1")]
    leader: Option<LeaderKey>,
}

#[derive(Clone, PartialEq, Message)]
struct ProclaimRequest {
    #[prost(message, optional, tag = "1")]
    leader: Option<LeaderKey>,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

/// ResignResponse and ProclaimResponse: a header alone.
#[derive(Clone, PartialEq, Message)]
struct HeaderOnly {
    #[prost(message, optional, tag = "1")]
    header: Option<ResponseHeader>,
}

impl From<LeaderKey> for Leader {
    fn from(l: LeaderKey) -> Self {
        Leader { name: l.name, key: l.key, rev: l.rev, lease: l.lease }
    }
}

impl From<Leader> for LeaderKey {
    fn from(l: Leader) -> Self {
        LeaderKey { name: l.name, key: l.key, rev: l.rev, lease: l.lease }
    }
}

/// etcd's answer to a Proclaim or Resign without its leader.
fn leader_of(leader: Option<LeaderKey>) -> Result<Leader> {
    leader.map(Leader::from).ok_or_else(|| Error::invalid_argument("\"leader\" field must be provided"))
}

/// Wait as long as the call may: etcd's Campaign waits until its caller gives up.
pub fn campaign(payload: &[u8]) -> Result<Vec<u8>> {
    let request: CampaignRequest = decode(payload)?;
    let (leader, header) = election::campaign(&request.name, request.lease, &request.value, Deadline::NEVER)?;
    Ok(CampaignResponse { header: Some(header.into()), leader: Some(leader.into()) }.encode_to_vec())
}

pub fn proclaim(payload: &[u8]) -> Result<Vec<u8>> {
    let request: ProclaimRequest = decode(payload)?;
    let header = election::proclaim(&leader_of(request.leader)?, &request.value)?;
    Ok(HeaderOnly { header: Some(header.into()) }.encode_to_vec())
}

pub fn leader(payload: &[u8]) -> Result<Vec<u8>> {
    let request: LeaderRequest = decode(payload)?;
    let (kv, header) = election::leader(&request.name)?;
    Ok(LeaderResponse { header: Some(header.into()), kv: Some(kv.into()) }.encode_to_vec())
}

/// Streaming: one LeaderResponse per leader and per proclaimed value.
pub fn observe(payload: &[u8]) -> Result<Vec<u8>> {
    let request: LeaderRequest = decode(payload)?;
    election::observe(&request.name, |header, kv| {
        emit(&LeaderResponse { header: Some(header.into()), kv: Some(kv.into()) }.encode_to_vec())
    })?;
    Ok(Vec::new())
}

pub fn resign(payload: &[u8]) -> Result<Vec<u8>> {
    let request: ResignRequest = decode(payload)?;
    let header = election::resign(&leader_of(request.leader)?)?;
    Ok(HeaderOnly { header: Some(header.into()) }.encode_to_vec())
}
