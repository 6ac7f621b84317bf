//! Istio's traffic rules as the translation reads them: VirtualServices with short names
//! resolved and delegates merged into their roots, DestinationRules consolidated per namespace
//! and host, and the per-proxy selection istiod makes (visibility by `exportTo`, `gateways`
//! `mesh`, the DestinationRule lookup order).
//!
//! Contract:
//! - [`Rules::build`] is a pure function of the config snapshot and the cluster domain.
//! - Short host names resolve against the namespace of the object that wrote them
//!   (`reviews` in `default` is `reviews.default.svc.cluster.local`), as istiod does.
//! - VirtualServices are ordered as istiod orders configs of equal creation time: by name, then
//!   namespace. For one host, the first VirtualService selected for a proxy wins (sidecars do
//!   not merge VirtualServices; gateways would).
//! - Delegate VirtualServices (no hosts) are never applied alone: a root's `delegate` route is
//!   replaced by the delegate's routes merged with it ([`delegate`]).

pub mod delegate;
pub mod destination;

use serde::Serialize;

pub use destination::{DestinationRuleEntry, MergedRule};

use crate::config::istio::{IstioConfig, VirtualService};
use crate::config::{ConfigSnapshot, Object};
use crate::registry::ProxyInfo;

/// The namespace whose DestinationRules apply mesh-wide (Istio's root namespace).
pub const ROOT_NAMESPACE: &str = "istio-system";

/// The gateway name that stands for every sidecar.
pub const MESH_GATEWAY: &str = "mesh";

/// Istio's `ResolveShortnameToFQDN`: a name without a dot is a Service of `namespace`.
pub fn resolve_host(host: &str, namespace: &str, domain: &str) -> String {
    if host.is_empty() || host == "*" || host.contains('.') {
        host.to_string()
    } else {
        format!("{host}.{namespace}.svc.{domain}")
    }
}

/// Istio's `exportTo` visibility of an object of `own` namespace from namespace `from`: empty
/// or `*` is public, `.` is the object's own namespace, `~` is no one.
pub fn visible(export_to: &[String], own: &str, from: &str) -> bool {
    export_to.is_empty()
        || export_to
            .iter()
            .any(|e| e == "*" || (e == "." && own == from) || e == from)
}

/// A VirtualService ready for translation.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VirtualServiceRule {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `apiVersion` as written.
    pub api_version: String,
    /// The spec with hosts and destination hosts fully qualified and delegates merged.
    pub spec: VirtualService,
}

impl VirtualServiceRule {
    /// Whether the VirtualService applies to sidecars (`gateways` empty or naming `mesh`).
    pub fn applies_to_mesh(&self) -> bool {
        self.spec.gateways.is_empty() || self.spec.gateways.iter().any(|g| g == MESH_GATEWAY)
    }

    /// Istio's config path, as in route metadata (`/apis/GROUP/VERSION/namespaces/NS/
    /// virtual-service/NAME`).
    pub fn config_path(&self) -> String {
        format!(
            "/apis/{}/namespaces/{}/virtual-service/{}",
            self.api_version, self.namespace, self.name
        )
    }
}

/// Istio's traffic rules of one config snapshot.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Rules {
    /// The cluster domain the short names were resolved with.
    pub cluster_domain: String,
    /// VirtualServices with hosts (roots with their delegates merged), in istiod's order.
    pub virtual_services: Vec<VirtualServiceRule>,
    /// DestinationRules, hosts resolved, in istiod's order.
    pub destination_rules: Vec<DestinationRuleEntry>,
}

fn resolve_destination(
    d: &mut crate::config::istio::types::Destination,
    namespace: &str,
    domain: &str,
) {
    d.host = resolve_host(&d.host, namespace, domain);
}

/// Resolves every host of a VirtualService against its namespace.
fn resolve_virtual_service(spec: &mut VirtualService, namespace: &str, domain: &str) {
    for h in &mut spec.hosts {
        *h = resolve_host(h, namespace, domain);
    }
    for r in &mut spec.http {
        for d in r.route.iter_mut().flatten() {
            if let Some(d) = &mut d.destination {
                resolve_destination(d, namespace, domain);
            }
        }
        if let Some(m) = &mut r.mirror {
            resolve_destination(m, namespace, domain);
        }
        for m in &mut r.mirrors {
            if let Some(d) = &mut m.destination {
                resolve_destination(d, namespace, domain);
            }
        }
    }
    for d in spec
        .tcp
        .iter_mut()
        .flat_map(|r| &mut r.route)
        .chain(spec.tls.iter_mut().flat_map(|r| &mut r.route))
    {
        if let Some(d) = &mut d.destination {
            resolve_destination(d, namespace, domain);
        }
    }
}

impl Rules {
    /// The rules of `config`, short names resolved with `cluster_domain`.
    pub fn build(config: &ConfigSnapshot, cluster_domain: &str) -> Rules {
        let mut virtual_services = Vec::new();
        let mut destination_rules = Vec::new();
        for object in config.iter() {
            match object {
                Object::VirtualService(vs) => virtual_services.push(resolved(vs, cluster_domain)),
                Object::DestinationRule(dr) => {
                    destination_rules.push(DestinationRuleEntry::new(dr, cluster_domain))
                }
                _ => {}
            }
        }
        virtual_services.sort_by_key(|v| (v.name.clone(), v.namespace.clone()));
        destination_rules.sort_by_key(|d| (d.name.clone(), d.namespace.clone()));
        Rules {
            cluster_domain: cluster_domain.to_string(),
            virtual_services: delegate::merge(virtual_services),
            destination_rules,
        }
    }

    /// The VirtualServices a sidecar applies, in istiod's order: bound to `mesh`, visible from
    /// the proxy's namespace; those of the proxy's own namespace exported only to it first,
    /// then those exported to it by name, then the public ones.
    pub fn virtual_services_for(&self, proxy: &ProxyInfo) -> Vec<&VirtualServiceRule> {
        let ns = proxy.namespace.as_deref().unwrap_or_default();
        let rank = |vs: &VirtualServiceRule| -> Option<u8> {
            let export = &vs.spec.export_to;
            if !vs.applies_to_mesh() || !visible(export, &vs.namespace, ns) {
                return None;
            }
            let public = export.is_empty() || export.iter().any(|e| e == "*");
            Some(if public {
                2
            } else if vs.namespace == ns && export.iter().any(|e| e == ".") {
                0
            } else {
                1
            })
        };
        let mut out: Vec<(u8, &VirtualServiceRule)> = self
            .virtual_services
            .iter()
            .filter_map(|vs| rank(vs).map(|r| (r, vs)))
            .collect();
        out.sort_by_key(|(r, _)| *r);
        out.into_iter().map(|(_, vs)| vs).collect()
    }
}

fn resolved(vs: &IstioConfig<VirtualService>, domain: &str) -> VirtualServiceRule {
    let mut spec = vs.spec.clone();
    resolve_virtual_service(&mut spec, &vs.namespace, domain);
    VirtualServiceRule {
        name: vs.name.clone(),
        namespace: vs.namespace.clone(),
        api_version: vs.api_version.clone(),
        spec,
    }
}

#[cfg(test)]
mod tests;
