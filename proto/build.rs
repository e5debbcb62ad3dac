//! Compiles `proto/helpgrid/v1/*.proto` with protox (pure Rust, no system `protoc`),
//! then generates prost messages and tonic services from the descriptors.
use prost::Message;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/helpgrid/v1/common.proto",
        "proto/helpgrid/v1/events.proto",
        "proto/helpgrid/v1/roster.proto",
        "proto/helpgrid/v1/incidents.proto",
        "proto/helpgrid/v1/api.proto",
        "proto/helpgrid/v1/devices.proto",
        "proto/helpgrid/v1/archive.proto",
        "proto/helpgrid/v1/notify.proto",
        "proto/helpgrid/v1/auth.proto",
        "proto/helpgrid/v1/responders.proto",
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    // Kept for gRPC reflection (grpcurl works without the .proto files).
    std::fs::write(
        out_dir.join("helpgrid_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
