//! Istio's configuration kinds: `networking.istio.io` (v1, v1beta1, v1alpha3) VirtualService,
//! DestinationRule, Gateway, ServiceEntry, WorkloadEntry, Sidecar and `security.istio.io` (v1,
//! v1beta1) PeerAuthentication, AuthorizationPolicy, and `telemetry.istio.io` (v1, v1alpha1)
//! Telemetry.
//!
//! Each kind's `spec` is decoded into serde structs that mirror Istio's API field by field
//! (camelCase names, unknown fields rejected as the CRDs' structural schemas reject them), then
//! checked with the rules of Istio's webhook (`pkg/config/validation`) and of the CRDs' schemas
//! (required fields, enums, ranges, CEL rules). Every problem names its field path
//! (`spec.http[0].route[1].weight`) and uses Istio's own message where Istio has one.
//!
//! These objects are validated and stored; translating them into xDS is later work.

pub mod authorization_policy;
pub mod destination_rule;
pub mod duration;
pub mod gateway;
pub mod names;
mod parse;
pub mod peer_authentication;
pub mod service_entry;
pub mod sidecar;
pub mod telemetry;
pub mod types;
pub mod values;
pub mod virtual_service;

use std::collections::BTreeMap;

use serde::Serialize;

use super::validate::FieldProblem;

pub use authorization_policy::AuthorizationPolicy;
pub use destination_rule::DestinationRule;
pub use duration::Duration;
pub use gateway::Gateway;
pub use peer_authentication::PeerAuthentication;
pub use service_entry::{ServiceEntry, WorkloadEntry};
pub use sidecar::Sidecar;
pub use telemetry::Telemetry;
pub use virtual_service::VirtualService;

pub(crate) use parse::parse;

/// An Istio object: its metadata and its typed, validated `spec`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IstioConfig<S> {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `apiVersion` as written (e.g. `networking.istio.io/v1beta1`).
    pub api_version: String,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `metadata.annotations`.
    pub annotations: BTreeMap<String, String>,
    /// The validated `spec`.
    pub spec: S,
}

/// A broken rule of Istio's validation, by area.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum IstioProblem {
    /// Names, hosts, labels, selectors, visibility.
    #[error(transparent)]
    Name(#[from] names::Problem),
    /// Ports, durations, percentages, headers, regexes, addresses, protocols.
    #[error(transparent)]
    Value(#[from] values::Problem),
    /// VirtualService rules.
    #[error(transparent)]
    VirtualService(#[from] virtual_service::Problem),
    /// DestinationRule rules.
    #[error(transparent)]
    DestinationRule(#[from] destination_rule::Problem),
    /// Gateway rules.
    #[error(transparent)]
    Gateway(#[from] gateway::Problem),
    /// ServiceEntry and WorkloadEntry rules.
    #[error(transparent)]
    ServiceEntry(#[from] service_entry::Problem),
    /// Sidecar rules.
    #[error(transparent)]
    Sidecar(#[from] sidecar::Problem),
    /// PeerAuthentication rules.
    #[error(transparent)]
    PeerAuthentication(#[from] peer_authentication::Problem),
    /// AuthorizationPolicy rules.
    #[error(transparent)]
    AuthorizationPolicy(#[from] authorization_policy::Problem),
    /// Telemetry rules.
    #[error(transparent)]
    Telemetry(#[from] telemetry::Problem),
}

/// Collects the errors (which reject the object) and the warnings (which Istio reports but
/// accepts) of one object, each with its field path.
#[derive(Debug, Default)]
pub(crate) struct Checker {
    /// Errors.
    pub errors: Vec<(String, FieldProblem)>,
    /// Warnings.
    pub warnings: Vec<(String, IstioProblem)>,
    /// The object's namespace (exportTo and `.` resolve against it).
    pub namespace: String,
}

impl Checker {
    /// A checker for an object of `namespace`.
    pub fn new(namespace: &str) -> Checker {
        Checker {
            namespace: namespace.to_string(),
            ..Checker::default()
        }
    }

    /// Records an error at `path`.
    pub fn err(&mut self, path: impl Into<String>, problem: impl Into<IstioProblem>) {
        self.errors
            .push((path.into(), FieldProblem::Istio(Box::new(problem.into()))));
    }

    /// Records an error at `path` when `result` is one.
    pub fn check<P: Into<IstioProblem>>(&mut self, path: impl Into<String>, result: Result<(), P>) {
        if let Err(p) = result {
            self.err(path, p);
        }
    }

    /// Records a field that must be given.
    pub fn required(&mut self, path: impl Into<String>) {
        self.errors.push((path.into(), FieldProblem::Required));
    }

    /// Records a warning at `path`.
    pub fn warn(&mut self, path: impl Into<String>, problem: impl Into<IstioProblem>) {
        self.warnings.push((path.into(), problem.into()));
    }

    /// Whether no error was recorded.
    pub fn is_clean(&self) -> bool {
        self.errors.is_empty()
    }
}

/// `BASE.leaf`.
pub(crate) fn at(base: &str, leaf: &str) -> String {
    format!("{base}.{leaf}")
}

/// `BASE[i]`.
pub(crate) fn idx(base: &str, i: usize) -> String {
    format!("{base}[{i}]")
}

/// `BASE[key]`.
pub(crate) fn key(base: &str, k: &str) -> String {
    format!("{base}[{k}]")
}

#[cfg(test)]
mod tests;
