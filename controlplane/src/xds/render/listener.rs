//! Rendering of listeners: filter chains and their matches, listener filters, TCP proxy and
//! HTTP connection manager configs.

use super::*;
use envoy_types::pb::envoy::config::core::v3::{CidrRange, TrafficDirection};
use envoy_types::pb::envoy::config::listener::v3::{
    filter, listener_filter, listener_filter_chain_match_predicate as predicate, ApiListener,
    Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter,
    ListenerFilterChainMatchPredicate,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::{PathWithEscapedSlashesAction, RouteSpecifier},
    http_filter, HttpConnectionManager, HttpFilter, Rds,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{tcp_proxy, TcpProxy};
use serde_json::Value;
use std::mem::take;

fn filter_json(mut f: Filter) -> R {
    let mut o = Obj::default();
    o.str("name", take(&mut f.name));
    match f.config_type.take() {
        Some(filter::ConfigType::TypedConfig(a)) => {
            o.val("typed_config", Some(any(a)?));
        }
        other => f.config_type = other,
    }
    o.done(f, "Filter")
}

fn filter_chain_match(mut m: FilterChainMatch) -> R {
    let mut o = Obj::default();
    o.msg("destination_port", m.destination_port.take(), wrapped_u32)?;
    o.list("prefix_ranges", take(&mut m.prefix_ranges), meta::cidr)?;
    o.str("transport_protocol", take(&mut m.transport_protocol));
    o.strs("application_protocols", take(&mut m.application_protocols));
    o.strs("server_names", take(&mut m.server_names));
    o.list(
        "prefix_ranges",
        take(&mut m.prefix_ranges),
        |mut r: CidrRange| {
            let mut o = Obj::default();
            o.str("address_prefix", take(&mut r.address_prefix));
            o.msg("prefix_len", r.prefix_len.take(), wrapped_u32)?;
            o.done(r, "CidrRange")
        },
    )?;
    o.done(m, "FilterChainMatch")
}

fn filter_chain(mut c: FilterChain) -> R {
    let mut o = Obj::default();
    o.str("name", take(&mut c.name));
    o.msg(
        "filter_chain_match",
        c.filter_chain_match.take(),
        filter_chain_match,
    )?;
    o.list("filters", take(&mut c.filters), filter_json)?;
    o.msg(
        "transport_socket",
        c.transport_socket.take(),
        tls::transport_socket,
    )?;
    o.done(c, "FilterChain")
}

fn match_predicate(mut p: ListenerFilterChainMatchPredicate) -> R {
    pub fn rules(mut set: predicate::MatchSet) -> R {
        let mut o = Obj::default();
        o.list("rules", take(&mut set.rules), match_predicate)?;
        o.done(set, "MatchSet")
    }
    let mut o = Obj::default();
    match p.rule.take() {
        Some(predicate::Rule::OrMatch(set)) => {
            o.msg("or_match", Some(set), rules)?;
        }
        Some(predicate::Rule::NotMatch(inner)) => {
            o.msg("not_match", Some(*inner), match_predicate)?;
        }
        Some(predicate::Rule::DestinationPortRange(r)) => {
            let range = serde_json::json!({"start": r.start, "end": r.end});
            o.val("destination_port_range", Some(range));
        }
        other => p.rule = other,
    }
    o.done(p, "ListenerFilterChainMatchPredicate")
}

fn listener_filter_json(mut f: ListenerFilter) -> R {
    let mut o = Obj::default();
    o.str("name", take(&mut f.name));
    match f.config_type.take() {
        Some(listener_filter::ConfigType::TypedConfig(a)) => {
            o.val("typed_config", Some(any(a)?));
        }
        other => f.config_type = other,
    }
    o.msg("filter_disabled", f.filter_disabled.take(), match_predicate)?;
    o.done(f, "ListenerFilter")
}

/// Renders a listener.
pub fn listener(mut m: Listener) -> R {
    let mut o = Obj::default();
    o.str("name", take(&mut m.name));
    o.msg("address", m.address.take(), address_json)?;
    o.msg("bind_to_port", m.bind_to_port.take(), wrapped_bool)?;
    o.msg("use_original_dst", m.use_original_dst.take(), wrapped_bool)?;
    o.val(
        "traffic_direction",
        enum_name(
            "TrafficDirection",
            take(&mut m.traffic_direction),
            TrafficDirection::as_str_name,
        )?,
    );
    o.list(
        "listener_filters",
        take(&mut m.listener_filters),
        listener_filter_json,
    )?;
    o.msg(
        "listener_filters_timeout",
        m.listener_filters_timeout.take(),
        duration,
    )?;
    o.bool(
        "continue_on_listener_filters_timeout",
        take(&mut m.continue_on_listener_filters_timeout),
    );
    o.list("filter_chains", take(&mut m.filter_chains), filter_chain)?;
    o.msg(
        "default_filter_chain",
        m.default_filter_chain.take(),
        filter_chain,
    )?;
    o.msg(
        "api_listener",
        m.api_listener.take(),
        |mut a: ApiListener| {
            let mut o = Obj::default();
            o.msg("api_listener", a.api_listener.take(), any)?;
            o.done(a, "ApiListener")
        },
    )?;
    o.done(m, "Listener")
}

pub(super) fn tcp(mut m: TcpProxy) -> R {
    let mut o = Obj::default();
    o.str("stat_prefix", take(&mut m.stat_prefix));
    match m.cluster_specifier.take() {
        Some(tcp_proxy::ClusterSpecifier::Cluster(c)) => {
            o.str("cluster", c);
        }
        Some(tcp_proxy::ClusterSpecifier::WeightedClusters(mut w)) => {
            let mut inner = Obj::default();
            inner.list(
                "clusters",
                take(&mut w.clusters),
                |mut c: tcp_proxy::weighted_cluster::ClusterWeight| {
                    let mut o = Obj::default();
                    o.str("name", take(&mut c.name));
                    o.val("weight", Some(Value::from(take(&mut c.weight))));
                    o.done(c, "ClusterWeight")
                },
            )?;
            o.val(
                "weighted_clusters",
                Some(inner.done(w, "TcpProxy.WeightedCluster")?),
            );
        }
        other => m.cluster_specifier = other,
    }
    o.list(
        "access_log",
        take(&mut m.access_log),
        super::telemetry::access_log_json,
    )?;
    o.done(m, "TcpProxy")
}

pub(super) fn hcm(mut m: HttpConnectionManager) -> R {
    pub fn http_filter_json(mut f: HttpFilter) -> R {
        let mut o = Obj::default();
        o.str("name", take(&mut f.name));
        match f.config_type.take() {
            Some(http_filter::ConfigType::TypedConfig(a)) => {
                o.val("typed_config", Some(any(a)?));
            }
            other => f.config_type = other,
        }
        o.done(f, "HttpFilter")
    }
    let mut o = Obj::default();
    o.str("stat_prefix", take(&mut m.stat_prefix));
    match m.route_specifier.take() {
        Some(RouteSpecifier::Rds(mut r)) => {
            let mut inner = Obj::default();
            inner.msg("config_source", r.config_source.take(), config_source_json)?;
            inner.str("route_config_name", take(&mut r.route_config_name));
            o.val("rds", Some(inner.done::<Rds>(r, "Rds")?));
        }
        Some(RouteSpecifier::RouteConfig(rc)) => {
            o.msg("route_config", Some(rc), route_configuration)?;
        }
        other => m.route_specifier = other,
    }
    o.list("http_filters", take(&mut m.http_filters), http_filter_json)?;
    o.msg("normalize_path", m.normalize_path.take(), wrapped_bool)?;
    o.bool("merge_slashes", take(&mut m.merge_slashes));
    o.val(
        "path_with_escaped_slashes_action",
        enum_name::<PathWithEscapedSlashesAction>(
            "PathWithEscapedSlashesAction",
            take(&mut m.path_with_escaped_slashes_action),
            PathWithEscapedSlashesAction::as_str_name,
        )?,
    );
    tls::xfcc_fields(&mut o, &mut m)?;
    o.list(
        "access_log",
        take(&mut m.access_log),
        super::telemetry::access_log_json,
    )?;
    o.msg("tracing", m.tracing.take(), super::telemetry::tracing_json)?;
    o.done(m, "HttpConnectionManager")
}
