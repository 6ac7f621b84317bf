//! The control plane of the mesh: an istiod-like server that reads Kubernetes-style YAML
//! from a directory ([`config`]), keeps a service registry of Services, their endpoints and
//! the proxies connected to it ([`registry`]), translates it into Envoy v3 resources shaped
//! the way istiod shapes a sidecar's ([`xds`]), serves them over the aggregated discovery
//! service, signs workload certificates ([`ca`]), and shows its state on debug endpoints
//! ([`debug`]).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod analyze;
pub mod app;
pub mod authz;
pub mod ca;
pub mod config;
pub mod debug;
pub mod meshconfig;
pub mod metrics;
pub mod mtls;
pub mod networking;
pub mod proxy_config;
pub mod proxy_status;
pub mod registry;
pub mod telemetry;
pub mod watch;
pub mod xds;
