//! Which proxies a push reaches, and which resource types it recomputes for each: istiod's
//! `ProxyNeedsPush` and the per-generator "skipped configs" lists for sidecars.
//!
//! A proxy is pushed only when it *depends on* one of the changed configs
//! ([`depends_on`]): namespace-local policy reaches only its namespace (or every namespace
//! from the root namespace), `exportTo` limits who sees a VirtualService, DestinationRule or
//! ServiceEntry. The registry's Sidecar scoping (egress `hosts`) plugs into [`depends_on`]
//! as one more condition. For each config the proxy depends on, the kind decides the types
//! ([`kind_types`]); endpoint changes recompute only EDS, and only for the changed hosts; a
//! Service's change recomputes the load assignments of its own host only.

use std::collections::BTreeSet;

use super::push::PushRequest;
use super::ResourceType;
use crate::config::{Kind, Object, ObjectKey};
use crate::registry::{MeshSnapshot, ProxyInfo, ServiceKey};

/// Istio's root namespace: policy there applies to the whole mesh.
pub const ROOT_NAMESPACE: &str = "istio-system";

/// A set of resource types.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TypeSet(u8);

impl TypeSet {
    /// No type.
    pub const NONE: TypeSet = TypeSet(0);
    /// CDS, EDS, LDS and RDS.
    pub const ALL: TypeSet = TypeSet(0b1111);

    fn bit(kind: ResourceType) -> u8 {
        match kind {
            ResourceType::Cluster => 1,
            ResourceType::Endpoint => 2,
            ResourceType::Listener => 4,
            ResourceType::Route => 8,
        }
    }

    /// The set of the given types.
    pub fn of(kinds: &[ResourceType]) -> TypeSet {
        TypeSet(kinds.iter().fold(0, |acc, k| acc | TypeSet::bit(*k)))
    }

    /// Whether `kind` is in the set.
    pub fn contains(self, kind: ResourceType) -> bool {
        self.0 & TypeSet::bit(kind) != 0
    }

    /// The union.
    pub fn union(self, other: TypeSet) -> TypeSet {
        TypeSet(self.0 | other.0)
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// The types a change of `kind` can affect in a sidecar's config (istiod's skipped-config
/// lists of its CDS, EDS, LDS and RDS generators, for sidecars).
pub fn kind_types(kind: Kind) -> TypeSet {
    use ResourceType::{Cluster as C, Endpoint as E, Listener as L, Route as R};
    match kind {
        Kind::Namespace
        | Kind::Service
        | Kind::ServiceEntry
        | Kind::DestinationRule
        | Kind::Sidecar => TypeSet::ALL,
        // Routes and the clusters they name; endpoints are the same.
        Kind::VirtualService => TypeSet::of(&[C, L, R]),
        // mTLS settings of clusters and inbound listeners.
        Kind::PeerAuthentication => TypeSet::of(&[C, E, L]),
        // RBAC filters in listeners; access-log and tracing settings of listeners (Telemetry,
        // and the mesh config's providers in a ConfigMap).
        Kind::AuthorizationPolicy | Kind::Telemetry | Kind::ConfigMap => TypeSet::of(&[L]),
        Kind::Endpoints | Kind::EndpointSlice | Kind::WorkloadEntry => TypeSet::of(&[E]),
        // Gateways configure gateway proxies, never sidecars.
        Kind::Gateway => TypeSet::NONE,
    }
}

/// `exportTo` of the object, when its kind has one.
fn export_to(object: &Object) -> Option<&[String]> {
    match object {
        Object::VirtualService(c) => Some(&c.spec.export_to),
        Object::DestinationRule(c) => Some(&c.spec.export_to),
        Object::ServiceEntry(c) => Some(&c.spec.export_to),
        _ => None,
    }
}

/// Whether an `exportTo` list written in `namespace` reaches `proxy_ns` (empty: everywhere,
/// the mesh default).
pub fn exported_to(export_to: &[String], namespace: &str, proxy_ns: &str) -> bool {
    export_to.is_empty()
        || export_to.iter().any(|e| match e.as_str() {
            "*" => true,
            "." => namespace == proxy_ns,
            "~" => false,
            ns => ns == proxy_ns,
        })
}

/// Whether the proxy's config can depend on the config `key`, as it was in `old` or is in
/// `new` (a deleted object matters to those who saw it). An anonymous proxy (no namespace)
/// depends on everything mesh-wide.
pub fn depends_on(
    old: &MeshSnapshot,
    new: &MeshSnapshot,
    proxy: &ProxyInfo,
    key: &ObjectKey,
) -> bool {
    let Some(proxy_ns) = proxy.namespace.as_deref() else {
        return true;
    };
    match key.kind {
        // A server's PeerAuthentication reaches its clients everywhere: its `DISABLE` ports
        // take the `tlsMode` metadata off its endpoints (istiod pushes it to every proxy).
        Kind::PeerAuthentication => true,
        // Namespace-local policy, or mesh-wide from the root namespace.
        Kind::Sidecar | Kind::AuthorizationPolicy | Kind::Telemetry => {
            key.namespace == proxy_ns || key.namespace == ROOT_NAMESPACE
        }
        Kind::VirtualService | Kind::DestinationRule | Kind::ServiceEntry => [old, new]
            .iter()
            .filter_map(|m| m.config.objects.get(key))
            .any(|stored| {
                export_to(&stored.object).is_none_or(|e| exported_to(e, &key.namespace, proxy_ns))
            }),
        _ => true,
    }
}

/// What a proxy's load assignments are recomputed for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EdsScope {
    /// Every subscribed cluster.
    All,
    /// The subscribed clusters of these hosts.
    Hosts(BTreeSet<String>),
}

/// What one push means for one proxy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyPush {
    /// The types to recompute (and send if changed).
    pub types: TypeSet,
    /// For EDS: which clusters.
    pub eds: EdsScope,
}

impl ProxyPush {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.types.is_empty()
    }
}

/// What `request` (from `old` to `new`) means for `proxy`.
pub fn plan(
    request: &PushRequest,
    old: &MeshSnapshot,
    new: &MeshSnapshot,
    proxy: &ProxyInfo,
) -> ProxyPush {
    let endpoints = || EdsScope::Hosts(request.endpoints_updated.clone());
    if !request.full {
        let types = if request.endpoints_updated.is_empty() {
            TypeSet::NONE
        } else {
            TypeSet::of(&[ResourceType::Endpoint])
        };
        return ProxyPush {
            types,
            eds: endpoints(),
        };
    }
    if request.configs_updated.is_empty() {
        return ProxyPush {
            types: TypeSet::ALL,
            eds: EdsScope::All,
        };
    }
    let mut types = TypeSet::NONE;
    // A Service's change reaches the load assignments of its own clusters only (an
    // assignment is the Service port's endpoints, filtered by DestinationRule subsets and
    // PeerAuthentication, whose changes recompute them all).
    let mut eds_hosts = request.endpoints_updated.clone();
    let mut eds_all = false;
    for key in &request.configs_updated {
        if !depends_on(old, new, proxy, key) {
            continue;
        }
        let kinds = kind_types(key.kind);
        types = types.union(kinds);
        if kinds.contains(ResourceType::Endpoint) {
            match service_host(old, new, key) {
                Some(host) => {
                    eds_hosts.insert(host.to_string());
                }
                None => eds_all = true,
            }
        }
    }
    let eds = if eds_all {
        EdsScope::All
    } else {
        EdsScope::Hosts(eds_hosts)
    };
    if !request.endpoints_updated.is_empty() {
        types = types.union(TypeSet::of(&[ResourceType::Endpoint]));
    }
    ProxyPush { types, eds }
}

/// The host of the registry Service `key` names (as it is in `new`, or was in `old`); `None`
/// for any other kind of config.
fn service_host<'a>(
    old: &'a MeshSnapshot,
    new: &'a MeshSnapshot,
    key: &ObjectKey,
) -> Option<&'a str> {
    if key.kind != Kind::Service {
        return None;
    }
    let service = ServiceKey {
        namespace: key.namespace.clone(),
        name: key.name.clone(),
    };
    new.services
        .get(&service)
        .or_else(|| old.services.get(&service))
        .map(|s| s.hostname.as_str())
}

#[cfg(test)]
mod tests;
