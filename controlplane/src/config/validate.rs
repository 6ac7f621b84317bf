//! Validation: the lenient YAML shapes of [`super::raw`] into the typed objects of
//! [`super::objects`], collecting every problem with the path of the field it concerns
//! (`spec.ports[0].port`), as Kubernetes' own validation reports them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use super::objects::{
    ClusterIp, EndpointAddress, EndpointPort, EndpointSlice, EndpointSubset, Endpoints, Namespace,
    Service, ServicePort, SliceEndpoint, TargetPort, Transport, EXPORT_TO_ANNOTATION,
};
use super::raw::{
    IntOrString, RawEndpointAddress, RawEndpointPort, RawEndpointSlice, RawEndpoints, RawMeta,
    RawNamespace, RawService,
};

/// Label on an EndpointSlice naming its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// What is wrong with one field.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum FieldProblem {
    /// The field must be given.
    #[error("required")]
    Required,
    /// A list that must have at least one entry is empty.
    #[error("must have at least one entry")]
    Empty,
    /// A port number outside 1-65535.
    #[error("must be 1-65535 (got {0})")]
    PortRange(i64),
    /// Not an IP address.
    #[error("{0:?} is not an IP address")]
    NotAnIp(String),
    /// An address of the wrong family for the slice's `addressType`.
    #[error("{address} is not an {family} address")]
    WrongFamily {
        /// The address.
        address: IpAddr,
        /// `IPv4` or `IPv6`.
        family: &'static str,
    },
    /// A name that breaks its naming rule.
    #[error("{value:?} is not a valid {rule}")]
    BadName {
        /// The value.
        value: String,
        /// The rule it breaks.
        rule: NameRule,
    },
    /// A value that must be unique within its list appears again.
    #[error("duplicate value {0:?}")]
    Duplicate(String),
    /// A value outside the supported set.
    #[error("{value:?} is not supported (supported: {supported})")]
    Unsupported {
        /// The value.
        value: String,
        /// The supported values.
        supported: &'static str,
    },
    /// A port name is required because the Service has several ports.
    #[error("required when there is more than one port")]
    PortNameRequired,
    /// The YAML does not have the field's type (the decoder's message).
    #[error("{0}")]
    Decode(String),
    /// A rule of Istio's validation (webhook or CRD schema) is broken.
    #[error(transparent)]
    Istio(Box<super::istio::IstioProblem>),
    /// A route to a subset that no DestinationRule visible from the object's namespace defines
    /// (Istio's analyzer reports it as IST0101 ReferencedResourceNotFound).
    #[error("no DestinationRule defines subset {subset:?} of host {host} (Referenced host+subset in destinationrule not found: \"{host}+{subset}\")")]
    SubsetNotDefined {
        /// The destination host, as written.
        host: String,
        /// The subset.
        subset: String,
    },
}

/// Naming rules of Kubernetes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameRule {
    /// RFC 1123 label: lowercase letters, digits and `-`, alphanumeric at both ends, at most 63.
    Dns1123Label,
    /// RFC 1035 label: as an RFC 1123 label, starting with a letter.
    Dns1035Label,
    /// RFC 1123 subdomain: dot-separated RFC 1123 labels, at most 253.
    Dns1123Subdomain,
    /// IANA service name (a named port): at most 15, lowercase letters, digits and `-`, one
    /// letter at least.
    IanaServiceName,
    /// Label key: an optional DNS subdomain prefix and `/`, then a name of at most 63
    /// alphanumerics, `-`, `_` and `.`, alphanumeric at both ends.
    LabelKey,
    /// Label value: empty, or at most 63 alphanumerics, `-`, `_` and `.`, alphanumeric at both
    /// ends.
    LabelValue,
}

impl fmt::Display for NameRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameRule::Dns1123Label => {
                "DNS-1123 label (lowercase letters, digits and '-', at most 63 characters)"
            }
            NameRule::Dns1035Label => {
                "DNS-1035 label (lowercase letters, digits and '-', starting with a letter, at \
                 most 63 characters)"
            }
            NameRule::Dns1123Subdomain => {
                "DNS-1123 subdomain (dot-separated DNS-1123 labels, at most 253 characters)"
            }
            NameRule::IanaServiceName => {
                "port name (at most 15 lowercase letters, digits and '-', with a letter)"
            }
            NameRule::LabelKey => "label key",
            NameRule::LabelValue => "label value (at most 63 characters)",
        })
    }
}

impl NameRule {
    /// Whether `value` follows this rule.
    pub fn accepts(self, value: &str) -> bool {
        match self {
            NameRule::Dns1123Label => is_dns1123_label(value),
            NameRule::Dns1035Label => {
                is_dns1123_label(value) && value.starts_with(|c: char| c.is_ascii_lowercase())
            }
            NameRule::Dns1123Subdomain => {
                value.len() <= 253 && value.split('.').all(is_dns1123_label)
            }
            NameRule::IanaServiceName => {
                value.len() <= 15
                    && is_dns1123_label(value)
                    && !value.contains("--")
                    && value.chars().any(|c| c.is_ascii_lowercase())
            }
            NameRule::LabelKey => match value.rsplit_once('/') {
                Some((prefix, name)) => {
                    NameRule::Dns1123Subdomain.accepts(prefix) && is_label_name(name)
                }
                None => is_label_name(value),
            },
            NameRule::LabelValue => value.is_empty() || is_label_name(value),
        }
    }
}

fn is_dns1123_label(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !value.starts_with('-')
        && !value.ends_with('-')
}

fn is_label_name(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && value.starts_with(|c: char| c.is_ascii_alphanumeric())
        && value.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// The problems found in one object, each with its field path.
#[derive(Debug, Default)]
pub struct Problems(pub Vec<(String, FieldProblem)>);

impl Problems {
    fn add(&mut self, field: impl Into<String>, problem: FieldProblem) {
        self.0.push((field.into(), problem));
    }

    fn name(&mut self, field: impl Into<String>, value: &str, rule: NameRule) {
        if !rule.accepts(value) {
            self.add(
                field,
                FieldProblem::BadName {
                    value: value.to_string(),
                    rule,
                },
            );
        }
    }

    fn port(&mut self, field: impl Into<String>, value: Option<i64>) -> u16 {
        let field = field.into();
        match value {
            None => {
                self.add(field, FieldProblem::Required);
                0
            }
            Some(p) => match u16::try_from(p) {
                Ok(p) if p > 0 => p,
                _ => {
                    self.add(field, FieldProblem::PortRange(p));
                    0
                }
            },
        }
    }

    fn ip(&mut self, field: impl Into<String>, value: Option<&str>) -> Option<IpAddr> {
        let field = field.into();
        match value {
            None => {
                self.add(field, FieldProblem::Required);
                None
            }
            Some(v) => match v.parse() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    self.add(field, FieldProblem::NotAnIp(v.to_string()));
                    None
                }
            },
        }
    }

    fn transport(&mut self, field: impl Into<String>, value: Option<&str>) -> Transport {
        match value {
            None | Some("TCP") => Transport::Tcp,
            Some("UDP") => Transport::Udp,
            Some("SCTP") => Transport::Sctp,
            Some(other) => {
                self.add(
                    field,
                    FieldProblem::Unsupported {
                        value: other.to_string(),
                        supported: "TCP, UDP, SCTP",
                    },
                );
                Transport::Tcp
            }
        }
    }

    fn labels(&mut self, field: &str, labels: &BTreeMap<String, String>) {
        for (k, v) in labels {
            self.name(format!("{field}[{k}]"), k, NameRule::LabelKey);
            self.name(format!("{field}[{k}]"), v, NameRule::LabelValue);
        }
    }

    fn finish<T>(self, value: T) -> Result<T, Problems> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}

/// A ConfigMap; the mesh config (`istio-system/istio`, key `mesh`) is checked.
pub(crate) fn config_map(
    ns: &str,
    name: &str,
    raw: super::raw::RawConfigMap,
) -> Result<super::objects::ConfigMap, Problems> {
    let mut p = Problems::default();
    p.name("metadata.name", name, NameRule::Dns1123Subdomain);
    let data = raw.data.unwrap_or_default();
    if ns == crate::networking::ROOT_NAMESPACE && name == crate::meshconfig::MESH_CONFIGMAP {
        if let Some(mesh) = data.get(crate::meshconfig::MESH_KEY) {
            if let Err(problems) = crate::meshconfig::parse(mesh) {
                p.0.extend(problems);
            }
        }
    }
    p.finish(super::objects::ConfigMap {
        name: name.to_string(),
        namespace: ns.to_string(),
        data,
    })
}

/// A Namespace.
pub(crate) fn namespace(name: &str, raw: RawNamespace) -> Result<Namespace, Problems> {
    let mut p = Problems::default();
    p.name("metadata.name", name, NameRule::Dns1123Label);
    let labels = meta_labels(&mut p, raw.metadata);
    p.finish(Namespace {
        name: name.to_string(),
        labels,
    })
}

fn meta_labels(p: &mut Problems, meta: RawMeta) -> BTreeMap<String, String> {
    let labels = meta.labels.unwrap_or_default();
    p.labels("metadata.labels", &labels);
    labels
}

/// A Service.
pub(crate) fn service(ns: &str, name: &str, raw: RawService) -> Result<Service, Problems> {
    let mut p = Problems::default();
    p.name("metadata.name", name, NameRule::Dns1035Label);
    let export_to = raw
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(EXPORT_TO_ANNOTATION))
        .map(|v| {
            v.split(',')
                .map(|ns| ns.trim().to_string())
                .filter(|ns| !ns.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let labels = meta_labels(&mut p, raw.metadata);
    let spec = raw.spec.unwrap_or_default();
    match spec.service_type.as_deref() {
        None | Some("ClusterIP") | Some("NodePort") | Some("LoadBalancer") => {}
        Some(other) => p.add(
            "spec.type",
            FieldProblem::Unsupported {
                value: other.to_string(),
                supported: "ClusterIP, NodePort, LoadBalancer",
            },
        ),
    }
    let cluster_ip = match spec.cluster_ip.as_deref() {
        None | Some("") => ClusterIp::Unassigned,
        Some("None") => ClusterIp::Headless,
        Some(ip) => p
            .ip("spec.clusterIP", Some(ip))
            .map_or(ClusterIp::Unassigned, ClusterIp::Ip),
    };
    let selector = spec.selector.filter(|s| !s.is_empty());
    if let Some(selector) = &selector {
        p.labels("spec.selector", selector);
    }
    let raw_ports = spec.ports.unwrap_or_default();
    if raw_ports.is_empty() && cluster_ip != ClusterIp::Headless {
        p.add("spec.ports", FieldProblem::Empty);
    }
    let several = raw_ports.len() > 1;
    let mut names = BTreeSet::new();
    let mut numbers = BTreeSet::new();
    let mut ports = Vec::with_capacity(raw_ports.len());
    for (i, rp) in raw_ports.into_iter().enumerate() {
        let f = |leaf: &str| format!("spec.ports[{i}].{leaf}");
        match &rp.name {
            Some(n) => {
                p.name(f("name"), n, NameRule::Dns1123Label);
                if !names.insert(n.clone()) {
                    p.add(f("name"), FieldProblem::Duplicate(n.clone()));
                }
            }
            None if several => p.add(f("name"), FieldProblem::PortNameRequired),
            None => {}
        }
        let port = p.port(f("port"), rp.port);
        let transport = p.transport(f("protocol"), rp.protocol.as_deref());
        if port != 0 && !numbers.insert((port, transport)) {
            p.add(f("port"), FieldProblem::Duplicate(port.to_string()));
        }
        let target_port = match rp.target_port {
            None => TargetPort::Number(port),
            Some(IntOrString::Int(n)) => TargetPort::Number(p.port(f("targetPort"), Some(n))),
            Some(IntOrString::Str(s)) => match s.parse::<i64>() {
                Ok(n) => TargetPort::Number(p.port(f("targetPort"), Some(n))),
                Err(_) => {
                    p.name(f("targetPort"), &s, NameRule::IanaServiceName);
                    TargetPort::Name(s)
                }
            },
        };
        ports.push(ServicePort {
            name: rp.name,
            port,
            target_port,
            transport,
            app_protocol: rp.app_protocol.filter(|a| !a.is_empty()),
        });
    }
    p.finish(Service {
        name: name.to_string(),
        namespace: ns.to_string(),
        labels,
        cluster_ip,
        ports,
        selector,
        export_to,
    })
}

fn endpoint_ports(p: &mut Problems, field: &str, raw: Vec<RawEndpointPort>) -> Vec<EndpointPort> {
    let mut names = BTreeSet::new();
    let several = raw.len() > 1;
    let mut ports = Vec::with_capacity(raw.len());
    for (i, rp) in raw.into_iter().enumerate() {
        let f = |leaf: &str| format!("{field}[{i}].{leaf}");
        match &rp.name {
            Some(n) if !n.is_empty() => {
                p.name(f("name"), n, NameRule::Dns1123Label);
                if !names.insert(n.clone()) {
                    p.add(f("name"), FieldProblem::Duplicate(n.clone()));
                }
            }
            _ if several => p.add(f("name"), FieldProblem::PortNameRequired),
            _ => {}
        }
        let port = p.port(f("port"), rp.port);
        let transport = p.transport(f("protocol"), rp.protocol.as_deref());
        ports.push(EndpointPort {
            name: rp.name.filter(|n| !n.is_empty()),
            port,
            transport,
        });
    }
    ports
}

fn endpoint_addresses(
    p: &mut Problems,
    field: &str,
    raw: Option<Vec<RawEndpointAddress>>,
) -> Vec<EndpointAddress> {
    let mut out = Vec::new();
    for (i, ra) in raw.unwrap_or_default().into_iter().enumerate() {
        if let Some(ip) = p.ip(format!("{field}[{i}].ip"), ra.ip.as_deref()) {
            out.push(EndpointAddress {
                ip,
                node_name: ra.node_name,
            });
        }
    }
    out
}

/// An Endpoints object.
pub(crate) fn endpoints(ns: &str, name: &str, raw: RawEndpoints) -> Result<Endpoints, Problems> {
    let mut p = Problems::default();
    p.name("metadata.name", name, NameRule::Dns1123Subdomain);
    let mut subsets = Vec::new();
    for (i, rs) in raw.subsets.unwrap_or_default().into_iter().enumerate() {
        let addresses =
            endpoint_addresses(&mut p, &format!("subsets[{i}].addresses"), rs.addresses);
        let not_ready_addresses = endpoint_addresses(
            &mut p,
            &format!("subsets[{i}].notReadyAddresses"),
            rs.not_ready_addresses,
        );
        let raw_ports = rs.ports.unwrap_or_default();
        if raw_ports.is_empty() {
            p.add(format!("subsets[{i}].ports"), FieldProblem::Empty);
        }
        let ports = endpoint_ports(&mut p, &format!("subsets[{i}].ports"), raw_ports);
        subsets.push(EndpointSubset {
            addresses,
            not_ready_addresses,
            ports,
        });
    }
    p.finish(Endpoints {
        name: name.to_string(),
        namespace: ns.to_string(),
        subsets,
    })
}

/// An EndpointSlice.
pub(crate) fn endpoint_slice(
    ns: &str,
    name: &str,
    raw: RawEndpointSlice,
) -> Result<EndpointSlice, Problems> {
    let mut p = Problems::default();
    p.name("metadata.name", name, NameRule::Dns1123Subdomain);
    let labels = meta_labels(&mut p, raw.metadata);
    let label_field = format!("metadata.labels[{SERVICE_NAME_LABEL}]");
    let service_name = match labels.get(SERVICE_NAME_LABEL) {
        Some(s) => {
            p.name(&label_field, s, NameRule::Dns1035Label);
            s.clone()
        }
        None => {
            p.add(label_field, FieldProblem::Required);
            String::new()
        }
    };
    let v4 = match raw.address_type.as_deref() {
        Some("IPv4") => Some(true),
        Some("IPv6") => Some(false),
        None => {
            p.add("addressType", FieldProblem::Required);
            None
        }
        Some(other) => {
            p.add(
                "addressType",
                FieldProblem::Unsupported {
                    value: other.to_string(),
                    supported: "IPv4, IPv6",
                },
            );
            None
        }
    };
    let mut endpoints = Vec::new();
    for (i, re) in raw.endpoints.unwrap_or_default().into_iter().enumerate() {
        let raw_addresses = re.addresses.unwrap_or_default();
        if raw_addresses.is_empty() {
            p.add(format!("endpoints[{i}].addresses"), FieldProblem::Empty);
        }
        let mut addresses = Vec::new();
        for (j, a) in raw_addresses.iter().enumerate() {
            let field = format!("endpoints[{i}].addresses[{j}]");
            let Some(ip) = p.ip(&field, Some(a)) else {
                continue;
            };
            match (v4, ip) {
                (Some(false), IpAddr::V4(_)) => p.add(
                    field,
                    FieldProblem::WrongFamily {
                        address: ip,
                        family: "IPv6",
                    },
                ),
                (Some(true), IpAddr::V6(_)) => p.add(
                    field,
                    FieldProblem::WrongFamily {
                        address: ip,
                        family: "IPv4",
                    },
                ),
                _ => addresses.push(ip),
            }
        }
        let ready = re.conditions.and_then(|c| c.ready).unwrap_or(true);
        endpoints.push(SliceEndpoint {
            addresses,
            ready,
            zone: re.zone,
            node_name: re.node_name,
        });
    }
    let ports = endpoint_ports(&mut p, "ports", raw.ports.unwrap_or_default());
    p.finish(EndpointSlice {
        name: name.to_string(),
        namespace: ns.to_string(),
        service_name,
        endpoints,
        ports,
    })
}
