//! Bytes that are not a valid protobuf message get a gRPC error, as from etcd, and the server
//! carries on serving.

use bytes::{Buf, BufMut};
use conclave_tests::{Kind, Node};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic::{Code, Status};

/// Sends and receives message bodies as raw bytes, so a test can send anything.
#[derive(Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

async fn call(endpoint: &str, method: &'static str, body: Vec<u8>) -> Result<Vec<u8>, Status> {
    let channel = Channel::from_shared(endpoint.to_string()).unwrap().connect().await.expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("channel ready");
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(method);
    grpc.unary(tonic::Request::new(body), path, RawCodec).await.map(|r| r.into_inner())
}

#[tokio::test]
async fn malformed_protobuf_is_rejected_and_harmless() {
    // A field 1 (key, length-delimited) claiming 100 bytes with 2 present; then a bad wire type.
    let garbage = [vec![0x0a, 100, b'a', b'b'], vec![0x0f, 0xff, 0xff]];
    for kind in [Kind::Etcd, Kind::subject()] {
        let node = Node::start(kind, &[]).unwrap_or_else(|e| panic!("{e:#}"));
        for body in &garbage {
            let status = call(&node.endpoint(), "/etcdserverpb.KV/Put", body.clone())
                .await
                .expect_err("malformed request must fail");
            assert_eq!(status.code(), Code::Internal, "{kind:?}: {status:?}");
        }
        // PutRequest{key: "k", value: "v"} still works afterwards.
        let put = vec![0x0a, 1, b'k', 0x12, 1, b'v'];
        call(&node.endpoint(), "/etcdserverpb.KV/Put", put).await.expect("valid put after garbage");
    }
}
