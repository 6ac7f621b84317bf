//! Transport sockets: TLS towards upstreams (Envoy's `UpstreamTlsContext`, per cluster or
//! per endpoint through `transport_socket_matches`) and TLS on listener filter chains
//! (`DownstreamTlsContext`). Certificates and trust bundles are referenced by SDS secret
//! name, as istiod shapes them:
//!
//! - `default`: the proxy's own workload certificate (from the CA);
//! - `ROOTCA`: the mesh's trust bundle;
//! - `file-cert:CERT~KEY` and `file-root:CA`: PEM files on the proxy's filesystem
//!   (DestinationRule `clientCertificate`/`privateKey`/`caCertificates`).
//!
//! The proxy serves these names itself, as istio-agent serves them to Envoy; see
//! [`SecretName`].

use std::collections::BTreeMap;

use serde::Serialize;

use super::matcher::StringMatcher;

/// The proxy's workload certificate.
pub const WORKLOAD_SECRET: &str = "default";
/// The mesh's trust bundle.
pub const ROOT_SECRET: &str = "ROOTCA";
/// Prefix of a certificate and key read from files (`file-cert:CERT~KEY`).
pub const FILE_CERT_PREFIX: &str = "file-cert:";
/// Prefix of a trust bundle read from a file (`file-root:PATH`).
pub const FILE_ROOT_PREFIX: &str = "file-root:";
/// Prefix of a Kubernetes secret (`kubernetes://NAME`, DestinationRule `credentialName`).
pub const KUBERNETES_PREFIX: &str = "kubernetes://";

/// A secret reference the proxy can resolve.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretName {
    /// `default`: the workload certificate.
    Workload,
    /// `ROOTCA`: the mesh trust bundle.
    Root,
    /// `file-cert:CERT~KEY`.
    FileCert {
        /// The certificate chain file.
        cert: String,
        /// The private key file.
        key: String,
    },
    /// `file-root:PATH`.
    FileRoot(String),
    /// `kubernetes://NAME` (a DestinationRule's `credentialName`): no secret store serves it
    /// here, so a connection that needs it fails (closed), and only that cluster's.
    Kubernetes(String),
}

impl SecretName {
    /// Parses a secret name; `None` for names the proxy cannot serve.
    pub fn parse(name: &str) -> Option<SecretName> {
        if name == WORKLOAD_SECRET {
            Some(SecretName::Workload)
        } else if name == ROOT_SECRET {
            Some(SecretName::Root)
        } else if let Some(rest) = name.strip_prefix(FILE_CERT_PREFIX) {
            let (cert, key) = rest.split_once('~')?;
            (!cert.is_empty() && !key.is_empty()).then(|| SecretName::FileCert {
                cert: cert.to_string(),
                key: key.to_string(),
            })
        } else if let Some(path) = name.strip_prefix(FILE_ROOT_PREFIX) {
            (!path.is_empty()).then(|| SecretName::FileRoot(path.to_string()))
        } else if let Some(secret) = name.strip_prefix(KUBERNETES_PREFIX) {
            (!secret.is_empty()).then(|| SecretName::Kubernetes(secret.to_string()))
        } else {
            None
        }
    }
}

/// TLS protocol versions (Envoy's `TlsParameters.TlsProtocol`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum TlsVersion {
    /// TLS 1.0.
    Tls10,
    /// TLS 1.1.
    Tls11,
    /// TLS 1.2.
    Tls12,
    /// TLS 1.3.
    Tls13,
}

/// Which SAN a matcher looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum SanType {
    /// URI SANs (SPIFFE IDs).
    Uri,
    /// DNS SANs.
    Dns,
    /// E-mail SANs.
    Email,
    /// IP address SANs (as text).
    IpAddress,
    /// Any of URI, DNS, e-mail and IP (Envoy's deprecated `match_subject_alt_names`).
    Any,
}

/// A subject alternative name the peer's certificate must have (one of the list).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SanMatcher {
    /// The SAN type.
    pub san_type: SanType,
    /// The condition.
    pub matcher: StringMatcher,
}

/// How the peer's certificate is verified.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Validation {
    /// The trust bundle (an SDS secret name).
    pub trusted_ca: SecretName,
    /// The peer must have a SAN matching one of these (empty: any).
    pub san_matchers: Vec<SanMatcher>,
}

/// What both sides of TLS share (Envoy's `CommonTlsContext`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CommonTls {
    /// The certificate presented, if any.
    pub certificate: Option<SecretName>,
    /// Peer verification, if any.
    pub validation: Option<Validation>,
    /// ALPN protocols offered (upstream) or accepted in preference order (downstream).
    pub alpn: Vec<String>,
    /// Lowest TLS version.
    pub min_version: Option<TlsVersion>,
    /// Highest TLS version.
    pub max_version: Option<TlsVersion>,
}

/// TLS towards an upstream.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct UpstreamTls {
    /// The shared settings.
    pub common: CommonTls,
    /// SNI sent (none when empty).
    pub sni: Option<String>,
}

/// TLS on a listener's filter chain.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DownstreamTls {
    /// The shared settings (a certificate is required).
    pub common: CommonTls,
    /// Whether the client must present a certificate.
    pub require_client_certificate: bool,
}

/// One of a cluster's `transport_socket_matches`: endpoints whose transport-socket metadata
/// (`filter_metadata["envoy.transport_socket_match"]`) holds every `criteria` entry use
/// `tls` (`None`: plaintext).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TransportSocketMatch {
    /// The match's name (`tlsMode-istio`).
    pub name: String,
    /// Required metadata (string values).
    pub criteria: BTreeMap<String, String>,
    /// The transport: TLS, or plaintext.
    pub tls: Option<UpstreamTls>,
}

/// The connection manager's `forward_client_cert_details`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum ForwardClientCert {
    /// Remove the header (Envoy's default).
    #[default]
    Sanitize,
    /// Forward the header as received on mutual TLS connections.
    ForwardOnly,
    /// On mutual TLS connections, append this connection's details.
    AppendForward,
    /// On mutual TLS connections, replace the header with this connection's details.
    SanitizeSet,
    /// Forward the header as received, whatever the connection.
    AlwaysForwardOnly,
}

/// Which details of the client certificate go into `x-forwarded-client-cert`
/// (`set_current_client_cert_details`; `By` and `Hash` are always there).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ClientCertDetails {
    /// `Subject="..."`.
    pub subject: bool,
    /// `URI=...` (the URI SAN).
    pub uri: bool,
    /// `DNS=...` (each DNS SAN).
    pub dns: bool,
}

/// `x-forwarded-client-cert` handling of a connection manager.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Xfcc {
    /// What to do with the header.
    pub forward: ForwardClientCert,
    /// What to add.
    pub details: ClientCertDetails,
}
