//! Compiles the client of Istio's CA API (`../proto/istioca.proto`, package
//! `istio.v1.auth`) with protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../proto/istioca.proto");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .compile_protos(&["../proto/istioca.proto"], &["../proto"])?;
    Ok(())
}
