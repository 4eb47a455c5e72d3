//! JSON payloads (feature `json`): a bad payload is `invalid-argument`.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::errors::{Error, Result};

/// Read a payload as `T`.
pub fn parse<T: DeserializeOwned>(payload: &[u8]) -> Result<T> {
    serde_json::from_slice(payload).map_err(|e| Error::invalid_argument(format!("bad JSON payload: {e}")))
}

/// Write `value` as an answer or an emitted message.
pub fn to_vec<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| Error::internal(format!("cannot write JSON: {e}")))
}

/// [`emit`](crate::emit) `value` as JSON.
pub fn emit<T: Serialize>(value: &T) -> Result<()> {
    crate::emit(&to_vec(value)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_json_is_invalid_argument() {
        let e = parse::<Vec<i64>>(b"{").unwrap_err();
        assert_eq!(e.code, crate::ErrorCode::InvalidArgument);
        assert_eq!(parse::<Vec<i64>>(b"[1,2]").unwrap(), [1, 2]);
        assert_eq!(to_vec(&[1, 2]).unwrap(), b"[1,2]");
    }
}
