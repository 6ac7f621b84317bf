//! End-to-end test support: the `mesh-echo` test app ([`echo`]) and the harness that builds
//! pods out of network namespaces ([`harness`]).

pub mod demo;
pub mod echo;
pub mod harness;
