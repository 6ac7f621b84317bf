//! Network filters (`http_connection_manager`, `tcp_proxy`, and `rbac` before either) and HTTP
//! filters (`rbac`, `fault`, `cors`, `router`).
//!
//! Ignored fields of the HTTP connection manager (observability and Envoy-side tuning; the
//! proxy has its own): `access_log_flush_interval`, `flush_access_log_on_new_request`,
//! `access_log_options`, `stream_idle_timeout`, `request_timeout`,
//! `request_headers_timeout`, `drain_timeout*`, `delayed_close_timeout`,
//! `stream_flush_timeout`, `common_http_protocol_options`, `http_protocol_options`,
//! `http2_protocol_options`, `max_request_headers_kb`, `server_name`,
//! `server_header_transformation`, `use_remote_address`, `xff_num_trusted_hops`, `skip_xff_append`,
//! `via`, `internal_address_config`, `generate_request_id`, `request_id_extension`,
//! `preserve_external_request_id`, `always_set_request_id_in_response`,
//! `proxy_100_continue`,
//! `stream_error_on_invalid_http_message`,
//! `represent_ipv4_remote_address_as_ipv4_mapped_ipv6`, `add_user_agent`, `proxy_status_config`,
//! `append_x_forwarded_port`, `append_local_overload`, `add_proxy_protocol_connection_state`,
//! `forward_proto_config`, `http1_safe_max_connection_duration`.
//! `upgrade_configs` may only enable WebSocket, which the proxy passes through.
//! `normalize_path`, `merge_slashes` and `path_with_escaped_slashes_action` (`KEEP_UNCHANGED`,
//! `REJECT_REQUEST`, `UNESCAPE_AND_FORWARD`) set the path normalization; `UNESCAPE_AND_REDIRECT`
//! and `path_normalization_options` are rejected.
//!
//! `access_log` and `tracing` are converted by [`super::telemetry`].
//!
//! Ignored fields of `tcp_proxy`: `access_log_options`, `flush_access_log_on_connected`,
//! `backoff_options`, `check_drain_close`. Ignored fields of the router: all but
//! `upstream_http_filters`. The CORS filter has no settings of its own (they are per route).

use envoy_types::pb::envoy::config::listener::v3::{filter, Filter};
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::Cors;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as HttpRbac;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    self as hcm, http_connection_manager, http_filter,
};
use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac as NetworkRbac;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{self as tcp, tcp_proxy};
use prost::Name;
use std::time::Duration;

use super::filter_config::fault;
use super::route::convert_route_config;
use super::{
    bool_or, decode_any, reject_set, require_ads, timeout_or, type_name, ConvertError, Location,
    Within,
};
use crate::model::{
    EscapedSlashes, HttpConnectionManager, HttpFilter, NetworkFilter, PathNormalization, Rbac,
    RouteSource, TcpProxy,
};

/// Envoy's default `tcp_proxy` idle timeout.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

const ROUTER_NAME: &str = "envoy.filters.http.router";
const HTTP_RBAC_NAME: &str = "envoy.filters.http.rbac";
const NETWORK_RBAC_NAME: &str = "envoy.filters.network.rbac";
const FAULT_NAME: &str = "envoy.filters.http.fault";
const CORS_NAME: &str = "envoy.filters.http.cors";

/// A network filter of a chain: RBAC (not terminal) or one of the terminal filters.
#[derive(Debug)]
pub(super) enum ChainFilter {
    /// `envoy.filters.network.rbac`.
    Rbac(Rbac),
    /// `http_connection_manager` or `tcp_proxy`.
    Terminal(NetworkFilter),
}

/// One network filter of a chain.
pub(super) fn chain_filter(proto: Filter) -> Result<ChainFilter, ConvertError> {
    if let Some(filter::ConfigType::TypedConfig(any)) = &proto.config_type {
        if type_name(&any.type_url) == NetworkRbac::full_name() {
            let rbac: NetworkRbac = decode_any(any).at("typed_config")?;
            return Rbac::try_from(rbac)
                .at("typed_config")
                .map(ChainFilter::Rbac);
        }
    }
    if proto.config_type.is_none() && proto.name == NETWORK_RBAC_NAME {
        return Err(ConvertError::missing("typed_config"));
    }
    NetworkFilter::try_from(proto).map(ChainFilter::Terminal)
}

/// A terminal network filter of a chain.
impl TryFrom<Filter> for NetworkFilter {
    type Error = ConvertError;

    fn try_from(proto: Filter) -> Result<Self, ConvertError> {
        let any = match proto.config_type {
            Some(filter::ConfigType::TypedConfig(any)) => any,
            Some(filter::ConfigType::ConfigDiscovery(_)) => {
                return Err(ConvertError::unsupported("config_discovery"))
            }
            None => return Err(ConvertError::missing("typed_config")),
        };
        let kind = type_name(&any.type_url);
        if kind == hcm::HttpConnectionManager::full_name() {
            let proto: hcm::HttpConnectionManager = decode_any(&any).at("typed_config")?;
            HttpConnectionManager::try_from(proto)
                .at("typed_config")
                .map(NetworkFilter::Http)
        } else if kind == tcp::TcpProxy::full_name() {
            let proto: tcp::TcpProxy = decode_any(&any).at("typed_config")?;
            TcpProxy::try_from(proto)
                .at("typed_config")
                .map(NetworkFilter::Tcp)
        } else {
            let name = if proto.name.is_empty() {
                any.type_url
            } else {
                proto.name
            };
            Err(ConvertError::UnsupportedFilter {
                at: Location::default(),
                name,
            })
        }
    }
}

/// `envoy.filters.network.http_connection_manager`.
impl TryFrom<hcm::HttpConnectionManager> for HttpConnectionManager {
    type Error = ConvertError;

    fn try_from(proto: hcm::HttpConnectionManager) -> Result<Self, ConvertError> {
        if proto.codec_type != http_connection_manager::CodecType::Auto as i32 {
            let name = http_connection_manager::CodecType::try_from(proto.codec_type).map_or_else(
                |_| proto.codec_type.to_string(),
                |c| c.as_str_name().to_string(),
            );
            return Err(ConvertError::unsupported_value("codec_type", name));
        }
        reject_set!(
            proto,
            http3_protocol_options,
            local_reply_config,
            original_ip_detection_extensions,
            early_header_mutation_extensions,
            typed_header_validation_config,
            strip_matching_host_port,
            strip_port_mode,
            strip_trailing_host_dot,
            forward_client_cert_matcher,
            scheme_header_transformation,
            path_normalization_options,
        );
        let path_normalization = path_normalization(&proto)?;
        let xfcc = super::tls::xfcc(&proto)?;
        for (i, upgrade) in proto.upgrade_configs.iter().enumerate() {
            websocket_upgrade(upgrade).at_index("upgrade_configs", i)?;
        }
        let routes = match proto.route_specifier {
            Some(http_connection_manager::RouteSpecifier::Rds(rds)) => {
                require_ads(rds.config_source.as_ref())
                    .at("config_source")
                    .at("rds")?;
                if rds.route_config_name.is_empty() {
                    return Err(ConvertError::missing("route_config_name").at("rds"));
                }
                RouteSource::Rds(rds.route_config_name)
            }
            Some(http_connection_manager::RouteSpecifier::RouteConfig(config)) => {
                RouteSource::Inline(convert_route_config(config).at("route_config")?)
            }
            Some(http_connection_manager::RouteSpecifier::ScopedRoutes(_)) => {
                return Err(ConvertError::unsupported("scoped_routes"))
            }
            None => return Err(ConvertError::missing("route_specifier")),
        };
        let mut http_filters = Vec::new();
        for (i, filter) in proto.http_filters.into_iter().enumerate() {
            if let Some(converted) = http_filter(filter).at_index("http_filters", i)? {
                if matches!(http_filters.last(), Some(HttpFilter::Router)) {
                    return Err(ConvertError::inconsistent(
                        "the router must be the last HTTP filter",
                    )
                    .at_index("http_filters", i));
                }
                http_filters.push(converted);
            }
        }
        if !matches!(http_filters.last(), Some(HttpFilter::Router)) {
            return Err(ConvertError::inconsistent(
                "the last HTTP filter must be the router (envoy.filters.http.router)",
            )
            .at("http_filters"));
        }
        let access_log = super::telemetry::access_logs(proto.access_log)?;
        let tracing = proto
            .tracing
            .map(super::telemetry::tracing_config)
            .transpose()
            .at("tracing")?;
        Ok(HttpConnectionManager {
            stat_prefix: proto.stat_prefix,
            routes,
            http_filters,
            path_normalization,
            xfcc,
            access_log,
            tracing,
        })
    }
}

/// `normalize_path`, `merge_slashes`, `path_with_escaped_slashes_action`.
fn path_normalization(
    proto: &hcm::HttpConnectionManager,
) -> Result<PathNormalization, ConvertError> {
    use http_connection_manager::PathWithEscapedSlashesAction as A;
    let escaped_slashes = match A::try_from(proto.path_with_escaped_slashes_action) {
        Ok(A::ImplementationSpecificDefault) | Ok(A::KeepUnchanged) => EscapedSlashes::Keep,
        Ok(A::RejectRequest) => EscapedSlashes::Reject,
        Ok(A::UnescapeAndForward) => EscapedSlashes::UnescapeAndForward,
        Ok(other) => {
            return Err(ConvertError::unsupported_value(
                "path_with_escaped_slashes_action",
                other.as_str_name(),
            ))
        }
        Err(_) => {
            return Err(ConvertError::unsupported_value(
                "path_with_escaped_slashes_action",
                proto.path_with_escaped_slashes_action.to_string(),
            ))
        }
    };
    Ok(PathNormalization {
        normalize: bool_or(proto.normalize_path.as_ref(), false),
        merge_slashes: proto.merge_slashes,
        escaped_slashes,
    })
}

/// Only WebSocket upgrades, enabled, without upgrade filters.
fn websocket_upgrade(upgrade: &http_connection_manager::UpgradeConfig) -> Result<(), ConvertError> {
    if !upgrade.upgrade_type.eq_ignore_ascii_case("websocket") {
        return Err(ConvertError::unsupported_value(
            "upgrade_type",
            upgrade.upgrade_type.clone(),
        ));
    }
    reject_set!(upgrade, filters);
    if upgrade.enabled.as_ref().is_some_and(|e| !e.value) {
        return Err(ConvertError::unsupported_value("enabled", "false"));
    }
    Ok(())
}

/// The HTTP filters the proxy implements.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Known {
    Router,
    Fault,
    Cors,
}

/// One HTTP filter: `Some` when supported, `None` when it is unknown and optional (skipped).
fn http_filter(proto: hcm::HttpFilter) -> Result<Option<HttpFilter>, ConvertError> {
    let is_rbac = match &proto.config_type {
        Some(http_filter::ConfigType::TypedConfig(any)) => {
            type_name(&any.type_url) == HttpRbac::full_name()
        }
        _ => false,
    };
    if is_rbac {
        if proto.disabled {
            return Err(ConvertError::unsupported_value("disabled", "true"));
        }
        let Some(http_filter::ConfigType::TypedConfig(any)) = &proto.config_type else {
            return Err(ConvertError::missing("typed_config"));
        };
        let rbac: HttpRbac = decode_any(any).at("typed_config")?;
        let rbac = Rbac::try_from(rbac).at("typed_config")?;
        return Ok(Some(HttpFilter::Rbac(Box::new(rbac))));
    }
    if proto.config_type.is_none() && proto.name == HTTP_RBAC_NAME && !proto.is_optional {
        return Err(ConvertError::missing("typed_config"));
    }
    let any = match &proto.config_type {
        Some(http_filter::ConfigType::TypedConfig(any)) => Some(any),
        _ => None,
    };
    let known = match (&proto.config_type, any) {
        (_, Some(any)) => {
            let kind = type_name(&any.type_url);
            if kind == Router::full_name() {
                Some(Known::Router)
            } else if kind == HttpFault::full_name() {
                Some(Known::Fault)
            } else if kind == Cors::full_name() {
                Some(Known::Cors)
            } else {
                None
            }
        }
        (Some(http_filter::ConfigType::ConfigDiscovery(_)), None) => None,
        (_, None) => match proto.name.as_str() {
            ROUTER_NAME => Some(Known::Router),
            FAULT_NAME => Some(Known::Fault),
            CORS_NAME => Some(Known::Cors),
            _ => None,
        },
    };
    let Some(known) = known else {
        if proto.is_optional {
            return Ok(None);
        }
        let name = match (any, proto.name.is_empty()) {
            (Some(any), true) => any.type_url.clone(),
            _ => proto.name,
        };
        return Err(ConvertError::UnsupportedHttpFilter {
            at: Location::default(),
            name,
        });
    };
    if proto.disabled {
        return Err(ConvertError::unsupported_value("disabled", "true"));
    }
    match known {
        Known::Router => {
            if let Some(any) = any {
                let router: Router = decode_any(any).at("typed_config")?;
                reject_set!(router, upstream_http_filters);
            }
            Ok(Some(HttpFilter::Router))
        }
        Known::Fault => {
            let config = match any {
                Some(any) => {
                    let proto: HttpFault = decode_any(any).at("typed_config")?;
                    fault(&proto).at("typed_config")?
                }
                None => Default::default(),
            };
            Ok(Some(HttpFilter::Fault(config)))
        }
        Known::Cors => {
            if let Some(any) = any {
                decode_any::<Cors>(any).at("typed_config")?;
            }
            Ok(Some(HttpFilter::Cors))
        }
    }
}

/// `envoy.filters.network.tcp_proxy`.
impl TryFrom<tcp::TcpProxy> for TcpProxy {
    type Error = ConvertError;

    fn try_from(proto: tcp::TcpProxy) -> Result<Self, ConvertError> {
        reject_set!(
            proto,
            on_demand,
            metadata_match,
            downstream_idle_timeout,
            upstream_idle_timeout,
            hash_policy,
            tunneling_config,
            max_downstream_connection_duration,
            max_downstream_connection_duration_jitter_percentage,
            proxy_protocol_tlvs,
            proxy_protocol_tlv_merge_policy,
            upstream_connect_mode,
            max_early_data_bytes,
        );
        if let Some(attempts) = &proto.max_connect_attempts {
            if attempts.value != 1 {
                return Err(ConvertError::unsupported_value(
                    "max_connect_attempts",
                    attempts.value.to_string(),
                ));
            }
        }
        let (cluster, weighted_clusters) = match proto.cluster_specifier {
            Some(tcp_proxy::ClusterSpecifier::Cluster(name)) if !name.is_empty() => {
                (name, Vec::new())
            }
            Some(tcp_proxy::ClusterSpecifier::WeightedClusters(w)) => {
                let mut clusters = Vec::with_capacity(w.clusters.len());
                for (i, c) in w.clusters.iter().enumerate() {
                    reject_set!(c, metadata_match);
                    if c.name.is_empty() {
                        return Err(ConvertError::missing("name")
                            .at_index("clusters", i)
                            .at("weighted_clusters"));
                    }
                    clusters.push((c.name.clone(), c.weight));
                }
                if clusters.iter().map(|(_, w)| u64::from(*w)).sum::<u64>() == 0 {
                    return Err(ConvertError::inconsistent("the weights add up to zero")
                        .at("clusters")
                        .at("weighted_clusters"));
                }
                (clusters[0].0.clone(), clusters)
            }
            _ => return Err(ConvertError::missing("cluster")),
        };
        let idle_timeout =
            timeout_or(proto.idle_timeout.as_ref(), TCP_IDLE_TIMEOUT).at("idle_timeout")?;
        let access_log = super::telemetry::access_logs(proto.access_log)?;
        Ok(TcpProxy {
            stat_prefix: proto.stat_prefix,
            cluster,
            weighted_clusters,
            idle_timeout,
            access_log,
        })
    }
}
