//! Validated configuration objects: what the rest of the control plane reads.
//!
//! Every value here passed validation ([`super::validate`]): names are well formed, ports are
//! in range, addresses are parsed. The types keep the Kubernetes vocabulary so that a reader can
//! map them back onto the YAML.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde::Serialize;

use super::istio::{
    AuthorizationPolicy, DestinationRule, Gateway, IstioConfig, PeerAuthentication, ServiceEntry,
    Sidecar, Telemetry, VirtualService, WorkloadEntry,
};

/// API versions of `networking.istio.io` the store accepts.
pub const NETWORKING_VERSIONS: [&str; 3] = ["v1", "v1beta1", "v1alpha3"];
/// API versions of `security.istio.io` the store accepts.
pub const SECURITY_VERSIONS: [&str; 2] = ["v1", "v1beta1"];
/// API versions of `telemetry.istio.io` the store accepts.
pub const TELEMETRY_VERSIONS: [&str; 2] = ["v1", "v1alpha1"];

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
    /// `networking.istio.io` VirtualService.
    VirtualService,
    /// `networking.istio.io` DestinationRule.
    DestinationRule,
    /// `networking.istio.io` Gateway.
    Gateway,
    /// `networking.istio.io` ServiceEntry.
    ServiceEntry,
    /// `networking.istio.io` WorkloadEntry.
    WorkloadEntry,
    /// `networking.istio.io` Sidecar.
    Sidecar,
    /// `security.istio.io` PeerAuthentication.
    PeerAuthentication,
    /// `security.istio.io` AuthorizationPolicy.
    AuthorizationPolicy,
    /// `telemetry.istio.io` Telemetry.
    Telemetry,
    /// core `v1` ConfigMap (only `istio-system/istio`, the mesh config, is read).
    ConfigMap,
}

impl Kind {
    /// The kind's name as written in YAML (`Service`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::Service => "Service",
            Kind::Endpoints => "Endpoints",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::VirtualService => "VirtualService",
            Kind::DestinationRule => "DestinationRule",
            Kind::Gateway => "Gateway",
            Kind::ServiceEntry => "ServiceEntry",
            Kind::WorkloadEntry => "WorkloadEntry",
            Kind::Sidecar => "Sidecar",
            Kind::PeerAuthentication => "PeerAuthentication",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
            Kind::Telemetry => "Telemetry",
            Kind::ConfigMap => "ConfigMap",
        }
    }

    /// Whether the kind is one of Istio's.
    pub fn is_istio(self) -> bool {
        !matches!(
            self,
            Kind::Namespace
                | Kind::Service
                | Kind::Endpoints
                | Kind::EndpointSlice
                | Kind::ConfigMap
        )
    }

    /// The Istio kind of an API group and kind name, whatever the version.
    pub fn istio(group: &str, kind: &str) -> Option<Kind> {
        match (group, kind) {
            ("networking.istio.io", "VirtualService") => Some(Kind::VirtualService),
            ("networking.istio.io", "DestinationRule") => Some(Kind::DestinationRule),
            ("networking.istio.io", "Gateway") => Some(Kind::Gateway),
            ("networking.istio.io", "ServiceEntry") => Some(Kind::ServiceEntry),
            ("networking.istio.io", "WorkloadEntry") => Some(Kind::WorkloadEntry),
            ("networking.istio.io", "Sidecar") => Some(Kind::Sidecar),
            ("security.istio.io", "PeerAuthentication") => Some(Kind::PeerAuthentication),
            ("security.istio.io", "AuthorizationPolicy") => Some(Kind::AuthorizationPolicy),
            ("telemetry.istio.io", "Telemetry") => Some(Kind::Telemetry),
            _ => None,
        }
    }

    /// The API versions the store accepts for an Istio kind.
    pub fn istio_versions(self) -> &'static [&'static str] {
        match self {
            Kind::PeerAuthentication | Kind::AuthorizationPolicy => &SECURITY_VERSIONS,
            Kind::Telemetry => &TELEMETRY_VERSIONS,
            _ => &NETWORKING_VERSIONS,
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
            ("v1", "ConfigMap") => Some(Kind::ConfigMap),
            ("discovery.k8s.io/v1", "EndpointSlice") => Some(Kind::EndpointSlice),
            _ => {
                let (group, version) = api_version.split_once('/')?;
                let k = Kind::istio(group, kind)?;
                k.istio_versions().contains(&version).then_some(k)
            }
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
    /// A VirtualService.
    VirtualService(Box<IstioConfig<VirtualService>>),
    /// A DestinationRule.
    DestinationRule(Box<IstioConfig<DestinationRule>>),
    /// A Gateway.
    Gateway(Box<IstioConfig<Gateway>>),
    /// A ServiceEntry.
    ServiceEntry(Box<IstioConfig<ServiceEntry>>),
    /// A WorkloadEntry.
    WorkloadEntry(Box<IstioConfig<WorkloadEntry>>),
    /// A Sidecar.
    Sidecar(Box<IstioConfig<Sidecar>>),
    /// A PeerAuthentication.
    PeerAuthentication(Box<IstioConfig<PeerAuthentication>>),
    /// An AuthorizationPolicy.
    AuthorizationPolicy(Box<IstioConfig<AuthorizationPolicy>>),
    /// A Telemetry.
    Telemetry(Box<IstioConfig<Telemetry>>),
    /// A ConfigMap.
    ConfigMap(ConfigMap),
}

impl Object {
    /// The object's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Object::Namespace(_) => Kind::Namespace,
            Object::Service(_) => Kind::Service,
            Object::Endpoints(_) => Kind::Endpoints,
            Object::EndpointSlice(_) => Kind::EndpointSlice,
            Object::VirtualService(_) => Kind::VirtualService,
            Object::DestinationRule(_) => Kind::DestinationRule,
            Object::Gateway(_) => Kind::Gateway,
            Object::ServiceEntry(_) => Kind::ServiceEntry,
            Object::WorkloadEntry(_) => Kind::WorkloadEntry,
            Object::Sidecar(_) => Kind::Sidecar,
            Object::PeerAuthentication(_) => Kind::PeerAuthentication,
            Object::AuthorizationPolicy(_) => Kind::AuthorizationPolicy,
            Object::Telemetry(_) => Kind::Telemetry,
            Object::ConfigMap(_) => Kind::ConfigMap,
        }
    }

    /// The Istio metadata (namespace, name, labels, annotations) of an Istio object.
    pub fn istio_meta(&self) -> Option<IstioMeta<'_>> {
        fn m<S>(o: &IstioConfig<S>) -> IstioMeta<'_> {
            IstioMeta {
                namespace: &o.namespace,
                name: &o.name,
                labels: &o.labels,
                annotations: &o.annotations,
            }
        }
        match self {
            Object::VirtualService(o) => Some(m(o)),
            Object::DestinationRule(o) => Some(m(o)),
            Object::Gateway(o) => Some(m(o)),
            Object::ServiceEntry(o) => Some(m(o)),
            Object::WorkloadEntry(o) => Some(m(o)),
            Object::Sidecar(o) => Some(m(o)),
            Object::PeerAuthentication(o) => Some(m(o)),
            Object::AuthorizationPolicy(o) => Some(m(o)),
            Object::Telemetry(o) => Some(m(o)),
            Object::ConfigMap(_)
            | Object::Namespace(_)
            | Object::Service(_)
            | Object::Endpoints(_)
            | Object::EndpointSlice(_) => None,
        }
    }

    /// The object's key.
    pub fn key(&self) -> ObjectKey {
        let (namespace, name) = match self {
            Object::Namespace(o) => (String::new(), o.name.clone()),
            Object::Service(o) => (o.namespace.clone(), o.name.clone()),
            Object::Endpoints(o) => (o.namespace.clone(), o.name.clone()),
            Object::EndpointSlice(o) => (o.namespace.clone(), o.name.clone()),
            Object::ConfigMap(o) => (o.namespace.clone(), o.name.clone()),
            other => match other.istio_meta() {
                Some(m) => (m.namespace.to_string(), m.name.to_string()),
                None => (String::new(), String::new()),
            },
        };
        ObjectKey {
            kind: self.kind(),
            namespace,
            name,
        }
    }
}

/// The metadata of an Istio object, borrowed.
#[derive(Clone, Copy, Debug)]
pub struct IstioMeta<'a> {
    /// Namespace.
    pub namespace: &'a str,
    /// Name.
    pub name: &'a str,
    /// `metadata.labels`.
    pub labels: &'a BTreeMap<String, String>,
    /// `metadata.annotations`.
    pub annotations: &'a BTreeMap<String, String>,
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
    /// The namespaces it is exported to, from the `networking.istio.io/exportTo` annotation
    /// (comma separated, as Istio reads it); empty when the annotation is absent (the mesh
    /// default, `*`, applies).
    pub export_to: Vec<String>,
}

/// The annotation that limits a Service's visibility, as a ServiceEntry's `exportTo` does.
pub const EXPORT_TO_ANNOTATION: &str = "networking.istio.io/exportTo";

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

/// A ConfigMap: its `data`. The mesh config (`istio-system/istio`, key `mesh`) is validated
/// when loaded ([`crate::meshconfig`]); other ConfigMaps are kept and not read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConfigMap {
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// `data`.
    pub data: BTreeMap<String, String>,
}
