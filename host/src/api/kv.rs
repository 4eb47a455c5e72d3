//! The etcd KV service: reads served locally (after a ReadIndex check unless serializable), writes
//! proposed through raft.

use std::sync::Arc;

use conclave_proto::conclave::raft::raft_request::Request as Req;
use conclave_proto::conclave::raft::raft_response::Response as Resp;
use conclave_proto::etcdserverpb::kv_server::Kv;
use conclave_proto::etcdserverpb::request_op::Request as Op;
use conclave_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use tonic::{Request, Response, Status};

use super::{unexpected, validate};
use crate::mvcc;
use crate::node::Node;

pub struct KvService {
    node: Arc<Node>,
}

impl KvService {
    pub fn new(node: Arc<Node>) -> Self {
        KvService { node }
    }
}

/// A txn that only reads is served like a Range; it is serializable only if all its ranges are.
fn txn_is_serializable(txn: &TxnRequest) -> bool {
    txn.success.iter().chain(&txn.failure).all(|op| match &op.request {
        Some(Op::RequestRange(r)) => r.serializable,
        Some(Op::RequestTxn(inner)) => txn_is_serializable(inner),
        _ => true,
    })
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(&self, request: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        let req = request.into_inner();
        if !req.serializable {
            self.node.refuse_if_learner()?;
        }
        validate::range(&req)?;
        if !req.serializable {
            self.node.linearize().await?;
        }
        let mut resp = mvcc::range(&self.node.store.read(), &req)?;
        self.node.fill(&mut resp.header);
        Ok(Response::new(resp))
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        self.node.refuse_if_learner()?;
        let req = request.into_inner();
        validate::put(&req)?;
        self.node.check_quota().await?;
        match self.node.propose(Req::Put(req)).await? {
            Resp::Put(mut resp) => {
                self.node.fill(&mut resp.header);
                Ok(Response::new(resp))
            }
            _ => Err(unexpected("put")),
        }
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        self.node.refuse_if_learner()?;
        let req = request.into_inner();
        validate::delete_range(&req)?;
        match self.node.propose(Req::DeleteRange(req)).await? {
            Resp::DeleteRange(mut resp) => {
                self.node.fill(&mut resp.header);
                Ok(Response::new(resp))
            }
            _ => Err(unexpected("delete")),
        }
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        self.node.refuse_if_learner()?;
        let req = request.into_inner();
        validate::txn(&req, self.node.config.max_txn_ops)?;
        let mut resp = if !mvcc::is_read_only(&req) {
            self.node.check_quota().await?;
            match self.node.propose(Req::Txn(req)).await? {
                Resp::Txn(resp) => resp,
                _ => return Err(unexpected("txn")),
            }
        } else {
            if !txn_is_serializable(&req) {
                self.node.linearize().await?;
            }
            mvcc::txn(&mut self.node.store.read(), &req)?
        };
        self.node.fill(&mut resp.header);
        Ok(Response::new(resp))
    }

    async fn compact(&self, request: Request<CompactionRequest>) -> Result<Response<CompactionResponse>, Status> {
        self.node.refuse_if_learner()?;
        // Compaction is applied in full before the response, so `physical` needs no extra wait.
        match self.node.propose(Req::Compaction(request.into_inner())).await? {
            Resp::Compaction(mut resp) => {
                self.node.fill(&mut resp.header);
                Ok(Response::new(resp))
            }
            _ => Err(unexpected("compaction")),
        }
    }
}
