//! Watch responses as the bench's watchers read them: what they count (the watch id, created or
//! canceled, how many events, the stamp each put's value starts with), read straight off the
//! wire. prost's decoding built every event's key-value with its key and value copied out: about
//! half of the bench's CPU under a 10,000-watcher fan-out, on the 2 cores it shares with the
//! servers it measures, for both of them alike.

use anyhow::{ensure, Result};
use conclave_proto::etcdserverpb::WatchRequest;
use prost::bytes::Buf;
use prost::encoding::{decode_key, decode_varint, skip_field, DecodeContext, WireType};
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic::Status;

use conclave_proto::codec::{EtcdCodec, EtcdEncoder};

use super::watch::stamp;

/// What a watcher needs of one `WatchResponse`.
#[derive(Debug, Default, PartialEq)]
pub struct Tally {
    pub watch_id: i64,
    pub created: bool,
    pub canceled: bool,
    pub cancel_reason: String,
    pub events: u64,
    /// The stamp ([`stamp`]) of each event's value that has one.
    pub stamps: Vec<u64>,
}

/// The Watch call's codec for the bench: requests encoded as every client's, responses tallied.
#[derive(Default)]
pub struct TallyCodec;

impl Codec for TallyCodec {
    type Encode = WatchRequest;
    type Decode = Tally;
    type Encoder = EtcdEncoder<WatchRequest>;
    type Decoder = TallyDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        EtcdCodec::<WatchRequest, WatchRequest>::default().encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        TallyDecoder
    }
}

pub struct TallyDecoder;

impl Decoder for TallyDecoder {
    type Item = Tally;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> std::result::Result<Option<Tally>, Status> {
        let message = buf.copy_to_bytes(buf.remaining());
        tally(&message).map(Some).map_err(|e| Status::internal(format!("undecodable watch response: {e}")))
    }
}

/// Field numbers of etcd's `WatchResponse`, `Event` and `KeyValue`.
const WATCH_ID: u32 = 2;
const CREATED: u32 = 3;
const CANCELED: u32 = 4;
const CANCEL_REASON: u32 = 6;
const EVENTS: u32 = 11;
const EVENT_KV: u32 = 2;
const KV_VALUE: u32 = 5;

fn tally(mut buf: &[u8]) -> Result<Tally> {
    let mut tally = Tally::default();
    while buf.has_remaining() {
        match decode_key(&mut buf)? {
            (WATCH_ID, WireType::Varint) => tally.watch_id = decode_varint(&mut buf)? as i64,
            (CREATED, WireType::Varint) => tally.created = decode_varint(&mut buf)? != 0,
            (CANCELED, WireType::Varint) => tally.canceled = decode_varint(&mut buf)? != 0,
            (CANCEL_REASON, WireType::LengthDelimited) => tally.cancel_reason = String::from_utf8_lossy(nested(&mut buf)?).into_owned(),
            (EVENTS, WireType::LengthDelimited) => {
                tally.events += 1;
                let value = last_nested(nested(&mut buf)?, EVENT_KV)?.map(|kv| last_nested(kv, KV_VALUE)).transpose()?.flatten();
                tally.stamps.extend(value.and_then(stamp));
            }
            (tag, wire_type) => skip_field(wire_type, tag, &mut buf, DecodeContext::default())?,
        }
    }
    Ok(tally)
}

/// A length-delimited field's bytes, taken from `buf`.
fn nested<'a>(buf: &mut &'a [u8]) -> Result<&'a [u8]> {
    let len = usize::try_from(decode_varint(buf)?)?;
    ensure!(len <= buf.len(), "a field of {len} bytes in {} left", buf.len());
    let (field, rest) = buf.split_at(len);
    *buf = rest;
    Ok(field)
}

/// The last occurrence of length-delimited field `tag` in `message` (the one protobuf keeps).
fn last_nested(mut message: &[u8], tag: u32) -> Result<Option<&[u8]>> {
    let mut found = None;
    while message.has_remaining() {
        match decode_key(&mut message)? {
            (t, WireType::LengthDelimited) if t == tag => found = Some(nested(&mut message)?),
            (t, wire_type) => skip_field(wire_type, t, &mut message, DecodeContext::default())?,
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use conclave_proto::etcdserverpb::{ResponseHeader, WatchResponse};
    use conclave_proto::mvccpb::{Event, KeyValue};
    use prost::Message;

    use super::*;

    fn event(value: &[u8]) -> Event {
        let kv = KeyValue { key: b"key".to_vec().into(), value: value.to_vec().into(), mod_revision: 9, version: 2, ..Default::default() };
        Event { kv: Some(kv.clone()), prev_kv: Some(KeyValue { value: 7u64.to_le_bytes().to_vec().into(), ..kv }), ..Default::default() }
    }

    #[test]
    fn a_tally_reads_what_prost_would_decode() {
        let response = WatchResponse {
            header: Some(ResponseHeader { cluster_id: 1, member_id: 2, revision: 3, raft_term: 4 }),
            watch_id: 42,
            created: true,
            canceled: true,
            compact_revision: 5,
            cancel_reason: "gone".into(),
            fragment: true,
            events: vec![event(&1234u64.to_le_bytes()), event(b"short"), Event { kv: None, ..event(b"") }, event(&[1, 0, 0, 0, 0, 0, 0, 0, 9])],
        };
        let tallied = tally(&response.encode_to_vec()).unwrap();
        let expected = Tally { watch_id: 42, created: true, canceled: true, cancel_reason: "gone".into(), events: 4, stamps: vec![1234, 1] };
        assert_eq!(tallied, expected, "the previous value's stamp is not the event's");
        assert_eq!(tally(&[]).unwrap(), Tally::default());
        let truncated = &response.encode_to_vec()[..20];
        assert!(tally(truncated).is_err());
    }
}
