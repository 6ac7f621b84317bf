//! `mesh-proxy`: the Pingora sidecar.
//!
//! `init` writes the capture rules ([`capture`]); `run` starts the sidecar ([`app`]): capture
//! listeners ([`listener`]) hand each connection to the HTTP proxy ([`http`]) or the TCP proxy
//! ([`tcp`]) according to the configuration snapshot ([`snapshot`]); [`upstream`] picks
//! endpoints ([`dns`] resolves those of DNS clusters), [`identity`] holds the workload
//! certificate from the CA, [`accesslog`] writes one line per request or connection,
//! [`metrics`] keeps Istio's and Envoy's metrics, [`trace`] continues traces and exports
//! spans, [`admin`] serves the admin, readiness and stats ports. `agent` ([`agent`]) is an
//! Envoy sidecar's node agent: the same identity, served to Envoy over SDS.

pub mod accesslog;
pub mod admin;
pub mod agent;
pub mod app;
pub mod authz;
pub mod capture;
pub mod dns;
#[cfg(test)]
mod fixtures;
pub mod http;
pub mod identity;
pub mod listener;
pub mod metrics;
pub mod shared;
pub mod snapshot;
pub mod stats;
pub mod tcp;
pub mod tls;
pub mod trace;
pub mod upstream;
