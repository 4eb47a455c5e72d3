//! etcd's gateway JSON (grpc-gateway's proto3 mapping with the .proto field names): requests in,
//! responses out, converted to and from the protobuf the gRPC services speak. The serde impls
//! are generated from the .proto files (`pbjson`), so nothing is restated by hand.

use prost::Message;
use serde::Serialize;
use serde::de::{DeserializeOwned, IgnoredAny};

/// JSON request body → protobuf.
pub type DecodeRequest = fn(&[u8]) -> Result<Vec<u8>, serde_json::Error>;
/// Protobuf response → JSON.
pub type EncodeResponse = fn(&[u8]) -> Result<Vec<u8>, String>;

/// A JSON request as the protobuf message `T`; an empty body is the empty message, as etcd's
/// gateway reads it.
pub fn request<T: DeserializeOwned + Message>(json: &[u8]) -> Result<Vec<u8>, serde_json::Error> {
    if json.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    Ok(serde_json::from_slice::<T>(json)?.encode_to_vec())
}

/// A protobuf response of type `T` as JSON.
pub fn response<T: Message + Default + Serialize>(encoded: &[u8]) -> Result<Vec<u8>, String> {
    let message = T::decode(encoded).map_err(|e| format!("undecodable response: {e}"))?;
    serde_json::to_vec(&message).map_err(|e| format!("unencodable response: {e}"))
}

/// Splits a request body that carries a stream of JSON values (a watch or keep-alive stream)
/// into whole values as the bytes arrive.
#[derive(Default)]
pub struct ValueSplitter {
    buffer: Vec<u8>,
}

impl ValueSplitter {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete value, `None` if it has not all arrived yet.
    pub fn next_value(&mut self) -> Option<Result<Vec<u8>, serde_json::Error>> {
        let start = self.buffer.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(self.buffer.len());
        self.buffer.drain(..start);
        if self.buffer.is_empty() {
            return None;
        }
        let mut values = serde_json::Deserializer::from_slice(&self.buffer).into_iter::<IgnoredAny>();
        match values.next()? {
            Ok(IgnoredAny) => {
                let end = values.byte_offset();
                Some(Ok(self.buffer.drain(..end).collect()))
            }
            Err(e) if e.is_eof() => None,
            Err(e) => Some(Err(e)),
        }
    }

    /// Bytes of an unfinished value.
    pub fn pending(&self) -> usize {
        self.buffer.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conclave_proto::etcdserverpb::{RangeRequest, RangeResponse, ResponseHeader, range_request::SortOrder};
    use conclave_proto::mvccpb::KeyValue;

    #[test]
    fn requests_take_proto_names_json_names_strings_and_numbers() {
        let want = RangeRequest {
            key: b"foo".to_vec(),
            range_end: b"fop".to_vec(),
            limit: 5,
            sort_order: SortOrder::Descend as i32,
            ..Default::default()
        };
        for json in [
            r#"{"key":"Zm9v","range_end":"Zm9w","limit":"5","sort_order":"DESCEND"}"#,
            r#"{"key":"Zm9v","rangeEnd":"Zm9w","limit":5,"sort_order":2}"#,
        ] {
            let encoded = request::<RangeRequest>(json.as_bytes()).unwrap();
            assert_eq!(RangeRequest::decode(&encoded[..]).unwrap(), want, "{json}");
        }
        assert_eq!(request::<RangeRequest>(b" \n").unwrap(), Vec::<u8>::new());
        assert!(request::<RangeRequest>(br#"{"key":5}"#).is_err());
        assert!(request::<RangeRequest>(b"{").is_err());
    }

    #[test]
    fn responses_write_int64_as_strings_bytes_as_base64_and_omit_defaults() {
        let message = RangeResponse {
            header: Some(ResponseHeader { cluster_id: 1, member_id: 2, revision: 3, raft_term: 0 }),
            kvs: vec![KeyValue { key: "foo".into(), value: "bar".into(), create_revision: 3, mod_revision: 3, version: 1, lease: 0 }],
            more: false,
            count: 1,
        };
        let json = response::<RangeResponse>(&message.encode_to_vec()).unwrap();
        assert_eq!(
            String::from_utf8(json).unwrap(),
            r#"{"header":{"cluster_id":"1","member_id":"2","revision":"3"},"kvs":[{"key":"Zm9v","create_revision":"3","mod_revision":"3","version":"1","value":"YmFy"}],"count":"1"}"#
        );
    }

    #[test]
    fn splits_a_stream_of_values_as_it_arrives() {
        let mut splitter = ValueSplitter::default();
        splitter.push(br#"{"a":1} {"b":"#);
        assert_eq!(splitter.next_value().unwrap().unwrap(), br#"{"a":1}"#);
        assert!(splitter.next_value().is_none());
        splitter.push(b"[2]}\n");
        assert_eq!(splitter.next_value().unwrap().unwrap(), br#"{"b":[2]}"#);
        assert!(splitter.next_value().is_none());
        assert_eq!(splitter.pending(), 0);
        splitter.push(b"}");
        assert!(splitter.next_value().unwrap().is_err());
    }
}
