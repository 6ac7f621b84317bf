//! `meshctl analyze`: checks across the objects of a config directory that validating each
//! object alone cannot make, reported with Istio's analyzer message codes where Istio has one
//! (`IST0101` ReferencedResourceNotFound, `IST0109`, `IST0110`, `IST0111`, `IST0112`,
//! `IST0127`, `IST0132`, `IST0145`, `IST0107`), and the store's own findings in the same form
//! (`IST0106` schema errors, `IST0133` schema warnings, `IST0130`/`IST0131` unreachable
//! routes). Checks Istio has no code for use `MESH` codes (MESH0004: an AuthorizationPolicy
//! with action CUSTOM, which fails closed here; MESH0005: one with a `targetRef`, which no
//! sidecar takes).
//!
//! Only the store is consulted: there are no pods, so workloads are the WorkloadEntries and
//! what Services' selectors say of their pods.

mod authorization;
mod hosts;
mod index;
mod workloads;

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use crate::config::istio::virtual_service::Problem as VsProblem;
use crate::config::istio::IstioProblem;
use crate::config::{ConfigError, ConfigSnapshot, ConfigWarning, FieldProblem};

/// How serious a message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Level {
    /// The configuration is wrong: `meshctl analyze` exits 1.
    Error,
    /// Probably a mistake.
    Warning,
    /// Worth knowing.
    Info,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Error => "Error",
            Level::Warning => "Warning",
            Level::Info => "Info",
        })
    }
}

/// A message type: Istio's code and name, or the project's for checks Istio does not make.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Code {
    /// `IST0101`, `MESH0001`...
    pub code: &'static str,
    /// `ReferencedResourceNotFound`...
    pub name: &'static str,
    /// Its level.
    pub level: Level,
}

macro_rules! codes {
    ($($ident:ident = $code:literal, $name:literal, $level:ident;)*) => {
        $(
            #[doc = concat!("`", $code, "` ", $name, ".")]
            pub const $ident: Code = Code { code: $code, name: $name, level: Level::$level };
        )*
    };
}

codes! {
    REFERENCED_RESOURCE_NOT_FOUND = "IST0101", "ReferencedResourceNotFound", Error;
    SCHEMA_VALIDATION_ERROR = "IST0106", "SchemaValidationError", Error;
    MISPLACED_ANNOTATION = "IST0107", "MisplacedAnnotation", Warning;
    CONFLICTING_MESH_GATEWAY_VS_HOSTS = "IST0109", "ConflictingMeshGatewayVirtualServiceHosts", Error;
    CONFLICTING_SIDECAR_SELECTORS = "IST0110", "ConflictingSidecarWorkloadSelectors", Error;
    MULTIPLE_SIDECARS_WITHOUT_SELECTOR = "IST0111", "MultipleSidecarsWithoutWorkloadSelectors", Error;
    DESTINATION_PORT_REQUIRED = "IST0112", "VirtualServiceDestinationPortSelectorRequired", Error;
    NO_MATCHING_WORKLOADS = "IST0127", "NoMatchingWorkloadsFound", Warning;
    VS_UNREACHABLE_RULE = "IST0130", "VirtualServiceUnreachableRule", Warning;
    VS_INEFFECTIVE_MATCH = "IST0131", "VirtualServiceIneffectiveMatch", Info;
    VS_HOST_NOT_IN_GATEWAY = "IST0132", "VirtualServiceHostNotFoundInGateway", Warning;
    SCHEMA_WARNING = "IST0133", "SchemaWarning", Warning;
    CONFLICTING_GATEWAYS = "IST0145", "ConflictingGateways", Error;
    VS_HOST_WITHOUT_SERVICE = "MESH0001", "VirtualServiceHostWithoutService", Warning;
    CONFLICTING_DESTINATION_RULES = "MESH0002", "ConflictingDestinationRules", Error;
    SHADOWED_DESTINATION_RULE_POLICY = "MESH0003", "ShadowedDestinationRulePolicy", Warning;
    CUSTOM_ACTION_UNSUPPORTED = "MESH0004", "AuthorizationPolicyCustomActionUnsupported", Error;
    TARGET_REF_NOT_FOR_SIDECARS = "MESH0005", "AuthorizationPolicyTargetRefNotForSidecars", Warning;
}

/// One finding.
#[derive(Clone, Debug, Serialize)]
pub struct Message {
    /// Its type.
    pub code: Code,
    /// The object it is about (`VirtualService default/reviews`).
    pub object: String,
    /// The object's file.
    pub file: PathBuf,
    /// The text.
    pub text: String,
}

impl fmt::Display for Message {
    /// `Error [IST0101] (VirtualService default/reviews) FILE: text`, as istioctl prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} [{}] ({}) {}: {}",
            self.code.level,
            self.code.code,
            self.object,
            self.file.display(),
            self.text
        )
    }
}

/// The store's errors and warnings, and the analyzers' findings: every message of a
/// snapshot, errors of the store first (in file order), then the rest by object.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Store errors that are not about one object's fields (YAML, unreadable files,
    /// unsupported kinds, duplicates), printed as they are.
    pub store_errors: Vec<ConfigError>,
    /// Every message with a code.
    pub messages: Vec<Message>,
}

impl Report {
    /// Whether anything makes the configuration wrong.
    pub fn has_errors(&self) -> bool {
        !self.store_errors.is_empty() || self.messages.iter().any(|m| m.code.level == Level::Error)
    }

    /// How many messages of `level`, store errors counted as errors.
    pub fn count(&self, level: Level) -> usize {
        let store = if level == Level::Error {
            self.store_errors.len()
        } else {
            0
        };
        store
            + self
                .messages
                .iter()
                .filter(|m| m.code.level == level)
                .count()
    }
}

fn warning_message(w: &ConfigWarning) -> Message {
    let code = match &w.problem {
        IstioProblem::VirtualService(VsProblem::UnreachableRule { .. }) => VS_UNREACHABLE_RULE,
        IstioProblem::VirtualService(VsProblem::IneffectiveMatch { .. }) => VS_INEFFECTIVE_MATCH,
        _ => SCHEMA_WARNING,
    };
    Message {
        code,
        object: w.object.to_string(),
        file: w.file.clone(),
        text: format!("{}: {}", w.field, w.problem),
    }
}

/// Analyzes a snapshot; `cluster_domain` completes Service host names.
pub fn analyze(snapshot: &ConfigSnapshot, cluster_domain: &str) -> Report {
    let mut report = Report::default();
    for e in &snapshot.errors {
        match e {
            // Reported by the reference checks, from `ConfigSnapshot::unresolved`.
            ConfigError::Invalid {
                problem: FieldProblem::SubsetNotDefined { .. },
                ..
            } => {}
            ConfigError::Invalid {
                file,
                object,
                field,
                problem,
            } => report.messages.push(Message {
                code: SCHEMA_VALIDATION_ERROR,
                object: object.to_string(),
                file: file.clone(),
                text: format!("{field}: {problem}"),
            }),
            other => report.store_errors.push(other.clone()),
        }
    }
    report
        .messages
        .extend(snapshot.warnings.iter().map(warning_message));
    let idx = index::Index::new(snapshot, cluster_domain);
    let mut found = Vec::new();
    hosts::check(&idx, &mut found);
    workloads::check(&idx, &mut found);
    authorization::check(&idx, &mut found);
    found.sort_by(|a, b| (&a.object, a.code.code).cmp(&(&b.object, b.code.code)));
    // One message per finding, even when a host is referenced by several routes.
    found.dedup_by(|a, b| a.object == b.object && a.code == b.code && a.text == b.text);
    report.messages.extend(found);
    report
}

#[cfg(test)]
mod tests;
