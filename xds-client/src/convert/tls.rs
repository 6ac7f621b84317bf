//! Transport sockets: `envoy.transport_sockets.tls` (`UpstreamTlsContext` on clusters and
//! `transport_socket_matches`, `DownstreamTlsContext` on filter chains) and
//! `envoy.transport_sockets.raw_buffer`; the connection manager's `x-forwarded-client-cert`
//! settings.
//!
//! Certificates and trust bundles must come from SDS (over ADS, or over gRPC from Istio's
//! node-agent cluster `sds-grpc`, as istiod writes it) under a name the proxy serves itself ([`SecretName`]: `default`, `ROOTCA`, `file-cert:`, `file-root:`); inline
//! certificates, certificate providers and other secret names are refused, as is any
//! verification the proxy cannot do (SPKI or hash pins, CRLs, custom validators, expired
//! certificates allowed, OCSP). Cipher suites, curves and signature algorithms are accepted
//! and ignored (BoringSSL's defaults apply); session tickets and resumption settings too.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::cluster::v3::cluster::TransportSocketMatch as PbMatch;
use envoy_types::pb::envoy::config::core::v3::{
    api_config_source::ApiType, config_source, grpc_service, transport_socket, ConfigSource,
    Metadata, TransportSocket,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::ForwardClientCertDetails, HttpConnectionManager as PbHcm,
};
use envoy_types::pb::envoy::extensions::transport_sockets::raw_buffer::v3::RawBuffer;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    certificate_validation_context::TrustChainVerification,
    common_tls_context::ValidationContextType, subject_alt_name_matcher::SanType as PbSanType,
    tls_parameters::TlsProtocol, CertificateValidationContext, CommonTlsContext,
    DownstreamTlsContext, SdsSecretConfig, TlsParameters, UpstreamTlsContext,
};
use envoy_types::pb::google::protobuf::{value::Kind, Struct};
use prost::Name;

use super::{decode_any, reject_set, require_ads, type_name, ConvertError, Location, Within};
use crate::model::matcher::StringMatcher;
use crate::model::tls::{
    ClientCertDetails, CommonTls, DownstreamTls, ForwardClientCert, SanMatcher, SanType,
    SecretName, TlsVersion, TransportSocketMatch, UpstreamTls, Validation, Xfcc,
};

/// The name of the TLS transport socket.
pub const TLS_SOCKET: &str = "envoy.transport_sockets.tls";
/// Istio's SDS cluster (the node agent's local socket). `mesh-proxy` is its own agent: the
/// secrets named there are the ones it resolves from its identity and files.
pub const SDS_CLUSTER: &str = "sds-grpc";

/// The name of the plaintext transport socket.
pub const RAW_BUFFER_SOCKET: &str = "envoy.transport_sockets.raw_buffer";
/// The filter metadata key holding an endpoint's transport-socket match metadata.
pub const TRANSPORT_SOCKET_MATCH_KEY: &str = "envoy.transport_socket_match";

/// What a transport socket's config holds.
enum Socket {
    Raw,
    Upstream(Box<UpstreamTlsContext>),
    Downstream(Box<DownstreamTlsContext>),
}

fn socket(ts: &TransportSocket) -> Result<Socket, ConvertError> {
    let unsupported = |name: &str| ConvertError::UnsupportedFilter {
        at: Location::default(),
        name: name.to_string(),
    };
    match &ts.config_type {
        Some(transport_socket::ConfigType::TypedConfig(any)) => {
            let kind = type_name(&any.type_url);
            if kind == RawBuffer::full_name() {
                decode_any::<RawBuffer>(any).at("typed_config")?;
                Ok(Socket::Raw)
            } else if kind == UpstreamTlsContext::full_name() {
                Ok(Socket::Upstream(Box::new(
                    decode_any(any).at("typed_config")?,
                )))
            } else if kind == DownstreamTlsContext::full_name() {
                Ok(Socket::Downstream(Box::new(
                    decode_any(any).at("typed_config")?,
                )))
            } else if ts.name.is_empty() {
                Err(unsupported(&any.type_url))
            } else {
                Err(unsupported(&ts.name))
            }
        }
        None if ts.name == RAW_BUFFER_SOCKET => Ok(Socket::Raw),
        None if ts.name == TLS_SOCKET => Err(ConvertError::missing("typed_config")),
        None => Err(unsupported(&ts.name)),
    }
}

/// A cluster's `transport_socket`: TLS or plaintext (`None`). Paths are relative to the
/// field holding the socket.
pub(crate) fn upstream_socket(ts: &TransportSocket) -> Result<Option<UpstreamTls>, ConvertError> {
    match socket(ts)? {
        Socket::Raw => Ok(None),
        Socket::Upstream(ctx) => upstream(*ctx).at("typed_config").map(Some),
        Socket::Downstream(_) => Err(ConvertError::inconsistent(
            "a cluster's transport socket needs an UpstreamTlsContext",
        )
        .at("typed_config")),
    }
}

/// A filter chain's `transport_socket`: TLS or plaintext (`None`).
pub(crate) fn downstream_socket(
    ts: &TransportSocket,
) -> Result<Option<DownstreamTls>, ConvertError> {
    match socket(ts)? {
        Socket::Raw => Ok(None),
        Socket::Downstream(ctx) => downstream(*ctx).at("typed_config").map(Some),
        Socket::Upstream(_) => Err(ConvertError::inconsistent(
            "a filter chain's transport socket needs a DownstreamTlsContext",
        )
        .at("typed_config")),
    }
}

/// One of a cluster's `transport_socket_matches` (string criteria only).
pub(crate) fn transport_socket_match(m: &PbMatch) -> Result<TransportSocketMatch, ConvertError> {
    if m.name.is_empty() {
        return Err(ConvertError::missing("name"));
    }
    let criteria = match &m.r#match {
        None => BTreeMap::new(),
        Some(s) => string_fields(s).at("match")?,
    };
    let Some(ts) = &m.transport_socket else {
        return Err(ConvertError::missing("transport_socket"));
    };
    Ok(TransportSocketMatch {
        name: m.name.clone(),
        criteria,
        tls: upstream_socket(ts).at("transport_socket")?,
    })
}

fn string_fields(s: &Struct) -> Result<BTreeMap<String, String>, ConvertError> {
    s.fields
        .iter()
        .map(|(k, v)| match &v.kind {
            Some(Kind::StringValue(v)) => Ok((k.clone(), v.clone())),
            _ => Err(ConvertError::invalid("string value", format!("{v:?}")).at_key("fields", k)),
        })
        .collect()
}

/// An endpoint's transport-socket metadata (string values; others are ignored, as they
/// cannot equal a string criterion).
pub(crate) fn endpoint_metadata(metadata: Option<&Metadata>) -> BTreeMap<String, String> {
    metadata
        .and_then(|m| m.filter_metadata.get(TRANSPORT_SOCKET_MATCH_KEY))
        .map(|s| {
            s.fields
                .iter()
                .filter_map(|(k, v)| match &v.kind {
                    Some(Kind::StringValue(v)) => Some((k.clone(), v.clone())),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

fn upstream(ctx: UpstreamTlsContext) -> Result<UpstreamTls, ConvertError> {
    if ctx.auto_host_sni {
        return Err(ConvertError::unsupported("auto_host_sni"));
    }
    if ctx.auto_sni_san_validation {
        return Err(ConvertError::unsupported("auto_sni_san_validation"));
    }
    let common = match &ctx.common_tls_context {
        Some(c) => common(c).at("common_tls_context")?,
        None => CommonTls {
            certificate: None,
            validation: None,
            alpn: Vec::new(),
            min_version: None,
            max_version: None,
        },
    };
    Ok(UpstreamTls {
        common,
        sni: Some(ctx.sni).filter(|s| !s.is_empty()),
    })
}

fn downstream(ctx: DownstreamTlsContext) -> Result<DownstreamTls, ConvertError> {
    if ctx.require_sni.as_ref().is_some_and(|b| b.value) {
        return Err(ConvertError::unsupported("require_sni"));
    }
    let Some(c) = &ctx.common_tls_context else {
        return Err(ConvertError::missing("common_tls_context"));
    };
    let common = common(c).at("common_tls_context")?;
    if common.certificate.is_none() {
        return Err(
            ConvertError::missing("tls_certificate_sds_secret_configs").at("common_tls_context")
        );
    }
    let require_client_certificate = ctx.require_client_certificate.is_some_and(|b| b.value);
    if require_client_certificate && common.validation.is_none() {
        return Err(ConvertError::inconsistent(
            "require_client_certificate needs a validation context",
        )
        .at("require_client_certificate"));
    }
    Ok(DownstreamTls {
        common,
        require_client_certificate,
    })
}

fn common(c: &CommonTlsContext) -> Result<CommonTls, ConvertError> {
    #[allow(deprecated)]
    {
        reject_set!(
            c,
            tls_certificates,
            tls_certificate_provider_instance,
            custom_tls_certificate_selector,
            tls_certificate_certificate_provider,
            tls_certificate_certificate_provider_instance,
            custom_handshaker,
            key_log,
        );
    }
    let certificate = match c.tls_certificate_sds_secret_configs.as_slice() {
        [] => None,
        [one] => Some(sds(one).at_index("tls_certificate_sds_secret_configs", 0)?),
        _ => {
            return Err(ConvertError::unsupported_value(
                "tls_certificate_sds_secret_configs",
                "more than one certificate",
            ))
        }
    };
    let validation = match &c.validation_context_type {
        None => None,
        Some(ValidationContextType::ValidationContextSdsSecretConfig(s)) => Some(Validation {
            trusted_ca: sds(s).at("validation_context_sds_secret_config")?,
            san_matchers: Vec::new(),
        }),
        Some(ValidationContextType::CombinedValidationContext(combined)) => {
            let Some(s) = &combined.validation_context_sds_secret_config else {
                return Err(
                    ConvertError::missing("validation_context_sds_secret_config")
                        .at("combined_validation_context"),
                );
            };
            #[allow(deprecated)]
            {
                reject_set!(
                    combined,
                    validation_context_certificate_provider,
                    validation_context_certificate_provider_instance,
                );
            }
            let san_matchers = match &combined.default_validation_context {
                Some(v) => san_matchers(v)
                    .at("default_validation_context")
                    .at("combined_validation_context")?,
                None => Vec::new(),
            };
            Some(Validation {
                trusted_ca: sds(s)
                    .at("validation_context_sds_secret_config")
                    .at("combined_validation_context")?,
                san_matchers,
            })
        }
        Some(ValidationContextType::ValidationContext(_)) => {
            return Err(ConvertError::unsupported("validation_context"))
        }
        #[allow(deprecated)]
        Some(_) => {
            return Err(ConvertError::unsupported(
                "validation_context_certificate_provider",
            ))
        }
    };
    let (min_version, max_version) = match &c.tls_params {
        Some(p) => versions(p).at("tls_params")?,
        None => (None, None),
    };
    for (i, p) in c.alpn_protocols.iter().enumerate() {
        if p.is_empty() || p.len() > 255 {
            return Err(
                ConvertError::invalid("ALPN protocol", p.clone()).at_index("alpn_protocols", i)
            );
        }
    }
    Ok(CommonTls {
        certificate,
        validation,
        alpn: c.alpn_protocols.clone(),
        min_version,
        max_version,
    })
}

fn versions(p: &TlsParameters) -> Result<(Option<TlsVersion>, Option<TlsVersion>), ConvertError> {
    let one = |v: i32, field: &'static str| match TlsProtocol::try_from(v) {
        Ok(TlsProtocol::TlsAuto) => Ok(None),
        Ok(TlsProtocol::TlSv10) => Ok(Some(TlsVersion::Tls10)),
        Ok(TlsProtocol::TlSv11) => Ok(Some(TlsVersion::Tls11)),
        Ok(TlsProtocol::TlSv12) => Ok(Some(TlsVersion::Tls12)),
        Ok(TlsProtocol::TlSv13) => Ok(Some(TlsVersion::Tls13)),
        Err(_) => Err(ConvertError::unsupported_value(field, v.to_string())),
    };
    let min = one(
        p.tls_minimum_protocol_version,
        "tls_minimum_protocol_version",
    )?;
    let max = one(
        p.tls_maximum_protocol_version,
        "tls_maximum_protocol_version",
    )?;
    if let (Some(a), Some(b)) = (min, max) {
        if a > b {
            return Err(ConvertError::inconsistent(
                "the minimum TLS version is above the maximum",
            ));
        }
    }
    Ok((min, max))
}

/// A secret's config source: ADS, or gRPC to [`SDS_CLUSTER`] alone (istiod's shape). Error
/// paths are relative to the field holding the source.
fn require_secret_source(source: Option<&ConfigSource>) -> Result<(), ConvertError> {
    let Some(config_source::ConfigSourceSpecifier::ApiConfigSource(api)) =
        source.and_then(|s| s.config_source_specifier.as_ref())
    else {
        return require_ads(source);
    };
    let api_at = |e: ConvertError| e.at("api_config_source");
    if api.api_type != ApiType::Grpc as i32 {
        let name = ApiType::try_from(api.api_type).map_or("unknown", |t| t.as_str_name());
        return Err(api_at(ConvertError::unsupported_value(
            "api_type",
            format!("{name} (only GRPC)"),
        )));
    }
    let targets_sds = |g: &envoy_types::pb::envoy::config::core::v3::GrpcService| {
        matches!(&g.target_specifier,
            Some(grpc_service::TargetSpecifier::EnvoyGrpc(e)) if e.cluster_name == SDS_CLUSTER)
    };
    if api.grpc_services.len() != 1 || !targets_sds(&api.grpc_services[0]) {
        return Err(api_at(ConvertError::unsupported_value(
            "grpc_services",
            format!("secrets come from this proxy's own identity: only envoy_grpc {SDS_CLUSTER}"),
        )));
    }
    Ok(())
}

fn sds(s: &SdsSecretConfig) -> Result<SecretName, ConvertError> {
    require_secret_source(s.sds_config.as_ref()).at("sds_config")?;
    SecretName::parse(&s.name).ok_or_else(|| {
        ConvertError::unsupported_value(
            "name",
            format!(
                "{} (this proxy knows default, ROOTCA, file-cert:CERT~KEY, file-root:PATH and \
                 kubernetes://NAME)",
                s.name
            ),
        )
    })
}

fn san_matchers(v: &CertificateValidationContext) -> Result<Vec<SanMatcher>, ConvertError> {
    #[allow(deprecated)]
    {
        reject_set!(
            v,
            trusted_ca,
            ca_certificate_provider_instance,
            system_root_certs,
            watched_directory,
            verify_certificate_spki,
            verify_certificate_hash,
            require_signed_certificate_timestamp,
            crl,
            custom_validator_config,
            max_verify_depth,
        );
    }
    if v.allow_expired_certificate {
        return Err(ConvertError::unsupported("allow_expired_certificate"));
    }
    if v.trust_chain_verification != TrustChainVerification::VerifyTrustChain as i32 {
        return Err(ConvertError::unsupported("trust_chain_verification"));
    }
    let mut out = Vec::new();
    for (i, m) in v.match_typed_subject_alt_names.iter().enumerate() {
        let san_type = match PbSanType::try_from(m.san_type) {
            Ok(PbSanType::Uri) => SanType::Uri,
            Ok(PbSanType::Dns) => SanType::Dns,
            Ok(PbSanType::Email) => SanType::Email,
            Ok(PbSanType::IpAddress) => SanType::IpAddress,
            _ => {
                return Err(
                    ConvertError::unsupported_value("san_type", m.san_type.to_string())
                        .at_index("match_typed_subject_alt_names", i),
                )
            }
        };
        let matcher = super::matcher::string(m.matcher.as_ref(), "matcher")
            .at_index("match_typed_subject_alt_names", i)?;
        out.push(SanMatcher { san_type, matcher });
    }
    #[allow(deprecated)]
    for (i, m) in v.match_subject_alt_names.iter().enumerate() {
        let matcher = StringMatcher::try_from(m).at_index("match_subject_alt_names", i)?;
        out.push(SanMatcher {
            san_type: SanType::Any,
            matcher,
        });
    }
    Ok(out)
}

/// The connection manager's `forward_client_cert_details` and
/// `set_current_client_cert_details`.
pub(crate) fn xfcc(proto: &PbHcm) -> Result<Xfcc, ConvertError> {
    let forward = match ForwardClientCertDetails::try_from(proto.forward_client_cert_details) {
        Ok(ForwardClientCertDetails::Sanitize) => ForwardClientCert::Sanitize,
        Ok(ForwardClientCertDetails::ForwardOnly) => ForwardClientCert::ForwardOnly,
        Ok(ForwardClientCertDetails::AppendForward) => ForwardClientCert::AppendForward,
        Ok(ForwardClientCertDetails::SanitizeSet) => ForwardClientCert::SanitizeSet,
        Ok(ForwardClientCertDetails::AlwaysForwardOnly) => ForwardClientCert::AlwaysForwardOnly,
        Err(_) => {
            return Err(ConvertError::unsupported_value(
                "forward_client_cert_details",
                proto.forward_client_cert_details.to_string(),
            ))
        }
    };
    let details = match &proto.set_current_client_cert_details {
        None => ClientCertDetails::default(),
        Some(d) => {
            if d.cert || d.chain {
                return Err(
                    ConvertError::unsupported(if d.cert { "cert" } else { "chain" })
                        .at("set_current_client_cert_details"),
                );
            }
            ClientCertDetails {
                subject: d.subject.as_ref().is_some_and(|b| b.value),
                uri: d.uri,
                dns: d.dns,
            }
        }
    };
    Ok(Xfcc { forward, details })
}
