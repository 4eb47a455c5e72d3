//! `conclave:plugin/kv`: etcd's Range, Put, DeleteRange and Txn.

use super::convert;
use crate::plugin::bindings::conclave::plugin::kv::{
    DeleteRangeRequest, DeleteRangeResponse, Host, PutRequest, PutResponse, RangeRequest, RangeResponse, TxnRequest,
    TxnResponse,
};
use crate::plugin::bindings::conclave::plugin::types::Error;
use crate::plugin::state::CallState;

impl Host for CallState {
    async fn range(&mut self, request: RangeRequest) -> Result<RangeResponse, Error> {
        let call = self.context()?;
        let request = convert::range_request(request);
        let what = || format!("read of {}", super::span_text(&request.key, &request.range_end));
        match call.service.range(&call.caller, request.clone()).await {
            Ok(response) => Ok(convert::range_response(response)),
            Err(e) => Err(self.refused(e, what)),
        }
    }

    async fn put(&mut self, request: PutRequest) -> Result<PutResponse, Error> {
        let call = self.context()?;
        let request = convert::put_request(request);
        let key = request.key.clone();
        match call.service.put(&call.caller, request).await {
            Ok(response) => Ok(convert::put_response(response)),
            Err(e) => Err(self.refused(e, || format!("write of {}", super::span_text(&key, b"")))),
        }
    }

    async fn delete_range(&mut self, request: DeleteRangeRequest) -> Result<DeleteRangeResponse, Error> {
        let call = self.context()?;
        let request = convert::delete_request(request);
        let what = format!("delete of {}", super::span_text(&request.key, &request.range_end));
        match call.service.delete_range(&call.caller, request).await {
            Ok(response) => Ok(convert::delete_response(response)),
            Err(e) => Err(self.refused(e, || what)),
        }
    }

    async fn txn(&mut self, request: TxnRequest) -> Result<TxnResponse, Error> {
        let call = self.context()?;
        let request = match convert::txn_request(request) {
            Ok(request) => request,
            Err(e) => return Err(convert::to_guest_error(e)),
        };
        match call.service.txn(&call.caller, request).await {
            Ok(response) => Ok(convert::txn_response(response)),
            Err(e) => Err(self.refused(e, || "a txn compare or op on a key".to_string())),
        }
    }
}
