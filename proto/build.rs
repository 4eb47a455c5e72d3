//! Compiles the etcd v3 and Conclave .proto files with `protox` (pure Rust, no
//! system `protoc`) and generates prost messages plus tonic clients/servers.

use std::{env, fs, path::PathBuf};

use prost::Message;

/// Proto files to compile, relative to their include root.
const ETCD_PROTOS: &[&str] = &[
    "etcd/mvccpb/kv.proto",
    "etcd/authpb/auth.proto",
    "etcd/etcdserverpb/rpc.proto",
    "etcd/v3lockpb/v3lock.proto",
    "etcd/v3electionpb/v3election.proto",
];
const CONCLAVE_PROTOS: &[&str] = &["conclave/plugin.proto", "conclave/raft.proto"];
/// Packages the HTTP/JSON gateway speaks (every client-facing one; not the peer protocol).
const JSON_PACKAGES: &[&str] =
    &[".mvccpb", ".authpb", ".etcdserverpb", ".v3lockpb", ".v3electionpb", ".conclave.plugin"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=etcd");
    println!("cargo:rerun-if-changed=conclave");
    println!("cargo:rerun-if-changed=build.rs");

    // etcd files import each other as "mvccpb/kv.proto" etc., so `etcd/` is an
    // include root; `conclave/raft.proto` is found via the crate root.
    let files = ETCD_PROTOS.iter().chain(CONCLAVE_PROTOS);
    let fds = protox::compile(files, ["etcd", "."])?;

    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("file_descriptor_set.bin"),
        fds.encode_to_vec(),
    )?;

    // serde impls in the proto3 JSON mapping, with the .proto field names as etcd's gateway
    // (grpc-gateway with `OrigName`) writes them: int64 as strings, bytes as base64.
    pbjson_build::Builder::new()
        .register_descriptors(&fds.encode_to_vec())?
        .preserve_proto_field_names()
        // etcd's gateway ignores fields it does not know.
        .ignore_unknown_fields()
        .build(JSON_PACKAGES)?;

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Stored keys and values as shared buffers: a watch event fanned out to many watchers,
        // or a key read into many responses, is a reference count, not a copy.
        .bytes(".mvccpb.KeyValue")
        // prost's encoding, without its copies of those buffers' reference counts.
        .codec_path("crate::codec::EtcdCodec")
        .compile_fds(fds)?;
    Ok(())
}
