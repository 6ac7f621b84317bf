//! `mesh-proxy`: the Pingora sidecar.
//!
//! `init` writes the capture rules ([`capture`]); `run` starts the sidecar ([`app`]).

pub mod app;
pub mod capture;
