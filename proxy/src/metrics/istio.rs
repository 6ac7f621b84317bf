//! Istio's standard metrics, reported by both sidecars of a call: `reporter="source"` at the
//! client's sidecar (outbound), `"destination"` at the server's (inbound).
//!
//! HTTP: `istio_requests_total`, `istio_request_duration_milliseconds`,
//! `istio_request_bytes`, `istio_response_bytes` (histograms with Envoy's default buckets,
//! which Istio uses). TCP: `istio_tcp_connections_opened_total`,
//! `istio_tcp_connections_closed_total`, `istio_tcp_sent_bytes_total`,
//! `istio_tcp_received_bytes_total`. Labels and values are Istio's.
//!
//! The data path never formats a label: a request's label set is a [`HttpKey`] of shared
//! (`Arc`) parties and small numbers; its metric handles are created the first time the key is
//! seen and cached, so a request costs one hash lookup and atomic increments. The caches are
//! bounded ([`MAX_SERIES`]); past the bound, new label sets are counted under the catch-all
//! unknown parties.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, RwLock};

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
};

use super::peer::{PeerInfo, UNKNOWN};

/// Envoy's default histogram buckets (Istio's default for every standard histogram).
pub const DEFAULT_BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// Label sets cached per family before new ones fall back to the unknown parties.
pub const MAX_SERIES: usize = 10_000;

/// Istio's label names for HTTP metrics, in Istio's order.
pub const HTTP_LABELS: [&str; 25] = [
    "reporter",
    "source_workload",
    "source_canonical_service",
    "source_canonical_revision",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_cluster",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_service_name",
    "destination_service_namespace",
    "destination_cluster",
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "response_flags",
    "connection_security_policy",
];

/// Label names of the TCP metrics: the HTTP ones without `response_code` and
/// `grpc_response_status`.
pub fn tcp_labels() -> Vec<&'static str> {
    HTTP_LABELS
        .iter()
        .copied()
        .filter(|l| *l != "response_code" && *l != "grpc_response_status")
        .collect()
}

/// Which sidecar reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reporter {
    /// The client's sidecar (outbound traffic).
    Source,
    /// The server's sidecar (inbound traffic).
    Destination,
}

impl Reporter {
    fn as_str(self) -> &'static str {
        match self {
            Reporter::Source => "source",
            Reporter::Destination => "destination",
        }
    }
}

/// The destination Service of a request or connection.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServiceInfo {
    /// `destination_service`: the host (`reviews.default.svc.cluster.local`).
    pub host: Arc<str>,
    /// `destination_service_name`.
    pub name: Arc<str>,
    /// `destination_service_namespace`.
    pub namespace: Arc<str>,
}

impl ServiceInfo {
    /// Every field `unknown`.
    pub fn unknown() -> ServiceInfo {
        ServiceInfo {
            host: UNKNOWN.into(),
            name: UNKNOWN.into(),
            namespace: UNKNOWN.into(),
        }
    }

    /// The Service of a cluster named by istiod's convention: `outbound|PORT|SUBSET|HOST`
    /// gives `HOST`, its first label as the name and, for `NAME.NS.svc...` hosts, `NS` as the
    /// namespace; the built-in clusters (`PassthroughCluster`, `BlackHoleCluster`,
    /// `InboundPassthroughCluster`) give their own name as the service name. Anything else is
    /// unknown.
    pub fn from_cluster(cluster: &str) -> ServiceInfo {
        let mut parts = cluster.split('|');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("outbound"), Some(_), Some(_), Some(host)) if !host.is_empty() => {
                ServiceInfo::from_host(host)
            }
            _ if matches!(
                cluster,
                "PassthroughCluster" | "BlackHoleCluster" | "InboundPassthroughCluster"
            ) =>
            {
                ServiceInfo {
                    host: UNKNOWN.into(),
                    name: cluster.into(),
                    namespace: UNKNOWN.into(),
                }
            }
            _ => ServiceInfo::unknown(),
        }
    }

    /// The Service of a host name (`NAME.NS.svc.DOMAIN`, or any other host: name = host).
    pub fn from_host(host: &str) -> ServiceInfo {
        let labels: Vec<&str> = host.split('.').collect();
        if labels.len() >= 3 && labels[2] == "svc" {
            ServiceInfo {
                host: host.into(),
                name: labels[0].into(),
                namespace: labels[1].into(),
            }
        } else {
            ServiceInfo {
                host: host.into(),
                name: host.into(),
                namespace: UNKNOWN.into(),
            }
        }
    }
}

/// `HOST:PORT` of an `outbound|PORT|SUBSET|HOST` cluster (the form of istiod's route
/// decorators and span names).
pub fn cluster_host_port(cluster: &str) -> Option<String> {
    let mut parts = cluster.split('|');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("outbound"), Some(port), Some(_), Some(host)) if !host.is_empty() => {
            Some(format!("{host}:{port}"))
        }
        _ => None,
    }
}

/// Interned [`ServiceInfo`]s by cluster name, so that equal services are one `Arc` (label
/// sets are cached by pointer). Bounded: past [`MAX_SERIES`] names, unknown.
#[derive(Debug)]
pub struct ServiceCache {
    by_cluster: RwLock<HashMap<String, Arc<ServiceInfo>>>,
    by_value: RwLock<HashMap<ServiceInfo, Arc<ServiceInfo>>>,
    unknown: Arc<ServiceInfo>,
}

impl Default for ServiceCache {
    fn default() -> Self {
        ServiceCache {
            by_cluster: RwLock::default(),
            by_value: RwLock::default(),
            unknown: Arc::new(ServiceInfo::unknown()),
        }
    }
}

impl ServiceCache {
    /// The unknown service.
    pub fn unknown(&self) -> Arc<ServiceInfo> {
        self.unknown.clone()
    }

    /// The shared instance equal to `info`.
    pub fn intern(&self, info: ServiceInfo) -> Arc<ServiceInfo> {
        if let Ok(map) = self.by_value.read() {
            if let Some(s) = map.get(&info) {
                return s.clone();
            }
        }
        let mut map = self
            .by_value
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= MAX_SERIES {
            return self.unknown.clone();
        }
        map.entry(info.clone())
            .or_insert_with(|| Arc::new(info))
            .clone()
    }

    /// The service of a cluster name.
    pub fn for_cluster(&self, cluster: &str) -> Arc<ServiceInfo> {
        if let Ok(map) = self.by_cluster.read() {
            if let Some(s) = map.get(cluster) {
                return s.clone();
            }
        }
        let info = self.intern(ServiceInfo::from_cluster(cluster));
        let mut map = self
            .by_cluster
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() < MAX_SERIES {
            map.insert(cluster.to_string(), info.clone());
        }
        info
    }
}

/// The parties of a request or connection, from the reporting sidecar's point of view.
#[derive(Clone, Debug)]
pub struct Parties {
    /// Who reports.
    pub reporter: Reporter,
    /// This proxy's workload.
    pub local: Arc<PeerInfo>,
    /// The other end's workload.
    pub peer: Arc<PeerInfo>,
    /// This proxy's SPIFFE identity on the connection, when it spoke mutual TLS.
    pub local_principal: Option<Arc<str>>,
    /// The other end's verified SPIFFE identity, when mutual TLS.
    pub peer_principal: Option<Arc<str>>,
    /// Whether the connection was mutual TLS (only known by the destination sidecar).
    pub mutual_tls: bool,
    /// The destination Service.
    pub service: Arc<ServiceInfo>,
}

fn ptr_hash<T: ?Sized, H: Hasher>(p: &Arc<T>, state: &mut H) {
    (Arc::as_ptr(p) as *const () as usize).hash(state);
}

fn opt_ptr_eq(a: &Option<Arc<str>>, b: &Option<Arc<str>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
        (None, None) => true,
        _ => false,
    }
}

impl PartialEq for Parties {
    fn eq(&self, o: &Parties) -> bool {
        self.reporter == o.reporter
            && Arc::ptr_eq(&self.local, &o.local)
            && Arc::ptr_eq(&self.peer, &o.peer)
            && Arc::ptr_eq(&self.service, &o.service)
            && opt_ptr_eq(&self.local_principal, &o.local_principal)
            && opt_ptr_eq(&self.peer_principal, &o.peer_principal)
            && self.mutual_tls == o.mutual_tls
    }
}

impl Eq for Parties {}

impl Hash for Parties {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.reporter.hash(state);
        ptr_hash(&self.local, state);
        ptr_hash(&self.peer, state);
        ptr_hash(&self.service, state);
        self.local_principal.hash(state);
        self.peer_principal.hash(state);
        self.mutual_tls.hash(state);
    }
}

/// `request_protocol`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequestProtocol {
    /// HTTP/1.x or HTTP/2 that is not gRPC.
    Http,
    /// gRPC (`content-type: application/grpc...`).
    Grpc,
}

impl RequestProtocol {
    fn as_str(self) -> &'static str {
        match self {
            RequestProtocol::Http => "http",
            RequestProtocol::Grpc => "grpc",
        }
    }
}

/// The label set of one HTTP request.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HttpKey {
    /// The parties.
    pub parties: Parties,
    /// `request_protocol`.
    pub protocol: RequestProtocol,
    /// `response_code` (0 when nothing was sent).
    pub response_code: u16,
    /// `grpc_response_status` (gRPC requests only).
    pub grpc_status: Option<u16>,
    /// `response_flags` as Envoy writes them (`-` for none); a shared string so the key
    /// holds no allocation of its own.
    pub response_flags: Arc<str>,
}

/// The metric handles of one HTTP label set.
#[derive(Debug)]
pub struct HttpHandles {
    /// `istio_requests_total`.
    pub requests: IntCounter,
    /// `istio_request_duration_milliseconds`.
    pub duration: Histogram,
    /// `istio_request_bytes`.
    pub request_bytes: Histogram,
    /// `istio_response_bytes`.
    pub response_bytes: Histogram,
}

impl HttpHandles {
    /// Record one request.
    pub fn record(&self, duration_ms: f64, request_bytes: u64, response_bytes: u64) {
        self.requests.inc();
        self.duration.observe(duration_ms);
        self.request_bytes.observe(request_bytes as f64);
        self.response_bytes.observe(response_bytes as f64);
    }
}

/// The label set of one TCP connection (at open, or at close with its flags).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TcpKey {
    /// The parties.
    pub parties: Parties,
    /// `response_flags`.
    pub response_flags: Arc<str>,
}

/// The metric handles of one TCP label set.
#[derive(Debug)]
pub struct TcpHandles {
    /// `istio_tcp_connections_opened_total`.
    pub opened: IntCounter,
    /// `istio_tcp_connections_closed_total`.
    pub closed: IntCounter,
    /// `istio_tcp_sent_bytes_total` (bytes sent to the downstream... as Istio: from the
    /// server to the client).
    pub sent: IntCounter,
    /// `istio_tcp_received_bytes_total` (from the client to the server).
    pub received: IntCounter,
}

/// Istio's standard metric families and the handle caches.
#[derive(Debug)]
pub struct IstioMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
    request_bytes: HistogramVec,
    response_bytes: HistogramVec,
    tcp_opened: IntCounterVec,
    tcp_closed: IntCounterVec,
    tcp_sent: IntCounterVec,
    tcp_received: IntCounterVec,
    http: RwLock<HashMap<HttpKey, Arc<HttpHandles>>>,
    tcp: RwLock<HashMap<TcpKey, Arc<TcpHandles>>>,
    overflow_peer: Arc<PeerInfo>,
    overflow_service: Arc<ServiceInfo>,
}

fn principal(p: &Option<Arc<str>>) -> &str {
    p.as_deref().unwrap_or(UNKNOWN)
}

fn party_values(p: &Parties) -> Vec<&str> {
    let (src, dst) = match p.reporter {
        Reporter::Source => (&p.local, &p.peer),
        Reporter::Destination => (&p.peer, &p.local),
    };
    let (src_principal, dst_principal) = match p.reporter {
        Reporter::Source => (principal(&p.local_principal), principal(&p.peer_principal)),
        Reporter::Destination => (principal(&p.peer_principal), principal(&p.local_principal)),
    };
    vec![
        p.reporter.as_str(),
        &src.workload,
        &src.canonical_service,
        &src.canonical_revision,
        &src.namespace,
        src_principal,
        &src.app,
        &src.version,
        &src.cluster,
        &dst.workload,
        &dst.namespace,
        dst_principal,
        &dst.app,
        &dst.version,
        &p.service.host,
        &dst.canonical_service,
        &dst.canonical_revision,
        &p.service.name,
        &p.service.namespace,
        &dst.cluster,
    ]
}

fn security_policy(p: &Parties) -> &'static str {
    match (p.reporter, p.mutual_tls) {
        // Only the server's sidecar knows how the connection was secured.
        (Reporter::Source, _) => "unknown",
        (Reporter::Destination, true) => "mutual_tls",
        (Reporter::Destination, false) => "none",
    }
}

/// Errors of the metric registration.
#[derive(Debug, thiserror::Error)]
#[error("cannot register metric: {0}")]
pub struct RegisterError(#[from] pub prometheus::Error);

impl IstioMetrics {
    /// Create the families and register them with `registry`.
    pub fn register(registry: &Registry) -> Result<IstioMetrics, RegisterError> {
        let tcp = tcp_labels();
        let counter =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, RegisterError> {
                let c = IntCounterVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(c.clone()))?;
                Ok(c)
            };
        let histogram = |name: &str, help: &str| -> Result<HistogramVec, RegisterError> {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(DEFAULT_BUCKETS.to_vec()),
                &HTTP_LABELS,
            )?;
            registry.register(Box::new(h.clone()))?;
            Ok(h)
        };
        Ok(IstioMetrics {
            requests: counter(
                "istio_requests_total",
                "Requests, by source and destination workload and response.",
                &HTTP_LABELS,
            )?,
            duration: histogram(
                "istio_request_duration_milliseconds",
                "Request duration in milliseconds.",
            )?,
            request_bytes: histogram("istio_request_bytes", "Request body sizes in bytes.")?,
            response_bytes: histogram("istio_response_bytes", "Response body sizes in bytes.")?,
            tcp_opened: counter(
                "istio_tcp_connections_opened_total",
                "TCP connections opened.",
                &tcp,
            )?,
            tcp_closed: counter(
                "istio_tcp_connections_closed_total",
                "TCP connections closed.",
                &tcp,
            )?,
            tcp_sent: counter(
                "istio_tcp_sent_bytes_total",
                "Bytes sent from the server to the client over TCP connections.",
                &tcp,
            )?,
            tcp_received: counter(
                "istio_tcp_received_bytes_total",
                "Bytes received by the server from the client over TCP connections.",
                &tcp,
            )?,
            http: RwLock::new(HashMap::new()),
            tcp: RwLock::new(HashMap::new()),
            overflow_peer: Arc::new(PeerInfo::unknown()),
            overflow_service: Arc::new(ServiceInfo::unknown()),
        })
    }

    fn overflow(&self, p: &Parties) -> Parties {
        Parties {
            peer: self.overflow_peer.clone(),
            service: self.overflow_service.clone(),
            peer_principal: None,
            ..p.clone()
        }
    }

    /// The handles of an HTTP label set (created and cached the first time).
    pub fn http(&self, key: &HttpKey) -> Arc<HttpHandles> {
        if let Ok(map) = self.http.read() {
            if let Some(h) = map.get(key) {
                return h.clone();
            }
        }
        let mut map = self
            .http
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(h) = map.get(key) {
            return h.clone();
        }
        let key = if map.len() >= MAX_SERIES {
            HttpKey {
                parties: self.overflow(&key.parties),
                ..key.clone()
            }
        } else {
            key.clone()
        };
        if let Some(h) = map.get(&key) {
            return h.clone();
        }
        let code = key.response_code.to_string();
        let grpc = key.grpc_status.map(|s| s.to_string()).unwrap_or_default();
        let mut values = party_values(&key.parties);
        values.extend([
            key.protocol.as_str(),
            &code,
            &grpc,
            &key.response_flags,
            security_policy(&key.parties),
        ]);
        let handles = Arc::new(HttpHandles {
            requests: self.requests.with_label_values(&values),
            duration: self.duration.with_label_values(&values),
            request_bytes: self.request_bytes.with_label_values(&values),
            response_bytes: self.response_bytes.with_label_values(&values),
        });
        map.insert(key, handles.clone());
        handles
    }

    /// The handles of a TCP label set (created and cached the first time).
    pub fn tcp(&self, key: &TcpKey) -> Arc<TcpHandles> {
        if let Ok(map) = self.tcp.read() {
            if let Some(h) = map.get(key) {
                return h.clone();
            }
        }
        let mut map = self
            .tcp
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(h) = map.get(key) {
            return h.clone();
        }
        let key = if map.len() >= MAX_SERIES {
            TcpKey {
                parties: self.overflow(&key.parties),
                ..key.clone()
            }
        } else {
            key.clone()
        };
        if let Some(h) = map.get(&key) {
            return h.clone();
        }
        let mut values = party_values(&key.parties);
        values.extend(["tcp", &key.response_flags, security_policy(&key.parties)]);
        let handles = Arc::new(TcpHandles {
            opened: self.tcp_opened.with_label_values(&values),
            closed: self.tcp_closed.with_label_values(&values),
            sent: self.tcp_sent.with_label_values(&values),
            received: self.tcp_received.with_label_values(&values),
        });
        map.insert(key, handles.clone());
        handles
    }
}

#[cfg(test)]
mod tests;
