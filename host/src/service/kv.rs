//! KV: reads served locally (after a ReadIndex check unless serializable), writes proposed
//! through raft.

use conclave_proto::conclave::raft::raft_request::Request as Req;
use conclave_proto::conclave::raft::raft_response::Response as Resp;
use conclave_proto::etcdserverpb::request_op::Request as Op;
use conclave_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};

use super::{validate, Caller, Service};
use crate::error::EtcdError;
use crate::mvcc;

/// A txn that only reads is served like a Range; it is serializable only if all its ranges are.
fn txn_is_serializable(txn: &TxnRequest) -> bool {
    txn.success.iter().chain(&txn.failure).all(|op| match &op.request {
        Some(Op::RequestRange(r)) => r.serializable,
        Some(Op::RequestTxn(inner)) => txn_is_serializable(inner),
        _ => true,
    })
}

impl Service {
    pub async fn range(&self, caller: &Caller, req: RangeRequest) -> Result<RangeResponse, EtcdError> {
        crate::metrics::get().ranges.inc();
        if !req.serializable {
            self.refuse_if_learner()?;
        }
        validate::range(&req)?;
        caller.check_read(&req.key, &req.range_end)?;
        if !req.serializable {
            self.node.linearize().await?;
        }
        let mut resp = self.node.store.read_async(move |view| mvcc::range(&*view, &req)).await?;
        self.node.fill(&mut resp.header);
        Ok(resp)
    }

    pub async fn put(&self, caller: &Caller, req: PutRequest) -> Result<PutResponse, EtcdError> {
        self.refuse_if_learner()?;
        validate::put(&req)?;
        caller.check_write(&req.key, &[])?;
        if req.prev_kv {
            caller.check_read(&req.key, &[])?;
        }
        self.check_quota().await?;
        let mut resp = self.write(Req::Put(req), |r| if let Resp::Put(r) = r { Some(r) } else { None }).await?;
        self.node.fill(&mut resp.header);
        Ok(resp)
    }

    pub async fn delete_range(&self, caller: &Caller, req: DeleteRangeRequest) -> Result<DeleteRangeResponse, EtcdError> {
        self.refuse_if_learner()?;
        validate::delete_range(&req)?;
        caller.check_write(&req.key, &req.range_end)?;
        if req.prev_kv {
            caller.check_read(&req.key, &req.range_end)?;
        }
        let pick = |r| if let Resp::DeleteRange(r) = r { Some(r) } else { None };
        let mut resp = self.write(Req::DeleteRange(req), pick).await?;
        self.node.fill(&mut resp.header);
        Ok(resp)
    }

    pub async fn txn(&self, caller: &Caller, req: TxnRequest) -> Result<TxnResponse, EtcdError> {
        self.refuse_if_learner()?;
        validate::txn(&req, self.node.config.max_txn_ops)?;
        caller.check_txn(&req)?;
        let mut resp = if !mvcc::is_read_only(&req) {
            self.check_quota().await?;
            self.write(Req::Txn(req), |r| if let Resp::Txn(r) = r { Some(r) } else { None }).await?
        } else {
            if !txn_is_serializable(&req) {
                self.node.linearize().await?;
            }
            self.node.store.read_async(move |view| mvcc::txn(view, &req)).await?
        };
        self.node.fill(&mut resp.header);
        Ok(resp)
    }

    pub async fn compact(&self, caller: &Caller, req: CompactionRequest) -> Result<CompactionResponse, EtcdError> {
        self.refuse_if_learner()?;
        caller.check_admin()?;
        // Compaction is applied in full before the response, so `physical` needs no extra wait.
        let pick = |r| if let Resp::Compaction(r) = r { Some(r) } else { None };
        let mut resp = self.write(Req::Compaction(req), pick).await?;
        self.node.fill(&mut resp.header);
        Ok(resp)
    }
}
