//! The call being served.

use crate::bindings::conclave::plugin::call as wit;
use crate::errors::Result;

/// Send one message to the caller of a streaming method. Fails with `cancelled`
/// ([`Error::is_cancelled`](crate::Error::is_cancelled)) once the caller has gone: stop then.
pub fn emit(message: &[u8]) -> Result<()> {
    Ok(wit::emit(message)?)
}
