//! Route configurations (RDS or inline in a connection manager), virtual hosts and routes.
//!
//! Ignored fields: `RouteConfiguration.{validate_clusters, max_direct_response_body_size_bytes,
//! most_specific_header_mutations_wins, metadata}`, `VirtualHost.{virtual_clusters,
//! per_request_buffer_limit_bytes, request_body_buffer_limit, include_is_timeout_retry_header,
//! metadata}`, `Route.{metadata, decorator, tracing, stat_prefix, per_request_buffer_limit_bytes,
//! request_body_buffer_limit}`, `RouteAction.{flush_timeout,
//! early_data_policy, cluster_not_found_response_code}`.

use std::collections::BTreeSet;
use std::time::Duration;

use envoy_types::pb::envoy::config::route::v3::{
    self as pb, route, route_action, route_match, virtual_host,
};

use super::{reject_set, timeout_or, ConvertError, Within};
use crate::model::{
    PathMatch, ResourceType, Route, RouteAction, RouteConfig, RouteMatch, VirtualHost,
};

/// Envoy's default route timeout.
const ROUTE_TIMEOUT: Duration = Duration::from_secs(15);

/// An RDS resource: a route configuration that must have a name.
impl TryFrom<pb::RouteConfiguration> for RouteConfig {
    type Error = ConvertError;

    fn try_from(proto: pb::RouteConfiguration) -> Result<Self, ConvertError> {
        let name = proto.name.clone();
        if name.is_empty() {
            return Err(ConvertError::missing("name").in_resource(ResourceType::Route, &name));
        }
        convert_route_config(proto).map_err(|e| e.in_resource(ResourceType::Route, &name))
    }
}

/// A route configuration, RDS or inline (where the name may be empty).
pub(super) fn convert_route_config(
    proto: pb::RouteConfiguration,
) -> Result<RouteConfig, ConvertError> {
    reject_set!(
        proto,
        vhds,
        internal_only_headers,
        response_headers_to_add,
        response_headers_to_remove,
        request_headers_to_add,
        request_headers_to_remove,
        cluster_specifier_plugins,
        request_mirror_policies,
        ignore_port_in_host_matching,
        vhost_header,
        ignore_path_parameters_in_path_matching,
        typed_per_filter_config,
        route_specifiers,
    );
    let mut seen = BTreeSet::new();
    let mut virtual_hosts = Vec::with_capacity(proto.virtual_hosts.len());
    for (i, vh) in proto.virtual_hosts.into_iter().enumerate() {
        let vh = VirtualHost::try_from(vh).at_index("virtual_hosts", i)?;
        for (j, domain) in vh.domains.iter().enumerate() {
            if !seen.insert(domain.clone()) {
                return Err(ConvertError::duplicate("domain", domain.clone())
                    .at_index("domains", j)
                    .at_index("virtual_hosts", i));
            }
        }
        virtual_hosts.push(vh);
    }
    Ok(RouteConfig {
        name: proto.name,
        virtual_hosts,
    })
}

/// A virtual host: domains lowercased and checked for Envoy's wildcard forms.
impl TryFrom<pb::VirtualHost> for VirtualHost {
    type Error = ConvertError;

    #[allow(deprecated)]
    fn try_from(proto: pb::VirtualHost) -> Result<Self, ConvertError> {
        if proto.name.is_empty() {
            return Err(ConvertError::missing("name"));
        }
        if proto.require_tls != virtual_host::TlsRequirementType::None as i32 {
            return Err(ConvertError::unsupported("require_tls"));
        }
        reject_set!(
            proto,
            matcher,
            rate_limits,
            request_headers_to_add,
            request_headers_to_remove,
            response_headers_to_add,
            response_headers_to_remove,
            cors,
            typed_per_filter_config,
            include_request_attempt_count,
            include_attempt_count_in_response,
            retry_policy,
            retry_policy_typed_config,
            hedge_policy,
            request_mirror_policies,
            route_specifiers,
        );
        if proto.domains.is_empty() {
            return Err(ConvertError::missing("domains"));
        }
        let domains = proto
            .domains
            .iter()
            .enumerate()
            .map(|(i, d)| domain(d).at_index("domains", i))
            .collect::<Result<Vec<_>, _>>()?;
        let routes = proto
            .routes
            .into_iter()
            .enumerate()
            .map(|(i, r)| Route::try_from(r).at_index("routes", i))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(VirtualHost {
            name: proto.name,
            domains,
            routes,
        })
    }
}

/// A domain as Envoy accepts it: `*`, `*suffix`, `prefix*` or exact; stored lowercase.
fn domain(d: &str) -> Result<String, ConvertError> {
    let stars = d.matches('*').count();
    let valid = !d.is_empty()
        && (stars == 0 || (stars == 1 && (d.starts_with('*') || d.ends_with('*'))))
        && !d.chars().any(|c| c.is_whitespace() || c.is_control());
    if !valid {
        return Err(ConvertError::invalid("domain", d));
    }
    Ok(d.to_ascii_lowercase())
}

/// A route: a path match and a forward to a cluster.
impl TryFrom<pb::Route> for Route {
    type Error = ConvertError;

    fn try_from(proto: pb::Route) -> Result<Self, ConvertError> {
        reject_set!(
            proto,
            typed_per_filter_config,
            request_headers_to_add,
            request_headers_to_remove,
            response_headers_to_add,
            response_headers_to_remove,
            route_specifiers,
        );
        let matcher = match proto.r#match {
            Some(m) => RouteMatch::try_from(m).at("match")?,
            None => return Err(ConvertError::missing("match")),
        };
        let action = match proto.action {
            Some(route::Action::Route(action)) => RouteAction::try_from(action).at("route")?,
            Some(route::Action::Redirect(_)) => return Err(ConvertError::unsupported("redirect")),
            Some(route::Action::DirectResponse(_)) => {
                return Err(ConvertError::unsupported("direct_response"))
            }
            Some(route::Action::FilterAction(_)) => {
                return Err(ConvertError::unsupported("filter_action"))
            }
            Some(route::Action::NonForwardingAction(_)) => {
                return Err(ConvertError::unsupported("non_forwarding_action"))
            }
            None => return Err(ConvertError::missing("action")),
        };
        Ok(Route {
            name: proto.name,
            matcher,
            action,
        })
    }
}

/// A route match: a prefix or exact path, case-sensitive, nothing else.
impl TryFrom<pb::RouteMatch> for RouteMatch {
    type Error = ConvertError;

    fn try_from(proto: pb::RouteMatch) -> Result<Self, ConvertError> {
        if proto.case_sensitive.as_ref().is_some_and(|c| !c.value) {
            return Err(ConvertError::unsupported_value("case_sensitive", "false"));
        }
        reject_set!(
            proto,
            runtime_fraction,
            headers,
            query_parameters,
            cookies,
            grpc,
            tls_context,
            dynamic_metadata,
            filter_state,
        );
        let path = match proto.path_specifier {
            Some(route_match::PathSpecifier::Prefix(prefix)) => PathMatch::Prefix(prefix),
            Some(route_match::PathSpecifier::Path(path)) => PathMatch::Exact(path),
            Some(route_match::PathSpecifier::SafeRegex(_)) => {
                return Err(ConvertError::unsupported("safe_regex"))
            }
            Some(route_match::PathSpecifier::ConnectMatcher(_)) => {
                return Err(ConvertError::unsupported("connect_matcher"))
            }
            Some(route_match::PathSpecifier::PathSeparatedPrefix(_)) => {
                return Err(ConvertError::unsupported("path_separated_prefix"))
            }
            Some(route_match::PathSpecifier::PathMatchPolicy(_)) => {
                return Err(ConvertError::unsupported("path_match_policy"))
            }
            None => return Err(ConvertError::missing("path_specifier")),
        };
        Ok(RouteMatch { path })
    }
}

/// A route action: one cluster and a timeout (absent: Envoy's 15 s; zero: none).
impl TryFrom<pb::RouteAction> for RouteAction {
    type Error = ConvertError;

    #[allow(deprecated)]
    fn try_from(proto: pb::RouteAction) -> Result<Self, ConvertError> {
        reject_set!(
            proto,
            metadata_match,
            prefix_rewrite,
            regex_rewrite,
            path_rewrite_policy,
            path_rewrite,
            host_rewrite_specifier,
            append_x_forwarded_host,
            idle_timeout,
            retry_policy,
            retry_policy_typed_config,
            request_mirror_policies,
            priority,
            rate_limits,
            include_vh_rate_limits,
            hash_policy,
            cors,
            max_grpc_timeout,
            grpc_timeout_offset,
            upgrade_configs,
            internal_redirect_policy,
            internal_redirect_action,
            max_internal_redirects,
            hedge_policy,
            max_stream_duration,
        );
        let cluster = match proto.cluster_specifier {
            Some(route_action::ClusterSpecifier::Cluster(name)) if !name.is_empty() => name,
            Some(route_action::ClusterSpecifier::WeightedClusters(_)) => {
                return Err(ConvertError::unsupported("weighted_clusters"))
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
        Ok(RouteAction::Cluster { cluster, timeout })
    }
}
