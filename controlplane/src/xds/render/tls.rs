//! Rendering of what mutual TLS adds: transport sockets (`UpstreamTlsContext`,
//! `DownstreamTlsContext`, raw buffer), transport socket matches, endpoint metadata and the
//! connection manager's `x-forwarded-client-cert` settings.

use std::mem::take;

use envoy_types::pb::envoy::config::cluster::v3::cluster::TransportSocketMatch;
use envoy_types::pb::envoy::config::core::v3::{transport_socket, TransportSocket};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::{ForwardClientCertDetails, SetCurrentClientCertDetails},
    HttpConnectionManager,
};
use envoy_types::pb::envoy::extensions::transport_sockets::raw_buffer::v3::RawBuffer;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    common_tls_context::{CombinedCertificateValidationContext, ValidationContextType},
    subject_alt_name_matcher::SanType,
    tls_parameters::TlsProtocol,
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig,
    SubjectAltNameMatcher, TlsParameters, UpstreamTlsContext,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher::MatchPattern, StringMatcher};
use envoy_types::pb::google::protobuf::{value::Kind, Any, Struct};
use prost::Name;
use serde_json::{Map, Value};

use super::{config_source_json, decode, enum_name, wrapped_bool, Obj, RenderError, R};

/// Renders a protobuf `Struct` (string, bool, number and nested struct values).
fn structure(s: Struct) -> R {
    let mut fields: Vec<_> = s.fields.into_iter().collect();
    fields.sort_by(|a, b| a.0.cmp(&b.0));
    let mut map = Map::new();
    for (k, v) in fields {
        let value = match v.kind {
            Some(Kind::StringValue(s)) => Value::String(s),
            Some(Kind::BoolValue(b)) => Value::Bool(b),
            Some(Kind::NumberValue(n)) => Value::from(n),
            Some(Kind::StructValue(s)) => structure(s)?,
            Some(Kind::NullValue(_)) | None => Value::Null,
            Some(other) => {
                return Err(RenderError::Unrendered {
                    message: "Value",
                    rest: format!("{other:?}"),
                })
            }
        };
        map.insert(k, value);
    }
    Ok(Value::Object(map))
}

/// Renders a transport socket.
pub(super) fn transport_socket(mut t: TransportSocket) -> R {
    let mut o = Obj::default();
    o.str("name", take(&mut t.name));
    match t.config_type.take() {
        Some(transport_socket::ConfigType::TypedConfig(a)) => {
            o.val("typed_config", Some(super::any(a)?));
        }
        other => t.config_type = other,
    }
    o.done(t, "TransportSocket")
}

/// Renders a transport socket match.
pub(super) fn socket_match(mut m: TransportSocketMatch) -> R {
    let mut o = Obj::default();
    o.str("name", take(&mut m.name));
    // An empty match (match everything) is still a set one.
    if let Some(s) = m.r#match.take() {
        o.val("match", Some(structure(s)?));
    }
    o.msg(
        "transport_socket",
        m.transport_socket.take(),
        transport_socket,
    )?;
    o.done(m, "TransportSocketMatch")
}

/// Renders the connection manager's `x-forwarded-client-cert` settings into `o`.
pub(super) fn xfcc_fields(o: &mut Obj, m: &mut HttpConnectionManager) -> Result<(), RenderError> {
    o.val(
        "forward_client_cert_details",
        enum_name(
            "ForwardClientCertDetails",
            take(&mut m.forward_client_cert_details),
            ForwardClientCertDetails::as_str_name,
        )?,
    );
    o.msg(
        "set_current_client_cert_details",
        m.set_current_client_cert_details.take(),
        |mut d: SetCurrentClientCertDetails| {
            let mut o = Obj::default();
            o.msg("subject", d.subject.take(), wrapped_bool)?;
            o.bool("cert", take(&mut d.cert));
            o.bool("chain", take(&mut d.chain));
            o.bool("dns", take(&mut d.dns));
            o.bool("uri", take(&mut d.uri));
            o.done(d, "SetCurrentClientCertDetails")
        },
    )?;
    Ok(())
}

fn sds(mut s: SdsSecretConfig) -> R {
    let mut o = Obj::default();
    o.str("name", take(&mut s.name));
    o.msg("sds_config", s.sds_config.take(), config_source_json)?;
    o.done(s, "SdsSecretConfig")
}

fn san_matcher(mut m: SubjectAltNameMatcher) -> R {
    let mut o = Obj::default();
    o.val(
        "san_type",
        enum_name("SanType", take(&mut m.san_type), SanType::as_str_name)?,
    );
    o.msg("matcher", m.matcher.take(), |mut s: StringMatcher| {
        let mut o = Obj::default();
        match s.match_pattern.take() {
            Some(MatchPattern::Exact(e)) => {
                o.val("exact", Some(Value::String(e)));
            }
            other => s.match_pattern = other,
        }
        o.done(s, "StringMatcher")
    })?;
    o.done(m, "SubjectAltNameMatcher")
}

fn validation_context(mut v: CertificateValidationContext) -> R {
    let mut o = Obj::default();
    o.list(
        "match_typed_subject_alt_names",
        take(&mut v.match_typed_subject_alt_names),
        san_matcher,
    )?;
    o.done(v, "CertificateValidationContext")
}

fn common(mut c: CommonTlsContext) -> R {
    let mut o = Obj::default();
    o.msg("tls_params", c.tls_params.take(), |mut p: TlsParameters| {
        let mut o = Obj::default();
        o.val(
            "tls_minimum_protocol_version",
            enum_name(
                "TlsProtocol",
                take(&mut p.tls_minimum_protocol_version),
                TlsProtocol::as_str_name,
            )?,
        );
        o.done(p, "TlsParameters")
    })?;
    o.list(
        "tls_certificate_sds_secret_configs",
        take(&mut c.tls_certificate_sds_secret_configs),
        sds,
    )?;
    match c.validation_context_type.take() {
        Some(ValidationContextType::CombinedValidationContext(mut v)) => {
            let mut inner = Obj::default();
            inner.msg(
                "default_validation_context",
                v.default_validation_context.take(),
                validation_context,
            )?;
            inner.msg(
                "validation_context_sds_secret_config",
                v.validation_context_sds_secret_config.take(),
                sds,
            )?;
            o.val(
                "combined_validation_context",
                Some(inner.done::<CombinedCertificateValidationContext>(
                    v,
                    "CombinedCertificateValidationContext",
                )?),
            );
        }
        other => c.validation_context_type = other,
    }
    o.strs("alpn_protocols", take(&mut c.alpn_protocols));
    o.done(c, "CommonTlsContext")
}

/// Renders the TLS transport socket configs; `None` for other types.
pub(super) fn typed(any: &Any) -> Option<R> {
    let url = any.type_url.as_str();
    let render = || -> R {
        if url == UpstreamTlsContext::type_url() {
            let mut m: UpstreamTlsContext = decode(any)?;
            let mut o = Obj::default();
            o.msg("common_tls_context", m.common_tls_context.take(), common)?;
            o.str("sni", take(&mut m.sni));
            o.done(m, "UpstreamTlsContext")
        } else if url == DownstreamTlsContext::type_url() {
            let mut m: DownstreamTlsContext = decode(any)?;
            let mut o = Obj::default();
            o.msg("common_tls_context", m.common_tls_context.take(), common)?;
            o.msg(
                "require_client_certificate",
                m.require_client_certificate.take(),
                wrapped_bool,
            )?;
            o.done(m, "DownstreamTlsContext")
        } else {
            Obj::default().done(decode::<RawBuffer>(any)?, "RawBuffer")
        }
    };
    let known = [
        UpstreamTlsContext::type_url(),
        DownstreamTlsContext::type_url(),
        RawBuffer::type_url(),
    ];
    known.iter().any(|k| k == url).then(render)
}
