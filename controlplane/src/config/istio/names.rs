//! Istio's rules for names: DNS labels and hosts (FQDNs, wildcard hosts, `namespace/host`),
//! Kubernetes label maps, workload selectors, `exportTo` visibility and gateway references
//! (`pkg/config/validation/agent`, `pkg/config/labels`, `pkg/config/visibility`,
//! `pkg/config/host`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use regex::Regex;

use super::types::PolicyTargetReference;
use super::{at, key, Checker};

/// What is wrong with a name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// A domain name longer than 255.
    #[error("domain name {0:?} too long (max 255)")]
    DomainTooLong(String),
    /// An empty domain name.
    #[error("empty domain name not allowed")]
    EmptyDomain,
    /// An all-numeric top-level domain.
    #[error("domain name {domain:?} invalid (top level domain {tld:?} cannot be all-numeric)")]
    NumericTld {
        /// The domain.
        domain: String,
        /// Its last label.
        tld: String,
    },
    /// A label that is not a DNS-1123 label.
    #[error("domain name {domain:?} invalid (label {label:?} invalid)")]
    BadLabel {
        /// The domain.
        domain: String,
        /// The label.
        label: String,
    },
    /// A wildcard in the middle of a host.
    #[error("partial wildcard {0:?} not allowed")]
    PartialWildcard(String),
    /// A short name where an FQDN is required (Sidecar, Gateway hosts).
    #[error("short names (non FQDN) are not allowed")]
    ShortName,
    /// A Sidecar host without `namespace/`.
    #[error("host must be of form namespace/dnsName")]
    NamespaceSlashHost,
    /// `namespace/host` with an empty part.
    #[error("config namespace and dnsName in host entry cannot be empty")]
    EmptyNamespaceOrHost,
    /// A bad namespace in a Sidecar or Gateway host.
    #[error("invalid namespace value {value:?} in {context}")]
    HostNamespace {
        /// The namespace part.
        value: String,
        /// `sidecar` or `gateway`.
        context: &'static str,
    },
    /// A bad label key.
    #[error("invalid tag key: {0:?}")]
    LabelKey(String),
    /// A label key whose DNS prefix is longer than 253.
    #[error("invalid tag key: {0:?} (DNS prefix is too long)")]
    LabelKeyPrefix(String),
    /// A label key whose name is longer than 63.
    #[error("invalid tag key: {0:?} (name is too long)")]
    LabelKeyName(String),
    /// A bad label value.
    #[error("invalid tag value: {0:?}")]
    LabelValue(String),
    /// An empty selector key.
    #[error("empty key is not supported in selector: {0:?}")]
    SelectorEmptyKey(String),
    /// A `*` in a selector.
    #[error("wildcard is not supported in selector: {0:?}")]
    SelectorWildcard(String),
    /// A selector with no labels (a warning: it selects every workload of the namespace).
    #[error("workload selector specified without labels")]
    SelectorWithoutLabels,
    /// The same exportTo entry twice.
    #[error("duplicate entries in exportTo for entry {0}")]
    ExportToDuplicate(String),
    /// `.` and the object's own namespace both in exportTo.
    #[error("duplicate entries in exportTo: . and current namespace {0}")]
    ExportToDotAndNamespace(String),
    /// `~` outside a ServiceEntry.
    #[error("exportTo ~ (none) is not allowed for Istio configuration objects")]
    ExportToNone,
    /// An exportTo entry that is neither `.`, `*` nor a namespace.
    #[error("only .,*, or a valid DNS 1123 label is allowed as exportTo entry")]
    ExportToEntry,
    /// `*` with other entries.
    #[error("cannot have both public (*) and non-public exportTo values for a resource")]
    ExportToPublicAndMore,
    /// `~` with other entries.
    #[error("cannot export service entry to no one (~) and someone")]
    ExportToNoneAndMore,
    /// A DestinationRule with a selector exporting several namespaces.
    #[error("destination rule with workload selector cannot have multiple entries in exportTo")]
    ExportToSelectorMultiple,
    /// A DestinationRule with a selector exporting beyond its namespace.
    #[error(
        "destination rule with workload selector cannot have exportTo beyond current namespace"
    )]
    ExportToSelectorBeyond,
    /// A gateway reference `namespace/` or `/name`.
    #[error("config namespace and gateway name cannot be empty")]
    GatewayEmpty,
    /// A bad namespace in a gateway reference.
    #[error("invalid value for namespace: {0:?}")]
    GatewayNamespace(String),
    /// A bad name in a gateway reference.
    #[error("invalid value for gateway name: {0:?}")]
    GatewayName(String),
    /// A legacy `name.namespace` gateway reference (a warning).
    #[error("using legacy gatewayName format {given:?}; prefer the <namespace>/<name> format: {recommended:?}")]
    GatewayLegacy {
        /// As written.
        given: String,
        /// `namespace/name`.
        recommended: String,
    },
    /// `targetRef` without a name.
    #[error("targetRef name must be set")]
    TargetRefName,
    /// `targetRef` with a namespace.
    #[error("targetRef namespace must not be set; cross namespace referencing is not supported")]
    TargetRefNamespace,
    /// `targetRef` to a kind policies cannot target.
    #[error("targetRef must be to one of [core/Service networking.istio.io/ServiceEntry gateway.networking.k8s.io/Gateway gateway.networking.k8s.io/GatewayClass] but was {group}/{kind}")]
    TargetRefKind {
        /// Its group.
        group: String,
        /// Its kind.
        kind: String,
    },
    /// Both a selector and target references.
    #[error("only one of targetRefs or workloadSelector can be set")]
    SelectorAndTargetRef,
    /// `istio.io/dry-run` on a kind other than AuthorizationPolicy.
    #[error("{0} has unsupported annotation istio.io/dry-run, please remove the annotation")]
    DryRunUnsupported(String),
    /// `istio.io/dry-run` that is not a boolean.
    #[error(
        "{object} has annotation istio.io/dry-run with invalid value ({value}): not a boolean"
    )]
    DryRunValue {
        /// `namespace/name`.
        object: String,
        /// The value.
        value: String,
    },
    /// `istio.io/dry-run` on an AUDIT or CUSTOM policy.
    #[error("the annotation istio.io/dry-run currently only supports action ALLOW/DENY, found action {action} in {object}")]
    DryRunAction {
        /// The action.
        action: &'static str,
        /// `namespace/name`.
        object: String,
    },
    /// Istio's test annotation that makes the webhook reject the object.
    #[error("\"internal.istio.io/webhook-always-reject\" annotation found, rejecting")]
    AlwaysReject,
}

/// Go's `strconv.ParseBool`.
pub fn is_go_bool(value: &str) -> bool {
    matches!(
        value,
        "1" | "t" | "T" | "TRUE" | "true" | "True" | "0" | "f" | "F" | "FALSE" | "false" | "False"
    )
}

const DNS1123_LABEL: &str = "[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?";
const QUALIFIED_NAME: &str = "(?:[A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";

static LABEL: LazyLock<Regex> = LazyLock::new(|| re(&format!("^{DNS1123_LABEL}$")));
static WILDCARD_LABEL: LazyLock<Regex> =
    LazyLock::new(|| re(&format!(r"^(\*|(\*|\*-)?{DNS1123_LABEL})$")));
static TAG_KEY: LazyLock<Regex> = LazyLock::new(|| {
    re(&format!(
        r"^({DNS1123_LABEL}(?:\.{DNS1123_LABEL})*/)?({QUALIFIED_NAME})$"
    ))
});
static LABEL_VALUE: LazyLock<Regex> = LazyLock::new(|| re(&format!("^({QUALIFIED_NAME})?$")));

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("static pattern")
}

/// Istio's `IsDNS1123Label` (letters of either case, digits, `-`; at most 63).
pub fn is_dns1123_label(value: &str) -> bool {
    value.len() <= 63 && LABEL.is_match(value)
}

/// A DNS-1123 label, or one with a leading `*` / `*-`, or `*`.
pub fn is_wildcard_dns1123_label(value: &str) -> bool {
    value.len() <= 63 && WILDCARD_LABEL.is_match(value)
}

fn dns1123_preconditions(name: &str) -> Result<(), Problem> {
    if name.len() > 255 {
        return Err(Problem::DomainTooLong(name.to_string()));
    }
    if name.is_empty() {
        return Err(Problem::EmptyDomain);
    }
    Ok(())
}

fn dns1123_labels(domain: &str) -> Result<(), Problem> {
    let parts: Vec<&str> = domain.split('.').collect();
    let tld = parts[parts.len() - 1];
    if !tld.is_empty() && tld.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Problem::NumericTld {
            domain: domain.to_string(),
            tld: tld.to_string(),
        });
    }
    for (i, label) in parts.iter().enumerate() {
        // A trailing dot (`istio.io.`) is allowed.
        if i == parts.len() - 1 && label.is_empty() {
            return Ok(());
        }
        if !is_dns1123_label(label) {
            return Err(Problem::BadLabel {
                domain: domain.to_string(),
                label: label.to_string(),
            });
        }
    }
    Ok(())
}

/// A fully qualified domain name (no wildcard).
pub fn validate_fqdn(fqdn: &str) -> Result<(), Problem> {
    dns1123_preconditions(fqdn)?;
    dns1123_labels(fqdn)
}

/// An FQDN whose first label may be a wildcard (`*`, `*.example.com`, `*-foo.example.com`).
pub fn validate_wildcard_domain(domain: &str) -> Result<(), Problem> {
    dns1123_preconditions(domain)?;
    let (first, rest) = match domain.split_once('.') {
        Some((f, r)) => (f, Some(r)),
        None => (domain, None),
    };
    if !is_wildcard_dns1123_label(first) {
        return Err(Problem::BadLabel {
            domain: domain.to_string(),
            label: first.to_string(),
        });
    }
    match rest {
        Some(rest) => dns1123_labels(rest),
        None => Ok(()),
    }
}

/// The host rule of a VirtualService bound to gateways: as [`validate_wildcard_domain`], and
/// auto-generated SNI names (`outbound_.80_._.e2e.foobar.mesh`) for TLS routes.
pub fn validate_wildcard_domain_for_gateway_vs(sni: bool, domain: &str) -> Result<(), Problem> {
    dns1123_preconditions(domain)?;
    let first = domain.split('.').next().unwrap_or_default();
    if sni && first == "outbound_" {
        let generated = domain
            .strip_prefix("outbound_")
            .and_then(|r| r.chars().nth(1))
            .is_some_and(|c| ('0'..='8').contains(&c));
        return if generated {
            Ok(())
        } else {
            Err(Problem::BadLabel {
                domain: domain.to_string(),
                label: first.to_string(),
            })
        };
    }
    validate_wildcard_domain(domain)
}

/// A `*` anywhere but a leading `*.` (or the whole host).
pub fn validate_partial_wildcard(host: &str) -> Result<(), Problem> {
    if host.contains('*') && host.len() != 1 && !host.starts_with("*.") {
        return Err(Problem::PartialWildcard(host.to_string()));
    }
    Ok(())
}

fn sidecar_or_gateway_host(host: &str, is_gateway: bool) -> Vec<Problem> {
    let mut out = Vec::new();
    if host != "*" && !host.contains('.') {
        out.push(Problem::ShortName);
    }
    if let Err(e) = validate_wildcard_domain(host) {
        // Gateways also accept an IP address as the host.
        if !is_gateway || host.parse::<std::net::IpAddr>().is_err() {
            out.push(e);
        }
    }
    out.extend(validate_partial_wildcard(host).err());
    out
}

/// A Sidecar egress host or Gateway server host: `namespace/dnsName` (`*`, `.` or a namespace
/// for the namespace; `~` too in Sidecars); Gateways also take a bare host.
pub fn validate_namespace_slash_host(host: &str, is_gateway: bool) -> Vec<Problem> {
    let Some((ns, name)) = host.split_once('/') else {
        if is_gateway {
            return sidecar_or_gateway_host(host, true);
        }
        return vec![Problem::NamespaceSlashHost];
    };
    let mut out = Vec::new();
    if ns.is_empty() || name.is_empty() {
        out.push(Problem::EmptyNamespaceOrHost);
    }
    let special = ns == "*" || ns == "." || (!is_gateway && ns == "~");
    if !special && !is_dns1123_label(ns) {
        out.push(Problem::HostNamespace {
            value: ns.to_string(),
            context: if is_gateway { "gateway" } else { "sidecar" },
        });
    }
    out.extend(sidecar_or_gateway_host(name, is_gateway));
    out
}

/// Istio's `labels.Instance.Validate` over a label map, one problem per bad key or value.
pub(crate) fn validate_labels(c: &mut Checker, path: &str, labels: &BTreeMap<String, String>) {
    for (k, v) in labels {
        c.check(key(path, k), validate_label_key(k));
        if !LABEL_VALUE.is_match(v) {
            c.err(key(path, k), Problem::LabelValue(v.clone()));
        }
    }
}

fn validate_label_key(k: &str) -> Result<(), Problem> {
    let Some(caps) = TAG_KEY.captures(k) else {
        return Err(Problem::LabelKey(k.to_string()));
    };
    if caps.get(1).is_some_and(|p| p.as_str().len() - 1 > 253) {
        return Err(Problem::LabelKeyPrefix(k.to_string()));
    }
    if caps.get(2).is_some_and(|n| n.as_str().len() > 63) {
        return Err(Problem::LabelKeyName(k.to_string()));
    }
    Ok(())
}

/// A workload selector's labels: no empty key, no `*`; no labels at all is a warning.
pub(crate) fn validate_selector_labels(
    c: &mut Checker,
    path: &str,
    labels: &BTreeMap<String, String>,
) {
    for (k, v) in labels {
        let pair = format!("{k}={v}");
        if k.is_empty() {
            c.err(key(path, k), Problem::SelectorEmptyKey(pair.clone()));
        }
        if k.contains('*') || v.contains('*') {
            c.err(key(path, k), Problem::SelectorWildcard(pair));
        }
    }
    if labels.is_empty() {
        c.warn(path, Problem::SelectorWithoutLabels);
    }
}

/// Istio's `visibility.Instance.Validate`.
fn validate_visibility(entry: &str) -> Result<(), Problem> {
    match entry {
        "." | "*" => Ok(()),
        "~" => Err(Problem::ExportToNone),
        other if is_dns1123_label(other) => Ok(()),
        _ => Err(Problem::ExportToEntry),
    }
}

/// `exportTo`: no duplicates (`.` counts as the object's namespace), `*` alone, `~` alone and
/// only for ServiceEntries, and for a DestinationRule with a selector only its own namespace.
pub(crate) fn validate_export_to(
    c: &mut Checker,
    path: &str,
    export_to: &[String],
    is_service_entry: bool,
    dr_with_selector: bool,
) {
    if export_to.is_empty() {
        return;
    }
    let namespace = c.namespace.clone();
    let mut set = BTreeSet::new();
    for (i, e) in export_to.iter().enumerate() {
        let field = super::idx(path, i);
        let k = if e == "." {
            namespace.clone()
        } else {
            e.clone()
        };
        if set.contains(&k) {
            if &k != e {
                c.err(field, Problem::ExportToDotAndNamespace(namespace.clone()));
            } else {
                c.err(field, Problem::ExportToDuplicate(e.clone()));
            }
        } else if is_service_entry && e == "~" {
            set.insert(k);
        } else {
            match validate_visibility(&k) {
                Ok(()) => {
                    set.insert(k);
                }
                Err(p) => c.err(field, p),
            }
        }
    }
    if dr_with_selector && !set.is_empty() {
        if set.contains(&namespace) {
            if set.len() > 1 {
                c.err(path, Problem::ExportToSelectorMultiple);
            }
        } else {
            c.err(path, Problem::ExportToSelectorBeyond);
        }
    }
    if set.contains("*") && export_to.len() > 1 {
        c.err(path, Problem::ExportToPublicAndMore);
    }
    if set.contains("~") && export_to.len() > 1 {
        c.err(path, Problem::ExportToNoneAndMore);
    }
}

/// Gateway references of a VirtualService or a match: `namespace/name`, or a legacy FQDN.
/// As in Istio, checking stops at the first legacy (slash-less) entry.
pub(crate) fn validate_gateway_names(c: &mut Checker, path: &str, names: &[String]) {
    for (i, name) in names.iter().enumerate() {
        let field = super::idx(path, i);
        let Some((ns, gw)) = name.split_once('/') else {
            if name.contains('.') {
                let mut parts = name.split('.');
                let first = parts.next().unwrap_or_default();
                let second = parts.next().unwrap_or_default();
                c.warn(
                    field.clone(),
                    Problem::GatewayLegacy {
                        given: name.clone(),
                        recommended: format!("{second}/{first}"),
                    },
                );
            }
            c.check(field, validate_fqdn(name));
            return;
        };
        if ns.is_empty() || gw.is_empty() {
            c.err(field.clone(), Problem::GatewayEmpty);
        }
        if !is_dns1123_label(ns) {
            c.err(field.clone(), Problem::GatewayNamespace(ns.to_string()));
        }
        if !is_dns1123_label(gw) {
            c.err(field, Problem::GatewayName(gw.to_string()));
        }
    }
}

/// A policy's `targetRef`: a name, no namespace, and a Service, ServiceEntry, Gateway or
/// GatewayClass.
pub(crate) fn validate_target_ref(c: &mut Checker, path: &str, r: &PolicyTargetReference) {
    if r.name.is_empty() {
        c.err(at(path, "name"), Problem::TargetRefName);
    }
    if !r.namespace.is_empty() {
        c.err(at(path, "namespace"), Problem::TargetRefNamespace);
    }
    let group = if r.group.is_empty() {
        "core"
    } else {
        r.group.as_str()
    };
    let allowed = matches!(
        (group, r.kind.as_str()),
        ("core", "Service")
            | ("networking.istio.io", "ServiceEntry")
            | ("gateway.networking.k8s.io", "Gateway")
            | ("gateway.networking.k8s.io", "GatewayClass")
    );
    if !allowed {
        c.err(
            at(path, "kind"),
            Problem::TargetRefKind {
                group: r.group.clone(),
                kind: r.kind.clone(),
            },
        );
    }
}

/// Istio's `host.Name.Matches`: whether two (possibly wildcard) hosts overlap.
pub fn hosts_match(a: &str, b: &str) -> bool {
    match (a.strip_prefix('*'), b.strip_prefix('*')) {
        (Some(sa), Some(sb)) => {
            if a.len() > b.len() {
                sa.ends_with(sb)
            } else {
                sb.ends_with(sa)
            }
        }
        (Some(sa), None) => b.ends_with(sa),
        (None, Some(sb)) => a.ends_with(sb),
        (None, None) => a == b,
    }
}

/// Istio's `host.Name.SubsetOf`: whether every name `a` matches is matched by `b`.
pub fn host_subset_of(a: &str, b: &str) -> bool {
    match (a.strip_prefix('*'), b.strip_prefix('*')) {
        (Some(sa), Some(sb)) => sa.ends_with(sb),
        (Some(_), None) => false,
        (None, Some(sb)) => a.ends_with(sb),
        (None, None) => a == b,
    }
}
