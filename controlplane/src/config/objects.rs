//! Validated configuration objects: what the rest of the control plane reads.
//!
//! Every value here passed validation ([`super::validate`]): names are well formed, ports are
//! in range, addresses are parsed. The types keep the Kubernetes vocabulary so that a reader can
//! map them back onto the YAML.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde::Serialize;

/// The kinds of object the store understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Kind {
    /// core `v1` Namespace (cluster scoped).
    Namespace,
    /// core `v1` Service.
    Service,
    /// core `v1` Endpoints.
    Endpoints,
    /// `discovery.k8s.io/v1` EndpointSlice.
    EndpointSlice,
}

impl Kind {
    /// The kind's name as written in YAML (`Service`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::Service => "Service",
            Kind::Endpoints => "Endpoints",
            Kind::EndpointSlice => "EndpointSlice",
        }
    }

    /// Whether objects of this kind live in a namespace.
    pub fn is_namespaced(self) -> bool {
        !matches!(self, Kind::Namespace)
    }

    /// The kind for an `apiVersion` and `kind` pair, if supported.
    pub fn from_type(api_version: &str, kind: &str) -> Option<Kind> {
        match (api_version, kind) {
            ("v1", "Namespace") => Some(Kind::Namespace),
            ("v1", "Service") => Some(Kind::Service),
            ("v1", "Endpoints") => Some(Kind::Endpoints),
            ("discovery.k8s.io/v1", "EndpointSlice") => Some(Kind::EndpointSlice),
            _ => None,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The identity of a stored object: kind, namespace (empty for cluster-scoped kinds) and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ObjectKey {
    /// Object kind.
    pub kind: Kind,
    /// Namespace; empty for cluster-scoped kinds.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
}

impl fmt::Display for ObjectKey {
    /// `Service default/reviews`, or `Namespace bookinfo` for cluster-scoped kinds.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// One validated object.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind")]
pub enum Object {
    /// A Namespace.
    Namespace(Namespace),
    /// A Service.
    Service(Service),
    /// An Endpoints object.
    Endpoints(Endpoints),
    /// An EndpointSlice.
    EndpointSlice(EndpointSlice),
}

impl Object {
    /// The object's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Object::Namespace(_) => Kind::Namespace,
            Object::Service(_) => Kind::Service,
            Object::Endpoints(_) => Kind::Endpoints,
            Object::EndpointSlice(_) => Kind::EndpointSlice,
        }
    }

    /// The object's key.
    pub fn key(&self) -> ObjectKey {
        let (namespace, name) = match self {
            Object::Namespace(o) => (String::new(), o.name.clone()),
            Object::Service(o) => (o.namespace.clone(), o.name.clone()),
            Object::Endpoints(o) => (o.namespace.clone(), o.name.clone()),
            Object::EndpointSlice(o) => (o.namespace.clone(), o.name.clone()),
        };
        ObjectKey {
            kind: self.kind(),
            namespace,
            name,
        }
    }
}

/// A Namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Namespace {
    /// Name.
    pub name: String,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
}

/// How a Service is addressed. Serialized as written in YAML: the address, `"None"`, or
/// `""`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterIp {
    /// A virtual IP (`spec.clusterIP`).
    Ip(IpAddr),
    /// `clusterIP: None`: a headless Service.
    Headless,
    /// No address given.
    Unassigned,
}

impl Serialize for ClusterIp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ClusterIp::Ip(ip) => s.collect_str(ip),
            ClusterIp::Headless => s.serialize_str("None"),
            ClusterIp::Unassigned => s.serialize_str(""),
        }
    }
}

impl ClusterIp {
    /// The virtual IP, if there is one.
    pub fn ip(self) -> Option<IpAddr> {
        match self {
            ClusterIp::Ip(ip) => Some(ip),
            ClusterIp::Headless | ClusterIp::Unassigned => None,
        }
    }
}

/// A Service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Service {
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `spec.clusterIP`.
    pub cluster_ip: ClusterIp,
    /// `spec.ports`, in order.
    pub ports: Vec<ServicePort>,
    /// `spec.selector`; `None` when absent or empty (such a Service selects no workload).
    pub selector: Option<BTreeMap<String, String>>,
}

/// Transport protocol of a port (`protocol`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Transport {
    /// TCP (the default).
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

/// A Service's `targetPort` (serialized as the number or the name).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(untagged)]
pub enum TargetPort {
    /// A port number.
    Number(u16),
    /// A container port name.
    Name(String),
}

/// One entry of a Service's `spec.ports`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServicePort {
    /// `name`; may be absent when the Service has one port.
    pub name: Option<String>,
    /// `port`.
    pub port: u16,
    /// `targetPort`; defaults to `port`.
    pub target_port: TargetPort,
    /// `protocol`.
    pub transport: Transport,
    /// `appProtocol`, as written.
    pub app_protocol: Option<String>,
}

/// An Endpoints object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Endpoints {
    /// Name (the Service's name).
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// `subsets`.
    pub subsets: Vec<EndpointSubset>,
}

/// One entry of `subsets`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EndpointSubset {
    /// `addresses`: ready endpoints.
    pub addresses: Vec<EndpointAddress>,
    /// `notReadyAddresses`.
    pub not_ready_addresses: Vec<EndpointAddress>,
    /// `ports`.
    pub ports: Vec<EndpointPort>,
}

/// One address of an Endpoints subset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EndpointAddress {
    /// `ip`.
    pub ip: IpAddr,
    /// `nodeName`.
    pub node_name: Option<String>,
}

/// A port of an Endpoints subset or of an EndpointSlice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EndpointPort {
    /// `name`; matches the Service port's name.
    pub name: Option<String>,
    /// `port`.
    pub port: u16,
    /// `protocol`.
    pub transport: Transport,
}

/// An EndpointSlice with `addressType` IPv4 or IPv6.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EndpointSlice {
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// The Service it belongs to (label `kubernetes.io/service-name`).
    pub service_name: String,
    /// `endpoints`.
    pub endpoints: Vec<SliceEndpoint>,
    /// `ports`.
    pub ports: Vec<EndpointPort>,
}

/// One entry of an EndpointSlice's `endpoints`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SliceEndpoint {
    /// `addresses`.
    pub addresses: Vec<IpAddr>,
    /// `conditions.ready`; absent means ready.
    pub ready: bool,
    /// `zone`.
    pub zone: Option<String>,
    /// `nodeName`.
    pub node_name: Option<String>,
}
