//! Generates the `shardci.v1` types and services. protoc comes from the host (Debian's
//! `protobuf-compiler`, installed by `scripts/install-deps`); `PROTOC` overrides the path.

use std::path::Path;
use std::process::Command;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = std::env::var_os("PROTOC").unwrap_or_else(|| "protoc".into());
    let found = Command::new(&protoc).arg("--version").output().is_ok();
    if !found {
        return Err(format!(
            "failed to run protoc ({}): install Debian's protobuf-compiler \
             (`scripts/install-deps` does it) or set PROTOC to its path",
            Path::new(&protoc).display()
        )
        .into());
    }
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-env-changed=PROTOC");
    tonic_prost_build::configure().compile_protos(
        &[
            "proto/shardci/v1/common.proto",
            "proto/shardci/v1/client.proto",
            "proto/shardci/v1/worker.proto",
        ],
        &["proto"],
    )?;
    Ok(())
}
