//! ADS tooling for tests and benchmarks, speaking Envoy's v3 aggregated discovery service over
//! real gRPC (tonic) sockets:
//!
//! - [`SimProxy`]: a simulated sidecar that subscribes and ACKs the way Envoy does (CDS and LDS
//!   wildcard, EDS for the clusters' service names, RDS for the listeners' route names; every
//!   response decoded and ACKed at once), recording what it holds and when each response came.
//!   It decodes the fields it records only (names; see `view`), reading every byte.
//!   Hundreds run in one process (the control-plane scale benchmark, `mesh-bench cp-scale`).

mod sim;
mod view;

pub use sim::{SimNode, SimProxy, SimState, TypeSeen};

/// CDS type URL.
pub const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
/// EDS type URL.
pub const EDS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
/// LDS type URL.
pub const LDS: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
/// RDS type URL.
pub const RDS: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";

/// Errors of the ADS tooling.
#[derive(Debug, thiserror::Error)]
pub enum AdsError {
    /// The control plane cannot be reached.
    #[error("connecting to {addr}: {source}")]
    Connect {
        /// The address.
        addr: String,
        /// The transport error.
        source: tonic::transport::Error,
    },
    /// The stream failed or was refused.
    #[error("ADS stream: {0}")]
    Stream(#[from] tonic::Status),
    /// The control plane closed the stream.
    #[error("the control plane closed the stream")]
    Closed,
    /// A resource does not decode as its type.
    #[error("decoding a {type_url} resource: {source}")]
    Decode {
        /// The type.
        type_url: String,
        /// The decoder's error.
        source: prost::DecodeError,
    },
    /// A wait ran out.
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(std::time::Duration, String),
}
