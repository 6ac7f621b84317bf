//! Compiles the mesh-echo gRPC protos (`proto/echo.proto`, `proto/health.proto`) with protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/echo.proto");
    println!("cargo:rerun-if-changed=proto/health.proto");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(&["proto/echo.proto", "proto/health.proto"], &["proto"])?;
    Ok(())
}
