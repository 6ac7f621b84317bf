//! Sidecar resources as the registry applies them: which one governs a proxy, which hosts its
//! egress listeners import, and its outbound traffic policy.
//!
//! Selection, as Istio's `PushContext.getSidecarScope`: in the proxy's namespace, a Sidecar
//! whose `workloadSelector` matches the proxy's labels (by name order, standing in for
//! Istio's creation time), else that namespace's Sidecar without selector, else the root
//! namespace's (`istio-system`) Sidecar without selector, else none (everything exported to
//! the namespace is visible, ALLOW_ANY).
//!
//! Egress `hosts` are `namespace/dnsName`: the namespace is `*` (any), `.` (the proxy's own
//! namespace, also for the root namespace's default), `~` (none) or a name; the name is an
//! FQDN, `*` or a `*.suffix` wildcard. A Sidecar without egress listeners imports `*/*`.
//! Ingress listeners, `captureMode`, Unix-socket binds, `inboundConnectionPool` and
//! `outboundTrafficPolicy.egressProxy` are not applied.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Serialize;

use super::model::Protocol;
use crate::config::istio::sidecar::{OutboundMode as ApiMode, Sidecar};
use crate::config::istio::IstioConfig;

/// The namespace holding mesh-wide defaults.
pub const ROOT_NAMESPACE: &str = "istio-system";

/// What happens to traffic for destinations outside the registry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum OutboundMode {
    /// Passed through to the original destination (Istio's mesh default).
    #[default]
    AllowAny,
    /// Sent to the black hole.
    RegistryOnly,
}

/// The namespace part of an egress host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum NamespaceMatch {
    /// `*`.
    Any,
    /// `.`: the namespace of the proxy the Sidecar is applied to.
    Local,
    /// `~`: none.
    Nothing,
    /// A namespace name.
    Named(String),
}

/// One egress host, `namespace/dnsName`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HostImport {
    /// Which namespaces.
    pub namespace: NamespaceMatch,
    /// Which hosts: an FQDN, `*` or `*.suffix`.
    pub host: String,
}

impl HostImport {
    /// Parses `ns/host`; a host without a namespace part is not valid in a Sidecar.
    pub fn parse(value: &str) -> Option<HostImport> {
        let (ns, host) = value.split_once('/')?;
        let namespace = match ns {
            "*" => NamespaceMatch::Any,
            "." => NamespaceMatch::Local,
            "~" => NamespaceMatch::Nothing,
            name => NamespaceMatch::Named(name.to_string()),
        };
        Some(HostImport {
            namespace,
            host: host.to_string(),
        })
    }

    /// Whether a service `hostname` of `namespace` is imported, for a proxy of
    /// `proxy_namespace`: the namespace matches and every name the service's host matches is
    /// matched by the import's (Istio's `SubsetOf`).
    pub fn imports(&self, namespace: &str, hostname: &str, proxy_namespace: Option<&str>) -> bool {
        let ns_ok = match &self.namespace {
            NamespaceMatch::Any => true,
            NamespaceMatch::Local => proxy_namespace == Some(namespace),
            NamespaceMatch::Nothing => false,
            NamespaceMatch::Named(n) => n == namespace,
        };
        ns_ok && crate::config::istio::names::host_subset_of(hostname, &self.host)
    }
}

/// The port of an egress listener.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EgressPort {
    /// Port number.
    pub number: u16,
    /// Protocol of the listener (sniffed when unknown or empty).
    pub protocol: Protocol,
}

/// One egress listener of a Sidecar.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EgressRule {
    /// Its port; `None` for the catch-all listener.
    pub port: Option<EgressPort>,
    /// The address its listeners stand for instead of the services' (`bind`, IPs only).
    pub bind: Option<IpAddr>,
    /// Imported hosts.
    pub hosts: Vec<HostImport>,
}

/// A validated Sidecar, as the registry applies it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SidecarRule {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `workloadSelector.labels`; `None` applies to the whole namespace.
    pub selector: Option<BTreeMap<String, String>>,
    /// Egress listeners, in order (the catch-all last); `*/*` when the Sidecar has none.
    pub egress: Vec<EgressRule>,
    /// `outboundTrafficPolicy.mode`, when the Sidecar sets a policy.
    pub outbound: Option<OutboundMode>,
}

impl SidecarRule {
    /// The rule of a validated Sidecar.
    pub fn from_config(sc: &IstioConfig<Sidecar>) -> SidecarRule {
        let mut egress: Vec<EgressRule> = sc
            .spec
            .egress
            .iter()
            .filter(|l| !l.bind.starts_with("unix://"))
            .map(|l| EgressRule {
                port: l.port.as_ref().and_then(|p| {
                    Some(EgressPort {
                        number: u16::try_from(p.number).ok().filter(|n| *n > 0)?,
                        protocol: Protocol::parse(&p.protocol).unwrap_or(Protocol::Auto),
                    })
                }),
                bind: l.bind.parse().ok(),
                hosts: l
                    .hosts
                    .iter()
                    .filter_map(|h| HostImport::parse(h))
                    .collect(),
            })
            .collect();
        if sc.spec.egress.is_empty() {
            egress.push(EgressRule {
                port: None,
                bind: None,
                hosts: vec![HostImport {
                    namespace: NamespaceMatch::Any,
                    host: "*".to_string(),
                }],
            });
        }
        SidecarRule {
            namespace: sc.namespace.clone(),
            name: sc.name.clone(),
            selector: sc.spec.workload_selector.as_ref().map(|s| s.labels.clone()),
            egress,
            outbound: sc.spec.outbound_traffic_policy.as_ref().map(|p| {
                match p.mode.unwrap_or(ApiMode::RegistryOnly) {
                    ApiMode::RegistryOnly => OutboundMode::RegistryOnly,
                    ApiMode::AllowAny => OutboundMode::AllowAny,
                }
            }),
        }
    }

    /// Whether the rule's selector matches `labels` (a rule without selector matches all).
    fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        self.selector
            .as_ref()
            .is_none_or(|sel| sel.iter().all(|(k, v)| labels.get(k) == Some(v)))
    }
}

/// The Sidecar governing a proxy of `namespace` with `labels`, from `rules` (sorted by
/// namespace and name).
pub fn select<'a>(
    rules: &'a [std::sync::Arc<SidecarRule>],
    namespace: Option<&str>,
    labels: &BTreeMap<String, String>,
) -> Option<&'a SidecarRule> {
    let find = |ns: &str, selected: bool| {
        rules
            .iter()
            .find(|r| {
                r.namespace == ns
                    && r.selector.is_some() == selected
                    && (!selected || r.selects(labels))
            })
            .map(|r| &**r)
    };
    if let Some(ns) = namespace {
        if let Some(rule) = find(ns, true).or_else(|| find(ns, false)) {
            return Some(rule);
        }
    }
    find(ROOT_NAMESPACE, false)
}
