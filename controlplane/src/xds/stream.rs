//! One ADS stream's protocol state (state of the world), independent of I/O: requests and
//! registry changes in, responses out.
//!
//! Per resource type: the subscribed names, the last response sent (version, nonce, content
//! hash), the last ACKed version and the last NACK. Rules (Envoy's `xds_protocol`):
//! - a request without nonce (first on the stream, or after a reconnect) is answered;
//! - a request whose nonce is not the last one sent for its type is stale and ignored;
//! - a request with the current nonce ACKs (no `error_detail`) or NACKs (with one) the last
//!   response; it is answered only if it changes the names of an EDS/RDS subscription;
//! - on a registry change, each subscribed type whose content changed for this proxy is
//!   sent again, in the order CDS, EDS, LDS, RDS.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::ControlPlane;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use tokio::sync::watch;

use super::status::ProxyStatus;
use super::{resources, ResourceType};
use crate::registry::{ConnectionId, MeshSnapshot, ProxyInfo};

/// Identifier sent as `control_plane.identifier`.
pub const CONTROL_PLANE_ID: &str = "mesh-controlplane";

/// What was last sent for a type.
#[derive(Debug)]
struct Sent {
    nonce: String,
    hash: u64,
}

/// The state of one type.
#[derive(Debug, Default)]
struct TypeState {
    names: BTreeSet<String>,
    sent: Option<Sent>,
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
}

fn content_hash(resources: &[(String, envoy_types::pb::google::protobuf::Any)]) -> u64 {
    let mut h = DefaultHasher::new();
    for (name, any) in resources {
        name.hash(&mut h);
        any.type_url.hash(&mut h);
        any.value.hash(&mut h);
    }
    h.finish()
}

impl StreamState {
    /// A new stream; `status` is its syncz entry.
    pub(crate) fn new(conn: ConnectionId, status: watch::Sender<ProxyStatus>) -> StreamState {
        StreamState {
            conn,
            proxy: None,
            types: BTreeMap::new(),
            nonces: 0,
            status,
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

    /// Handles one request; returns what it meant and the responses to send.
    pub(crate) fn on_request(
        &mut self,
        req: DiscoveryRequest,
        mesh: &MeshSnapshot,
    ) -> (RequestKind, Vec<DiscoveryResponse>) {
        let Some(kind) = ResourceType::from_type_url(&req.type_url) else {
            return (RequestKind::UnknownType, Vec::new());
        };
        let names: BTreeSet<String> = req.resource_names.iter().cloned().collect();
        let full_set = kind.is_full_set_for(self.proxy.as_deref());
        let state = self.types.entry(kind).or_default();
        let meaning = if req.response_nonce.is_empty() {
            RequestKind::Initial
        } else if state
            .sent
            .as_ref()
            .is_none_or(|s| s.nonce != req.response_nonce)
        {
            return (RequestKind::Stale, Vec::new());
        } else if let Some(err) = &req.error_detail {
            let message = err.message.clone();
            self.status.send_modify(|s| {
                let t = s.of(kind);
                t.nacks += 1;
                t.last_nack = Some(message);
            });
            RequestKind::Nack
        } else {
            let version = req.version_info.clone();
            self.status.send_modify(|s| {
                let t = s.of(kind);
                t.acks += 1;
                t.acked_version = Some(version);
                t.last_nack = None;
            });
            RequestKind::Ack
        };
        let names_changed = !full_set && names != state.names;
        if !full_set {
            state.names = names;
            let shown = state.names.clone();
            self.status
                .send_modify(|s| s.of(kind).resource_names = shown);
        }
        let respond = meaning == RequestKind::Initial || names_changed;
        let mut out = Vec::new();
        if respond {
            out.extend(self.build(kind, mesh, true));
        }
        (meaning, out)
    }

    /// Responses for every subscribed type whose content changed, in push order.
    pub(crate) fn on_mesh_change(&mut self, mesh: &MeshSnapshot) -> Vec<DiscoveryResponse> {
        ResourceType::ALL
            .into_iter()
            .filter_map(|kind| self.build(kind, mesh, false))
            .collect()
    }

    /// Builds the response of a subscribed type, or `None` when it need not be sent: not
    /// subscribed, no names for a named type, or (unless `force`) unchanged content.
    fn build(
        &mut self,
        kind: ResourceType,
        mesh: &MeshSnapshot,
        force: bool,
    ) -> Option<DiscoveryResponse> {
        let proxy = self.proxy.clone().unwrap_or_default();
        let state = self.types.get_mut(&kind)?;
        if !kind.is_full_set_for(Some(&proxy)) && state.names.is_empty() {
            return None;
        }
        let resources = resources(kind, mesh, &proxy, &state.names);
        let hash = content_hash(&resources);
        if !force && state.sent.as_ref().is_some_and(|s| s.hash == hash) {
            return None;
        }
        self.nonces += 1;
        let nonce = format!("{}-{}", self.conn, self.nonces);
        let version = format!("{hash:016x}");
        state.sent = Some(Sent {
            nonce: nonce.clone(),
            hash,
        });
        let count = resources.len();
        self.status.send_modify(|s| {
            let t = s.of(kind);
            t.sent_version = Some(version.clone());
            t.sent_nonce = Some(nonce.clone());
            t.sent_resources = count;
            t.responses += 1;
        });
        tracing::debug!(conn = self.conn, r#type = kind.short_name(), %version, %nonce, count, "push");
        Some(DiscoveryResponse {
            version_info: version,
            resources: resources.into_iter().map(|(_, any)| any).collect(),
            type_url: kind.type_url().to_string(),
            nonce,
            control_plane: Some(ControlPlane {
                identifier: CONTROL_PLANE_ID.to_string(),
            }),
            ..Default::default()
        })
    }
}
