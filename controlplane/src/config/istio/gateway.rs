//! `Gateway` (`networking.istio.io`): a load balancer at the edge of the mesh, its servers
//! (port, hosts, TLS). Types from Istio's `gateway.proto` and Istio's `ValidateGateway` rules.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::names;
use super::types::Protocol;
use super::values;
use super::{at, idx, Checker};

/// `Gateway.spec`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Gateway {
    /// Servers: ports and the hosts they serve.
    #[serde(default)]
    pub servers: Vec<Server>,
    /// Labels of the gateway pods this configuration applies to.
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
}

/// `Server`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Server {
    /// The port the proxy listens on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<Port>,
    /// Address (or `unix://` path) to bind to.
    #[serde(default)]
    pub bind: String,
    /// Hosts exposed, `namespace/host` or a bare host.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// TLS settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTlsSettings>,
    /// Deprecated and unused.
    #[serde(default)]
    pub default_endpoint: String,
    /// Optional name of the server.
    #[serde(default)]
    pub name: String,
}

/// `Port`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Port {
    /// Port number.
    #[serde(default)]
    pub number: u32,
    /// Protocol (HTTP, HTTPS, GRPC, GRPC-WEB, HTTP2, MONGO, TCP, TLS).
    #[serde(default)]
    pub protocol: String,
    /// Port name.
    #[serde(default)]
    pub name: String,
    /// Deprecated: has no effect on gateways.
    #[serde(default)]
    pub target_port: u32,
}

/// Server TLS modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServerTlsMode {
    /// Forward by SNI without terminating (the default).
    Passthrough,
    /// Terminate TLS.
    Simple,
    /// Terminate mTLS, requiring client certificates.
    Mutual,
    /// Passthrough for Istio's `outbound_` SNI names.
    AutoPassthrough,
    /// Terminate with Istio's mTLS certificates.
    IstioMutual,
    /// Terminate TLS, verifying client certificates when given.
    OptionalMutual,
}

/// TLS protocol versions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TlsProtocolVersion {
    /// Envoy's choice.
    #[serde(rename = "TLS_AUTO")]
    Auto,
    /// TLS 1.0.
    #[serde(rename = "TLSV1_0")]
    V1_0,
    /// TLS 1.1.
    #[serde(rename = "TLSV1_1")]
    V1_1,
    /// TLS 1.2.
    #[serde(rename = "TLSV1_2")]
    V1_2,
    /// TLS 1.3.
    #[serde(rename = "TLSV1_3")]
    V1_3,
}

/// `ServerTLSSettings`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerTlsSettings {
    /// Redirect HTTP requests to HTTPS.
    #[serde(default)]
    pub https_redirect: bool,
    /// TLS mode (PASSTHROUGH when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ServerTlsMode>,
    /// Server certificate file.
    #[serde(default)]
    pub server_certificate: String,
    /// Private key file.
    #[serde(default)]
    pub private_key: String,
    /// CA bundle to verify clients.
    #[serde(default)]
    pub ca_certificates: String,
    /// Certificate revocation list.
    #[serde(default)]
    pub ca_crl: String,
    /// Secret holding the certificates.
    #[serde(default)]
    pub credential_name: String,
    /// Several secrets (e.g. RSA and ECDSA).
    #[serde(default)]
    pub credential_names: Vec<String>,
    /// Several certificate files.
    #[serde(default)]
    pub tls_certificates: Vec<TlsCertificate>,
    /// Names a client certificate must carry.
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
    /// Accepted client certificate SPKI hashes.
    #[serde(default)]
    pub verify_certificate_spki: Vec<String>,
    /// Accepted client certificate hashes.
    #[serde(default)]
    pub verify_certificate_hash: Vec<String>,
    /// Minimum TLS version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_protocol_version: Option<TlsProtocolVersion>,
    /// Maximum TLS version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_protocol_version: Option<TlsProtocolVersion>,
    /// Cipher suites.
    #[serde(default)]
    pub cipher_suites: Vec<String>,
}

impl ServerTlsSettings {
    /// The mode, PASSTHROUGH by default.
    pub fn mode(&self) -> ServerTlsMode {
        self.mode.unwrap_or(ServerTlsMode::Passthrough)
    }
}

/// `ServerTLSSettings.TLSCertificate`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsCertificate {
    /// Certificate file.
    #[serde(default)]
    pub server_certificate: String,
    /// Key file.
    #[serde(default)]
    pub private_key: String,
    /// CA bundle.
    #[serde(default)]
    pub ca_certificates: String,
}

/// What is wrong with a Gateway or a server TLS setting.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// A name that is not a DNS label.
    #[error("invalid gateway name: {0:?}")]
    Name(String),
    /// No servers.
    #[error("gateway must have at least one server")]
    NoServers,
    /// A server without hosts.
    #[error("server config must contain at least one host")]
    NoHosts,
    /// A server without port.
    #[error("port is required")]
    PortRequired,
    /// An unknown protocol.
    #[error("invalid protocol {0:?}, supported protocols are HTTP, HTTP2, GRPC, GRPC-WEB, MONGO, REDIS, MYSQL, TCP")]
    Protocol(String),
    /// A target port on a gateway.
    #[error("targetPort has no impact on Gateways")]
    TargetPort,
    /// A port without name.
    #[error("port name must be set: number:{0}")]
    PortName(u32),
    /// A non-zero port on a Unix socket.
    #[error("port number must be 0 for unix domain socket: number:{0}")]
    UnixPort(u32),
    /// HTTPS or TLS without TLS settings.
    #[error("server must have TLS settings for HTTPS/TLS protocols")]
    TlsRequired,
    /// Certificates on a plain HTTP port.
    #[error("server cannot have TLS settings for plain text HTTP ports")]
    TlsOnHttp,
    /// TLS on a non-TLS port.
    #[error("server cannot have TLS settings for non HTTPS/TLS ports")]
    TlsOnPlain,
    /// Two servers with one port name.
    #[error("port names in servers must be unique: duplicate name {0}")]
    DuplicatePortName(String),
    /// httpsRedirect on a non-HTTP server (a warning).
    #[error("tls.httpsRedirect should only be used with http servers")]
    HttpsRedirect,
    /// Old TLS without ciphers (a warning).
    #[error("TLS version below TLSV1_2 require setting compatible ciphers as by default they no longer include compatible ciphers.")]
    OldTlsCiphers,
    /// Unknown ciphers (a warning).
    #[error("ignoring invalid cipher suites: [{0}]")]
    InvalidCiphers(String),
    /// Duplicate ciphers (a warning).
    #[error("ignoring duplicate cipher suites: [{0}]")]
    DuplicateCiphers(String),
    /// Certificates with ISTIO_MUTUAL.
    #[error("ISTIO_MUTUAL TLS cannot have associated {0}")]
    IstioMutual(&'static str),
    /// Certificates with passthrough (a warning).
    #[error("{0} mode does not use certificates, they will be ignored")]
    PassthroughCertificates(&'static str),
    /// Several certificate sources.
    #[error("only one of credential_name, credential_names, server_certificate/private_key, tls_certificates should be specified")]
    CertificateSources,
    /// Missing CA bundle.
    #[error("{0} requires a client CA bundle")]
    CaRequired(&'static str),
    /// More than two certificates (a warning).
    #[error("{0} can support up to 2 server certificates")]
    TooManyCertificates(&'static str),
    /// Missing certificate.
    #[error("{0} requires a server certificate")]
    CertificateRequired(&'static str),
    /// Missing key.
    #[error("{0} requires a private key")]
    KeyRequired(&'static str),
    /// A CRL with a credential.
    #[error("CRL is not supported with credentialName. CRL has to be specified in the credential")]
    CrlWithCredential,
    /// A CRL with SIMPLE.
    #[error("CRL is not supported with SIMPLE TLS")]
    CrlWithSimple,
}

/// Cipher suites Envoy (BoringSSL) accepts in `cipherSuites`.
const CIPHER_SUITES: [&str; 15] = [
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
    "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-RSA-AES128-SHA",
    "ECDHE-ECDSA-AES256-SHA",
    "ECDHE-RSA-AES256-SHA",
    "AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-SHA",
    "AES256-SHA",
    "DES-CBC3-SHA",
];

fn is_valid_cipher(cs: &str) -> bool {
    cs.is_empty()
        || cs == "ALL"
        || !cs.starts_with(|c: char| c.is_alphanumeric())
        || CIPHER_SUITES.contains(&cs)
}

/// Checks a Gateway's name and spec.
pub(crate) fn check(c: &mut Checker, name: &str, g: &Gateway) {
    if !names::is_dns1123_label(name) {
        c.err("metadata.name", Problem::Name(name.to_string()));
    }
    if g.servers.is_empty() {
        c.err("spec.servers", Problem::NoServers);
    }
    let mut port_names = BTreeSet::new();
    for (i, s) in g.servers.iter().enumerate() {
        let path = idx("spec.servers", i);
        check_server(c, &path, s);
        if let Some(port) = &s.port {
            if !port_names.insert(port.name.clone()) {
                c.err(
                    at(&at(&path, "port"), "name"),
                    Problem::DuplicatePortName(port.name.clone()),
                );
            }
            let redirect = s.tls.as_ref().is_some_and(|t| t.https_redirect);
            if redirect && !Protocol::parse(&port.protocol).is_http() {
                c.warn(at(&path, "tls"), Problem::HttpsRedirect);
            }
        }
    }
}

fn check_server(c: &mut Checker, path: &str, s: &Server) {
    if s.hosts.is_empty() {
        c.err(at(path, "hosts"), Problem::NoHosts);
    }
    for (i, h) in s.hosts.iter().enumerate() {
        for p in names::validate_namespace_slash_host(h, true) {
            c.err(idx(&at(path, "hosts"), i), p);
        }
    }
    let errors_before = c.errors.len();
    let unix = s.bind.starts_with("unix://");
    match &s.port {
        None => c.err(at(path, "port"), Problem::PortRequired),
        Some(port) => {
            let pp = at(path, "port");
            if Protocol::parse(&port.protocol) == Protocol::Unsupported {
                c.err(
                    at(&pp, "protocol"),
                    Problem::Protocol(port.protocol.clone()),
                );
            }
            if port.number > 0 || !unix {
                c.check(
                    at(&pp, "number"),
                    values::validate_port(i64::from(port.number)),
                );
            }
            if port.target_port > 0 {
                c.err(at(&pp, "targetPort"), Problem::TargetPort);
            }
            if port.name.is_empty() {
                c.err(at(&pp, "name"), Problem::PortName(port.number));
            }
        }
    }
    let port_ok = c.errors.len() == errors_before;
    if let Some(socket) = s.bind.strip_prefix("unix://") {
        c.check(at(path, "bind"), values::validate_unix_address(socket));
        if let Some(n) = s.port.as_ref().map(|p| p.number).filter(|n| *n != 0) {
            c.err(at(path, "bind"), Problem::UnixPort(n));
        }
    } else if !s.bind.is_empty() {
        c.check(at(path, "bind"), values::validate_ip(&s.bind));
    }
    if let Some(tls) = &s.tls {
        check_tls(c, &at(path, "tls"), tls);
    }
    let Some(port) = s.port.as_ref().filter(|_| port_ok) else {
        return;
    };
    let p = Protocol::parse(&port.protocol);
    match &s.tls {
        None if p.is_tls() => c.err(at(path, "tls"), Problem::TlsRequired),
        Some(tls) if !p.is_tls() => {
            if p.is_http() {
                let passthrough = matches!(
                    tls.mode(),
                    ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough
                );
                if !passthrough
                    || !tls.ca_certificates.is_empty()
                    || !tls.private_key.is_empty()
                    || !tls.server_certificate.is_empty()
                {
                    c.err(at(path, "tls"), Problem::TlsOnHttp);
                }
            } else {
                c.err(at(path, "tls"), Problem::TlsOnPlain);
            }
        }
        _ => {}
    }
}

/// Istio's `validateTLSOptions` (also used by Sidecar ingress listeners).
pub(crate) fn check_tls(c: &mut Checker, path: &str, t: &ServerTlsSettings) {
    use ServerTlsMode as M;
    let old = matches!(
        t.min_protocol_version,
        Some(TlsProtocolVersion::V1_0 | TlsProtocolVersion::V1_1)
    );
    if old && t.cipher_suites.is_empty() {
        c.warn(at(path, "minProtocolVersion"), Problem::OldTlsCiphers);
    }
    let mut invalid = BTreeSet::new();
    let mut valid = BTreeSet::new();
    let mut duplicate = BTreeSet::new();
    for cs in &t.cipher_suites {
        if !is_valid_cipher(cs) {
            invalid.insert(cs.clone());
        } else if !valid.insert(cs.clone()) {
            duplicate.insert(cs.clone());
        }
    }
    let join = |s: BTreeSet<String>| s.into_iter().collect::<Vec<_>>().join(" ");
    if !invalid.is_empty() {
        c.warn(
            at(path, "cipherSuites"),
            Problem::InvalidCiphers(join(invalid)),
        );
    }
    if !duplicate.is_empty() {
        c.warn(
            at(path, "cipherSuites"),
            Problem::DuplicateCiphers(join(duplicate)),
        );
    }
    let mode = t.mode();
    if mode == M::IstioMutual {
        for (leaf, set, what) in [
            (
                "serverCertificate",
                !t.server_certificate.is_empty(),
                "server certificate",
            ),
            ("privateKey", !t.private_key.is_empty(), "private key"),
            ("caCertificates", !t.ca_certificates.is_empty(), "CA bundle"),
            (
                "tlsCertificates",
                !t.tls_certificates.is_empty(),
                "tlsCertificates",
            ),
            (
                "credentialName",
                !t.credential_name.is_empty(),
                "credentialName",
            ),
            (
                "credentialNames",
                !t.credential_names.is_empty(),
                "credentialNames",
            ),
        ] {
            if set {
                c.err(at(path, leaf), Problem::IstioMutual(what));
            }
        }
        return;
    }
    let has_certs = !t.ca_crl.is_empty()
        || !t.server_certificate.is_empty()
        || !t.private_key.is_empty()
        || !t.ca_certificates.is_empty()
        || !t.tls_certificates.is_empty()
        || !t.credential_name.is_empty()
        || !t.credential_names.is_empty();
    if has_certs && matches!(mode, M::Passthrough | M::AutoPassthrough) {
        let name = if mode == M::Passthrough {
            "PASSTHROUGH"
        } else {
            "AUTO_PASSTHROUGH"
        };
        c.warn(path, Problem::PassthroughCertificates(name));
    }
    let sources = [
        !t.server_certificate.is_empty() && !t.private_key.is_empty(),
        !t.credential_name.is_empty(),
        !t.credential_names.is_empty(),
        !t.tls_certificates.is_empty(),
    ];
    if sources.iter().filter(|b| **b).count() > 1 {
        c.err(path, Problem::CertificateSources);
    }
    let terminating = matches!(mode, M::Simple | M::Mutual | M::OptionalMutual);
    if terminating && (!t.credential_name.is_empty() || !t.credential_names.is_empty()) {
        return;
    }
    if terminating {
        let prefix = if mode == M::Simple {
            "SIMPLE TLS"
        } else {
            "MUTUAL TLS"
        };
        if mode != M::Simple && t.ca_certificates.is_empty() {
            c.err(at(path, "caCertificates"), Problem::CaRequired(prefix));
        }
        if t.tls_certificates.len() > 2 {
            c.warn(
                at(path, "tlsCertificates"),
                Problem::TooManyCertificates(prefix),
            );
        }
        let certs: Vec<(String, &str, &str)> = if t.tls_certificates.is_empty() {
            vec![(
                path.to_string(),
                t.server_certificate.as_str(),
                t.private_key.as_str(),
            )]
        } else {
            t.tls_certificates
                .iter()
                .enumerate()
                .map(|(i, tc)| {
                    (
                        idx(&at(path, "tlsCertificates"), i),
                        tc.server_certificate.as_str(),
                        tc.private_key.as_str(),
                    )
                })
                .collect()
        };
        for (base, cert, key) in certs {
            if cert.is_empty() {
                c.err(
                    at(&base, "serverCertificate"),
                    Problem::CertificateRequired(prefix),
                );
            }
            if key.is_empty() {
                c.err(at(&base, "privateKey"), Problem::KeyRequired(prefix));
            }
        }
    }
    if !t.ca_crl.is_empty() {
        if !t.credential_name.is_empty() {
            c.err(at(path, "caCrl"), Problem::CrlWithCredential);
        }
        if mode == M::Simple {
            c.err(at(path, "caCrl"), Problem::CrlWithSimple);
        }
    }
}
