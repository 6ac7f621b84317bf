//! Listeners, filter chains and filter chain matches.
//!
//! Listener filters: `original_dst`, `tls_inspector` and `http_inspector` are accepted, since the
//! proxy always recovers the original destination on its capture listeners and sniffs the
//! transport and application protocol whenever a filter chain match needs them; any other
//! listener filter is rejected. An inspector's `filter_disabled` (istiod turns the HTTP
//! inspector off for the ports whose chains do not match on an application protocol) is
//! accepted and ignored: the proxy sniffs a connection only when a candidate chain for it
//! needs the protocol, which is what that predicate expresses. On `original_dst` it is
//! rejected (the proxy always restores the original destination).
//!
//! Ignored fields: `Listener.{stat_prefix, stats_matcher, metadata, drain_type,
//! listener_filters_timeout, continue_on_listener_filters_timeout,
//! per_connection_buffer_limit_bytes, per_connection_buffer_high_watermark_timeout,
//! tcp_fast_open_queue_length, connection_balance_config, reuse_port, enable_reuse_port,
//! access_log, tcp_backlog_size, max_connections_to_accept_per_socket_event,
//! ignore_global_conn_limit, bypass_overload_manager, tcp_keepalive}` and
//! `FilterChain.{metadata, transport_socket_connect_timeout}`.

use envoy_types::pb::envoy::config::core::v3::{CidrRange, TrafficDirection};
use envoy_types::pb::envoy::config::listener::v3::{
    self as pb, filter_chain_match, listener_filter,
};
use envoy_types::pb::envoy::extensions::filters::listener::http_inspector::v3::HttpInspector;
use envoy_types::pb::envoy::extensions::filters::listener::original_dst::v3::OriginalDst;
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use ipnet::IpNet;
use prost::Name;

use super::filters::{chain_filter, ChainFilter};
use super::{
    address, bool_or, decode_any, reject_set, reject_true, type_name, ConvertError, Location,
    Within,
};
use crate::model::{Direction, FilterChain, FilterChainMatch, Listener, ResourceType};

/// An LDS resource.
impl TryFrom<pb::Listener> for Listener {
    type Error = ConvertError;

    fn try_from(proto: pb::Listener) -> Result<Self, ConvertError> {
        let name = proto.name.clone();
        convert_listener(proto).map_err(|e| e.in_resource(ResourceType::Listener, &name))
    }
}

#[allow(deprecated)]
fn convert_listener(proto: pb::Listener) -> Result<Listener, ConvertError> {
    if proto.name.is_empty() {
        return Err(ConvertError::missing("name"));
    }
    reject_set!(
        proto,
        additional_addresses,
        fcds_config,
        filter_chain_matcher,
        api_listener,
        udp_listener_config,
        socket_options,
        enable_mptcp,
        deprecated_v1,
        listener_specifier,
    );
    reject_true(proto.transparent.as_ref(), "transparent")?;
    reject_true(proto.freebind.as_ref(), "freebind")?;
    let address = address(proto.address.as_ref()).at("address")?;
    let direction = match TrafficDirection::try_from(proto.traffic_direction) {
        Ok(TrafficDirection::Outbound) => Direction::Outbound,
        Ok(TrafficDirection::Inbound) => Direction::Inbound,
        Ok(TrafficDirection::Unspecified) => Direction::Unspecified,
        Err(_) => {
            return Err(ConvertError::unsupported_value(
                "traffic_direction",
                proto.traffic_direction.to_string(),
            ))
        }
    };
    for (i, filter) in proto.listener_filters.iter().enumerate() {
        listener_filter(filter).at_index("listener_filters", i)?;
    }
    let mut filter_chains: Vec<FilterChain> = Vec::with_capacity(proto.filter_chains.len());
    for (i, chain) in proto.filter_chains.into_iter().enumerate() {
        let chain = FilterChain::try_from(chain).at_index("filter_chains", i)?;
        if filter_chains.iter().any(|c| c.matcher == chain.matcher) {
            return Err(ConvertError::duplicate(
                "filter_chain_match",
                format!("{:?}", chain.matcher),
            )
            .at("filter_chain_match")
            .at_index("filter_chains", i));
        }
        filter_chains.push(chain);
    }
    let default_filter_chain = proto
        .default_filter_chain
        .map(|chain| FilterChain::try_from(chain).at("default_filter_chain"))
        .transpose()?;
    if filter_chains.is_empty() && default_filter_chain.is_none() {
        return Err(ConvertError::missing("filter_chains"));
    }
    Ok(Listener {
        name: proto.name,
        address,
        bind_to_port: bool_or(proto.bind_to_port.as_ref(), true),
        use_original_dst: bool_or(proto.use_original_dst.as_ref(), false),
        direction,
        filter_chains,
        default_filter_chain,
    })
}

const LISTENER_FILTERS: [&str; 3] = [
    "envoy.filters.listener.original_dst",
    "envoy.filters.listener.tls_inspector",
    "envoy.filters.listener.http_inspector",
];

/// Accept the listener filters whose work the proxy does natively.
fn listener_filter(proto: &pb::ListenerFilter) -> Result<(), ConvertError> {
    let original_dst = proto.name == LISTENER_FILTERS[0]
        || matches!(&proto.config_type, Some(listener_filter::ConfigType::TypedConfig(any))
            if type_name(&any.type_url) == OriginalDst::full_name());
    if original_dst {
        reject_set!(proto, filter_disabled);
    }
    let unsupported = |name: &str| ConvertError::UnsupportedListenerFilter {
        at: Location::default(),
        name: name.to_string(),
    };
    match &proto.config_type {
        Some(listener_filter::ConfigType::TypedConfig(any)) => {
            let kind = type_name(&any.type_url);
            if kind == OriginalDst::full_name() {
                decode_any::<OriginalDst>(any).at("typed_config")?;
            } else if kind == TlsInspector::full_name() {
                decode_any::<TlsInspector>(any).at("typed_config")?;
            } else if kind == HttpInspector::full_name() {
                decode_any::<HttpInspector>(any).at("typed_config")?;
            } else if proto.name.is_empty() {
                return Err(unsupported(&any.type_url));
            } else {
                return Err(unsupported(&proto.name));
            }
            Ok(())
        }
        Some(listener_filter::ConfigType::ConfigDiscovery(_)) => {
            Err(ConvertError::unsupported("config_discovery"))
        }
        None if LISTENER_FILTERS.contains(&proto.name.as_str()) => Ok(()),
        None => Err(unsupported(&proto.name)),
    }
}

/// A filter chain: its match and exactly one terminal network filter.
impl TryFrom<pb::FilterChain> for FilterChain {
    type Error = ConvertError;

    #[allow(deprecated)]
    fn try_from(proto: pb::FilterChain) -> Result<Self, ConvertError> {
        let tls = match &proto.transport_socket {
            Some(ts) => super::tls::downstream_socket(ts).at("transport_socket")?,
            None => None,
        };
        reject_true(proto.use_proxy_proto.as_ref(), "use_proxy_proto")?;
        let matcher = proto
            .filter_chain_match
            .map(|m| FilterChainMatch::try_from(m).at("filter_chain_match"))
            .transpose()?
            .unwrap_or_default();
        let count = proto.filters.len();
        if count == 0 {
            return Err(ConvertError::missing("filters"));
        }
        let mut terminal = None;
        let mut rbac = Vec::new();
        for (i, filter) in proto.filters.into_iter().enumerate() {
            match chain_filter(filter).at_index("filters", i)? {
                ChainFilter::Rbac(r) if i + 1 < count => rbac.push(r),
                ChainFilter::Rbac(_) => {
                    return Err(ConvertError::inconsistent(
                        "the last filter must be a terminal filter (http_connection_manager, tcp_proxy)",
                    )
                    .at_index("filters", i))
                }
                ChainFilter::Terminal(_) if i + 1 < count => {
                    return Err(ConvertError::inconsistent(
                        "a terminal filter (http_connection_manager, tcp_proxy) must be the last filter",
                    )
                    .at_index("filters", i))
                }
                ChainFilter::Terminal(t) => terminal = Some(t),
            }
        }
        let filter = terminal.ok_or_else(|| ConvertError::missing("filters"))?;
        Ok(FilterChain {
            name: proto.name,
            matcher,
            rbac,
            tls,
            filter,
        })
    }
}

/// A filter chain match: destination, transport and application protocol, server names.
impl TryFrom<pb::FilterChainMatch> for FilterChainMatch {
    type Error = ConvertError;

    fn try_from(proto: pb::FilterChainMatch) -> Result<Self, ConvertError> {
        reject_set!(
            proto,
            address_suffix,
            suffix_len,
            direct_source_prefix_ranges,
            source_prefix_ranges,
            source_ports,
        );
        if proto.source_type != filter_chain_match::ConnectionSourceType::Any as i32 {
            return Err(ConvertError::unsupported("source_type"));
        }
        let destination_port = proto
            .destination_port
            .map(|p| {
                u16::try_from(p.value)
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| {
                        ConvertError::invalid("port", p.value.to_string()).at("destination_port")
                    })
            })
            .transpose()?;
        let prefix_ranges = proto
            .prefix_ranges
            .iter()
            .enumerate()
            .map(|(i, r)| cidr(r).at_index("prefix_ranges", i))
            .collect::<Result<Vec<_>, _>>()?;
        let transport_protocol = match proto.transport_protocol.as_str() {
            "" => None,
            "raw_buffer" | "tls" => Some(proto.transport_protocol),
            other => return Err(ConvertError::unsupported_value("transport_protocol", other)),
        };
        for (i, p) in proto.application_protocols.iter().enumerate() {
            if p.is_empty() {
                return Err(ConvertError::invalid("application protocol", p.clone())
                    .at_index("application_protocols", i));
            }
        }
        Ok(FilterChainMatch {
            destination_port,
            prefix_ranges,
            transport_protocol,
            application_protocols: proto.application_protocols,
            server_names: proto
                .server_names
                .iter()
                .map(|s| s.to_ascii_lowercase())
                .collect(),
        })
    }
}

/// A CIDR range (host bits cleared, as Envoy does).
pub(super) fn cidr(range: &CidrRange) -> Result<IpNet, ConvertError> {
    let ip = range
        .address_prefix
        .parse()
        .map_err(|_| ConvertError::invalid("IP address", range.address_prefix.clone()))
        .at("address_prefix")?;
    let len = range.prefix_len.as_ref().map_or(0, |l| l.value);
    let net = u8::try_from(len)
        .ok()
        .and_then(|l| IpNet::new(ip, l).ok())
        .ok_or_else(|| ConvertError::invalid("prefix length", len.to_string()).at("prefix_len"))?;
    Ok(net.trunc())
}
