//! The proxy's xDS subscriber: Envoy's v3 aggregated discovery service (state of the world),
//! ACK/NACK, reconnect with backoff, and the conversion of Envoy resources into the proxy's
//! validated config model ([`model`]).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod ads;
pub mod client;
pub mod convert;
pub mod model;
pub mod node;

pub use client::{ClientOptions, NodeInfo, XdsClient, XdsHandle, XdsStatus};
