//! Transport sockets as istiod shapes a sidecar's: auto mTLS on outbound clusters
//! (`transport_socket_matches` selected by endpoint metadata), DestinationRule `tls`
//! (`ISTIO_MUTUAL`, `DISABLE`, `SIMPLE`, `MUTUAL`), `DownstreamTlsContext` on inbound chains,
//! and the endpoint metadata.
//!
//! Secrets are referenced over SDS by the names istio-agent serves (`default`, `ROOTCA`,
//! `file-cert:CERT~KEY`, `file-root:CA`, `kubernetes://NAME`) from istio-agent's SDS cluster
//! `sds-grpc` (a local socket), as istiod writes them: `mesh-proxy` resolves them itself, an
//! Envoy sidecar asks `mesh-proxy agent` for them. The control plane never serves a secret.
//!
//! Who has mutual TLS: a workload whose labels carry `security.istio.io/tlsMode: istio` (what
//! Istio's injector sets on a pod; `mesh-proxy` adds it to its node labels when it has an
//! identity). Endpoints with it get `tlsMode: istio` metadata; a proxy without it (no
//! certificate) originates no auto mTLS and gets no TLS chains unless a policy requires them.

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::cluster::v3::cluster::TransportSocketMatch;
use envoy_types::pb::envoy::config::core::v3::{transport_socket, Metadata, TransportSocket};
use envoy_types::pb::envoy::extensions::transport_sockets::raw_buffer::v3::RawBuffer;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    common_tls_context::{CombinedCertificateValidationContext, ValidationContextType},
    subject_alt_name_matcher::SanType,
    tls_parameters::TlsProtocol,
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig,
    SubjectAltNameMatcher, TlsParameters, UpstreamTlsContext,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher::MatchPattern, StringMatcher};
use envoy_types::pb::google::protobuf::{value::Kind, Any, Struct, Value};
use envoy_types::util::pack_any;

use super::build;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;

use envoy_types::pb::envoy::config::listener::v3::{filter, Filter, FilterChainMatch};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::{ForwardClientCertDetails, SetCurrentClientCertDetails},
    HttpConnectionManager,
};
use prost::Message;

use crate::config::istio::destination_rule::{ClientTlsMode, ClientTlsSettings};
use crate::mtls::Mode;
use crate::registry::{Endpoint, MeshSnapshot, ProxyInfo};

/// The label that marks a workload with a sidecar able to do mutual TLS.
pub const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";
/// Its value for Istio's mutual TLS.
pub const TLS_MODE_ISTIO: &str = "istio";
/// The workload certificate's SDS name.
pub const WORKLOAD_SECRET: &str = "default";
/// The trust bundle's SDS name.
pub const ROOT_SECRET: &str = "ROOTCA";
/// Istio's ALPN for mutual TLS with metadata exchange.
pub const ALPN_IN_MESH: [&str; 2] = ["istio-peer-exchange", "istio"];
/// What an inbound HTTP chain's TLS context offers (Istio's).
pub const INBOUND_HTTP_ALPN: [&str; 2] = ["h2", "http/1.1"];
/// What an inbound TCP chain's TLS context offers (Istio's).
pub const INBOUND_TCP_ALPN: [&str; 3] = ["istio-peer-exchange", "h2", "http/1.1"];
/// What a TLS chain of a sniffed inbound port matches for HTTP: Istio's ALPN for HTTP over
/// mutual TLS, and what an HTTP client without Istio's ALPN override offers.
pub const INBOUND_TLS_HTTP_ALPN: [&str; 5] = [
    "istio-http/1.0",
    "istio-http/1.1",
    "istio-h2",
    "h2",
    "http/1.1",
];
/// The filter metadata key of transport socket matches.
pub const TRANSPORT_SOCKET_MATCH: &str = "envoy.transport_socket_match";
/// The system trust bundle used by `SIMPLE` and `MUTUAL` without `caCertificates`.
pub const SYSTEM_CA: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Whether a workload (by its labels) has a sidecar with a workload certificate.
pub fn has_mtls(labels: &BTreeMap<String, String>) -> bool {
    labels.get(TLS_MODE_LABEL).map(String::as_str) == Some(TLS_MODE_ISTIO)
}

/// Whether a proxy can present a workload certificate.
pub fn proxy_has_identity(proxy: &ProxyInfo) -> bool {
    has_mtls(&proxy.labels)
}

fn sds(name: &str) -> SdsSecretConfig {
    SdsSecretConfig {
        name: name.to_string(),
        sds_config: Some(build::sds_source()),
    }
}

fn string_value(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.to_string())),
    }
}

/// `envoy.transport_sockets.tls` with `config`.
fn tls_socket(config: Any) -> TransportSocket {
    TransportSocket {
        name: "envoy.transport_sockets.tls".to_string(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(config)),
    }
}

fn raw_buffer() -> TransportSocket {
    TransportSocket {
        name: "envoy.transport_sockets.raw_buffer".to_string(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(pack_any(
            RawBuffer::default(),
        ))),
    }
}

/// A SAN matcher: URI for SPIFFE IDs, DNS otherwise.
fn san(value: &str) -> SubjectAltNameMatcher {
    let san_type = if value.starts_with("spiffe://") {
        SanType::Uri
    } else {
        SanType::Dns
    };
    SubjectAltNameMatcher {
        san_type: san_type as i32,
        matcher: Some(StringMatcher {
            match_pattern: Some(MatchPattern::Exact(value.to_string())),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn validation(trust: &str, sans: &[String]) -> ValidationContextType {
    ValidationContextType::CombinedValidationContext(CombinedCertificateValidationContext {
        default_validation_context: Some(CertificateValidationContext {
            match_typed_subject_alt_names: sans.iter().map(|s| san(s)).collect(),
            ..Default::default()
        }),
        validation_context_sds_secret_config: Some(sds(trust)),
        ..Default::default()
    })
}

/// `outbound_.PORT_.SUBSET_.HOST`: the SNI of mesh traffic to a cluster.
pub fn mesh_sni(port: u16, subset: Option<&str>, host: &str) -> String {
    format!("outbound_.{port}_.{}_.{host}", subset.unwrap_or(""))
}

/// Istio's mutual TLS towards a sidecar: the workload certificate, the trust bundle, the
/// identities the destination may run as (none: any mesh identity), Istio's ALPN (plus `h2`
/// for HTTP/2 clusters).
pub fn istio_mutual(sni: &str, sans: &[String], h2: bool) -> TransportSocket {
    let mut alpn: Vec<String> = ALPN_IN_MESH.iter().map(|s| s.to_string()).collect();
    if h2 {
        alpn.push("h2".to_string());
    }
    tls_socket(pack_any(UpstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificate_sds_secret_configs: vec![sds(WORKLOAD_SECRET)],
            validation_context_type: Some(validation(ROOT_SECRET, sans)),
            alpn_protocols: alpn,
            ..Default::default()
        }),
        sni: sni.to_string(),
        ..Default::default()
    }))
}

/// Auto mTLS: `tlsMode-istio` (endpoints with `tlsMode: istio`) gets [`istio_mutual`],
/// `tlsMode-disabled` (the rest) plaintext.
pub fn auto_mtls(sni: &str, sans: &[String], h2: bool) -> Vec<TransportSocketMatch> {
    vec![
        TransportSocketMatch {
            name: "tlsMode-istio".to_string(),
            r#match: Some(Struct {
                fields: [("tlsMode".to_string(), string_value(TLS_MODE_ISTIO))].into(),
            }),
            transport_socket: Some(istio_mutual(sni, sans, h2)),
        },
        TransportSocketMatch {
            name: "tlsMode-disabled".to_string(),
            r#match: Some(Struct::default()),
            transport_socket: Some(raw_buffer()),
        },
    ]
}

/// What a cluster's TLS is, after the DestinationRule.
pub enum ClusterTls {
    /// Auto mTLS (no DestinationRule `tls`).
    Auto,
    /// One transport socket for every endpoint (`ISTIO_MUTUAL`, `SIMPLE`, `MUTUAL`).
    Socket(TransportSocket),
    /// Plaintext (`DISABLE`).
    Disabled,
}

/// The cluster TLS of a DestinationRule's `tls` (`None`: auto mTLS). `mesh_sans` are the
/// destination's identities, `host` the service host, `sni` the mesh SNI of the cluster.
pub fn from_destination_rule(
    tls: Option<&ClientTlsSettings>,
    sni: &str,
    mesh_sans: &[String],
    host: &str,
    h2: bool,
) -> ClusterTls {
    let Some(tls) = tls else {
        return ClusterTls::Auto;
    };
    let sans: Vec<String> = tls.subject_alt_names.clone().unwrap_or_default();
    match tls.mode.unwrap_or(ClientTlsMode::Disable) {
        ClientTlsMode::Disable => ClusterTls::Disabled,
        ClientTlsMode::IstioMutual => {
            let sni = if tls.sni.is_empty() { sni } else { &tls.sni };
            let sans = if sans.is_empty() { mesh_sans } else { &sans };
            ClusterTls::Socket(istio_mutual(sni, sans, h2))
        }
        mode @ (ClientTlsMode::Simple | ClientTlsMode::Mutual) => {
            let sni = if tls.sni.is_empty() {
                host.to_string()
            } else {
                tls.sni.clone()
            };
            // Istio verifies the SNI when no SAN is given.
            let sans = if sans.is_empty() {
                vec![sni.clone()]
            } else {
                sans
            };
            let skip = tls.insecure_skip_verify == Some(true);
            let trust = if !tls.credential_name.is_empty() {
                format!("kubernetes://{}-cacert", tls.credential_name)
            } else if !tls.ca_certificates.is_empty() {
                format!("file-root:{}", tls.ca_certificates)
            } else {
                format!("file-root:{SYSTEM_CA}")
            };
            let certificate = if mode != ClientTlsMode::Mutual {
                None
            } else if !tls.credential_name.is_empty() {
                Some(format!("kubernetes://{}", tls.credential_name))
            } else {
                Some(format!(
                    "file-cert:{}~{}",
                    tls.client_certificate, tls.private_key
                ))
            };
            ClusterTls::Socket(tls_socket(pack_any(UpstreamTlsContext {
                common_tls_context: Some(CommonTlsContext {
                    tls_certificate_sds_secret_configs: certificate
                        .iter()
                        .map(|c| sds(c))
                        .collect(),
                    validation_context_type: (!skip).then(|| validation(&trust, &sans)),
                    alpn_protocols: if h2 {
                        vec!["h2".to_string()]
                    } else {
                        Vec::new()
                    },
                    ..Default::default()
                }),
                sni,
                ..Default::default()
            })))
        }
    }
}

/// Sets a cluster's transport: auto mTLS when `auto` (the proxy has a certificate), the
/// DestinationRule's socket, or nothing.
pub fn apply(
    cluster: &mut Cluster,
    tls: ClusterTls,
    auto: bool,
    sni: &str,
    sans: &[String],
    h2: bool,
) {
    match tls {
        ClusterTls::Auto if auto => cluster.transport_socket_matches = auto_mtls(sni, sans, h2),
        ClusterTls::Auto | ClusterTls::Disabled => {}
        ClusterTls::Socket(socket) => cluster.transport_socket = Some(socket),
    }
}

/// The identities a service's endpoints run as (`spiffe://DOMAIN/ns/NS/sa/SA`), sorted.
pub fn service_identities<'a>(
    endpoints: impl IntoIterator<Item = &'a Endpoint>,
    namespace: &str,
    trust_domain: &str,
) -> Vec<String> {
    endpoints
        .into_iter()
        .filter_map(|e| e.service_account.as_deref())
        .map(|sa| format!("spiffe://{trust_domain}/ns/{namespace}/sa/{sa}"))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// An endpoint's metadata: `tlsMode: istio` under `envoy.transport_socket_match` when it has
/// a sidecar with a certificate.
pub fn endpoint_metadata(endpoint: &Endpoint) -> Option<Metadata> {
    has_mtls(&endpoint.labels).then(|| Metadata {
        filter_metadata: [(
            TRANSPORT_SOCKET_MATCH.to_string(),
            Struct {
                fields: [("tlsMode".to_string(), string_value(TLS_MODE_ISTIO))].into(),
            },
        )]
        .into(),
        ..Default::default()
    })
}

/// Istio's `DownstreamTlsContext` of an inbound chain: the workload certificate, client
/// certificates required and verified against the trust bundle, TLS 1.2 at least.
pub fn inbound_mtls(http: bool) -> TransportSocket {
    let alpn: Vec<String> = if http {
        INBOUND_HTTP_ALPN.iter().map(|s| s.to_string()).collect()
    } else {
        INBOUND_TCP_ALPN.iter().map(|s| s.to_string()).collect()
    };
    tls_socket(pack_any(DownstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_params: Some(TlsParameters {
                tls_minimum_protocol_version: TlsProtocol::TlSv12 as i32,
                ..Default::default()
            }),
            tls_certificate_sds_secret_configs: vec![sds(WORKLOAD_SECRET)],
            validation_context_type: Some(validation(ROOT_SECRET, &[])),
            alpn_protocols: alpn,
            ..Default::default()
        }),
        require_client_certificate: build::bool_value(true),
        ..Default::default()
    }))
}

/// What an inbound port (or, without a port, the workload) accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Accepts {
    /// Mutual TLS chains.
    pub mtls: bool,
    /// Plaintext chains.
    pub plaintext: bool,
}

/// What the PeerAuthentication mode of `port` (`None`: the workload's own) lets a proxy
/// accept. A proxy without a workload certificate cannot terminate mutual TLS: under
/// PERMISSIVE it takes plaintext only; under STRICT it still gets only TLS chains, whose
/// handshakes fail (closed, as Istio fails).
pub fn inbound_accepts(mesh: &MeshSnapshot, proxy: &ProxyInfo, port: Option<u16>) -> Accepts {
    let namespace = proxy.namespace.as_deref().unwrap_or_default();
    let mode = mesh
        .peer_authentications
        .mode(namespace, &proxy.labels, port);
    let id = proxy_has_identity(proxy);
    match mode {
        Mode::Disable => Accepts {
            mtls: false,
            plaintext: true,
        },
        Mode::Permissive => Accepts {
            mtls: id,
            plaintext: true,
        },
        Mode::Strict => Accepts {
            mtls: true,
            plaintext: false,
        },
    }
}

/// A chain match on TLS connections (optionally on a port and application protocols).
pub fn tls_match(port: Option<u16>, alpn: &[&str]) -> FilterChainMatch {
    FilterChainMatch {
        destination_port: port.and_then(|p| build::u32_value(p.into())),
        transport_protocol: "tls".to_string(),
        application_protocols: alpn.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// An inbound connection manager with Istio's `x-forwarded-client-cert` settings:
/// `APPEND_FORWARD` with the client certificate's subject, URI and DNS SANs (a request on a
/// connection without a client certificate loses any such header).
pub fn with_xfcc(mut f: Filter) -> Filter {
    if let Some(filter::ConfigType::TypedConfig(any)) = &f.config_type {
        if let Ok(mut hcm) = HttpConnectionManager::decode(any.value.as_slice()) {
            hcm.forward_client_cert_details = ForwardClientCertDetails::AppendForward as i32;
            hcm.set_current_client_cert_details = Some(SetCurrentClientCertDetails {
                subject: build::bool_value(true),
                uri: true,
                dns: true,
                ..Default::default()
            });
            f.config_type = Some(filter::ConfigType::TypedConfig(pack_any(hcm)));
        }
    }
    f
}
