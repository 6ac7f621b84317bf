//! The registry's view of the mesh: Services with their ports' protocols, and endpoints.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

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

/// A Service as the translation needs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Service {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `NAME.NS.svc.DOMAIN`.
    pub hostname: String,
    /// The virtual IP, when the Service has one.
    pub cluster_ip: Option<IpAddr>,
    /// Ports, in the Service's order.
    pub ports: Vec<ServicePort>,
    /// Label selector; `None` selects no workload.
    pub selector: Option<BTreeMap<String, String>>,
}

impl Service {
    /// Builds the registry view of a validated Service.
    pub fn from_config(svc: &objects::Service, cluster_domain: &str) -> Service {
        Service {
            name: svc.name.clone(),
            namespace: svc.namespace.clone(),
            hostname: format!("{}.{}.svc.{}", svc.name, svc.namespace, cluster_domain),
            cluster_ip: svc.cluster_ip.ip(),
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
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

/// Where an endpoint came from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum EndpointSource {
    /// An Endpoints or EndpointSlice object.
    Config,
    /// A connected proxy (auto-registration), by node id.
    Proxy(String),
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
    /// The workload's labels (what DestinationRule subsets select on): a connected proxy's
    /// own; for an Endpoints or EndpointSlice address, those of the connected proxy of the
    /// Service's namespace with that IP, if any (pods are not in the config).
    pub labels: BTreeMap<String, String>,
}
