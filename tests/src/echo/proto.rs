//! Generated gRPC code for `tests/proto/echo.proto` and `tests/proto/health.proto`.

/// `mesh.echo.v1`: the `EchoService` messages, client and server.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod echo {
    tonic::include_proto!("mesh.echo.v1");
}

/// `grpc.health.v1`: gRPC's standard health service.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod health {
    tonic::include_proto!("grpc.health.v1");
}
