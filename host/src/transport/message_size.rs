//! etcd's error for a gRPC request over the size limit.
//!
//! grpc-go answers `ResourceExhausted: grpc: received message larger than max (N vs. M)`; tonic
//! answers `OutOfRange: Error, decoded message length too large: …`. Clients match on the code,
//! so responses carrying tonic's error are rewritten into grpc-go's.

use http::{HeaderValue, Response};
use percent_encoding::percent_decode;

const TONIC_PREFIX: &str = "Error, decoded message length too large: found ";
const OUT_OF_RANGE: &str = "11";
const RESOURCE_EXHAUSTED: &str = "8";

/// The sizes in tonic's message: "… found {len} bytes, the limit is: {limit} bytes".
fn sizes(message: &str) -> Option<(u64, u64)> {
    let rest = message.strip_prefix(TONIC_PREFIX)?;
    let (found, rest) = rest.split_once(" bytes, the limit is: ")?;
    let limit = rest.strip_suffix(" bytes")?;
    Some((found.parse().ok()?, limit.parse().ok()?))
}

/// Rewrite a trailers-only error response from tonic's size check into grpc-go's.
pub fn as_grpc_go<B>(mut response: Response<B>) -> Response<B> {
    let headers = response.headers_mut();
    if headers.get("grpc-status").is_none_or(|code| code != OUT_OF_RANGE) {
        return response;
    }
    // tonic percent-encodes the message (spaces included).
    let message = headers.get("grpc-message").map(|m| percent_decode(m.as_bytes()).decode_utf8_lossy().into_owned());
    let Some((found, limit)) = message.as_deref().and_then(sizes) else {
        return response;
    };
    let message = format!("grpc: received message larger than max ({found} vs. {limit})");
    headers.insert("grpc-status", HeaderValue::from_static(RESOURCE_EXHAUSTED));
    headers.insert("grpc-message", HeaderValue::from_str(&message).expect("ASCII message"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_only_the_size_error() {
        let tonic = Response::builder()
            .header("grpc-status", "11")
            .header("grpc-message", "Error,%20decoded%20message%20length%20too%20large:%20found%20600010%20bytes,%20the%20limit%20is:%20528384%20bytes")
            .body(())
            .unwrap();
        let rewritten = as_grpc_go(tonic);
        assert_eq!(rewritten.headers()["grpc-status"], "8");
        assert_eq!(rewritten.headers()["grpc-message"], "grpc: received message larger than max (600010 vs. 528384)");

        let compacted = Response::builder()
            .header("grpc-status", "11")
            .header("grpc-message", "etcdserver: mvcc: required revision has been compacted")
            .body(())
            .unwrap();
        assert_eq!(as_grpc_go(compacted).headers()["grpc-status"], "11");
    }
}
