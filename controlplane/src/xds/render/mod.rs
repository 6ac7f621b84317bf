//! A readable, deterministic JSON rendering of the resources this control plane produces, in
//! Envoy's proto3 JSON form (original field names, `@type` on `Any`, enums by name, durations
//! as `"10s"`), so that it can be read, diffed in golden files, and pasted into an Envoy
//! bootstrap.
//!
//! Contract: rendering covers exactly the fields the translation sets. Each renderer takes
//! its message by value, moves out every field it renders, and fails with
//! [`RenderError::Unrendered`] if anything non-default is left: a field added to the
//! translation but not to the rendering is an error, never a silent omission.

use std::mem::take;

use envoy_types::pb::envoy::config::cluster::v3::{
    cluster::{ClusterDiscoveryType, DiscoveryType, DnsLookupFamily, EdsClusterConfig, LbPolicy},
    Cluster,
};
use envoy_types::pb::envoy::config::core::v3::{
    address, api_config_source, config_source, grpc_service, socket_address, Address,
    ApiConfigSource, ApiVersion, BindConfig, ConfigSource, Http1ProtocolOptions,
    Http2ProtocolOptions, SocketAddress,
};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::config::trace::v3::OpenTelemetryConfig;
use envoy_types::pb::envoy::extensions::access_loggers::file::v3::FileAccessLog;
use envoy_types::pb::envoy::extensions::access_loggers::filters::cel::v3::ExpressionFilter;
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::{Cors, CorsPolicy};
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as HttpRbac;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::listener::http_inspector::v3::HttpInspector;
use envoy_types::pb::envoy::extensions::filters::listener::original_dst::v3::OriginalDst;
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac as NetworkRbac;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy;
use envoy_types::pb::envoy::extensions::path::r#match::uri_template::v3::UriTemplateMatchConfig;
use envoy_types::pb::envoy::extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate;
use envoy_types::pb::envoy::extensions::retry::priority::previous_priorities::v3::PreviousPrioritiesConfig;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    http_protocol_options::{
        explicit_http_config::ProtocolConfig, ExplicitHttpConfig, UpstreamProtocolOptions,
        UseDownstreamHttpConfig,
    },
    HttpProtocolOptions,
};
use envoy_types::pb::google::protobuf::{Any, BoolValue, Duration, UInt32Value};
use prost::{Message, Name};
use serde_json::{Map, Value};

mod cluster;
mod endpoint;
mod listener;
mod meta;
mod rbac;
mod route;
mod telemetry;
mod tls;
pub use listener::listener;
use listener::{hcm, tcp};

pub use endpoint::load_assignment;
pub use route::route_configuration;

/// Why a resource could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The message has fields the renderer does not cover.
    #[error("{message}: fields not covered by the rendering: {rest}")]
    Unrendered {
        /// The message type.
        message: &'static str,
        /// Debug form of what is left.
        rest: String,
    },
    /// An `Any` of a type the renderer does not know.
    #[error("cannot render Any of type {0}")]
    UnknownAny(String),
    /// An `Any` whose bytes do not decode as its type.
    #[error("cannot decode Any of type {type_url}: {source}")]
    Decode {
        /// The type URL.
        type_url: String,
        /// The decoder's error.
        source: prost::DecodeError,
    },
    /// An enum value outside the enum.
    #[error("{message}: unknown enum value {value}")]
    UnknownEnum {
        /// The enum.
        message: &'static str,
        /// The value.
        value: i32,
    },
}

type R = Result<Value, RenderError>;

/// Builds one JSON object, leaving out default values as proto3 JSON does.
#[derive(Default)]
struct Obj(Map<String, Value>);

impl Obj {
    fn str(&mut self, key: &str, v: String) -> &mut Self {
        if !v.is_empty() {
            self.0.insert(key.to_string(), Value::String(v));
        }
        self
    }
    fn bool(&mut self, key: &str, v: bool) -> &mut Self {
        if v {
            self.0.insert(key.to_string(), Value::Bool(true));
        }
        self
    }
    fn strs(&mut self, key: &str, v: Vec<String>) -> &mut Self {
        if !v.is_empty() {
            self.0.insert(key.to_string(), v.into());
        }
        self
    }
    fn val(&mut self, key: &str, v: Option<Value>) -> &mut Self {
        if let Some(v) = v {
            self.0.insert(key.to_string(), v);
        }
        self
    }
    fn msg<T>(&mut self, key: &str, v: Option<T>, f: fn(T) -> R) -> Result<&mut Self, RenderError> {
        if let Some(v) = v {
            self.0.insert(key.to_string(), f(v)?);
        }
        Ok(self)
    }
    fn list<T>(&mut self, key: &str, v: Vec<T>, f: fn(T) -> R) -> Result<&mut Self, RenderError> {
        if !v.is_empty() {
            let items = v.into_iter().map(f).collect::<Result<Vec<_>, _>>()?;
            self.0.insert(key.to_string(), Value::Array(items));
        }
        Ok(self)
    }
    /// Finishes the object after checking that `rest` has nothing left.
    fn done<T: PartialEq + Default + std::fmt::Debug>(
        &mut self,
        rest: T,
        message: &'static str,
    ) -> R {
        if rest != T::default() {
            return Err(RenderError::Unrendered {
                message,
                rest: format!("{rest:?}"),
            });
        }
        Ok(Value::Object(take(&mut self.0)))
    }
}

fn enum_name<E: TryFrom<i32>>(
    message: &'static str,
    v: i32,
    name: fn(&E) -> &'static str,
) -> Result<Option<Value>, RenderError> {
    if v == 0 {
        return Ok(None);
    }
    let e = E::try_from(v).map_err(|_| RenderError::UnknownEnum { message, value: v })?;
    Ok(Some(Value::String(name(&e).to_string())))
}

fn duration(d: Duration) -> R {
    let Duration { seconds, nanos } = d;
    // Proto3 JSON: 0, 3, 6 or 9 fractional digits.
    Ok(Value::String(if nanos == 0 {
        format!("{seconds}s")
    } else if nanos % 1_000_000 == 0 {
        format!("{seconds}.{:03}s", nanos / 1_000_000)
    } else if nanos % 1_000 == 0 {
        format!("{seconds}.{:06}s", nanos / 1_000)
    } else {
        format!("{seconds}.{nanos:09}s")
    }))
}

fn wrapped_bool(v: BoolValue) -> R {
    Ok(Value::Bool(v.value))
}

fn wrapped_u32(v: UInt32Value) -> R {
    Ok(Value::from(v.value))
}

fn decode<T: Message + Default>(any: &Any) -> Result<T, RenderError> {
    T::decode(any.value.as_slice()).map_err(|source| RenderError::Decode {
        type_url: any.type_url.clone(),
        source,
    })
}

/// Renders a map of `Any`s (typed configs by name) sorted by key; `None` when empty.
fn any_map(m: std::collections::HashMap<String, Any>) -> Result<Option<Value>, RenderError> {
    if m.is_empty() {
        return Ok(None);
    }
    let mut entries: Vec<_> = m.into_iter().collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut map = Map::new();
    for (k, v) in entries {
        map.insert(k, any(v)?);
    }
    Ok(Some(Value::Object(map)))
}

/// Renders an `Any` of a type the translation uses, with `@type` first.
pub fn any(any: Any) -> R {
    let url = any.type_url.as_str();
    let body = if url == Cluster::type_url() {
        cluster(decode(&any)?)?
    } else if url == ClusterLoadAssignment::type_url() {
        load_assignment(decode(&any)?)?
    } else if url == Listener::type_url() {
        listener(decode(&any)?)?
    } else if url == RouteConfiguration::type_url() {
        route_configuration(decode(&any)?)?
    } else if url == HttpConnectionManager::type_url() {
        hcm(decode(&any)?)?
    } else if url == TcpProxy::type_url() {
        tcp(decode(&any)?)?
    } else if url == HttpProtocolOptions::type_url() {
        http_protocol_options(decode(&any)?)?
    } else if url == Router::type_url() {
        Obj::default().done(decode::<Router>(&any)?, "Router")?
    } else if url == TlsInspector::type_url() {
        Obj::default().done(decode::<TlsInspector>(&any)?, "TlsInspector")?
    } else if url == HttpInspector::type_url() {
        Obj::default().done(decode::<HttpInspector>(&any)?, "HttpInspector")?
    } else if url == OriginalDst::type_url() {
        Obj::default().done(decode::<OriginalDst>(&any)?, "OriginalDst")?
    } else if url == HttpFault::type_url() {
        route::http_fault(decode(&any)?)?
    } else if url == CorsPolicy::type_url() {
        route::cors_policy(decode(&any)?)?
    } else if url == HttpRbac::type_url() {
        rbac::http_rbac(decode(&any)?)?
    } else if url == NetworkRbac::type_url() {
        rbac::network_rbac(decode(&any)?)?
    } else if url == UriTemplateMatchConfig::type_url() {
        rbac::uri_template(decode(&any)?)?
    } else if url == Cors::type_url() {
        Obj::default().done(decode::<Cors>(&any)?, "Cors")?
    } else if url == PreviousHostsPredicate::type_url() {
        Obj::default().done(
            decode::<PreviousHostsPredicate>(&any)?,
            "PreviousHostsPredicate",
        )?
    } else if url == PreviousPrioritiesConfig::type_url() {
        let mut m: PreviousPrioritiesConfig = decode(&any)?;
        let mut o = Obj::default();
        o.val(
            "update_frequency",
            Some(Value::from(std::mem::take(&mut m.update_frequency))),
        );
        o.done(m, "PreviousPrioritiesConfig")?
    } else if url == FileAccessLog::type_url() {
        telemetry::file_access_log_json(decode(&any)?)?
    } else if url == ExpressionFilter::type_url() {
        telemetry::expression_filter(decode(&any)?)?
    } else if url == OpenTelemetryConfig::type_url() {
        telemetry::open_telemetry(decode(&any)?)?
    } else if let Some(body) = tls::typed(&any) {
        body?
    } else {
        return Err(RenderError::UnknownAny(any.type_url));
    };
    let mut out = Map::new();
    out.insert("@type".to_string(), Value::String(any.type_url));
    if let Value::Object(fields) = body {
        out.extend(fields);
    }
    Ok(Value::Object(out))
}

fn socket_address_json(mut m: SocketAddress) -> R {
    let mut o = Obj::default();
    o.str("address", take(&mut m.address));
    match m.port_specifier.take() {
        Some(socket_address::PortSpecifier::PortValue(p)) => {
            o.val("port_value", Some(Value::from(p)));
        }
        other => m.port_specifier = other,
    }
    o.done(m, "SocketAddress")
}

fn address_json(mut m: Address) -> R {
    let mut o = Obj::default();
    match m.address.take() {
        Some(address::Address::SocketAddress(s)) => {
            o.msg("socket_address", Some(s), socket_address_json)?;
        }
        other => m.address = other,
    }
    o.done(m, "Address")
}

fn config_source_json(mut m: ConfigSource) -> R {
    let mut o = Obj::default();
    match m.config_source_specifier.take() {
        Some(config_source::ConfigSourceSpecifier::Ads(a)) => {
            o.val(
                "ads",
                Some(Obj::default().done(a, "AggregatedConfigSource")?),
            );
        }
        Some(config_source::ConfigSourceSpecifier::ApiConfigSource(a)) => {
            o.val("api_config_source", Some(api_config_source_json(a)?));
        }
        other => m.config_source_specifier = other,
    }
    o.msg(
        "initial_fetch_timeout",
        m.initial_fetch_timeout.take(),
        duration,
    )?;
    o.val(
        "resource_api_version",
        enum_name(
            "ApiVersion",
            take(&mut m.resource_api_version),
            ApiVersion::as_str_name,
        )?,
    );
    o.done(m, "ConfigSource")
}

fn api_config_source_json(mut a: ApiConfigSource) -> R {
    let mut o = Obj::default();
    o.val(
        "api_type",
        enum_name(
            "ApiType",
            take(&mut a.api_type),
            api_config_source::ApiType::as_str_name,
        )?,
    );
    o.val(
        "transport_api_version",
        enum_name(
            "ApiVersion",
            take(&mut a.transport_api_version),
            ApiVersion::as_str_name,
        )?,
    );
    o.bool(
        "set_node_on_first_message_only",
        take(&mut a.set_node_on_first_message_only),
    );
    o.list("grpc_services", take(&mut a.grpc_services), |mut g| {
        let mut o = Obj::default();
        match g.target_specifier.take() {
            Some(grpc_service::TargetSpecifier::EnvoyGrpc(mut e)) => {
                let mut inner = Obj::default();
                inner.str("cluster_name", take(&mut e.cluster_name));
                o.val("envoy_grpc", Some(inner.done(e, "EnvoyGrpc")?));
            }
            other => g.target_specifier = other,
        }
        o.done(g, "GrpcService")
    })?;
    o.done(a, "ApiConfigSource")
}

/// Renders a cluster.
#[allow(deprecated)] // dns_refresh_rate, respect_dns_ttl: what istiod sends
pub fn cluster(mut m: Cluster) -> R {
    let mut o = Obj::default();
    o.str("name", take(&mut m.name));
    match m.cluster_discovery_type.take() {
        Some(ClusterDiscoveryType::Type(t)) => {
            let name = enum_name("DiscoveryType", t, DiscoveryType::as_str_name)?;
            o.val("type", name.or(Some(Value::String("STATIC".to_string()))));
        }
        other => m.cluster_discovery_type = other,
    }
    o.msg(
        "eds_cluster_config",
        m.eds_cluster_config.take(),
        |mut e: EdsClusterConfig| {
            let mut o = Obj::default();
            o.msg("eds_config", e.eds_config.take(), config_source_json)?;
            o.str("service_name", take(&mut e.service_name));
            o.done(e, "EdsClusterConfig")
        },
    )?;
    o.msg("connect_timeout", m.connect_timeout.take(), duration)?;
    o.val(
        "lb_policy",
        enum_name("LbPolicy", take(&mut m.lb_policy), LbPolicy::as_str_name)?,
    );
    o.msg(
        "upstream_bind_config",
        m.upstream_bind_config.take(),
        |mut b: BindConfig| {
            let mut o = Obj::default();
            o.msg(
                "source_address",
                b.source_address.take(),
                socket_address_json,
            )?;
            o.done(b, "BindConfig")
        },
    )?;
    cluster::policy_fields(&mut o, &mut m)?;
    o.val(
        "dns_lookup_family",
        enum_name(
            "DnsLookupFamily",
            take(&mut m.dns_lookup_family),
            DnsLookupFamily::as_str_name,
        )?,
    );
    o.msg("dns_refresh_rate", m.dns_refresh_rate.take(), duration)?;
    o.bool("respect_dns_ttl", take(&mut m.respect_dns_ttl));
    o.msg("load_assignment", m.load_assignment.take(), load_assignment)?;
    o.msg("metadata", m.metadata.take(), route::metadata)?;
    o.msg(
        "transport_socket",
        m.transport_socket.take(),
        tls::transport_socket,
    )?;
    let matches = take(&mut m.transport_socket_matches);
    o.list("transport_socket_matches", matches, tls::socket_match)?;
    let mut options: Vec<_> = take(&mut m.typed_extension_protocol_options)
        .into_iter()
        .collect();
    options.sort_by(|a, b| a.0.cmp(&b.0));
    if !options.is_empty() {
        let mut map = Map::new();
        for (k, v) in options {
            map.insert(k, any(v)?);
        }
        o.val("typed_extension_protocol_options", Some(Value::Object(map)));
    }
    o.done(m, "Cluster")
}

fn http_protocol_options(mut m: HttpProtocolOptions) -> R {
    fn h1(m: Http1ProtocolOptions) -> R {
        Obj::default().done(m, "Http1ProtocolOptions")
    }
    fn h2(mut m: Http2ProtocolOptions) -> R {
        let mut o = Obj::default();
        o.msg(
            "max_concurrent_streams",
            m.max_concurrent_streams.take(),
            wrapped_u32,
        )?;
        o.done(m, "Http2ProtocolOptions")
    }
    let mut o = Obj::default();
    o.msg(
        "common_http_protocol_options",
        m.common_http_protocol_options.take(),
        cluster::common_http_options,
    )?;
    match m.upstream_protocol_options.take() {
        Some(UpstreamProtocolOptions::ExplicitHttpConfig(mut e)) => {
            let mut inner = Obj::default();
            match e.protocol_config.take() {
                Some(ProtocolConfig::Http2ProtocolOptions(p)) => {
                    inner.msg("http2_protocol_options", Some(p), h2)?;
                }
                Some(ProtocolConfig::HttpProtocolOptions(p)) => {
                    inner.msg("http_protocol_options", Some(p), h1)?;
                }
                other => e.protocol_config = other,
            }
            o.val(
                "explicit_http_config",
                Some(inner.done::<ExplicitHttpConfig>(e, "ExplicitHttpConfig")?),
            );
        }
        Some(UpstreamProtocolOptions::UseDownstreamProtocolConfig(mut d)) => {
            let mut inner = Obj::default();
            inner.msg("http_protocol_options", d.http_protocol_options.take(), h1)?;
            inner.msg(
                "http2_protocol_options",
                d.http2_protocol_options.take(),
                h2,
            )?;
            o.val(
                "use_downstream_protocol_config",
                Some(inner.done::<UseDownstreamHttpConfig>(d, "UseDownstreamHttpConfig")?),
            );
        }
        other => m.upstream_protocol_options = other,
    }
    o.done(m, "HttpProtocolOptions")
}
