//! AuthorizationPolicy into Envoy RBAC, as istiod does it (`pilot/pkg/security/authz`).
//!
//! - Scope: a policy applies to the workloads of its namespace that its `selector` matches
//!   (no selector, or empty labels: all of them); a policy in the root namespace
//!   (`istio-system`) applies to every namespace. Policies with `targetRef`/`targetRefs`
//!   attach to gateways and waypoints in Istio, never to sidecars: they select no workload
//!   here (the analyzer says so).
//! - Placement: on the proxy's inbound listener, every filter chain but the black hole gets
//!   the filters: HTTP chains `envoy.filters.http.rbac` first among the HTTP filters (before
//!   fault, CORS and the router), TCP chains `envoy.filters.network.rbac` before `tcp_proxy`.
//!   An HTTP chain gets the rules built for HTTP, a TCP chain those built for TCP, where
//!   HTTP-only attributes cannot apply ([`rule`]).
//! - Path normalization: every connection manager of the proxy gets `normalize_path`,
//!   `merge_slashes` and `path_with_escaped_slashes_action` from the mesh's
//!   [`PathNormalization`] mode (Istio's `meshConfig.pathNormalization`, default `BASE`).
//! - Trust domain: the mesh's (its cluster domain, as the CA's), without aliases.

pub mod builder;
pub mod matchers;
pub mod rule;
pub mod trust_domain;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use envoy_types::pb::envoy::config::listener::v3::{filter, Filter, FilterChain, Listener};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::PathWithEscapedSlashesAction, HttpConnectionManager, HttpFilter,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy;
use envoy_types::pb::google::protobuf::BoolValue;
use envoy_types::util::pack_any;
use prost::{Message, Name};
use serde::Serialize;

use crate::config::istio::authorization_policy::Action;
use crate::config::{ConfigSnapshot, Object};
use builder::{PolicyObject, Selected};
use trust_domain::Bundle;

/// The namespace whose policies apply mesh-wide.
pub const ROOT_NAMESPACE: &str = "istio-system";

/// Istio's `meshConfig.pathNormalization`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum PathNormalization {
    /// No normalization.
    None,
    /// RFC 3986 normalization (`normalize_path`).
    #[default]
    Base,
    /// `BASE` and merging of consecutive slashes.
    MergeSlashes,
    /// `MERGE_SLASHES` after decoding `%2F` and `%5C`.
    DecodeAndMergeSlashes,
}

impl FromStr for PathNormalization {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_uppercase().as_str() {
            "NONE" => Ok(PathNormalization::None),
            "BASE" | "DEFAULT" => Ok(PathNormalization::Base),
            "MERGE_SLASHES" => Ok(PathNormalization::MergeSlashes),
            "DECODE_AND_MERGE_SLASHES" => Ok(PathNormalization::DecodeAndMergeSlashes),
            _ => Err(format!(
                "`{s}`: expected NONE, BASE, MERGE_SLASHES or DECODE_AND_MERGE_SLASHES"
            )),
        }
    }
}

impl fmt::Display for PathNormalization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathNormalization::None => "NONE",
            PathNormalization::Base => "BASE",
            PathNormalization::MergeSlashes => "MERGE_SLASHES",
            PathNormalization::DecodeAndMergeSlashes => "DECODE_AND_MERGE_SLASHES",
        })
    }
}

impl PathNormalization {
    /// Sets a connection manager's fields as istiod does for this mode.
    pub fn apply(self, hcm: &mut HttpConnectionManager) {
        let (normalize, merge, decode) = match self {
            PathNormalization::None => (false, false, false),
            PathNormalization::Base => (true, false, false),
            PathNormalization::MergeSlashes => (true, true, false),
            PathNormalization::DecodeAndMergeSlashes => (true, true, true),
        };
        hcm.normalize_path = Some(BoolValue { value: normalize });
        hcm.merge_slashes = merge;
        hcm.path_with_escaped_slashes_action = if decode {
            PathWithEscapedSlashesAction::UnescapeAndForward as i32
        } else {
            PathWithEscapedSlashesAction::KeepUnchanged as i32
        };
    }
}

/// The AuthorizationPolicies of a config snapshot and the mesh-wide settings they are
/// translated with.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Authorization {
    /// Every policy, by namespace then name.
    policies: Vec<Arc<PolicyObject>>,
    /// Path normalization of every connection manager.
    pub path_normalization: PathNormalization,
}

impl Authorization {
    /// The policies of `config`.
    pub fn build(config: &ConfigSnapshot, path_normalization: PathNormalization) -> Authorization {
        let mut by_key = BTreeMap::new();
        for o in config.iter() {
            if let Object::AuthorizationPolicy(p) = o {
                by_key.insert(
                    (p.namespace.clone(), p.name.clone()),
                    Arc::new((**p).clone()),
                );
            }
        }
        Authorization {
            policies: by_key.into_values().collect(),
            path_normalization,
        }
    }

    /// Every policy.
    pub fn policies(&self) -> impl Iterator<Item = &PolicyObject> {
        self.policies.iter().map(|p| &**p)
    }

    /// The policies that apply to a workload of `namespace` with `labels` (root namespace
    /// first, then the workload's), by action.
    pub fn select(
        &self,
        namespace: Option<&str>,
        labels: &BTreeMap<String, String>,
    ) -> Selected<'_> {
        let mut out = Selected::default();
        let namespaces = [
            Some(ROOT_NAMESPACE),
            namespace.filter(|ns| *ns != ROOT_NAMESPACE),
        ];
        for ns in namespaces.into_iter().flatten() {
            for p in self.policies().filter(|p| p.namespace == ns) {
                if !selects(p, labels) {
                    continue;
                }
                let list = match p.spec.action() {
                    Action::Allow => &mut out.allow,
                    Action::Deny => &mut out.deny,
                    Action::Audit => &mut out.audit,
                    Action::Custom => &mut out.custom,
                };
                list.push(p);
            }
        }
        out
    }
}

/// Whether a policy's selector picks a workload with `labels` (`targetRef` policies never
/// pick a sidecar).
pub fn selects(p: &PolicyObject, labels: &BTreeMap<String, String>) -> bool {
    if p.spec.target_ref.is_some() || !p.spec.target_refs.is_empty() {
        return false;
    }
    p.spec
        .selector
        .as_ref()
        .is_none_or(|s| s.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// The RBAC filters of a workload's inbound chains.
#[derive(Clone, Debug, Default)]
pub struct InboundFilters {
    /// For HTTP chains, first in the HTTP filter list.
    pub http: Vec<HttpFilter>,
    /// For TCP chains, before `tcp_proxy`.
    pub tcp: Vec<Filter>,
}

impl InboundFilters {
    /// The filters for a workload's `selected` policies, with the mesh's trust domain.
    pub fn new(selected: &Selected<'_>, trust_domain: &str) -> InboundFilters {
        let bundle = Bundle::new(trust_domain, &[]);
        InboundFilters {
            http: builder::build_all(selected, false, &bundle)
                .into_iter()
                .map(builder::http_filter)
                .collect(),
            tcp: builder::build_all(selected, true, &bundle)
                .into_iter()
                .map(builder::network_filter)
                .collect(),
        }
    }
}

fn typed<M: Message + Name + Default>(f: &Filter) -> Option<M> {
    match &f.config_type {
        Some(filter::ConfigType::TypedConfig(any)) if any.type_url == M::type_url() => {
            M::decode(any.value.as_slice()).ok()
        }
        _ => None,
    }
}

fn retyped<M: Message + Name>(f: &mut Filter, m: M) {
    f.config_type = Some(filter::ConfigType::TypedConfig(pack_any(m)));
}

/// Sets path normalization on every connection manager of `listener`.
pub fn normalize_paths(listener: &mut Listener, mode: PathNormalization) {
    let chains = listener
        .filter_chains
        .iter_mut()
        .chain(listener.default_filter_chain.as_mut());
    for chain in chains {
        for f in &mut chain.filters {
            if let Some(mut hcm) = typed::<HttpConnectionManager>(f) {
                mode.apply(&mut hcm);
                retyped(f, hcm);
            }
        }
    }
}

/// Adds `filters` to each inbound chain but `skip` (the black hole): RBAC first in HTTP
/// connection managers, before `tcp_proxy` in TCP chains.
pub fn apply_inbound(listener: &mut Listener, filters: &InboundFilters, skip: &str) {
    if filters.http.is_empty() && filters.tcp.is_empty() {
        return;
    }
    let chains = listener
        .filter_chains
        .iter_mut()
        .chain(listener.default_filter_chain.as_mut());
    for chain in chains.filter(|c| c.name != skip) {
        add_to_chain(chain, filters);
    }
}

fn add_to_chain(chain: &mut FilterChain, filters: &InboundFilters) {
    let Some(last) = chain.filters.last_mut() else {
        return;
    };
    if let Some(mut hcm) = typed::<HttpConnectionManager>(last) {
        let mut http = filters.http.clone();
        http.append(&mut hcm.http_filters);
        hcm.http_filters = http;
        retyped(last, hcm);
    } else if typed::<TcpProxy>(last).is_some() {
        let at = chain.filters.len() - 1;
        for (i, f) in filters.tcp.iter().enumerate() {
            chain.filters.insert(at + i, f.clone());
        }
    }
}
