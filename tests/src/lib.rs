//! End-to-end test support: the `mesh-echo` test app ([`echo`]), the harness that builds
//! pods out of network namespaces ([`harness`]), and ADS tooling (a simulated Envoy-like
//! subscriber, [`ads`]).

pub mod ads;
pub mod conformance;
pub mod demo;
pub mod echo;
pub mod harness;
