//! Generates the Rust types for synod's protobuf files at build time.
//!
//! `protox` parses the .proto files in pure Rust, so no system `protoc` is needed: a machine
//! with only the Rust toolchain builds everything. Which parts are generated follows the
//! crate features: gRPC code only with `grpc`, serde impls (proto3 JSON mapping) only with
//! `json`.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "mvccpb/kv.proto",
    "authpb/auth.proto",
    "etcdserverpb/rpc.proto",
    "synodpb/command.proto",
    "synodpb/raft.proto",
    "synod/v1/counter.proto",
    "v3lockpb/v3lock.proto",
    "v3electionpb/v3election.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = PathBuf::from("proto");
    for file in PROTOS {
        println!("cargo:rerun-if-changed=proto/{file}");
    }
    let descriptors = protox::compile(PROTOS, [&proto_dir])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let grpc = std::env::var_os("CARGO_FEATURE_GRPC").is_some();
    let json = std::env::var_os("CARGO_FEATURE_JSON").is_some();

    let mut config = tonic_prost_build::Config::new();
    // `bytes` fields stay `Vec<u8>`: keys and values are handed to the store as they are.
    config.enable_type_names();
    tonic_prost_build::configure()
        .build_server(grpc)
        .build_client(grpc)
        .build_transport(grpc)
        .codec_path("crate::codec::SynodCodec")
        .compile_fds_with_config(descriptors.clone(), config)?;

    if json {
        let encoded = prost::Message::encode_to_vec(&descriptors);
        pbjson_build::Builder::new()
            .register_descriptors(&encoded)?
            // etcd's gateway prints proto field names (`create_revision`, `peerURLs`).
            .preserve_proto_field_names()
            // etcd's gateway accepts and ignores fields it does not know.
            .ignore_unknown_fields()
            .out_dir(&out_dir)
            .build(&[
                ".mvccpb",
                ".authpb",
                ".etcdserverpb",
                ".synodpb",
                ".synod.v1",
                ".v3lockpb",
                ".v3electionpb",
            ])?;
    }
    Ok(())
}
