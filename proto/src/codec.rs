//! The gRPC codec of every generated service and client: prost's, with two changes on the
//! encoding side.
//!
//! - The buffer is grown once, to the message's encoded length, before encoding: prost writes
//!   field by field, and a watch response of a thousand events grew tonic's buffer a dozen times.
//! - Watch and range responses, which carry stored keys and values, are written here rather than
//!   by prost. prost appends a `Bytes` field by cloning it and copying the clone, a reference
//!   count taken and dropped per key and per value. A watch event fanned out to thousands of
//!   watchers shares its buffers, so those counts bounced between the cores: a fifth of a
//!   member's CPU under a 10,000-watcher fan-out. The bytes written are prost's, field for field.
//!
//! Decoding is prost's.

use std::any::Any;
use std::marker::PhantomData;

use prost::bytes::{BufMut, Bytes};
use prost::encoding::{encode_key, encode_varint, WireType};
use prost::Message;
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic::Status;
use tonic_prost::{ProstCodec, ProstDecoder};

use crate::etcdserverpb::{RangeResponse, WatchResponse};
use crate::mvccpb::{Event, KeyValue};

pub struct EtcdCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for EtcdCodec<T, U> {
    fn default() -> Self {
        EtcdCodec(PhantomData)
    }
}

impl<T, U> Codec for EtcdCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = EtcdEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        EtcdEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(Default::default())
    }
}

pub struct EtcdEncoder<T>(PhantomData<T>);

impl<T: Message + 'static> Encoder for EtcdEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.reserve(item.encoded_len());
        // Generated code is generic over the message type: the two hot ones are picked out here.
        let item: &dyn Any = &item;
        if let Some(watched) = item.downcast_ref::<WatchResponse>() {
            watch_response(watched, buf);
        } else if let Some(ranged) = item.downcast_ref::<RangeResponse>() {
            range_response(ranged, buf);
        } else {
            let item = item.downcast_ref::<T>().expect("the item is a T");
            item.encode(buf).expect("the buffer was grown to the message's length");
        }
        Ok(())
    }
}

fn watch_response(r: &WatchResponse, buf: &mut impl BufMut) {
    if let Some(header) = &r.header {
        prost::encoding::message::encode(1, header, buf);
    }
    int64(2, r.watch_id, buf);
    boolean(3, r.created, buf);
    boolean(4, r.canceled, buf);
    int64(5, r.compact_revision, buf);
    if !r.cancel_reason.is_empty() {
        prost::encoding::string::encode(6, &r.cancel_reason, buf);
    }
    boolean(7, r.fragment, buf);
    for event in &r.events {
        self::event(11, event, buf);
    }
}

fn range_response(r: &RangeResponse, buf: &mut impl BufMut) {
    if let Some(header) = &r.header {
        prost::encoding::message::encode(1, header, buf);
    }
    for kv in &r.kvs {
        key_value(2, kv, buf);
    }
    boolean(3, r.more, buf);
    int64(4, r.count, buf);
}

/// Each key-value's length is computed once, for its own header and for the event's (prost's
/// `Event::encoded_len` would walk them again).
fn event(tag: u32, e: &Event, buf: &mut impl BufMut) {
    let kv_len = e.kv.as_ref().map(Message::encoded_len);
    let prev_len = e.prev_kv.as_ref().map(Message::encoded_len);
    let type_len = if e.r#type != 0 { prost::encoding::int32::encoded_len(1, &e.r#type) } else { 0 };
    nested(tag, type_len + field_len(2, kv_len) + field_len(3, prev_len), buf);
    if e.r#type != 0 {
        prost::encoding::int32::encode(1, &e.r#type, buf);
    }
    if let (Some(kv), Some(len)) = (&e.kv, kv_len) {
        key_value_of_len(2, kv, len, buf);
    }
    if let (Some(kv), Some(len)) = (&e.prev_kv, prev_len) {
        key_value_of_len(3, kv, len, buf);
    }
}

/// A nested message field's length on the wire, given the message's (`None`: left out).
fn field_len(tag: u32, len: Option<usize>) -> usize {
    len.map_or(0, |len| prost::encoding::key_len(tag) + prost::encoding::encoded_len_varint(len as u64) + len)
}

fn key_value(tag: u32, kv: &KeyValue, buf: &mut impl BufMut) {
    key_value_of_len(tag, kv, kv.encoded_len(), buf);
}

fn key_value_of_len(tag: u32, kv: &KeyValue, len: usize, buf: &mut impl BufMut) {
    nested(tag, len, buf);
    bytes(1, &kv.key, buf);
    int64(2, kv.create_revision, buf);
    int64(3, kv.mod_revision, buf);
    int64(4, kv.version, buf);
    bytes(5, &kv.value, buf);
    int64(6, kv.lease, buf);
}

fn nested(tag: u32, len: usize, buf: &mut impl BufMut) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

/// A proto3 scalar is left out when it has its default value, as prost leaves it out.
fn int64(tag: u32, value: i64, buf: &mut impl BufMut) {
    if value != 0 {
        prost::encoding::int64::encode(tag, &value, buf);
    }
}

fn boolean(tag: u32, value: bool, buf: &mut impl BufMut) {
    if value {
        prost::encoding::bool::encode(tag, &value, buf);
    }
}

/// Copied straight from the shared buffer, with no reference count taken.
fn bytes(tag: u32, value: &Bytes, buf: &mut impl BufMut) {
    if !value.is_empty() {
        nested(tag, value.len(), buf);
        buf.put_slice(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etcdserverpb::ResponseHeader;

    fn kv(key: &str, value: &[u8], revisions: i64) -> KeyValue {
        // Every field named, so a field added to the .proto breaks this test until it is encoded.
        KeyValue {
            key: Bytes::copy_from_slice(key.as_bytes()),
            create_revision: revisions,
            mod_revision: revisions * 3,
            version: revisions,
            value: Bytes::copy_from_slice(value),
            lease: -revisions,
        }
    }

    fn header() -> Option<ResponseHeader> {
        Some(ResponseHeader { cluster_id: u64::MAX, member_id: 7, revision: 1 << 40, raft_term: 3 })
    }

    fn encoded(write: impl Fn(&mut Vec<u8>)) -> Vec<u8> {
        let mut buf = Vec::new();
        write(&mut buf);
        buf
    }

    #[test]
    fn watch_responses_are_written_as_prost_writes_them() {
        let big = vec![0xab; 70_000];
        let events = vec![
            Event { r#type: 0, kv: Some(kv("k", b"v", 1)), prev_kv: None },
            Event { r#type: 1, kv: Some(kv("", b"", 0)), prev_kv: Some(kv("prev", &big, 2)) },
            Event { r#type: 0, kv: None, prev_kv: None },
        ];
        let responses = [
            WatchResponse::default(),
            WatchResponse {
                header: header(),
                watch_id: -1,
                created: true,
                canceled: true,
                compact_revision: 12,
                cancel_reason: "mvcc: required revision has been compacted".into(),
                fragment: true,
                events: events.clone(),
            },
            WatchResponse { header: None, watch_id: 0, created: false, canceled: false, compact_revision: 0, cancel_reason: String::new(), fragment: false, events },
        ];
        for response in responses {
            assert_eq!(encoded(|buf| watch_response(&response, buf)), response.encode_to_vec(), "{response:?}");
        }
    }

    #[test]
    fn range_responses_are_written_as_prost_writes_them() {
        let responses = [
            RangeResponse::default(),
            RangeResponse { header: header(), kvs: vec![kv("a", b"1", 5), kv("b", &[0; 300], 9)], more: true, count: 1 << 33 },
            RangeResponse { header: None, kvs: Vec::new(), more: false, count: 2 },
        ];
        for response in responses {
            assert_eq!(encoded(|buf| range_response(&response, buf)), response.encode_to_vec(), "{response:?}");
        }
    }
}
