//! Route actions: forwarding (clusters, weights, timeouts, rewrites, retries, mirrors, hash
//! policies), redirects and direct responses.
//!
//! Ignored fields: `RouteAction.{flush_timeout, early_data_policy, include_vh_rate_limits}`,
//! `WeightedCluster.runtime_key_prefix` and `RequestMirrorPolicy.trace_sampled` (no runtime,
//! own tracing), `RetryPolicy.refresh_cluster_on_retry` (no DNS clusters).

use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{data_source, RoutingPriority};
use envoy_types::pb::envoy::config::route::v3::{
    redirect_action, retry_policy as pb_retry, route_action, weighted_cluster,
    DirectResponseAction, RedirectAction as PbRedirect, RetryPolicy as PbRetryPolicy,
    RouteAction as PbAction, WeightedCluster as PbWeighted,
};
use envoy_types::pb::envoy::extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate;
use envoy_types::pb::envoy::extensions::retry::priority::previous_priorities::v3::PreviousPrioritiesConfig;
use prost::Name;

use super::filter_config::filter_configs;
use super::matcher::{header_matchers, header_ops, regex_rewrite, runtime_fraction};
use super::{decode_any, duration, reject_set, timeout_or, type_name, ConvertError, Within};
use crate::model::{
    Destination, DirectResponse, ForwardAction, GrpcTimeout, HashPolicy, HashSource, MirrorPolicy,
    PathRedirect, RedirectAction, RetryBackOff, RetryOn, RetryPolicy, WeightedCluster,
};

/// Envoy's default route timeout.
const ROUTE_TIMEOUT: Duration = Duration::from_secs(15);
/// Envoy's default retry back-off base interval.
const RETRY_BASE_INTERVAL: Duration = Duration::from_millis(25);

const PREVIOUS_HOSTS: &str = "envoy.retry_host_predicates.previous_hosts";
const PREVIOUS_PRIORITIES: &str = "envoy.retry_priorities.previous_priorities";

/// A forwarding `RouteAction`.
#[allow(deprecated)]
pub(super) fn forward_action(proto: PbAction) -> Result<ForwardAction, ConvertError> {
    reject_set!(
        proto,
        metadata_match,
        path_rewrite_policy,
        path_rewrite,
        append_x_forwarded_host,
        retry_policy_typed_config,
        rate_limits,
        internal_redirect_policy,
        internal_redirect_action,
        max_internal_redirects,
        hedge_policy,
    );
    if proto.priority != RoutingPriority::Default as i32 {
        return Err(ConvertError::unsupported_value(
            "priority",
            proto.priority.to_string(),
        ));
    }
    for (i, upgrade) in proto.upgrade_configs.iter().enumerate() {
        if !upgrade.upgrade_type.eq_ignore_ascii_case("websocket")
            || upgrade.connect_config.is_some()
            || upgrade.enabled.as_ref().is_some_and(|e| !e.value)
        {
            return Err(ConvertError::unsupported_value(
                "upgrade_type",
                upgrade.upgrade_type.clone(),
            )
            .at_index("upgrade_configs", i));
        }
    }
    let cluster_not_found_status = match route_action::ClusterNotFoundResponseCode::try_from(
        proto.cluster_not_found_response_code,
    ) {
        Ok(route_action::ClusterNotFoundResponseCode::ServiceUnavailable) => 503,
        Ok(route_action::ClusterNotFoundResponseCode::NotFound) => 404,
        Ok(route_action::ClusterNotFoundResponseCode::InternalServerError) => 500,
        Err(_) => {
            return Err(ConvertError::unsupported_value(
                "cluster_not_found_response_code",
                proto.cluster_not_found_response_code.to_string(),
            ))
        }
    };
    let destination = match proto.cluster_specifier {
        Some(route_action::ClusterSpecifier::Cluster(name)) if !name.is_empty() => {
            Destination::Cluster(name)
        }
        Some(route_action::ClusterSpecifier::WeightedClusters(w)) => {
            Destination::Weighted(weighted_clusters(&w).at("weighted_clusters")?)
        }
        Some(route_action::ClusterSpecifier::ClusterHeader(_)) => {
            return Err(ConvertError::unsupported("cluster_header"))
        }
        Some(route_action::ClusterSpecifier::ClusterSpecifierPlugin(_))
        | Some(route_action::ClusterSpecifier::InlineClusterSpecifierPlugin(_)) => {
            return Err(ConvertError::unsupported("cluster_specifier_plugin"))
        }
        _ => return Err(ConvertError::missing("cluster")),
    };
    let timeout = timeout_or(proto.timeout.as_ref(), ROUTE_TIMEOUT).at("timeout")?;
    let idle_timeout = proto
        .idle_timeout
        .as_ref()
        .map(|d| duration(d).at("idle_timeout"))
        .transpose()?
        .filter(|d| !d.is_zero());
    let mut grpc_timeout = match &proto.max_grpc_timeout {
        None => None,
        Some(max) => Some(GrpcTimeout {
            max: Some(duration(max).at("max_grpc_timeout")?).filter(|d| !d.is_zero()),
            offset: proto
                .grpc_timeout_offset
                .as_ref()
                .map(|d| duration(d).at("grpc_timeout_offset"))
                .transpose()?
                .unwrap_or_default(),
        }),
    };
    if let Some(msd) = &proto.max_stream_duration {
        if let Some(d) = &msd.max_stream_duration {
            if !duration(d)
                .at("max_stream_duration")
                .at("max_stream_duration")?
                .is_zero()
            {
                return Err(
                    ConvertError::unsupported("max_stream_duration").at("max_stream_duration")
                );
            }
        }
        if let Some(max) = &msd.grpc_timeout_header_max {
            let max = duration(max)
                .at("grpc_timeout_header_max")
                .at("max_stream_duration")?;
            let offset = msd
                .grpc_timeout_header_offset
                .as_ref()
                .map(|d| {
                    duration(d)
                        .at("grpc_timeout_header_offset")
                        .at("max_stream_duration")
                })
                .transpose()?
                .unwrap_or_default();
            grpc_timeout = Some(GrpcTimeout {
                max: Some(max).filter(|d| !d.is_zero()),
                offset,
            });
        }
    }
    let prefix_rewrite = (!proto.prefix_rewrite.is_empty()).then_some(proto.prefix_rewrite);
    let regex_rewrite = proto
        .regex_rewrite
        .as_ref()
        .map(|r| regex_rewrite(r).at("regex_rewrite"))
        .transpose()?;
    if prefix_rewrite.is_some() && regex_rewrite.is_some() {
        return Err(ConvertError::inconsistent(
            "prefix_rewrite and regex_rewrite cannot both be set",
        )
        .at("regex_rewrite"));
    }
    let host_rewrite = match proto.host_rewrite_specifier {
        None => None,
        Some(route_action::HostRewriteSpecifier::HostRewriteLiteral(h)) if !h.is_empty() => Some(h),
        Some(route_action::HostRewriteSpecifier::HostRewriteLiteral(_)) => None,
        Some(route_action::HostRewriteSpecifier::AutoHostRewrite(b)) if !b.value => None,
        Some(route_action::HostRewriteSpecifier::AutoHostRewrite(_)) => {
            return Err(ConvertError::unsupported("auto_host_rewrite"))
        }
        Some(route_action::HostRewriteSpecifier::HostRewriteHeader(_)) => {
            return Err(ConvertError::unsupported("host_rewrite_header"))
        }
        Some(route_action::HostRewriteSpecifier::HostRewritePathRegex(_)) => {
            return Err(ConvertError::unsupported("host_rewrite_path_regex"))
        }
        Some(route_action::HostRewriteSpecifier::HostRewrite(_)) => {
            return Err(ConvertError::unsupported("host_rewrite"))
        }
    };
    let retry_policy = proto
        .retry_policy
        .as_ref()
        .map(|p| retry_policy(p).at("retry_policy"))
        .transpose()?;
    let mirrors = proto
        .request_mirror_policies
        .iter()
        .enumerate()
        .map(|(i, m)| mirror(m).at_index("request_mirror_policies", i))
        .collect::<Result<Vec<_>, _>>()?;
    let hash_policy = proto
        .hash_policy
        .iter()
        .enumerate()
        .map(|(i, h)| hash_policy(h).at_index("hash_policy", i))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ForwardAction {
        destination,
        timeout,
        idle_timeout,
        grpc_timeout,
        prefix_rewrite,
        regex_rewrite,
        host_rewrite,
        retry_policy,
        mirrors,
        hash_policy,
        cluster_not_found_status,
    })
}

/// `weighted_clusters`: every cluster named, weights adding up to more than zero (and to
/// `total_weight` when that legacy field is set).
#[allow(deprecated)]
fn weighted_clusters(proto: &PbWeighted) -> Result<Vec<WeightedCluster>, ConvertError> {
    reject_set!(proto, random_value_specifier);
    if proto.clusters.is_empty() {
        return Err(ConvertError::missing("clusters"));
    }
    let mut out = Vec::with_capacity(proto.clusters.len());
    for (i, c) in proto.clusters.iter().enumerate() {
        out.push(cluster_weight(c).at_index("clusters", i)?);
    }
    let total: u64 = out.iter().map(|c| u64::from(c.weight)).sum();
    if total == 0 {
        return Err(ConvertError::inconsistent("the weights add up to zero").at("clusters"));
    }
    if let Some(expected) = &proto.total_weight {
        if u64::from(expected.value) != total {
            return Err(ConvertError::invalid(
                "total weight",
                format!("{} (the weights add up to {total})", expected.value),
            )
            .at("total_weight"));
        }
    }
    Ok(out)
}

fn cluster_weight(c: &weighted_cluster::ClusterWeight) -> Result<WeightedCluster, ConvertError> {
    reject_set!(c, cluster_header, metadata_match);
    if c.name.is_empty() {
        return Err(ConvertError::missing("name"));
    }
    let host_rewrite = match &c.host_rewrite_specifier {
        Some(weighted_cluster::cluster_weight::HostRewriteSpecifier::HostRewriteLiteral(h))
            if !h.is_empty() =>
        {
            Some(h.clone())
        }
        _ => None,
    };
    Ok(WeightedCluster {
        name: c.name.clone(),
        weight: c.weight.as_ref().map_or(0, |w| w.value),
        headers: header_ops(
            &c.request_headers_to_add,
            &c.request_headers_to_remove,
            &c.response_headers_to_add,
            &c.response_headers_to_remove,
        )?,
        host_rewrite,
        filter_configs: filter_configs(&c.typed_per_filter_config)?,
    })
}

/// A `RetryPolicy`.
pub(super) fn retry_policy(proto: &PbRetryPolicy) -> Result<RetryPolicy, ConvertError> {
    reject_set!(
        proto,
        per_try_idle_timeout,
        retry_options_predicates,
        rate_limited_retry_back_off,
    );
    let mut retry_on = RetryOn::empty();
    for name in proto
        .retry_on
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        match RetryOn::from_name(name) {
            Some(on) => retry_on = retry_on.union(on),
            None => return Err(ConvertError::unsupported_value("retry_on", name)),
        }
    }
    let previous_priorities = match &proto.retry_priority {
        None => false,
        Some(p) => {
            let known = match &p.config_type {
                Some(pb_retry::retry_priority::ConfigType::TypedConfig(any)) => {
                    if type_name(&any.type_url) != PreviousPrioritiesConfig::full_name() {
                        return Err(ConvertError::unsupported_value(
                            "retry_priority",
                            any.type_url.clone(),
                        ));
                    }
                    decode_any::<PreviousPrioritiesConfig>(any)
                        .at("typed_config")
                        .at("retry_priority")?;
                    true
                }
                None => p.name == PREVIOUS_PRIORITIES,
            };
            if !known {
                return Err(ConvertError::unsupported_value(
                    "retry_priority",
                    p.name.clone(),
                ));
            }
            true
        }
    };
    let mut previous_hosts = false;
    for (i, p) in proto.retry_host_predicate.iter().enumerate() {
        let known = match &p.config_type {
            Some(pb_retry::retry_host_predicate::ConfigType::TypedConfig(any)) => {
                type_name(&any.type_url) == PreviousHostsPredicate::full_name()
            }
            None => p.name == PREVIOUS_HOSTS,
        };
        if !known {
            return Err(
                ConvertError::unsupported_value("retry_host_predicate", p.name.clone())
                    .at_index("retry_host_predicate", i),
            );
        }
        previous_hosts = true;
    }
    let retriable_status_codes = proto
        .retriable_status_codes
        .iter()
        .enumerate()
        .map(|(i, c)| {
            u16::try_from(*c)
                .ok()
                .filter(|c| (100..600).contains(c))
                .ok_or_else(|| {
                    ConvertError::invalid("HTTP status", c.to_string())
                        .at_index("retriable_status_codes", i)
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let back_off = match &proto.retry_back_off {
        None => RetryBackOff {
            base: RETRY_BASE_INTERVAL,
            max: RETRY_BASE_INTERVAL * 10,
        },
        Some(b) => {
            let base = match &b.base_interval {
                Some(d) => duration(d).at("base_interval").at("retry_back_off")?,
                None => return Err(ConvertError::missing("base_interval").at("retry_back_off")),
            };
            if base.is_zero() {
                return Err(ConvertError::invalid("duration", "0s")
                    .at("base_interval")
                    .at("retry_back_off"));
            }
            let max = match &b.max_interval {
                Some(d) => duration(d).at("max_interval").at("retry_back_off")?,
                None => base * 10,
            };
            if max < base {
                return Err(ConvertError::inconsistent(
                    "max_interval must not be less than base_interval",
                )
                .at("max_interval")
                .at("retry_back_off"));
            }
            RetryBackOff { base, max }
        }
    };
    Ok(RetryPolicy {
        retry_on,
        num_retries: proto.num_retries.as_ref().map_or(1, |n| n.value),
        per_try_timeout: proto
            .per_try_timeout
            .as_ref()
            .map(|d| duration(d).at("per_try_timeout"))
            .transpose()?
            .filter(|d| !d.is_zero()),
        previous_hosts,
        previous_priorities,
        host_selection_max_attempts: u32::try_from(proto.host_selection_retry_max_attempts.max(1))
            .unwrap_or(u32::MAX),
        retriable_status_codes,
        back_off,
        retriable_headers: header_matchers(&proto.retriable_headers, "retriable_headers")?,
        retriable_request_headers: header_matchers(
            &proto.retriable_request_headers,
            "retriable_request_headers",
        )?,
    })
}

fn mirror(proto: &route_action::RequestMirrorPolicy) -> Result<MirrorPolicy, ConvertError> {
    reject_set!(
        proto,
        cluster_header,
        request_headers_mutations,
        host_rewrite_literal
    );
    if proto.cluster.is_empty() {
        return Err(ConvertError::missing("cluster"));
    }
    Ok(MirrorPolicy {
        cluster: proto.cluster.clone(),
        fraction: runtime_fraction(proto.runtime_fraction.as_ref()).at("runtime_fraction")?,
        shadow_suffix: !proto.disable_shadow_host_suffix_append,
    })
}

fn hash_policy(proto: &route_action::HashPolicy) -> Result<HashPolicy, ConvertError> {
    use route_action::hash_policy::PolicySpecifier;
    let source = match &proto.policy_specifier {
        Some(PolicySpecifier::Header(h)) => {
            reject_set!(h, regex_rewrite);
            if h.header_name.is_empty() {
                return Err(ConvertError::missing("header_name").at("header"));
            }
            HashSource::Header(h.header_name.to_ascii_lowercase())
        }
        Some(PolicySpecifier::Cookie(c)) => {
            reject_set!(c, attributes);
            if c.name.is_empty() {
                return Err(ConvertError::missing("name").at("cookie"));
            }
            HashSource::Cookie {
                name: c.name.clone(),
                ttl: c
                    .ttl
                    .as_ref()
                    .map(|d| duration(d).at("ttl").at("cookie"))
                    .transpose()?,
                path: c.path.clone(),
            }
        }
        Some(PolicySpecifier::ConnectionProperties(p)) => {
            if !p.source_ip {
                return Err(ConvertError::unsupported_value("source_ip", "false")
                    .at("connection_properties"));
            }
            HashSource::SourceIp
        }
        Some(PolicySpecifier::QueryParameter(q)) => {
            if q.name.is_empty() {
                return Err(ConvertError::missing("name").at("query_parameter"));
            }
            HashSource::QueryParameter(q.name.clone())
        }
        Some(PolicySpecifier::FilterState(_)) => {
            return Err(ConvertError::unsupported("filter_state"))
        }
        None => return Err(ConvertError::missing("policy_specifier")),
    };
    Ok(HashPolicy {
        source,
        terminal: proto.terminal,
    })
}

/// A `RedirectAction`.
pub(super) fn redirect(proto: &PbRedirect) -> Result<RedirectAction, ConvertError> {
    let scheme = match &proto.scheme_rewrite_specifier {
        None => None,
        Some(redirect_action::SchemeRewriteSpecifier::HttpsRedirect(true)) => {
            Some("https".to_string())
        }
        Some(redirect_action::SchemeRewriteSpecifier::HttpsRedirect(false)) => None,
        Some(redirect_action::SchemeRewriteSpecifier::SchemeRedirect(s)) if s.is_empty() => None,
        Some(redirect_action::SchemeRewriteSpecifier::SchemeRedirect(s)) => {
            Some(s.to_ascii_lowercase())
        }
    };
    let path = match &proto.path_rewrite_specifier {
        None => PathRedirect::Keep,
        Some(redirect_action::PathRewriteSpecifier::PathRedirect(p)) if p.is_empty() => {
            PathRedirect::Keep
        }
        Some(redirect_action::PathRewriteSpecifier::PathRedirect(p)) => {
            PathRedirect::Path(p.clone())
        }
        Some(redirect_action::PathRewriteSpecifier::PrefixRewrite(p)) => {
            PathRedirect::Prefix(p.clone())
        }
        Some(redirect_action::PathRewriteSpecifier::RegexRewrite(r)) => {
            PathRedirect::Regex(regex_rewrite(r).at("regex_rewrite")?)
        }
        Some(redirect_action::PathRewriteSpecifier::PathRewrite(_)) => {
            return Err(ConvertError::unsupported("path_rewrite"))
        }
    };
    let status = match redirect_action::RedirectResponseCode::try_from(proto.response_code) {
        Ok(redirect_action::RedirectResponseCode::MovedPermanently) => 301,
        Ok(redirect_action::RedirectResponseCode::Found) => 302,
        Ok(redirect_action::RedirectResponseCode::SeeOther) => 303,
        Ok(redirect_action::RedirectResponseCode::TemporaryRedirect) => 307,
        Ok(redirect_action::RedirectResponseCode::PermanentRedirect) => 308,
        Err(_) => {
            return Err(ConvertError::unsupported_value(
                "response_code",
                proto.response_code.to_string(),
            ))
        }
    };
    let port = match proto.port_redirect {
        0 => None,
        p => Some(
            u16::try_from(p)
                .map_err(|_| ConvertError::invalid("port", p.to_string()).at("port_redirect"))?,
        ),
    };
    Ok(RedirectAction {
        scheme,
        host: (!proto.host_redirect.is_empty()).then(|| proto.host_redirect.clone()),
        port,
        path,
        strip_query: proto.strip_query,
        status,
    })
}

/// A `DirectResponseAction`.
pub(super) fn direct_response(
    proto: &DirectResponseAction,
) -> Result<DirectResponse, ConvertError> {
    reject_set!(proto, body_format);
    let status = u16::try_from(proto.status)
        .ok()
        .filter(|s| (200..600).contains(s))
        .ok_or_else(|| {
            ConvertError::invalid("HTTP status", proto.status.to_string()).at("status")
        })?;
    let body = match proto.body.as_ref().and_then(|b| b.specifier.as_ref()) {
        None => None,
        Some(data_source::Specifier::InlineString(s)) => Some(s.clone().into_bytes()),
        Some(data_source::Specifier::InlineBytes(b)) => Some(b.clone()),
        Some(data_source::Specifier::Filename(_)) => {
            return Err(ConvertError::unsupported("filename").at("body"))
        }
        Some(data_source::Specifier::EnvironmentVariable(_)) => {
            return Err(ConvertError::unsupported("environment_variable").at("body"))
        }
    };
    Ok(DirectResponse { status, body })
}
