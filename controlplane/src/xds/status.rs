//! The sync status of every connected proxy, for `/debug/syncz`: what was sent, what was
//! acknowledged, and the last rejection, per resource type.
//!
//! Each ADS stream is the only writer of its own entry (a `watch` channel); readers take a
//! consistent copy of each entry without blocking the streams.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;
use tokio::sync::watch;

use super::ResourceType;
use crate::registry::{ConnectionId, ProxyInfo};

/// The state of one resource type on one stream.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TypeStatus {
    /// Names subscribed to (empty for wildcard types).
    pub resource_names: BTreeSet<String>,
    /// Version of the last response sent.
    pub sent_version: Option<String>,
    /// Nonce of the last response sent.
    pub sent_nonce: Option<String>,
    /// When the last response was sent (RFC 3339).
    pub last_sent: Option<String>,
    /// Number of resources in the last response sent.
    pub sent_resources: usize,
    /// Number of resources the proxy holds of this type, as of the last response sent.
    pub resources: usize,
    /// Last version the proxy acknowledged.
    pub acked_version: Option<String>,
    /// Nonce of the last response the proxy acknowledged.
    pub acked_nonce: Option<String>,
    /// When the last ACK arrived (RFC 3339).
    pub last_acked: Option<String>,
    /// Message of the last NACK, cleared by the next ACK.
    pub last_nack: Option<String>,
    /// Nonce of the response the last NACK rejected.
    pub nacked_nonce: Option<String>,
    /// Responses sent.
    pub responses: u64,
    /// Bytes of responses sent.
    pub bytes_sent: u64,
    /// ACKs received.
    pub acks: u64,
    /// NACKs received.
    pub nacks: u64,
    /// Requests ignored because their nonce was not the last one sent.
    pub expired_nonces: u64,
}

/// The current time in RFC 3339 (milliseconds), as syncz shows times.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// One connected proxy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProxyStatus {
    /// Connection id (unique per stream).
    pub connection: ConnectionId,
    /// Node id.
    pub node_id: String,
    /// Pod name.
    pub pod: Option<String>,
    /// Namespace.
    pub namespace: Option<String>,
    /// Instance IPs.
    pub ips: Vec<IpAddr>,
    /// Workload labels.
    pub labels: BTreeMap<String, String>,
    /// `CLUSTER_ID` of the node (`Kubernetes`).
    pub cluster_id: Option<String>,
    /// `ISTIO_VERSION` of the node.
    pub istio_version: Option<String>,
    /// The control plane instance serving this stream.
    pub control_plane: String,
    /// Peer address of the stream.
    pub peer: Option<String>,
    /// When the stream was opened (RFC 3339).
    pub connected_at: String,
    /// Per type (`cds`, `eds`, `lds`, `rds`).
    pub types: BTreeMap<&'static str, TypeStatus>,
    /// The proxy as the translation sees it (for config dumps), once identified.
    #[serde(skip)]
    pub proxy: Option<Arc<ProxyInfo>>,
}

impl ProxyStatus {
    /// A fresh entry for a connection, before its first request.
    pub fn new(connection: ConnectionId, peer: Option<String>) -> ProxyStatus {
        ProxyStatus {
            connection,
            node_id: String::new(),
            pod: None,
            namespace: None,
            ips: Vec::new(),
            labels: BTreeMap::new(),
            cluster_id: None,
            istio_version: None,
            control_plane: control_plane_instance(),
            peer,
            connected_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now())
                .to_string(),
            types: BTreeMap::new(),
            proxy: None,
        }
    }

    /// Fills in the node's identity.
    pub fn set_proxy(&mut self, proxy: &Arc<ProxyInfo>) {
        self.proxy = Some(proxy.clone());
        self.node_id = proxy.id.clone();
        self.pod = proxy.pod.clone();
        self.namespace = proxy.namespace.clone();
        self.ips = proxy.ips.clone();
        self.labels = proxy.labels.clone();
        self.cluster_id = proxy.cluster_id.clone();
        self.istio_version = proxy.version.clone();
    }

    /// The entry of a type.
    pub fn of(&mut self, kind: ResourceType) -> &mut TypeStatus {
        self.types.entry(kind.short_name()).or_default()
    }
}

/// This control plane instance's name, as istioctl shows istiod's pod: `mesh-controlplane`
/// and the host name.
pub fn control_plane_instance() -> String {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        if host.is_empty() {
            super::stream::CONTROL_PLANE_ID.to_string()
        } else {
            format!("{}.{host}", super::stream::CONTROL_PLANE_ID)
        }
    })
    .clone()
}

/// Every connected proxy's status.
#[derive(Debug, Default)]
pub struct SyncStatus {
    streams: Mutex<BTreeMap<ConnectionId, watch::Receiver<ProxyStatus>>>,
}

/// Removes its connection's entry when dropped.
#[derive(Debug)]
pub struct StatusEntry {
    owner: Arc<SyncStatus>,
    connection: ConnectionId,
    /// The connection's writer.
    pub writer: watch::Sender<ProxyStatus>,
}

impl Drop for StatusEntry {
    fn drop(&mut self) {
        self.owner
            .streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.connection);
    }
}

impl SyncStatus {
    /// Adds a connection; the entry lives as long as the returned guard.
    pub fn register(self: &Arc<Self>, initial: ProxyStatus) -> StatusEntry {
        let connection = initial.connection;
        let (writer, reader) = watch::channel(initial);
        self.streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(connection, reader);
        StatusEntry {
            owner: self.clone(),
            connection,
            writer,
        }
    }

    /// The status of the proxy named `id`: its node id, `POD.NAMESPACE` (Istio's `proxyID`),
    /// or its pod name; the most recent connection wins.
    pub fn find(&self, id: &str) -> Option<ProxyStatus> {
        self.snapshot().into_iter().rev().find(|s| {
            s.node_id == id
                || s.pod.as_deref() == Some(id)
                || matches!((&s.pod, &s.namespace), (Some(p), Some(n)) if format!("{p}.{n}") == id)
        })
    }

    /// A copy of every connection's status, by connection id.
    pub fn snapshot(&self) -> Vec<ProxyStatus> {
        let streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        streams.values().map(|r| r.borrow().clone()).collect()
    }
}
