//! `Sidecar` (`networking.istio.io`): the inbound and outbound listeners and egress visibility
//! of a workload's proxy. Types from Istio's `sidecar.proto`; Istio's `ValidateSidecar` rules.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::destination_rule::check::check_connection_pool;
use super::destination_rule::ConnectionPoolSettings;
use super::gateway::{check_tls, ServerTlsMode, ServerTlsSettings};
use super::names::{self, validate_selector_labels};
use super::types::{Destination, Protocol, WorkloadLabels};
use super::values;
use super::{at, idx, Checker};

/// `Sidecar.spec`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Sidecar {
    /// Workloads the Sidecar applies to (the namespace's default when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<WorkloadLabels>,
    /// Inbound listeners.
    #[serde(default)]
    pub ingress: Vec<IngressListener>,
    /// Outbound listeners and the hosts they may reach.
    #[serde(default)]
    pub egress: Vec<EgressListener>,
    /// Connection pool for inbound connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound_connection_pool: Option<ConnectionPoolSettings>,
    /// Handling of traffic to unknown destinations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
}

/// How a listener captures traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CaptureMode {
    /// The environment's default.
    Default,
    /// iptables redirection.
    Iptables,
    /// No capture: the application talks to the proxy directly.
    None,
}

/// `IstioIngressListener`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IngressListener {
    /// The port traffic arrives on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<SidecarPort>,
    /// Address to bind to.
    #[serde(default)]
    pub bind: String,
    /// Capture mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_mode: Option<CaptureMode>,
    /// Where to deliver (`127.0.0.1:PORT`, `0.0.0.0:PORT`, `unix://...`).
    #[serde(default)]
    pub default_endpoint: String,
    /// TLS termination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTlsSettings>,
    /// Connection pool for this port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPoolSettings>,
}

/// `IstioEgressListener`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EgressListener {
    /// Port (none for the catch-all listener).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<SidecarPort>,
    /// Address or `unix://` socket to bind to.
    #[serde(default)]
    pub bind: String,
    /// Capture mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_mode: Option<CaptureMode>,
    /// Reachable services, as `namespace/dnsName`.
    #[serde(default)]
    pub hosts: Vec<String>,
}

/// `SidecarPort`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SidecarPort {
    /// Port number (0 for a Unix socket).
    #[serde(default)]
    pub number: u32,
    /// Protocol.
    #[serde(default)]
    pub protocol: String,
    /// Port name.
    #[serde(default)]
    pub name: String,
    /// Deprecated: has no effect on Sidecars.
    #[serde(default)]
    pub target_port: u32,
}

/// `OutboundTrafficPolicy.Mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundMode {
    /// Only services in the registry (protobuf's zero value).
    RegistryOnly,
    /// Unknown destinations pass through.
    AllowAny,
}

/// `OutboundTrafficPolicy`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutboundTrafficPolicy {
    /// Mode (REGISTRY_ONLY when the policy is given without one, as in protobuf).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<OutboundMode>,
    /// Where unknown traffic goes in ALLOW_ANY mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_proxy: Option<Destination>,
}

/// What is wrong with a Sidecar.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// A selector without labels (a warning).
    #[error("sidecar: workload selector specified without labels, will be applied to all services in namespace")]
    SelectorWithoutLabels,
    /// Nothing configured.
    #[error("sidecar: empty configuration provided")]
    Empty,
    /// An ingress listener without port.
    #[error("sidecar: port is required for ingress listeners")]
    IngressPort,
    /// A target port.
    #[error("targetPort has no impact on Sidecars")]
    TargetPort,
    /// Two listeners on one port.
    #[error("sidecar: ports on IP bound listeners must be unique")]
    DuplicatePort,
    /// A default endpoint other than a loopback or wildcard address.
    #[error("sidecar: defaultEndpoint must be of form 127.0.0.1:<port>,0.0.0.0:<port>,[::1]:port,[::]:port,unix://filepath or unset")]
    DefaultEndpointHost,
    /// A default endpoint that is not HOST:PORT.
    #[error("address {0}: {1}")]
    DefaultEndpointSyntax(String, &'static str),
    /// A default endpoint whose port is not a number.
    #[error("sidecar: defaultEndpoint port ({0}) is not a number")]
    DefaultEndpointPort(String),
    /// SANs on ingress TLS.
    #[error("sidecar: subjectAltNames is not supported in ingress tls")]
    TlsSans,
    /// httpsRedirect on ingress TLS.
    #[error("sidecar: httpsRedirect is not supported")]
    TlsRedirect,
    /// A credential on ingress TLS.
    #[error("sidecar: credentialName is not currently supported")]
    TlsCredential,
    /// Several certificates on ingress TLS.
    #[error("sidecar: tls_certificates is not currently supported")]
    TlsCertificates,
    /// ISTIO_MUTUAL or AUTO_PASSTHROUGH on ingress TLS.
    #[error("configuration is invalid: cannot set mode to {0} in sidecar ingress tls")]
    TlsMode(&'static str),
    /// TLS on a non-TLS port.
    #[error("server cannot have TLS settings for non HTTPS/TLS ports")]
    TlsOnPlain,
    /// HTTP pool settings on a non-HTTP port (a warning).
    #[error("sidecar: HTTP connection pool settings are configured for port {0} ({1:?}) but its protocol is not HTTP ({2}); only TCP settings will apply")]
    HttpPoolOnTcp(u32, String, String),
    /// A catch-all egress listener before others.
    #[error(
        "sidecar: the egress listener with empty port should be the last listener in the list"
    )]
    CatchAllNotLast,
    /// Two catch-all egress listeners.
    #[error("sidecar: egress can have only one listener with empty port")]
    CatchAllTwice,
    /// Two listeners on one socket.
    #[error("sidecar: unix domain socket values for listeners must be unique")]
    DuplicateSocket,
    /// Port 0 without a socket.
    #[error("sidecar: ports with 0 value must have a unix domain socket bind address")]
    ZeroPortWithoutSocket,
    /// A capture mode that sockets cannot use.
    #[error("sidecar: captureMode must be DEFAULT/NONE for unix domain socket listeners")]
    SocketCaptureMode,
    /// An egress listener without hosts.
    #[error("sidecar: egress listener must contain at least one host")]
    EgressHosts,
    /// A host listed twice (a warning).
    #[error("duplicated egress host: {0}")]
    DuplicateHost(String),
    /// `*/*` with other hosts (a warning).
    #[error("`*/*` host select all resources, no other hosts can be added")]
    AllHostsAndMore,
    /// An egress proxy outside ALLOW_ANY.
    #[error("sidecar: egress_proxy must be set only with ALLOW_ANY outbound_traffic_policy mode")]
    EgressProxyMode,
    /// An egress proxy without port.
    #[error("sidecar: egress_proxy port must be non-nil")]
    EgressProxyPort,
}

/// Checks a Sidecar's spec.
pub(crate) fn check(c: &mut Checker, s: &Sidecar) {
    if let Some(sel) = &s.workload_selector {
        let path = "spec.workloadSelector.labels";
        validate_selector_labels(c, path, &sel.labels);
        if let Some(w) = c.warnings.last_mut().filter(|(p, _)| p == path) {
            w.1 = Problem::SelectorWithoutLabels.into();
        }
    }
    if s.egress.is_empty()
        && s.ingress.is_empty()
        && s.outbound_traffic_policy.is_none()
        && s.inbound_connection_pool.is_none()
    {
        c.err("spec", Problem::Empty);
        return;
    }
    let mut ports = BTreeSet::new();
    for (i, l) in s.ingress.iter().enumerate() {
        check_ingress(c, &idx("spec.ingress", i), l, &mut ports);
    }
    if let Some(pool) = &s.inbound_connection_pool {
        check_connection_pool(c, "spec.inboundConnectionPool", pool);
    }
    let mut ports = BTreeSet::new();
    let mut sockets = BTreeSet::new();
    let mut catch_all = false;
    for (i, l) in s.egress.iter().enumerate() {
        let path = idx("spec.egress", i);
        match &l.port {
            None if catch_all => {
                c.err(at(&path, "port"), Problem::CatchAllTwice);
                continue;
            }
            None if i == s.egress.len() - 1 => catch_all = true,
            None => c.err(at(&path, "port"), Problem::CatchAllNotLast),
            Some(port) => {
                check_egress_port(c, &path, l, port);
                if port.number == 0 {
                    if !sockets.insert(l.bind.clone()) {
                        c.err(at(&path, "bind"), Problem::DuplicateSocket);
                    }
                } else if !ports.insert(port.number) {
                    c.err(at(&at(&path, "port"), "number"), Problem::DuplicatePort);
                }
            }
        }
        check_egress_hosts(c, &path, &l.hosts);
    }
    if let Some(otp) = &s.outbound_traffic_policy {
        check_outbound(c, "spec.outboundTrafficPolicy", otp);
    }
}

fn check_port(c: &mut Checker, path: &str, port: &SidecarPort, check_number: bool) {
    if !port.name.is_empty() {
        c.check(at(path, "name"), values::validate_port_name(&port.name));
    }
    c.check(
        at(path, "protocol"),
        values::validate_protocol(&port.protocol),
    );
    if check_number {
        c.check(
            at(path, "number"),
            values::validate_port(i64::from(port.number)),
        );
    }
}

fn check_ingress(c: &mut Checker, path: &str, l: &IngressListener, ports: &mut BTreeSet<u32>) {
    let Some(port) = &l.port else {
        c.err(at(path, "port"), Problem::IngressPort);
        return;
    };
    let pp = at(path, "port");
    if port.target_port > 0 {
        c.err(at(&pp, "targetPort"), Problem::TargetPort);
    }
    check_port(c, &pp, port, true);
    if !l.bind.is_empty() {
        c.check(at(path, "bind"), values::validate_ip(&l.bind));
    }
    if !ports.insert(port.number) {
        c.err(at(&pp, "number"), Problem::DuplicatePort);
    }
    if !l.default_endpoint.is_empty() {
        check_default_endpoint(c, &at(path, "defaultEndpoint"), &l.default_endpoint);
    }
    if let Some(tls) = &l.tls {
        let tp = at(path, "tls");
        if !tls.subject_alt_names.is_empty() {
            c.err(at(&tp, "subjectAltNames"), Problem::TlsSans);
        }
        if tls.https_redirect {
            c.err(at(&tp, "httpsRedirect"), Problem::TlsRedirect);
        }
        if !tls.credential_name.is_empty() || !tls.credential_names.is_empty() {
            c.err(at(&tp, "credentialName"), Problem::TlsCredential);
        }
        if !tls.tls_certificates.is_empty() {
            c.err(at(&tp, "tlsCertificates"), Problem::TlsCertificates);
        }
        match tls.mode() {
            ServerTlsMode::IstioMutual => {
                c.err(at(&tp, "mode"), Problem::TlsMode("ISTIO_MUTUAL"));
            }
            ServerTlsMode::AutoPassthrough => {
                c.err(at(&tp, "mode"), Problem::TlsMode("AUTO_PASSTHROUGH"));
            }
            _ => {}
        }
        if !Protocol::parse(&port.protocol).is_tls() {
            c.err(tp.clone(), Problem::TlsOnPlain);
        }
        check_tls(c, &tp, tls);
    }
    if let Some(pool) = &l.connection_pool {
        check_connection_pool(c, &at(path, "connectionPool"), pool);
        if pool.http.is_some() && !Protocol::parse(&port.protocol).is_http() {
            c.warn(
                at(path, "connectionPool"),
                Problem::HttpPoolOnTcp(port.number, port.name.clone(), port.protocol.clone()),
            );
        }
    }
}

/// Go's `net.SplitHostPort`.
fn split_host_port(addr: &str) -> Result<(&str, &str), &'static str> {
    if let Some(rest) = addr.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("missing ']' in address")?;
        let port = after.strip_prefix(':').ok_or("missing port in address")?;
        return Ok((host, port));
    }
    let (host, port) = addr.rsplit_once(':').ok_or("missing port in address")?;
    if host.contains(':') {
        return Err("too many colons in address");
    }
    Ok((host, port))
}

fn check_default_endpoint(c: &mut Checker, path: &str, ep: &str) {
    if let Some(socket) = ep.strip_prefix("unix://") {
        c.check(path, values::validate_unix_address(socket));
        return;
    }
    let (host, port) = match split_host_port(ep) {
        Ok(hp) => hp,
        Err(e) => {
            c.err(path, Problem::DefaultEndpointSyntax(ep.to_string(), e));
            ("", "")
        }
    };
    if !matches!(host, "" | "127.0.0.1" | "0.0.0.0" | "::1" | "::") {
        c.err(path, Problem::DefaultEndpointHost);
    }
    match port.parse::<i64>() {
        Ok(n) => c.check(path, values::validate_port(n)),
        Err(_) => c.err(path, Problem::DefaultEndpointPort(port.to_string())),
    }
}

fn check_egress_port(c: &mut Checker, path: &str, l: &EgressListener, port: &SidecarPort) {
    let pp = at(path, "port");
    if port.target_port > 0 {
        c.err(at(&pp, "targetPort"), Problem::TargetPort);
    }
    check_port(c, &pp, port, port.number != 0);
    if port.number == 0 {
        match l.bind.strip_prefix("unix://") {
            None => c.err(at(path, "bind"), Problem::ZeroPortWithoutSocket),
            Some(socket) => c.check(at(path, "bind"), values::validate_unix_address(socket)),
        }
        if !matches!(
            l.capture_mode,
            None | Some(CaptureMode::Default | CaptureMode::None)
        ) {
            c.err(at(path, "captureMode"), Problem::SocketCaptureMode);
        }
    } else if !l.bind.is_empty() {
        c.check(at(path, "bind"), values::validate_ip(&l.bind));
    }
}

fn check_egress_hosts(c: &mut Checker, path: &str, hosts: &[String]) {
    let hp = at(path, "hosts");
    if hosts.is_empty() {
        c.err(hp, Problem::EgressHosts);
        return;
    }
    let namespace = c.namespace.clone();
    let mut by_ns: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (i, h) in hosts.iter().enumerate() {
        let field = idx(&hp, i);
        if let Some((ns, svc)) = h.split_once('/') {
            let ns = if ns == "." { namespace.as_str() } else { ns };
            let seen = by_ns.entry(ns.to_string()).or_default();
            let duplicate = if svc == "*" {
                !seen.is_empty()
            } else {
                seen.contains(svc) || seen.contains("*")
            };
            if duplicate {
                c.warn(field.clone(), Problem::DuplicateHost(h.clone()));
            }
            seen.insert(svc.to_string());
        }
        for p in names::validate_namespace_slash_host(h, false) {
            c.err(field.clone(), p);
        }
    }
    if by_ns.get("*").is_some_and(|s| s.contains("*")) && by_ns.len() != 1 {
        c.warn(hp, Problem::AllHostsAndMore);
    }
}

fn check_outbound(c: &mut Checker, path: &str, otp: &OutboundTrafficPolicy) {
    let Some(proxy) = &otp.egress_proxy else {
        return;
    };
    let pp = at(path, "egressProxy");
    if otp.mode.unwrap_or(OutboundMode::RegistryOnly) != OutboundMode::AllowAny {
        c.err(pp, Problem::EgressProxyMode);
        return;
    }
    c.check(at(&pp, "host"), names::validate_fqdn(&proxy.host));
    let Some(port) = &proxy.port else {
        c.err(at(&pp, "port"), Problem::EgressProxyPort);
        return;
    };
    if let Some(subset) = proxy.subset.as_deref().filter(|s| !s.is_empty()) {
        if !names::is_dns1123_label(subset) {
            c.err(
                at(&pp, "subset"),
                super::virtual_service::Problem::SubsetName(subset.to_string()),
            );
        }
    }
    c.check(
        at(&at(&pp, "port"), "number"),
        values::validate_port(i64::from(port.number)),
    );
}
