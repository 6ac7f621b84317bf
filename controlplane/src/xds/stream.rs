//! One ADS stream's protocol state (state of the world), independent of I/O: requests and
//! push requests in, responses out.
//!
//! Per resource type: the subscribed names, what was sent (per resource, a content hash), what
//! the proxy last ACKed, and the last response's nonce. Rules (Envoy's `xds_protocol`):
//! - a request without nonce (first on the stream, or after a reconnect) is answered with the
//!   full state of its type;
//! - a request whose nonce is not the last one sent for its type is stale: ignored and
//!   counted (`pilot_xds_expired_nonce`);
//! - a request with the current nonce ACKs (no `error_detail`) or NACKs (with one) the last
//!   response; a NACK leaves the proxy on what it ACKed before, so later diffs start from
//!   there. An ACK or NACK that adds EDS/RDS names is answered with those names' resources;
//! - a push recomputes the types [`super::scope::plan`] names for this proxy and sends each
//!   one that changed, in the order CDS, EDS, LDS, RDS: CDS and LDS with their full set, EDS
//!   and RDS with only the resources that changed (plus the load assignments of clusters
//!   that changed, which Envoy re-warms);
//! - make before break: a cluster that leaves the config stays in CDS until the LDS and RDS
//!   responses of the same push (which stop referencing it) are ACKed; then CDS is sent
//!   without it.

mod push;

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use tokio::sync::watch;
use tokio::time::Instant;

use super::cache::{Name, Shared};
use super::status::ProxyStatus;
use super::wire::SharedResponse;
use super::{rendered, ResourceType};
use crate::metrics::Metrics;
use crate::registry::{ConnectionId, MeshSnapshot, ProxyInfo};

/// Identifier sent as `control_plane.identifier`.
pub const CONTROL_PLANE_ID: &str = "mesh-controlplane";

/// A resource ready to send, shared with every stream that sends the same one.
type Resource = Shared;

/// The last response sent for a type.
#[derive(Debug)]
struct Sent {
    nonce: String,
    at: Instant,
}

/// The state of one type.
#[derive(Debug, Default)]
struct TypeState {
    /// Subscribed names (EDS, RDS).
    names: BTreeSet<String>,
    /// Content hash per resource, as of the last response sent.
    sent: BTreeMap<Name, u64>,
    /// Content hash per resource, as of the last ACK: what the proxy holds.
    acked: BTreeMap<Name, u64>,
    /// Names whose entry in `sent` was set or removed since the last ACK or NACK; elsewhere
    /// `sent` and `acked` agree. What an ACK or NACK settles, so that neither copies the
    /// whole set (an EDS ACK of one changed load assignment touches one entry).
    unacked: BTreeSet<Name>,
    /// Names of a NACKed response (EDS, RDS): recomputed by the next push whatever it is
    /// about.
    retry: BTreeSet<Name>,
    /// The last response was NACKed (and nothing ACKed since).
    nacked: bool,
    last: Option<Sent>,
}

/// Clusters kept in CDS after leaving the config (make before break).
#[derive(Debug, Default)]
struct PendingRemoval {
    /// The kept clusters, packed.
    kept: BTreeMap<Name, Resource>,
    /// Nonces (LDS, RDS) that must be ACKed before the clusters go.
    wait: BTreeMap<ResourceType, String>,
}

/// What a request meant.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RequestKind {
    /// First request of a type (or after reconnect).
    Initial,
    /// ACK of the last response.
    Ack,
    /// NACK of the last response.
    Nack,
    /// A nonce that is not the last one sent: ignored.
    Stale,
    /// A type this server does not serve: ignored.
    UnknownType,
}

/// One stream.
#[derive(Debug)]
pub(crate) struct StreamState {
    conn: ConnectionId,
    proxy: Option<Arc<ProxyInfo>>,
    types: BTreeMap<ResourceType, TypeState>,
    nonces: u64,
    status: watch::Sender<ProxyStatus>,
    metrics: Metrics,
    /// The snapshot of the last push handled: the `old` side of the next one.
    mesh: Arc<MeshSnapshot>,
    /// The cluster set last computed (without kept clusters).
    clusters: BTreeMap<Name, Resource>,
    removal: Option<PendingRemoval>,
}

/// The version of a type: a hash of what the proxy is sent, so that equal content gives equal
/// versions, also across streams and restarts.
fn version_of(sent: &BTreeMap<Name, u64>) -> String {
    let mut h = DefaultHasher::new();
    sent.hash(&mut h);
    format!("{:016x}", h.finish())
}

impl StreamState {
    /// A new stream; `status` is its syncz entry, `mesh` the snapshot it starts from.
    pub(crate) fn new(
        conn: ConnectionId,
        status: watch::Sender<ProxyStatus>,
        metrics: Metrics,
        mesh: Arc<MeshSnapshot>,
    ) -> StreamState {
        StreamState {
            conn,
            proxy: None,
            types: BTreeMap::new(),
            nonces: 0,
            status,
            metrics,
            mesh,
            clusters: BTreeMap::new(),
            removal: None,
        }
    }

    /// The proxy, once the first request named it.
    pub(crate) fn proxy(&self) -> Option<&Arc<ProxyInfo>> {
        self.proxy.as_ref()
    }

    /// Sets the proxy from the first request's node. Returns true the first time.
    pub(crate) fn identify(&mut self, req: &DiscoveryRequest) -> bool {
        if self.proxy.is_some() {
            return false;
        }
        let info = Arc::new(ProxyInfo::from_node(req.node.as_ref()));
        self.status.send_modify(|s| s.set_proxy(&info));
        self.proxy = Some(info);
        true
    }

    /// Whether `kind` is a full-state (wildcard) type for this proxy: CDS and LDS, except for
    /// proxyless gRPC clients, which ask for every type by name.
    fn full_set(&self, kind: ResourceType) -> bool {
        kind.is_full_set_for(self.proxy.as_deref())
    }

    fn node_label(&self) -> String {
        self.proxy
            .as_ref()
            .map(|p| p.id.clone())
            .unwrap_or_default()
    }

    /// Computes a type's resources for the proxy: every one for CDS and LDS, those of `names`
    /// for EDS and RDS.
    fn compute(
        &self,
        kind: ResourceType,
        mesh: &MeshSnapshot,
        names: &BTreeSet<String>,
    ) -> Vec<Resource> {
        let proxy = self.proxy.clone().unwrap_or_default();
        rendered(kind, mesh, &proxy, names)
    }

    /// Computes a state-of-the-world type (CDS, LDS): everything for a wildcard subscription,
    /// every subscribed name otherwise (proxyless gRPC).
    fn compute_full(&mut self, kind: ResourceType, mesh: &MeshSnapshot) -> Vec<Resource> {
        let names = if self.full_set(kind) {
            BTreeSet::new()
        } else {
            self.types
                .get(&kind)
                .map(|t| t.names.clone())
                .unwrap_or_default()
        };
        self.compute(kind, mesh, &names)
    }

    /// Handles one request; returns what it meant and the responses to send.
    pub(crate) fn on_request(
        &mut self,
        req: DiscoveryRequest,
        mesh: &MeshSnapshot,
    ) -> (RequestKind, Vec<SharedResponse>) {
        let Some(kind) = ResourceType::from_type_url(&req.type_url) else {
            return (RequestKind::UnknownType, Vec::new());
        };
        let state = self.types.entry(kind).or_default();
        // An ACK repeats the subscription it answers: compared in place, not copied.
        let same_names = req.resource_names.iter().eq(state.names.iter());
        let meaning = if req.response_nonce.is_empty() {
            RequestKind::Initial
        } else if state
            .last
            .as_ref()
            .is_none_or(|s| s.nonce != req.response_nonce)
        {
            self.metrics
                .expired_nonce
                .with_label_values(&[kind.short_name()])
                .inc();
            self.status.send_modify(|s| s.of(kind).expired_nonces += 1);
            return (RequestKind::Stale, Vec::new());
        } else {
            let elapsed = state
                .last
                .as_ref()
                .map_or(Duration::ZERO, |s| s.at.elapsed());
            self.metrics
                .ack_time
                .with_label_values(&[kind.short_name()])
                .observe(elapsed.as_secs_f64());
            if req.error_detail.is_some() {
                RequestKind::Nack
            } else {
                RequestKind::Ack
            }
        };
        let mut out = Vec::new();
        match meaning {
            RequestKind::Nack => self.on_nack(kind, &req),
            RequestKind::Ack => {
                self.on_ack(kind, &req);
                out.extend(self.removal_done(kind, &req.response_nonce));
            }
            _ => {}
        }
        let wildcard = self.full_set(kind);
        let state = self.types.entry(kind).or_default();
        let mut added = BTreeSet::new();
        if !wildcard && !same_names {
            let names: BTreeSet<String> = req.resource_names.iter().cloned().collect();
            added = names.difference(&state.names).cloned().collect();
            let removed: Vec<String> = state.names.difference(&names).cloned().collect();
            for name in &removed {
                state.sent.remove(name.as_str());
                state.acked.remove(name.as_str());
                state.unacked.remove(name.as_str());
            }
            // An ACK usually repeats the subscription: nothing to record then.
            if !added.is_empty() || !removed.is_empty() || meaning == RequestKind::Initial {
                state.names = names;
                let shown = state.names.clone();
                self.status
                    .send_modify(|s| s.of(kind).resource_names = shown);
            }
        }
        let state = self.types.entry(kind).or_default();
        if meaning == RequestKind::Initial {
            state.sent.clear();
            state.acked.clear();
            state.unacked.clear();
        }
        let nothing_asked = !wildcard && state.names.is_empty();
        if kind.is_full_set() {
            // CDS and LDS: every response carries everything subscribed.
            if !nothing_asked && (meaning == RequestKind::Initial || !added.is_empty()) {
                out.extend(self.full_response(kind, mesh, true));
            }
        } else if meaning == RequestKind::Initial && !nothing_asked {
            let names = state.names.clone();
            let started = std::time::Instant::now();
            let resources = self.compute(kind, mesh, &names);
            out.push(self.respond(kind, resources, Vec::new(), started.elapsed()));
        } else if !added.is_empty() {
            let started = std::time::Instant::now();
            let resources = self.compute(kind, mesh, &added);
            if !resources.is_empty() {
                out.push(self.respond(kind, resources, Vec::new(), started.elapsed()));
            }
        }
        (meaning, out)
    }

    fn on_ack(&mut self, kind: ResourceType, req: &DiscoveryRequest) {
        let state = self.types.entry(kind).or_default();
        for name in std::mem::take(&mut state.unacked) {
            match state.sent.get(&name) {
                Some(hash) => state.acked.insert(name, *hash),
                None => state.acked.remove(&name),
            };
        }
        state.nacked = false;
        let (version, nonce) = (req.version_info.clone(), req.response_nonce.clone());
        self.status.send_modify(|s| {
            let t = s.of(kind);
            t.acks += 1;
            t.acked_version = Some(version);
            t.acked_nonce = Some(nonce);
            t.last_acked = Some(super::status::now_rfc3339());
            t.last_nack = None;
        });
    }

    fn on_nack(&mut self, kind: ResourceType, req: &DiscoveryRequest) {
        let message = req
            .error_detail
            .as_ref()
            .map(|e| e.message.clone())
            .unwrap_or_default();
        let code = req.error_detail.as_ref().map_or(0, |e| e.code);
        tracing::warn!(conn = self.conn, r#type = kind.short_name(), error = %message, "NACK");
        // The proxy keeps what it ACKed before: the next diff starts from there.
        let state = self.types.entry(kind).or_default();
        for name in std::mem::take(&mut state.unacked) {
            let acked = state.acked.get(&name).copied();
            let sent = match acked {
                Some(hash) => state.sent.insert(name.clone(), hash),
                None => state.sent.remove(&name),
            };
            if sent.is_some() && sent != acked {
                state.retry.insert(name);
            }
        }
        state.nacked = true;
        self.metrics
            .xds_rejects
            .with_label_values(&[kind.short_name()])
            .inc();
        let per_type = match kind {
            ResourceType::Cluster => &self.metrics.cds_reject,
            ResourceType::Endpoint => &self.metrics.eds_reject,
            ResourceType::Listener => &self.metrics.lds_reject,
            ResourceType::Route => &self.metrics.rds_reject,
        };
        per_type
            .with_label_values(&[&self.node_label(), grpc_code_name(code)])
            .inc();
        let nonce = req.response_nonce.clone();
        self.status.send_modify(|s| {
            let t = s.of(kind);
            t.nacks += 1;
            t.last_nack = Some(message);
            t.nacked_nonce = Some(nonce);
        });
    }

    /// The CDS response that drops kept clusters, once the ACK of `nonce` for `kind` was the
    /// last one awaited.
    fn removal_done(&mut self, kind: ResourceType, nonce: &str) -> Option<SharedResponse> {
        let removal = self.removal.as_mut()?;
        if removal.wait.get(&kind).is_some_and(|n| n == nonce) {
            removal.wait.remove(&kind);
        }
        if !removal.wait.is_empty() {
            return None;
        }
        let removal = self.removal.take()?;
        tracing::debug!(
            conn = self.conn,
            clusters = removal.kept.len(),
            "kept clusters removed"
        );
        let resources: Vec<Resource> = self.clusters.values().cloned().collect();
        Some(self.respond(ResourceType::Cluster, resources, Vec::new(), Duration::ZERO))
    }

    /// A full-state type's response (CDS, LDS), or `None` when it need not be sent: not
    /// subscribed, or (unless `force`) unchanged.
    fn full_response(
        &mut self,
        kind: ResourceType,
        mesh: &MeshSnapshot,
        force: bool,
    ) -> Option<SharedResponse> {
        self.types.get(&kind)?;
        let started = std::time::Instant::now();
        let resources = self.compute_full(kind, mesh);
        if kind == ResourceType::Cluster {
            self.clusters = resources
                .iter()
                .map(|r| (r.name.clone(), r.clone()))
                .collect();
        }
        let state = self.types.get(&kind)?;
        let same = state.sent.len() == resources.len()
            && resources
                .iter()
                .all(|r| state.sent.get(&r.name) == Some(&r.hash));
        if same && !force {
            return None;
        }
        Some(self.respond(kind, resources, Vec::new(), started.elapsed()))
    }

    /// Builds and records a response. For CDS and LDS `resources` is the full set (plus
    /// `extra`, kept clusters), also when subscribed by name; for EDS and RDS the resources
    /// sent, merged into what the proxy holds.
    fn respond(
        &mut self,
        kind: ResourceType,
        resources: Vec<Resource>,
        extra: Vec<Resource>,
        build_time: Duration,
    ) -> SharedResponse {
        self.nonces += 1;
        let nonce = format!("{}-{}", self.conn, self.nonces);
        let state = self.types.entry(kind).or_default();
        if kind.is_full_set() {
            let mut left = std::mem::take(&mut state.sent);
            for r in resources.iter().chain(&extra) {
                if left.remove(&r.name) != Some(r.hash) {
                    state.unacked.insert(r.name.clone());
                }
                state.sent.insert(r.name.clone(), r.hash);
            }
            state.unacked.extend(left.into_keys());
        } else {
            for r in resources.iter().chain(&extra) {
                if state.sent.insert(r.name.clone(), r.hash) != Some(r.hash) {
                    state.unacked.insert(r.name.clone());
                }
            }
        }
        for r in resources.iter().chain(&extra) {
            state.retry.remove(&r.name);
        }
        let version = version_of(&state.sent);
        state.last = Some(Sent {
            nonce: nonce.clone(),
            at: Instant::now(),
        });
        let held = state.sent.len();
        let count = resources.len() + extra.len();
        let mut resources = resources;
        resources.extend(extra);
        let response = SharedResponse {
            version_info: version.clone(),
            resources,
            type_url: kind.type_url(),
            nonce: nonce.clone(),
            control_plane: CONTROL_PLANE_ID,
        };
        let size = response.encoded_len();
        let label = [kind.short_name()];
        self.metrics.pushes.with_label_values(&label).inc();
        self.metrics
            .push_time
            .with_label_values(&label)
            .observe(build_time.as_secs_f64());
        self.metrics
            .config_size
            .with_label_values(&label)
            .observe(size as f64);
        self.status.send_modify(|s| {
            let t = s.of(kind);
            t.sent_version = Some(version.clone());
            t.sent_nonce = Some(nonce.clone());
            t.sent_resources = count;
            t.resources = held;
            t.last_sent = Some(super::status::now_rfc3339());
            t.responses += 1;
            t.bytes_sent += size as u64;
        });
        tracing::debug!(conn = self.conn, r#type = kind.short_name(), %version, %nonce, count, size, "push");
        response
    }
}

#[cfg(test)]
mod tests;

/// The name of a `google.rpc.Code` (the `err` label of istiod's per-type reject metrics).
fn grpc_code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "Canceled",
        2 => "Unknown",
        3 => "InvalidArgument",
        4 => "DeadlineExceeded",
        5 => "NotFound",
        6 => "AlreadyExists",
        7 => "PermissionDenied",
        8 => "ResourceExhausted",
        9 => "FailedPrecondition",
        10 => "Aborted",
        11 => "OutOfRange",
        12 => "Unimplemented",
        13 => "Internal",
        14 => "Unavailable",
        15 => "DataLoss",
        16 => "Unauthenticated",
        _ => "Code",
    }
}
