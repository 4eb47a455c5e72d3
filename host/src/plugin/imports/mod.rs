//! Conclave's imports, as the `recipe` world names them: each takes the call's [`CallContext`]
//! and goes through the service layer as the plugin's [`crate::service::Caller`], so a plugin
//! gets exactly a client's rules plus its grants. etcd errors reach the guest as typed errors.

mod convert;
mod kv;
mod lease;
mod node;
mod watch;

use super::bindings::conclave::plugin::types::{Error, ErrorCode};
use super::bindings::conclave::plugin::{call, types};
use super::state::{CallContext, CallState};
use crate::error::EtcdError;

pub use convert::{guest_error_code, to_guest_error};

impl types::Host for CallState {}

impl CallState {
    /// The call being served, or the error every import gives while only metadata is read.
    fn context(&mut self) -> Result<&mut CallContext, Error> {
        self.call.as_mut().ok_or_else(|| Error {
            code: ErrorCode::Unavailable,
            message: "imports are not available while the plugin's metadata is read".into(),
        })
    }

    /// Pass an etcd error on to the guest; a refused key is also remembered, so the call fails
    /// with it whatever the guest makes of the error.
    fn refused(&mut self, error: EtcdError, what: impl FnOnce() -> String) -> Error {
        if let (EtcdError::PermissionDenied, Some(call)) = (&error, self.call.as_mut()) {
            let why = format!("{} outside the plugin's grant", what());
            call.denied.get_or_insert_with(|| why.clone());
            return Error { code: ErrorCode::PermissionDenied, message: format!("{error}: {why}") };
        }
        to_guest_error(error)
    }
}

impl call::Host for CallState {
    async fn emit(&mut self, message: Vec<u8>) -> Result<(), Error> {
        let call = self.context()?;
        let Some(sink) = call.emit.clone() else {
            return Err(Error { code: ErrorCode::InvalidArgument, message: "emit is only for streaming methods".into() });
        };
        if message.len() as u64 > call.max_payload_bytes {
            return Err(Error {
                code: ErrorCode::Exhausted,
                message: format!("message of {} bytes is above limits.max_payload_bytes {}", message.len(), call.max_payload_bytes),
            });
        }
        let gone = call.gone();
        tokio::select! {
            sent = sink.send(message) => sent.map_err(|_| caller_gone())?,
            () = gone => return Err(caller_gone()),
        }
        call.emitted = true;
        Ok(())
    }
}

fn caller_gone() -> Error {
    Error { code: ErrorCode::Cancelled, message: "the caller has gone away".into() }
}

/// A key range as errors show it.
fn span_text(key: &[u8], range_end: &[u8]) -> String {
    let key = String::from_utf8_lossy(key);
    match range_end {
        [] => format!("key {key:?}"),
        [0] => format!("keys from {key:?}"),
        end => format!("keys [{key:?}, {:?})", String::from_utf8_lossy(end)),
    }
}
