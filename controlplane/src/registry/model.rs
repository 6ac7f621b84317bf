//! The registry's view of the mesh: Services (from Kubernetes Services and from
//! ServiceEntries) with their ports' protocols, and endpoints.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

use crate::config::objects::{self, TargetPort, Transport};

/// A port's application protocol, from its `appProtocol` or its name prefix, as Istio
/// derives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Protocol {
    /// HTTP/1.1 (`http`, `http-*`).
    Http,
    /// HTTP/2 (`http2`, `kubernetes.io/h2c`).
    Http2,
    /// gRPC.
    Grpc,
    /// gRPC-Web.
    GrpcWeb,
    /// HTTPS: opaque TLS to the mesh.
    Https,
    /// TLS: opaque to the mesh.
    Tls,
    /// Plain TCP.
    Tcp,
    /// MongoDB (treated as TCP).
    Mongo,
    /// MySQL (treated as TCP).
    Mysql,
    /// Redis (treated as TCP).
    Redis,
    /// UDP or SCTP: not proxied.
    Udp,
    /// Neither `appProtocol` nor a known name prefix: sniffed.
    Auto,
}

impl Protocol {
    /// Parses a protocol name (case-insensitive), as Istio's `protocol.Parse`.
    pub fn parse(value: &str) -> Option<Protocol> {
        Some(match value.to_ascii_lowercase().as_str() {
            "http" | "kubernetes.io/ws" | "http_proxy" => Protocol::Http,
            "http2" | "kubernetes.io/h2c" => Protocol::Http2,
            "grpc" => Protocol::Grpc,
            "grpc-web" => Protocol::GrpcWeb,
            "https" | "kubernetes.io/wss" => Protocol::Https,
            "tls" => Protocol::Tls,
            "tcp" => Protocol::Tcp,
            "mongo" => Protocol::Mongo,
            "mysql" => Protocol::Mysql,
            "redis" => Protocol::Redis,
            "udp" => Protocol::Udp,
            _ => return None,
        })
    }

    /// The protocol of a Service port: UDP/SCTP ports are [`Protocol::Udp`]; otherwise
    /// `appProtocol` when it names a known protocol, then the name (or the part of it before
    /// the first `-`), else [`Protocol::Auto`].
    pub fn of_port(port: &objects::ServicePort) -> Protocol {
        if port.transport != Transport::Tcp {
            return Protocol::Udp;
        }
        let from_app = port.app_protocol.as_deref().and_then(Protocol::parse);
        let from_name = || {
            let name = port.name.as_deref()?;
            Protocol::parse(name).or_else(|| Protocol::parse(name.split('-').next()?))
        };
        match from_app.or_else(from_name) {
            Some(Protocol::Udp) | None => Protocol::Auto,
            Some(p) => p,
        }
    }

    /// HTTP/1.1, HTTP/2, gRPC or gRPC-Web: served by the HTTP connection manager.
    pub fn is_http(self) -> bool {
        matches!(
            self,
            Protocol::Http | Protocol::Http2 | Protocol::Grpc | Protocol::GrpcWeb
        )
    }

    /// HTTP/2 upstream with prior knowledge (HTTP/2, gRPC).
    pub fn is_http2(self) -> bool {
        matches!(self, Protocol::Http2 | Protocol::Grpc)
    }

    /// Proxied as opaque TCP.
    pub fn is_tcp(self) -> bool {
        matches!(
            self,
            Protocol::Https
                | Protocol::Tls
                | Protocol::Tcp
                | Protocol::Mongo
                | Protocol::Mysql
                | Protocol::Redis
        )
    }
}

/// Where a Service comes from.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum ServiceOrigin {
    /// A Kubernetes Service.
    #[default]
    Kubernetes,
    /// One host of a ServiceEntry, by the entry's name.
    ServiceEntry(String),
}

/// How a proxy finds a Service's endpoints (Istio's `model.Resolution`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Resolution {
    /// Endpoints sent by EDS, balanced by the proxy (Kubernetes Services, STATIC entries).
    #[default]
    ClientSideLb,
    /// The connection's original destination (resolution NONE): an `ORIGINAL_DST` cluster.
    Passthrough,
    /// Every address of every endpoint, resolved by the proxy: a `STRICT_DNS` cluster.
    Dns,
    /// The first address of the only endpoint, resolved by the proxy: a `LOGICAL_DNS`
    /// cluster (DNS_ROUND_ROBIN).
    DnsRoundRobin,
}

/// Whether an endpoint speaks Istio mTLS (Istio's `security.istio.io/tlsMode` label).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum TlsMode {
    /// Plain traffic (`disabled`).
    #[default]
    Disabled,
    /// A sidecar that accepts Istio mTLS (`istio`).
    Istio,
}

impl TlsMode {
    /// The label value: `istio` or `disabled`.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Disabled => "disabled",
            TlsMode::Istio => "istio",
        }
    }
}

/// A Service as the translation needs it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Service {
    /// `metadata.name`; for a ServiceEntry's service, the host.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `NAME.NS.svc.DOMAIN`, or the ServiceEntry's host (possibly a wildcard `*.example.com`).
    pub hostname: String,
    /// The virtual IP, when the Service has one: the ClusterIP, or the first ServiceEntry
    /// address that is a single IP.
    pub cluster_ip: Option<IpAddr>,
    /// Every address outbound listeners capture for it: the ClusterIP (as a /32 or /128), or
    /// a ServiceEntry's `addresses` (VIPs and CIDRs). Empty when it has none.
    pub addresses: Vec<IpNet>,
    /// Ports, in the Service's order.
    pub ports: Vec<ServicePort>,
    /// Label selector (a ServiceEntry's `workloadSelector`); `None` selects no workload.
    pub selector: Option<BTreeMap<String, String>>,
    /// Kubernetes Service or ServiceEntry.
    pub origin: ServiceOrigin,
    /// How its endpoints are found.
    pub resolution: Resolution,
    /// Outside the mesh (a ServiceEntry with location MESH_EXTERNAL, the default).
    pub mesh_external: bool,
    /// Namespaces it is exported to (`exportTo`, or the Service's
    /// `networking.istio.io/exportTo` annotation); empty means the mesh default (`*`). See
    /// [`super::visibility`].
    pub export_to: Vec<String>,
}

impl Service {
    /// Builds the registry view of a validated Service.
    pub fn from_config(svc: &objects::Service, cluster_domain: &str) -> Service {
        let cluster_ip = svc.cluster_ip.ip();
        Service {
            name: svc.name.clone(),
            namespace: svc.namespace.clone(),
            hostname: format!("{}.{}.svc.{}", svc.name, svc.namespace, cluster_domain),
            cluster_ip,
            addresses: cluster_ip.map(IpNet::from).into_iter().collect(),
            origin: ServiceOrigin::Kubernetes,
            resolution: Resolution::ClientSideLb,
            mesh_external: false,
            export_to: svc.export_to.clone(),
            ports: svc
                .ports
                .iter()
                .map(|p| ServicePort {
                    name: p.name.clone(),
                    port: p.port,
                    target_port: p.target_port.clone(),
                    protocol: Protocol::of_port(p),
                })
                .collect(),
            selector: svc.selector.clone(),
        }
    }

    /// The key of this Service in the registry.
    pub fn key(&self) -> ServiceKey {
        ServiceKey {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }

    /// Whether it comes from a Kubernetes Service.
    pub fn is_kubernetes(&self) -> bool {
        self.origin == ServiceOrigin::Kubernetes
    }

    /// Whether a workload in `namespace` with `labels` is selected by this Service.
    pub fn selects(&self, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
        self.namespace == namespace
            && self
                .selector
                .as_ref()
                .is_some_and(|sel| sel.iter().all(|(k, v)| labels.get(k) == Some(v)))
    }
}

/// One port of a [`Service`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct ServicePort {
    /// Port name.
    pub name: Option<String>,
    /// Service port.
    pub port: u16,
    /// Where the workload listens.
    pub target_port: TargetPort,
    /// Application protocol.
    pub protocol: Protocol,
}

/// Identifies a Service: namespace, then name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ServiceKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Region, zone and subzone of an endpoint; empty parts are allowed.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Locality {
    /// Region.
    pub region: String,
    /// Zone.
    pub zone: String,
    /// Subzone.
    pub subzone: String,
}

impl Locality {
    /// Parses Istio's `region/zone/subzone` (missing parts empty).
    pub fn parse(value: &str) -> Locality {
        let mut parts = value.splitn(3, '/').map(str::to_string);
        Locality {
            region: parts.next().unwrap_or_default(),
            zone: parts.next().unwrap_or_default(),
            subzone: parts.next().unwrap_or_default(),
        }
    }
}

/// Where an endpoint came from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum EndpointSource {
    /// An Endpoints or EndpointSlice object.
    Config,
    /// A connected proxy (auto-registration), by node id.
    Proxy(String),
    /// A WorkloadEntry, as `namespace/name`.
    WorkloadEntry(String),
    /// An endpoint written in a ServiceEntry, as `namespace/name`.
    ServiceEntry(String),
}

/// One endpoint of a Service port.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Endpoint {
    /// Locality (first, so endpoints sort by locality).
    pub locality: Locality,
    /// Address.
    pub ip: IpAddr,
    /// Port on the workload.
    pub port: u16,
    /// Ready to receive traffic.
    pub healthy: bool,
    /// Origin.
    pub source: EndpointSource,
    /// Load-balancing weight (at least 1; a WorkloadEntry's `weight`).
    pub weight: u32,
    /// Whether the workload accepts Istio mTLS: sidecars labelled
    /// `security.istio.io/tlsMode: istio` do (a proxy with a workload certificate; Istio's
    /// injector sets the label); a WorkloadEntry or a
    /// ServiceEntry endpoint does when labelled `security.istio.io/tlsMode: istio` or given a
    /// service account.
    pub tls_mode: TlsMode,
    /// The workload's labels (what DestinationRule subsets select on): a connected proxy's
    /// or a WorkloadEntry's own; for an Endpoints or EndpointSlice address, those of the
    /// connected proxy of the Service's namespace with that IP, if any (pods are not in the
    /// config).
    pub labels: BTreeMap<String, String>,
    /// The workload's service account (its identity), when known: a connected proxy's or a
    /// WorkloadEntry's.
    pub service_account: Option<String>,
    /// The workload behind the address, when known (a connected proxy, a WorkloadEntry, or an
    /// Endpoints address a connected proxy of the Service's namespace holds): what the
    /// proxies' metrics label the peer with (istiod's endpoint telemetry metadata).
    pub workload: Option<EndpointWorkload>,
}

/// The workload of an endpoint, as the telemetry metadata of its `LbEndpoint` describes it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct EndpointWorkload {
    /// Workload name (a Deployment's name for its pods, a WorkloadEntry's name).
    pub name: String,
    /// Namespace of the workload.
    pub namespace: String,
    /// Cluster id (`CLUSTER_ID`, `Kubernetes` by default).
    pub cluster: String,
}

/// One endpoint of a DNS-resolved Service port (resolution DNS or DNS_ROUND_ROBIN) that
/// names a host: the proxy resolves it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct DnsEndpoint {
    /// Locality.
    pub locality: Locality,
    /// The host name (or an IP literal) to resolve.
    pub host: String,
    /// Port on the workload.
    pub port: u16,
    /// Load-balancing weight (at least 1).
    pub weight: u32,
    /// Origin.
    pub source: EndpointSource,
    /// The workload's labels (for subsets).
    pub labels: BTreeMap<String, String>,
}
