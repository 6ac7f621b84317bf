//! Route configurations (RDS or inline in a connection manager), virtual hosts, routes and
//! route matches. Route actions are in [`super::action`].
//!
//! Ignored fields: `RouteConfiguration.{validate_clusters, max_direct_response_body_size_bytes,
//! metadata}`, `VirtualHost.{virtual_clusters, per_request_buffer_limit_bytes,
//! request_body_buffer_limit, include_is_timeout_retry_header, metadata}`, `Route.{metadata,
//! decorator, tracing, stat_prefix, per_request_buffer_limit_bytes,
//! request_body_buffer_limit}`.

use std::collections::BTreeSet;

use envoy_types::pb::envoy::config::route::v3::{self as pb, route, route_match, virtual_host};

use super::action::{forward_action, retry_policy};
use super::filter_config::{filter_configs, route_cors};
use super::matcher::{header_matchers, header_ops, query_matcher, regex};
use super::{reject_set, ConvertError, Within};
use crate::model::{
    PathMatch, ResourceType, Route, RouteAction, RouteConfig, RouteMatch, VirtualHost,
};

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
        most_specific_header_mutations_wins,
        cluster_specifier_plugins,
        request_mirror_policies,
        ignore_port_in_host_matching,
        vhost_header,
        ignore_path_parameters_in_path_matching,
        typed_per_filter_config,
        route_specifiers,
    );
    let headers = header_ops(
        &proto.request_headers_to_add,
        &proto.request_headers_to_remove,
        &proto.response_headers_to_add,
        &proto.response_headers_to_remove,
    )?;
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
        headers,
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
        let headers = header_ops(
            &proto.request_headers_to_add,
            &proto.request_headers_to_remove,
            &proto.response_headers_to_add,
            &proto.response_headers_to_remove,
        )?;
        let mut filter_configs = filter_configs(&proto.typed_per_filter_config)?;
        if let Some(cors) = &proto.cors {
            if filter_configs.cors.is_none() {
                filter_configs.cors = Some(route_cors(cors).at("cors")?);
            }
        }
        let retry_policy = proto
            .retry_policy
            .as_ref()
            .map(|p| retry_policy(p).at("retry_policy"))
            .transpose()?;
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
            headers,
            filter_configs,
            retry_policy,
            include_attempt_count: proto.include_request_attempt_count,
            include_attempt_count_in_response: proto.include_attempt_count_in_response,
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

/// A route: its match, its action, header operations and per-filter settings.
impl TryFrom<pb::Route> for Route {
    type Error = ConvertError;

    #[allow(deprecated)]
    fn try_from(proto: pb::Route) -> Result<Self, ConvertError> {
        reject_set!(proto, route_specifiers);
        let matcher = match proto.r#match {
            Some(m) => RouteMatch::try_from(m).at("match")?,
            None => return Err(ConvertError::missing("match")),
        };
        let headers = header_ops(
            &proto.request_headers_to_add,
            &proto.request_headers_to_remove,
            &proto.response_headers_to_add,
            &proto.response_headers_to_remove,
        )?;
        let mut filter_configs = filter_configs(&proto.typed_per_filter_config)?;
        let action = match proto.action {
            Some(route::Action::Route(action)) => {
                if let Some(cors) = &action.cors {
                    if filter_configs.cors.is_none() {
                        filter_configs.cors = Some(route_cors(cors).at("cors").at("route")?);
                    }
                }
                RouteAction::Forward(Box::new(forward_action(action).at("route")?))
            }
            Some(route::Action::Redirect(r)) => {
                RouteAction::Redirect(super::action::redirect(&r).at("redirect")?)
            }
            Some(route::Action::DirectResponse(d)) => RouteAction::DirectResponse(
                super::action::direct_response(&d).at("direct_response")?,
            ),
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
            headers,
            filter_configs,
        })
    }
}

/// A route match: path (prefix, exact, regex, path-separated prefix), case sensitivity,
/// headers, query parameters, gRPC.
impl TryFrom<pb::RouteMatch> for RouteMatch {
    type Error = ConvertError;

    fn try_from(proto: pb::RouteMatch) -> Result<Self, ConvertError> {
        reject_set!(
            proto,
            runtime_fraction,
            cookies,
            tls_context,
            dynamic_metadata,
            filter_state,
        );
        let case_sensitive = proto.case_sensitive.as_ref().is_none_or(|c| c.value);
        let fold = |s: String| {
            if case_sensitive {
                s
            } else {
                s.to_ascii_lowercase()
            }
        };
        let path = match proto.path_specifier {
            Some(route_match::PathSpecifier::Prefix(prefix)) => PathMatch::Prefix(fold(prefix)),
            Some(route_match::PathSpecifier::Path(path)) => PathMatch::Exact(fold(path)),
            Some(route_match::PathSpecifier::SafeRegex(r)) => {
                PathMatch::Regex(regex(&r).at("safe_regex")?)
            }
            Some(route_match::PathSpecifier::PathSeparatedPrefix(p)) => {
                if !p.starts_with('/')
                    || (p.len() > 1 && p.ends_with('/'))
                    || p.contains(['?', '#'])
                {
                    return Err(ConvertError::invalid("path prefix", p).at("path_separated_prefix"));
                }
                PathMatch::PathSeparatedPrefix(fold(p))
            }
            Some(route_match::PathSpecifier::ConnectMatcher(_)) => {
                return Err(ConvertError::unsupported("connect_matcher"))
            }
            Some(route_match::PathSpecifier::PathMatchPolicy(_)) => {
                return Err(ConvertError::unsupported("path_match_policy"))
            }
            None => return Err(ConvertError::missing("path_specifier")),
        };
        let query_parameters = proto
            .query_parameters
            .iter()
            .enumerate()
            .map(|(i, q)| query_matcher(q).at_index("query_parameters", i))
            .collect::<Result<Vec<_>, _>>()?;
        let grpc = proto.grpc.is_some();
        Ok(RouteMatch {
            path,
            case_sensitive,
            headers: header_matchers(&proto.headers, "headers")?,
            query_parameters,
            grpc,
        })
    }
}
