//! `ServiceEntry` and `WorkloadEntry` (`networking.istio.io`): services and workloads outside
//! the Kubernetes registry. Types from Istio's `service_entry.proto` and
//! `workload_entry.proto`; Istio's `ValidateServiceEntry` / `ValidateWorkloadEntry` rules and
//! the CRDs' CEL rules (whose messages are used where both check the same thing).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::names::{self, validate_labels, validate_selector_labels};
use super::types::{Protocol, WorkloadLabels};
use super::values;
use super::{at, idx, key, Checker};

/// `ServiceEntry.spec`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceEntry {
    /// Hosts of the service (wildcard prefixes allowed).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Virtual IPs or CIDRs of the service.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Ports.
    #[serde(default)]
    pub ports: Vec<ServicePort>,
    /// Inside or outside the mesh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// How endpoints are resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<Resolution>,
    /// Endpoints (exclusive with `workloadSelector`; `[]` counts as set, as in the CRD).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Vec<WorkloadEntry>>,
    /// Workloads backing the service (exclusive with `endpoints`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<WorkloadLabels>,
    /// Namespaces to which the service is exported (`~`: none).
    #[serde(default)]
    pub export_to: Vec<String>,
    /// Names the server certificate must carry.
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
}

impl ServiceEntry {
    /// The endpoints (none when absent).
    pub fn endpoints(&self) -> &[WorkloadEntry] {
        self.endpoints.as_deref().unwrap_or_default()
    }

    /// The resolution, NONE by default.
    pub fn resolution(&self) -> Resolution {
        self.resolution.unwrap_or(Resolution::None)
    }
}

/// `ServiceEntry.Location`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Location {
    /// Outside the mesh (the default).
    MeshExternal,
    /// Part of the mesh.
    MeshInternal,
}

/// `ServiceEntry.Resolution`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Resolution {
    /// Forward to the original destination (the default).
    None,
    /// The endpoints' addresses.
    Static,
    /// Resolve hosts or endpoints by DNS.
    Dns,
    /// Resolve by DNS, one address per connection.
    DnsRoundRobin,
    /// Resolve the request's host, for wildcard hosts.
    DynamicDns,
}

impl Resolution {
    fn name(self) -> &'static str {
        match self {
            Resolution::None => "NONE",
            Resolution::Static => "STATIC",
            Resolution::Dns => "DNS",
            Resolution::DnsRoundRobin => "DNS_ROUND_ROBIN",
            Resolution::DynamicDns => "DYNAMIC_DNS",
        }
    }
}

/// `ServicePort`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePort {
    /// Port number.
    #[serde(default)]
    pub number: u32,
    /// Protocol (sniffed when empty).
    #[serde(default)]
    pub protocol: String,
    /// Port name.
    #[serde(default)]
    pub name: String,
    /// Endpoint port (defaults to `number`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u32>,
}

/// `WorkloadEntry.spec` (also a ServiceEntry endpoint).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadEntry {
    /// IP, host name, or `unix://` socket path.
    #[serde(default)]
    pub address: String,
    /// Service port name to endpoint port.
    #[serde(default)]
    pub ports: BTreeMap<String, u32>,
    /// Labels of the workload.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Network of the workload (required without address).
    #[serde(default)]
    pub network: String,
    /// `region/zone/subzone`.
    #[serde(default)]
    pub locality: String,
    /// Load balancing weight.
    #[serde(default)]
    pub weight: u32,
    /// Service account of the workload.
    #[serde(default)]
    pub service_account: String,
}

/// What is wrong with a ServiceEntry or a WorkloadEntry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// Both workloadSelector and endpoints.
    #[error("only one of WorkloadSelector or Endpoints can be set")]
    SelectorAndEndpoints,
    /// A selector without labels (a warning).
    #[error("service entry: workload selector specified without labels, will be applied to all services in namespace")]
    SelectorWithoutLabels,
    /// No hosts.
    #[error("service entry must have at least one host")]
    NoHosts,
    /// `*` as a host.
    #[error("hostname cannot be wildcard")]
    WildcardHost,
    /// CIDRs with DNS resolution.
    #[error("CIDR addresses are allowed only for NONE/STATIC resolution types")]
    CidrResolution,
    /// Two ports with one name.
    #[error("Duplicate value: {0:?} (service entry port name already defined)")]
    DuplicatePortName(String),
    /// Two ports with one number.
    #[error("port number cannot be duplicated")]
    DuplicatePortNumber,
    /// Endpoints with NONE resolution.
    #[error("NONE mode cannot set endpoints")]
    NoneWithEndpoints,
    /// A selector with NONE or DNS resolution (a warning).
    #[error("workloadSelector should not be set when resolution mode is {0}")]
    SelectorWithResolution(&'static str),
    /// Non-FQDN hosts resolved by DNS.
    #[error("hosts must be FQDN if no endpoints are provided for resolution mode {0}")]
    DnsHosts(&'static str),
    /// Several endpoints with DNS_ROUND_ROBIN.
    #[error("DNS_ROUND_ROBIN mode cannot have multiple endpoints")]
    RoundRobinEndpoints,
    /// An endpoint address that is neither an IP nor an FQDN.
    #[error("endpoint address {0:?} is not a valid FQDN or an IP address")]
    EndpointAddress(String),
    /// A STATIC endpoint that is not an IP.
    #[error("endpoint address {0:?} is not a valid IP address")]
    EndpointIp(String),
    /// An endpoint port the service does not define.
    #[error("endpoint port {0} is not defined by the service entry")]
    EndpointPort(u32),
    /// A Unix endpoint with several service ports.
    #[error("exactly 1 service port required for unix endpoints")]
    UnixServicePorts,
    /// Several hosts on TCP ports (a warning).
    #[error("service entry can not have more than one host specified simultaneously with address and tcp port")]
    HostsWithAddressAndTcp,
    /// Several hosts with plain TCP ports.
    #[error("multiple hosts provided with non-HTTP, non-TLS ports")]
    HostsWithTcp,
    /// Endpoints with DYNAMIC_DNS (a warning: they are ignored).
    #[error("endpoints are ignored when resolution mode is DYNAMIC_DNS")]
    DynamicDnsEndpoints,
    /// A WorkloadEntry with neither address nor network.
    #[error("Address is required")]
    AddressRequired,
    /// A WorkloadEntry without address but with a network (a warning).
    #[error("address is unset with network {0:?}")]
    AddressUnset(String),
    /// A relative Unix socket path.
    #[error("UDS must be an absolute path or abstract socket")]
    UdsRelative,
    /// A Unix socket path ending with `/`.
    #[error("UDS may not be a dir")]
    UdsDir,
    /// Ports on a Unix endpoint.
    #[error("UDS may not include ports")]
    UdsPorts,
    /// A bad key in a WorkloadEntry's ports.
    #[error("port name must be valid")]
    PortNameInvalid,
}

/// Checks a ServiceEntry's spec.
pub(crate) fn check(c: &mut Checker, se: &ServiceEntry) {
    if let Some(sel) = &se.workload_selector {
        let path = "spec.workloadSelector.labels";
        validate_selector_labels(c, path, &sel.labels);
        // Istio words this warning its own way for ServiceEntries.
        if let Some(w) = c.warnings.last_mut().filter(|(p, _)| p == path) {
            w.1 = Problem::SelectorWithoutLabels.into();
        }
        if se.endpoints.is_some() {
            c.err("spec", Problem::SelectorAndEndpoints);
        }
    }
    if se.hosts.is_empty() {
        c.err("spec.hosts", Problem::NoHosts);
    }
    for (i, h) in se.hosts.iter().enumerate() {
        let field = idx("spec.hosts", i);
        if h == "*" {
            c.err(field, Problem::WildcardHost);
        } else {
            c.check(field.clone(), names::validate_wildcard_domain(h));
            if let Err(w) = names::validate_partial_wildcard(h) {
                c.warn(field, w);
            }
        }
    }
    let resolution = se.resolution();
    let mut cidr = false;
    for (i, a) in se.addresses.iter().enumerate() {
        cidr |= a.contains('/');
        c.check(idx("spec.addresses", i), values::validate_ip_subnet(a));
    }
    if cidr && !matches!(resolution, Resolution::None | Resolution::Static) {
        c.err("spec.addresses", Problem::CidrResolution);
    }
    let mut port_names = BTreeSet::new();
    let mut port_numbers = BTreeSet::new();
    for (i, p) in se.ports.iter().enumerate() {
        let path = idx("spec.ports", i);
        if !port_names.insert(p.name.clone()) {
            c.err(
                at(&path, "name"),
                Problem::DuplicatePortName(p.name.clone()),
            );
        }
        if !port_numbers.insert(p.number) {
            c.err(at(&path, "number"), Problem::DuplicatePortNumber);
        }
        if !(1..=65535).contains(&p.number) {
            c.err(at(&path, "number"), values::Problem::PortRange);
        }
        if p.target_port.is_some_and(|t| !(1..=65535).contains(&t)) {
            c.err(at(&path, "targetPort"), values::Problem::PortRange);
        }
        c.check(at(&path, "name"), values::validate_port_name(&p.name));
        c.check(
            at(&path, "protocol"),
            values::validate_protocol(&p.protocol),
        );
    }
    match resolution {
        Resolution::None => {
            if se.endpoints.is_some() {
                c.err("spec.endpoints", Problem::NoneWithEndpoints);
            }
            if se.workload_selector.is_some() {
                c.warn(
                    "spec.workloadSelector",
                    Problem::SelectorWithResolution("NONE"),
                );
            }
        }
        Resolution::Static => {
            for (i, ep) in se.endpoints().iter().enumerate() {
                check_workload_entry(c, &idx("spec.endpoints", i), ep, Some(&port_names), false);
            }
        }
        Resolution::Dns | Resolution::DnsRoundRobin => check_dns(c, se, &port_names),
        Resolution::DynamicDns => {
            if !se.endpoints().is_empty() {
                c.warn("spec.endpoints", Problem::DynamicDnsEndpoints);
            }
        }
    }
    if resolution != Resolution::None && se.hosts.len() > 1 {
        let plain = se.ports.iter().any(|p| {
            let proto = Protocol::parse(&p.protocol);
            !proto.is_http() && !proto.is_tls()
        });
        if plain {
            c.err("spec.hosts", Problem::HostsWithTcp);
        }
    }
    names::validate_export_to(c, "spec.exportTo", &se.export_to, true, false);
}

fn check_dns(c: &mut Checker, se: &ServiceEntry, port_names: &BTreeSet<String>) {
    let resolution = se.resolution();
    if se.endpoints().is_empty() {
        for (i, h) in se.hosts.iter().enumerate() {
            if names::validate_fqdn(h).is_err() {
                c.err(idx("spec.hosts", i), Problem::DnsHosts(resolution.name()));
            }
        }
    }
    if resolution == Resolution::DnsRoundRobin && se.endpoints().len() > 1 {
        c.err("spec.endpoints", Problem::RoundRobinEndpoints);
    }
    for (i, ep) in se.endpoints().iter().enumerate() {
        let path = idx("spec.endpoints", i);
        if values::validate_ip(&ep.address).is_err() && names::validate_fqdn(&ep.address).is_err() {
            c.err(
                at(&path, "address"),
                Problem::EndpointAddress(ep.address.clone()),
            );
        }
        validate_labels(c, &at(&path, "labels"), &ep.labels);
        for (name, port) in &ep.ports {
            let field = key(&at(&path, "ports"), name);
            if !port_names.contains(name) {
                c.err(field.clone(), Problem::EndpointPort(*port));
            }
            c.check(field.clone(), values::validate_port_name(name));
            c.check(field, values::validate_port(i64::from(*port)));
        }
    }
    if se.workload_selector.is_some() {
        c.warn(
            "spec.workloadSelector",
            Problem::SelectorWithResolution(resolution.name()),
        );
    }
    let tcp = se
        .ports
        .iter()
        .any(|p| Protocol::parse(&p.protocol).is_tcp());
    if !se.addresses.is_empty() && tcp && se.hosts.len() > 1 {
        c.warn("spec.hosts", Problem::HostsWithAddressAndTcp);
    }
}

/// Checks a WorkloadEntry's spec.
pub(crate) fn check_workload(c: &mut Checker, we: &WorkloadEntry) {
    check_workload_entry(c, "spec", we, None, true);
}

/// Istio's `validateWorkloadEntry`: standalone (`service_ports` none, FQDN addresses allowed)
/// or as a STATIC ServiceEntry endpoint.
fn check_workload_entry(
    c: &mut Checker,
    path: &str,
    we: &WorkloadEntry,
    service_ports: Option<&BTreeSet<String>>,
    allow_fqdn: bool,
) {
    let address = at(path, "address");
    if we.address.is_empty() {
        if we.network.is_empty() {
            c.err(address, Problem::AddressRequired);
            return;
        }
        c.warn(address.clone(), Problem::AddressUnset(we.network.clone()));
    }
    let unix = we.address.strip_prefix("unix://");
    if let Some(socket) = unix {
        if socket.is_empty() {
            c.err(address.clone(), values::Problem::UnixEmpty);
        } else if !socket.starts_with('/') && !socket.starts_with('@') {
            c.err(address.clone(), Problem::UdsRelative);
        } else if socket.ends_with('/') {
            c.err(address.clone(), Problem::UdsDir);
        }
        if !we.ports.is_empty() {
            c.err(at(path, "ports"), Problem::UdsPorts);
        }
    } else if !we.address.is_empty() && values::validate_ip(&we.address).is_err() {
        if !allow_fqdn {
            c.err(address.clone(), Problem::EndpointIp(we.address.clone()));
        } else if names::validate_fqdn(&we.address).is_err() {
            c.err(
                address.clone(),
                Problem::EndpointAddress(we.address.clone()),
            );
        }
    }
    for (name, port) in &we.ports {
        let field = key(&at(path, "ports"), name);
        if service_ports.is_some_and(|sp| !sp.contains(name)) {
            c.err(field.clone(), Problem::EndpointPort(*port));
        }
        if !names::is_dns1123_label(name) {
            c.err(field.clone(), Problem::PortNameInvalid);
        }
        if !(1..=65535).contains(port) {
            c.err(field, values::Problem::PortRange);
        }
    }
    validate_labels(c, &at(path, "labels"), &we.labels);
    if unix.is_some() && service_ports.is_some_and(|sp| sp.len() != 1) {
        c.err(address, Problem::UnixServicePorts);
    }
}
