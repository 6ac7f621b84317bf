//! The paths a request takes in each scenario, and which peers run on each.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::load::Mode;
use crate::peers::Peer;

/// A scenario of the issue "Included benches".
#[derive(
    clap::ValueEnum,
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
)]
pub enum PathId {
    /// Direct: client to upstream, the floor.
    #[value(name = "S0")]
    S0,
    /// One sidecar hop, plaintext.
    #[value(name = "S1")]
    S1,
    /// Two sidecars (client pod to server pod through capture), mTLS when built.
    #[value(name = "S2")]
    S2,
    /// HTTP/2 in, HTTP/2 between the sidecars.
    #[value(name = "S3")]
    S3,
    /// gRPC unary through two sidecars.
    #[value(name = "S4")]
    S4,
    /// Config scale: RSS and config-apply time with many services.
    #[value(name = "S5")]
    S5,
    /// A new connection per request through two sidecars (handshake cost).
    #[value(name = "S6")]
    S6,
}

impl PathId {
    /// Every path.
    pub const ALL: [PathId; 7] = [
        PathId::S0,
        PathId::S1,
        PathId::S2,
        PathId::S3,
        PathId::S4,
        PathId::S6,
        PathId::S5,
    ];

    /// One line saying what the path is.
    pub fn title(self) -> &'static str {
        match self {
            PathId::S0 => "direct: client -> upstream (the floor)",
            PathId::S1 => "one proxy hop, plaintext: client pod's proxy -> upstream pod",
            PathId::S2 => "two proxies: client pod -> server pod, sidecars through capture",
            PathId::S3 => "HTTP/2 in, HTTP/2 between the two proxies",
            PathId::S4 => "gRPC unary through two proxies",
            PathId::S5 => "config scale: sidecar RSS and config-apply time per mesh size",
            PathId::S6 => "a new connection per request through two proxies (handshakes)",
        }
    }

    /// How the client talks on this path (`None` for S5, which sends no traffic).
    pub fn mode(self) -> Option<Mode> {
        match self {
            PathId::S0 | PathId::S1 | PathId::S2 => Some(Mode::Http1),
            PathId::S3 => Some(Mode::H2),
            PathId::S4 => Some(Mode::Grpc),
            PathId::S6 => Some(Mode::Http1Close),
            PathId::S5 => None,
        }
    }

    /// Whether the path crosses two proxies (a client side and a server side).
    pub fn is_pair(self) -> bool {
        matches!(self, PathId::S2 | PathId::S3 | PathId::S4 | PathId::S6)
    }

    /// The proxies that run on this path. nginx and HAProxy run where the issue puts them
    /// (plain reverse proxies for S1, a TLS pair for S2, and the same pair for S6); nginx
    /// cannot speak HTTP/2 to an upstream, so neither runs S3 or S4.
    pub fn peers(self) -> &'static [Peer] {
        match self {
            PathId::S0 => &[],
            PathId::S1 | PathId::S2 | PathId::S6 => &Peer::PROXIES,
            PathId::S3 | PathId::S4 => &[Peer::MeshProxy, Peer::Envoy, Peer::Pingora],
            PathId::S5 => &[Peer::MeshProxy, Peer::Envoy],
        }
    }
}

impl fmt::Display for PathId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

/// The app's ports: HTTP/1.1 (`http`), HTTP/2 (`http2`) and gRPC (`grpc`). The app answers
/// every protocol on each; the Service's port names tell the sidecars what to speak.
pub const HTTP_PORT: u16 = 8080;
/// See [`HTTP_PORT`].
pub const H2_PORT: u16 = 8082;
/// See [`HTTP_PORT`].
pub const GRPC_PORT: u16 = 9090;

/// The app port a mode uses.
pub fn app_port(mode: Mode) -> u16 {
    match mode {
        Mode::Http1 | Mode::Http1Close => HTTP_PORT,
        Mode::H2 => H2_PORT,
        Mode::Grpc => GRPC_PORT,
    }
}
