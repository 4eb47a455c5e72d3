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
//! - A watch stream's encoder keeps the events it encoded last, by their place in the response:
//!   the watchers of one stream get the same events in the same order, so each event is encoded
//!   once per stream and copied for its other watchers. Under a 10,000-watcher fan-out (100
//!   streams), encoding each event again for each watcher (lengths, then varints) took about a
//!   sixth of the member's CPU; kept, the member spends 7-12 % less CPU per delivered put.
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
        EtcdEncoder { events: EncodedEvents::default(), message: PhantomData }
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(Default::default())
    }
}

pub struct EtcdEncoder<T> {
    events: EncodedEvents,
    message: PhantomData<T>,
}

impl<T: Message + 'static> Encoder for EtcdEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        // Generated code is generic over the message type: the two hot ones are picked out here.
        let item: &dyn Any = &item;
        if let Some(watched) = item.downcast_ref::<WatchResponse>() {
            match self.events.keep(watched) {
                Some(len) => {
                    buf.reserve(len);
                    self.events.write(watched, buf);
                }
                None => {
                    buf.reserve(watched.encoded_len());
                    watch_response(watched, buf);
                }
            }
        } else if let Some(ranged) = item.downcast_ref::<RangeResponse>() {
            buf.reserve(ranged.encoded_len());
            range_response(ranged, buf);
        } else {
            let item = item.downcast_ref::<T>().expect("the item is a T");
            buf.reserve(item.encoded_len());
            item.encode(buf).expect("the buffer was grown to the message's length");
        }
        Ok(())
    }
}

/// The events a watch stream's encoder wrote last, by their place in a response, each encoded
/// (without its field key and length). Only responses of at most [`EncodedEvents::MAX_EVENTS`]
/// small events are kept, and only as many as the last one had: a stream holds its last
/// response's events at most, each under [`EncodedEvents::MAX_EVENT_BYTES`].
#[derive(Default)]
struct EncodedEvents {
    slots: Vec<(EventId, Vec<u8>)>,
}

/// What tells one event from another: etcd's store never holds two values of a key at one
/// revision, so the key, the event's type and the revisions of the key-values it carries name its
/// bytes.
/// The key is copied, not shared: a shared key's reference count would be taken on every stream
/// (see the module's doc).
struct EventId {
    kind: i32,
    key: Vec<u8>,
    revision: Option<i64>,
    prev_revision: Option<i64>,
}

impl EventId {
    fn of(e: &Event) -> Self {
        EventId { kind: e.r#type, key: event_key(e).to_vec(), revision: revision(&e.kv), prev_revision: revision(&e.prev_kv) }
    }

    fn is(&self, e: &Event) -> bool {
        self.kind == e.r#type && self.revision == revision(&e.kv) && self.prev_revision == revision(&e.prev_kv) && self.key == event_key(e)
    }
}

fn event_key(e: &Event) -> &[u8] {
    e.kv.as_ref().or(e.prev_kv.as_ref()).map_or(&[], |kv| &kv.key[..])
}

fn revision(kv: &Option<KeyValue>) -> Option<i64> {
    kv.as_ref().map(|kv| kv.mod_revision)
}

impl EncodedEvents {
    /// Events kept per stream, and the most bytes one may take.
    const MAX_EVENTS: usize = 64;
    const MAX_EVENT_BYTES: usize = 512;

    /// Keeps `r`'s events encoded (those not kept yet), if it is small enough: then the length
    /// of `r` encoded, to [`Self::write`] it with.
    fn keep(&mut self, r: &WatchResponse) -> Option<usize> {
        if r.events.is_empty() || r.events.len() > Self::MAX_EVENTS || r.events.iter().any(|e| !Self::small(e)) {
            return None;
        }
        for (i, e) in r.events.iter().enumerate() {
            if self.slots.get(i).is_some_and(|(id, _)| id.is(e)) {
                continue;
            }
            if i == self.slots.len() {
                self.slots.push((EventId::of(e), Vec::new()));
            } else {
                self.slots[i].0 = EventId::of(e);
            }
            let bytes = &mut self.slots[i].1;
            bytes.clear();
            event_body(e, bytes);
        }
        self.slots.truncate(r.events.len());
        let events: usize = self.slots.iter().map(|(_, bytes)| field_len(11, Some(bytes.len()))).sum();
        let fields = WatchResponse { events: Vec::new(), cancel_reason: String::new(), ..*r };
        let cancel_reason = if r.cancel_reason.is_empty() { 0 } else { prost::encoding::string::encoded_len(6, &r.cancel_reason) };
        Some(fields.encoded_len() + cancel_reason + events)
    }

    /// Writes `r`, whose events [`Self::keep`] kept.
    fn write(&self, r: &WatchResponse, buf: &mut impl BufMut) {
        watch_fields(r, buf);
        for (_, bytes) in &self.slots {
            nested(11, bytes.len(), buf);
            buf.put_slice(bytes);
        }
    }

    /// Whether `e` is surely under [`Self::MAX_EVENT_BYTES`] encoded.
    fn small(e: &Event) -> bool {
        let size = |kv: &Option<KeyValue>| kv.as_ref().map_or(0, |kv| kv.key.len() + kv.value.len() + 64);
        size(&e.kv) + size(&e.prev_kv) + 8 <= Self::MAX_EVENT_BYTES
    }
}

fn watch_response(r: &WatchResponse, buf: &mut impl BufMut) {
    watch_fields(r, buf);
    for event in &r.events {
        self::event(11, event, buf);
    }
}

/// A watch response's fields but its events (which come last).
fn watch_fields(r: &WatchResponse, buf: &mut impl BufMut) {
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
    event_fields(e, kv_len, prev_len, buf);
}

/// An event's message without its field key and length.
fn event_body(e: &Event, buf: &mut impl BufMut) {
    event_fields(e, e.kv.as_ref().map(Message::encoded_len), e.prev_kv.as_ref().map(Message::encoded_len), buf);
}

fn event_fields(e: &Event, kv_len: Option<usize>, prev_len: Option<usize>, buf: &mut impl BufMut) {
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

    fn encoded(mut write: impl FnMut(&mut Vec<u8>)) -> Vec<u8> {
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
    fn a_stream_s_events_kept_encoded_are_written_as_prost_writes_them() {
        let put = |key: &str, revision: i64| Event { r#type: 0, kv: Some(kv(key, b"value", revision)), prev_kv: None };
        let with_prev = |key: &str, revision: i64| Event { prev_kv: Some(kv(key, b"before", revision - 1)), ..put(key, revision) };
        let deleted = |key: &str, revision: i64| Event { r#type: 1, kv: Some(KeyValue { value: Bytes::new(), ..kv(key, b"", revision) }), prev_kv: None };
        let watcher = |watch_id: i64, events: Vec<Event>| WatchResponse { header: header(), watch_id, events, ..Default::default() };
        let batch = vec![put("a", 5), put("b", 5), deleted("a", 6)];
        let responses = [
            // Three watchers of one stream get the same batch.
            watcher(1, batch.clone()),
            watcher(2, batch.clone()),
            watcher(3, batch[1..].to_vec()),
            // The same keys at new revisions, another key at a kept revision, the previous values.
            watcher(1, vec![put("a", 7), put("c", 5)]),
            watcher(2, vec![with_prev("a", 7), put("c", 5)]),
            watcher(3, vec![deleted("a", 7)]),
            // Too many events, or one too large, to keep: written as they come.
            watcher(4, (0..70).map(|i| put("k", i)).collect()),
            watcher(5, vec![put("a", 7), Event { kv: Some(kv("big", &[7; 1000], 8)), ..put("big", 8) }]),
            watcher(6, vec![put("a", 7)]),
            WatchResponse { header: header(), watch_id: 7, created: true, ..Default::default() },
            WatchResponse { watch_id: 8, canceled: true, cancel_reason: "gone".into(), fragment: true, events: vec![put("a", 7)], ..Default::default() },
        ];
        let mut kept = EncodedEvents::default();
        for response in responses {
            let written = encoded(|buf| match kept.keep(&response) {
                Some(len) => {
                    kept.write(&response, buf);
                    assert_eq!(buf.len(), len, "the length told");
                }
                None => watch_response(&response, buf),
            });
            assert_eq!(written, response.encode_to_vec(), "{response:?}");
        }
        assert_eq!(kept.slots.len(), 1, "the last response's events are kept, no more");
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
