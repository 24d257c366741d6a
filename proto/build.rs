//! Compiles `attest/v1/*.proto` with protox (a pure-Rust protobuf
//! compiler), so no system `protoc` is needed, and hands the descriptors to
//! tonic-prost-build. The encoded descriptor set is kept for gRPC reflection.

use prost::Message;
use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "attest/v1/common.proto",
    "attest/v1/cas.proto",
    "attest/v1/build.proto",
    "attest/v1/attestations.proto",
    "attest/v1/keys.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(PROTOS, ["."])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("attest_v1_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
