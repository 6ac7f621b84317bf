//! A push on one stream: recompute what the plan names, send what changed, in make-before-break
//! order.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant};

use super::{Name, PendingRemoval, Resource, SharedResponse, StreamState};
use crate::registry::MeshSnapshot;
use crate::xds::push::{cluster_host, PushRequest};
use crate::xds::scope::{self, EdsScope};
use crate::xds::ResourceType::{self, Cluster, Endpoint, Listener, Route};

/// Resources computed for a type, and how long that took.
type Computed = (Vec<Resource>, Duration);

impl StreamState {
    /// Whether the proxy subscribed to `kind` (has sent a request for it).
    fn subscribed(&self, kind: ResourceType) -> bool {
        self.types.contains_key(&kind)
    }

    /// The subscribed names of a named type.
    fn names(&self, kind: ResourceType) -> BTreeSet<String> {
        self.types
            .get(&kind)
            .map(|t| t.names.clone())
            .unwrap_or_default()
    }

    /// Names of a type rejected by the last NACK and not sent since.
    fn retry(&self, kind: ResourceType) -> BTreeSet<Name> {
        let Some(t) = self.types.get(&kind) else {
            return BTreeSet::new();
        };
        t.retry
            .iter()
            .filter(|n| t.names.contains(&***n))
            .cloned()
            .collect()
    }

    /// The computed resources whose content differs from what was sent.
    fn changed(&self, kind: ResourceType, resources: &[Resource]) -> BTreeSet<Name> {
        let sent = self.types.get(&kind).map(|t| &t.sent);
        resources
            .iter()
            .filter(|r| sent.and_then(|s| s.get(&r.name)) != Some(&r.hash))
            .map(|r| r.name.clone())
            .collect()
    }

    /// A by-name type (EDS, RDS; every type for proxyless gRPC), recomputed for `wanted` and
    /// for the names a NACK rejected: `Some` with the resources that differ from what was
    /// sent, the rejected ones and those of `always`.
    fn named_changed(
        &self,
        kind: ResourceType,
        mesh: &MeshSnapshot,
        mut wanted: BTreeSet<String>,
        always: &BTreeSet<String>,
    ) -> Option<Computed> {
        let retry = self.retry(kind);
        wanted.extend(retry.iter().map(|n| n.to_string()));
        if wanted.is_empty() {
            return None;
        }
        let started = StdInstant::now();
        let resources = self.compute(kind, mesh, &wanted);
        let changed = self.changed(kind, &resources);
        let send: Vec<Resource> = resources
            .into_iter()
            .filter(|r| {
                changed.contains(&r.name) || always.contains(&*r.name) || retry.contains(&r.name)
            })
            .collect();
        (!send.is_empty()).then(|| (send, started.elapsed()))
    }

    /// A full-state type, recomputed: `Some` when its set differs from what was sent.
    fn full_changed(&mut self, kind: ResourceType, mesh: &MeshSnapshot) -> Option<Computed> {
        let started = StdInstant::now();
        let resources = self.compute_full(kind, mesh);
        let state = self.types.get(&kind)?;
        let same = state.sent.len() == resources.len() && self.changed(kind, &resources).is_empty();
        // After a NACK the proxy is told again, even of what it holds, so that it ends on an
        // ACKed response.
        (!same || state.nacked).then(|| (resources, started.elapsed()))
    }

    /// Handles a push: `request` covers every change from the snapshot of the previous push
    /// to `mesh`. Returns the responses to send, in order.
    pub(crate) fn on_push(
        &mut self,
        request: &PushRequest,
        mesh: &Arc<MeshSnapshot>,
    ) -> Vec<SharedResponse> {
        let old = std::mem::replace(&mut self.mesh, mesh.clone());
        let Some(proxy) = self.proxy.clone() else {
            return Vec::new();
        };
        let plan = scope::plan(request, &old, mesh, &proxy);
        if plan.is_empty() {
            return Vec::new();
        }
        let wants: Vec<ResourceType> = ResourceType::ALL
            .into_iter()
            .filter(|k| plan.types.contains(*k) && self.subscribed(*k))
            .collect();
        let wants = |kind| wants.contains(&kind);

        // CDS: the full set, and the clusters whose definition changed.
        let mut previous_clusters = BTreeMap::new();
        let mut cds = None;
        let mut changed_clusters = BTreeSet::new();
        if wants(Cluster) {
            let started = StdInstant::now();
            let resources = self.compute_full(Cluster, mesh);
            changed_clusters = self.changed(Cluster, &resources);
            let clusters = resources
                .iter()
                .map(|r| (r.name.clone(), r.clone()))
                .collect();
            previous_clusters = std::mem::replace(&mut self.clusters, clusters);
            cds = Some((resources, started.elapsed()));
        }

        // EDS: the changed load assignments of the planned clusters, and those of clusters
        // whose definition changed (Envoy warms a changed cluster again and needs them).
        let mut eds = None;
        let eds_names = self.types.get(&Endpoint).map(|t| &t.names);
        if let Some(eds_names) = eds_names.filter(|n| !n.is_empty()) {
            let rewarm: BTreeSet<String> = eds_names
                .iter()
                .filter(|n| changed_clusters.contains(n.as_str()))
                .cloned()
                .collect();
            let mut wanted = rewarm.clone();
            if plan.types.contains(Endpoint) {
                match &plan.eds {
                    EdsScope::All => wanted.extend(eds_names.iter().cloned()),
                    EdsScope::Hosts(hosts) => wanted.extend(
                        eds_names
                            .iter()
                            .filter(|n| cluster_host(n).is_some_and(|h| hosts.contains(h)))
                            .cloned(),
                    ),
                }
            }
            eds = self.named_changed(Endpoint, mesh, wanted, &rewarm);
        }

        // LDS: the full set when it changed (of the subscribed names for proxyless gRPC).
        let lds = if wants(Listener) {
            self.full_changed(Listener, mesh)
        } else {
            None
        };

        // RDS: the route configurations that changed.
        let rds = if wants(Route) {
            self.named_changed(Route, mesh, self.names(Route), &BTreeSet::new())
        } else {
            self.named_changed(Route, mesh, BTreeSet::new(), &BTreeSet::new())
        };

        let mut out = Vec::new();
        let references_change = lds.is_some() || rds.is_some();
        out.extend(self.cds_response(cds, &previous_clusters, references_change));
        if let Some((resources, took)) = eds {
            out.push(self.respond(Endpoint, resources, Vec::new(), took));
        }
        let mut wait = BTreeMap::new();
        for (kind, computed) in [(Listener, lds), (Route, rds)] {
            if let Some((resources, took)) = computed {
                let response = self.respond(kind, resources, Vec::new(), took);
                wait.insert(kind, response.nonce.clone());
                out.push(response);
            }
        }
        if let Some(removal) = self.removal.as_mut() {
            if !wait.is_empty() {
                removal.wait = wait;
            }
        }
        if !out.is_empty() {
            self.metrics
                .convergence_time
                .observe(request.start.elapsed().as_secs_f64());
        }
        out
    }

    /// The CDS response of a push, if one is due, keeping the clusters that left the config
    /// while listeners or routes may still reference them (make before break): they stay
    /// until the LDS and RDS responses sent with this push (or a pending earlier one) are
    /// ACKed. `references_change`: LDS or RDS is sent in this push.
    fn cds_response(
        &mut self,
        cds: Option<Computed>,
        previous: &BTreeMap<Name, Resource>,
        references_change: bool,
    ) -> Option<SharedResponse> {
        let (resources, took) = cds?;
        let names: BTreeSet<&Name> = resources.iter().map(|r| &r.name).collect();
        // After a NACK the proxy is told again, even of what it holds, so that it ends on an
        // ACKed response.
        let changed = !self.changed(Cluster, &resources).is_empty()
            || self.types.get(&Cluster).is_some_and(|t| t.nacked);
        let pending = self.removal.take().unwrap_or_default();
        let waiting = !pending.wait.is_empty();
        let previous_wait = pending.wait;
        let mut kept = pending.kept;
        kept.retain(|n, _| !names.contains(n));
        let sent: Vec<Name> = self
            .types
            .get(&Cluster)
            .map(|t| t.sent.keys().cloned().collect())
            .unwrap_or_default();
        for name in sent {
            if names.contains(&name) || kept.contains_key(&name) {
                continue;
            }
            if let Some(entry) = previous.get(&name) {
                kept.insert(name, entry.clone());
            }
        }
        if kept.is_empty() {
            return changed.then(|| self.respond(Cluster, resources, Vec::new(), took));
        }
        if references_change || waiting {
            let extra: Vec<Resource> = kept.values().cloned().collect();
            tracing::debug!(
                conn = self.conn,
                kept = kept.len(),
                "clusters kept until listeners and routes stop referencing them"
            );
            // The proxy holds the kept clusters already: only new or changed ones need a
            // response now.
            let response = changed.then(|| self.respond(Cluster, resources, extra, took));
            // The caller replaces the awaited nonces when this push sends LDS or RDS.
            self.removal = Some(PendingRemoval {
                kept,
                wait: previous_wait,
            });
            return response;
        }
        // Nothing references the removed clusters any more: they go now.
        Some(self.respond(Cluster, resources, Vec::new(), took))
    }
}
