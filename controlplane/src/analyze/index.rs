//! The objects of a snapshot by kind, with their files, and host name resolution as Istio does
//! it (a short name is a Service of the referring object's namespace).

use std::collections::BTreeMap;
use std::path::Path;

use super::{Code, Message};
use crate::config::istio::names::hosts_match;
use crate::config::istio::{
    AuthorizationPolicy, DestinationRule, Gateway, IstioConfig, PeerAuthentication, ServiceEntry,
    Sidecar, VirtualService, WorkloadEntry,
};
use crate::config::objects::{Object, Service};
use crate::config::ConfigSnapshot;

/// An Istio object and its file.
pub(super) struct Entry<'a, S> {
    /// The object.
    pub obj: &'a IstioConfig<S>,
    /// Its file.
    pub file: &'a Path,
}

impl<S> Entry<'_, S> {
    /// A message about this object.
    pub fn message(&self, kind: &str, code: Code, text: String) -> Message {
        Message {
            code,
            object: format!("{kind} {}/{}", self.obj.namespace, self.obj.name),
            file: self.file.to_path_buf(),
            text,
        }
    }
}

/// Every object of a snapshot, by kind.
pub(super) struct Index<'a> {
    /// The cluster domain (`cluster.local`).
    pub domain: String,
    /// Services and their files.
    pub services: Vec<(&'a Service, &'a Path)>,
    /// VirtualServices.
    pub virtual_services: Vec<Entry<'a, VirtualService>>,
    /// DestinationRules.
    pub destination_rules: Vec<Entry<'a, DestinationRule>>,
    /// Gateways.
    pub gateways: Vec<Entry<'a, Gateway>>,
    /// ServiceEntries.
    pub service_entries: Vec<Entry<'a, ServiceEntry>>,
    /// WorkloadEntries.
    pub workload_entries: Vec<Entry<'a, WorkloadEntry>>,
    /// Sidecars.
    pub sidecars: Vec<Entry<'a, Sidecar>>,
    /// PeerAuthentications.
    pub peer_authentications: Vec<Entry<'a, PeerAuthentication>>,
    /// AuthorizationPolicies.
    pub authorization_policies: Vec<Entry<'a, AuthorizationPolicy>>,
}

impl<'a> Index<'a> {
    /// Indexes `snapshot` (objects in force, kept versions included, and those rejected for
    /// their references only).
    pub fn new(snapshot: &'a ConfigSnapshot, domain: &str) -> Index<'a> {
        let mut idx = Index {
            domain: domain.to_string(),
            services: Vec::new(),
            virtual_services: Vec::new(),
            destination_rules: Vec::new(),
            gateways: Vec::new(),
            service_entries: Vec::new(),
            workload_entries: Vec::new(),
            sidecars: Vec::new(),
            peer_authentications: Vec::new(),
            authorization_policies: Vec::new(),
        };
        // Objects rejected only for their references are analyzed too, so that every problem
        // of theirs is reported.
        for stored in snapshot.objects.values().chain(&snapshot.unresolved) {
            let file = stored.file.as_path();
            match &stored.object {
                Object::Service(s) => idx.services.push((s, file)),
                Object::VirtualService(o) => idx.virtual_services.push(Entry { obj: o, file }),
                Object::DestinationRule(o) => idx.destination_rules.push(Entry { obj: o, file }),
                Object::Gateway(o) => idx.gateways.push(Entry { obj: o, file }),
                Object::ServiceEntry(o) => idx.service_entries.push(Entry { obj: o, file }),
                Object::WorkloadEntry(o) => idx.workload_entries.push(Entry { obj: o, file }),
                Object::Sidecar(o) => idx.sidecars.push(Entry { obj: o, file }),
                Object::PeerAuthentication(o) => {
                    idx.peer_authentications.push(Entry { obj: o, file })
                }
                Object::AuthorizationPolicy(o) => {
                    idx.authorization_policies.push(Entry { obj: o, file })
                }
                Object::Namespace(_)
                | Object::Endpoints(_)
                | Object::EndpointSlice(_)
                | Object::Telemetry(_)
                | Object::ConfigMap(_) => {}
            }
        }
        idx
    }

    /// Istio's short name resolution: a host without a dot is a Service of `namespace`.
    pub fn resolve(&self, host: &str, namespace: &str) -> String {
        if host.contains('.') || host.starts_with('*') {
            host.to_string()
        } else {
            format!("{host}.{namespace}.svc.{}", self.domain)
        }
    }

    /// A Service's host name.
    pub fn service_host(&self, s: &Service) -> String {
        format!("{}.{}.svc.{}", s.name, s.namespace, self.domain)
    }

    /// The Service whose host is `fqdn`.
    pub fn service(&self, fqdn: &str) -> Option<&'a Service> {
        self.services
            .iter()
            .map(|(s, _)| *s)
            .find(|s| self.service_host(s) == fqdn)
    }

    /// Whether a ServiceEntry visible from `namespace` defines `host`.
    pub fn service_entry_defines(&self, host: &str, namespace: &str) -> bool {
        self.service_entries.iter().any(|e| {
            visible(&e.obj.spec.export_to, &e.obj.namespace, namespace)
                && e.obj.spec.hosts.iter().any(|h| hosts_match(h, host))
        })
    }

    /// Whether a Service or a ServiceEntry defines `fqdn` for objects of `namespace`.
    pub fn host_known(&self, fqdn: &str, namespace: &str) -> bool {
        self.service(fqdn).is_some() || self.service_entry_defines(fqdn, namespace)
    }

    /// Label sets of known workloads by namespace: WorkloadEntries' labels (complete) and
    /// Services' selectors (what every selected pod has at least).
    pub fn workloads(&self) -> BTreeMap<&'a str, Vec<Workload<'a>>> {
        let mut out: BTreeMap<&str, Vec<Workload<'_>>> = BTreeMap::new();
        for e in &self.workload_entries {
            out.entry(e.obj.namespace.as_str())
                .or_default()
                .push(Workload {
                    labels: &e.obj.spec.labels,
                    complete: true,
                });
        }
        for (s, _) in &self.services {
            if let Some(sel) = &s.selector {
                out.entry(s.namespace.as_str()).or_default().push(Workload {
                    labels: sel,
                    complete: false,
                });
            }
        }
        out
    }
}

/// A known workload (or family of pods) by its labels.
pub(super) struct Workload<'a> {
    /// Its labels.
    pub labels: &'a BTreeMap<String, String>,
    /// Whether these are all its labels (a WorkloadEntry) or a lower bound (a Service's pods).
    pub complete: bool,
}

impl Workload<'_> {
    /// Whether a selector can select this workload.
    pub fn may_match(&self, selector: &BTreeMap<String, String>) -> bool {
        selector.iter().all(|(k, v)| match self.labels.get(k) {
            Some(have) => have == v,
            None => !self.complete,
        })
    }
}

/// Istio's `exportTo` visibility: empty or `*` is public, `.` is the object's namespace, `~`
/// no one.
pub(super) fn visible(export_to: &[String], own: &str, from: &str) -> bool {
    export_to.is_empty()
        || export_to
            .iter()
            .any(|e| e == "*" || (e == "." && own == from) || e == from)
}
