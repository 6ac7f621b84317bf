//! Clusters: discovery type, load balancing, upstream protocol, bind address, and the traffic
//! policy converted in [`super::cluster_policy`] (circuit breakers, outlier detection,
//! load-balancer and connection settings).
//!
//! Ignored fields: `alt_stat_name`, `stats_matcher`, `metadata`, `per_connection_buffer_limit_bytes`,
//! `per_connection_buffer_high_watermark_timeout`, `cleanup_interval`,
//! `wait_for_warm_on_init`, `close_connections_on_host_health_failure`,
//! `ignore_health_on_host_removal`, `lrs_server`, `lrs_report_endpoint_metrics`,
//! `track_timeout_budgets`, `track_cluster_stats`, `preconnect_policy`, the DNS settings of
//! clusters that are not DNS-resolved (see [`super::dns`] for those that are),
//! `load_assignment` of EDS clusters (Envoy ignores it too), and
//! `upstream_http_protocol_options` inside `HttpProtocolOptions`.

use std::time::Duration;

use super::cluster_policy::{
    circuit_breakers, common_http_options, connection_options, http2_options, lb_settings,
    outlier_detection,
};
use super::dns::dns_discovery;
use super::endpoint::convert_cla;
use super::{
    decode_any, duration, reject_set, reject_true, require_ads, socket_ip, ConvertError, Location,
    Within,
};
use crate::model::{
    Cluster, ClusterLoadAssignment, ConnectionOptions, Discovery, DnsMode, LbPolicy, ResourceType,
    UpstreamProtocol,
};
use envoy_types::pb::envoy::config::cluster::v3::{self as pb, cluster};
use envoy_types::pb::envoy::config::core::v3::BindConfig;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    http_protocol_options::{self, explicit_http_config},
    HttpProtocolOptions,
};

/// Envoy's default connect timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The only key of `typed_extension_protocol_options` the proxy understands.
pub const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// A CDS resource.
impl TryFrom<pb::Cluster> for Cluster {
    type Error = ConvertError;

    fn try_from(proto: pb::Cluster) -> Result<Self, ConvertError> {
        let name = proto.name.clone();
        convert_cluster(proto).map_err(|e| e.in_resource(ResourceType::Cluster, &name))
    }
}

#[allow(deprecated)]
fn convert_cluster(proto: pb::Cluster) -> Result<Cluster, ConvertError> {
    if proto.name.is_empty() {
        return Err(ConvertError::missing("name"));
    }
    reject_set!(
        proto,
        transport_socket_matcher,
        health_checks,
        lb_subset_config,
        filters,
        load_balancing_policy,
        upstream_config,
        connection_pool_per_downstream_connection,
        queuing_policies,
    );
    let circuit_breakers =
        circuit_breakers(proto.circuit_breakers.as_ref()).at("circuit_breakers")?;
    let outlier_detection = proto
        .outlier_detection
        .as_ref()
        .map(|o| outlier_detection(o).at("outlier_detection"))
        .transpose()?;
    let lb_policy = lb_policy(&proto)?;
    let lb_settings = lb_settings(&proto)?;
    let mut connection = ConnectionOptions {
        idle_timeout: Some(std::time::Duration::from_secs(3600)),
        ..Default::default()
    };
    connection_options(proto.upstream_connection_options.as_ref(), &mut connection)
        .at("upstream_connection_options")?;
    if let Some(n) = &proto.max_requests_per_connection {
        connection.max_requests_per_connection = (n.value > 0).then_some(n.value);
    }
    let connect_timeout = match &proto.connect_timeout {
        None => CONNECT_TIMEOUT,
        Some(d) => {
            let d = duration(d).at("connect_timeout")?;
            if d.is_zero() {
                return Err(ConvertError::invalid("duration", "0s").at("connect_timeout"));
            }
            d
        }
    };
    let upstream_protocol = upstream_protocol(&proto, &mut connection)?;
    let bind_address = proto
        .upstream_bind_config
        .as_ref()
        .map(|b| bind_address(b).at("upstream_bind_config"))
        .transpose()?;
    let discovery_type = match &proto.cluster_discovery_type {
        None => cluster::DiscoveryType::Static,
        Some(cluster::ClusterDiscoveryType::Type(t)) => cluster::DiscoveryType::try_from(*t)
            .map_err(|_| ConvertError::unsupported_value("type", t.to_string()))?,
        Some(cluster::ClusterDiscoveryType::ClusterType(_)) => {
            return Err(ConvertError::unsupported("cluster_type"))
        }
    };
    let discovery = match discovery_type {
        cluster::DiscoveryType::Eds => {
            let Some(eds) = &proto.eds_cluster_config else {
                return Err(ConvertError::missing("eds_cluster_config"));
            };
            require_ads(eds.eds_config.as_ref())
                .at("eds_config")
                .at("eds_cluster_config")?;
            let service_name = if eds.service_name.is_empty() {
                proto.name.clone()
            } else {
                eds.service_name.clone()
            };
            Discovery::Eds { service_name }
        }
        cluster::DiscoveryType::OriginalDst => {
            if proto.load_assignment.is_some() {
                return Err(ConvertError::inconsistent(
                    "ORIGINAL_DST clusters must have no load assignment",
                )
                .at("load_assignment"));
            }
            Discovery::OriginalDst
        }
        cluster::DiscoveryType::Static => match proto.load_assignment {
            Some(cla) => Discovery::Static(convert_cla(cla).at("load_assignment")?),
            None => Discovery::Static(ClusterLoadAssignment {
                cluster_name: proto.name.clone(),
                endpoints: Vec::new(),
            }),
        },
        cluster::DiscoveryType::StrictDns => {
            Discovery::Dns(dns_discovery(&proto, DnsMode::Strict)?)
        }
        cluster::DiscoveryType::LogicalDns => {
            Discovery::Dns(dns_discovery(&proto, DnsMode::Logical)?)
        }
    };
    let original_dst = matches!(discovery, Discovery::OriginalDst);
    if original_dst != (lb_policy == LbPolicy::ClusterProvided) {
        return Err(ConvertError::inconsistent(
            "lb_policy CLUSTER_PROVIDED goes with, and only with, type ORIGINAL_DST",
        )
        .at("lb_policy"));
    }
    let transport_socket = match &proto.transport_socket {
        Some(ts) => super::tls::upstream_socket(ts).at("transport_socket")?,
        None => None,
    };
    let transport_socket_matches = proto
        .transport_socket_matches
        .iter()
        .enumerate()
        .map(|(i, m)| super::tls::transport_socket_match(m).at_index("transport_socket_matches", i))
        .collect::<Result<Vec<_>, _>>()?;
    if original_dst && (transport_socket.is_some() || !transport_socket_matches.is_empty()) {
        return Err(ConvertError::unsupported("transport_socket").at("transport_socket"));
    }
    Ok(Cluster {
        name: proto.name,
        discovery,
        connect_timeout,
        lb_policy,
        upstream_protocol,
        bind_address,
        lb_settings,
        circuit_breakers,
        outlier_detection,
        connection,
        transport_socket,
        transport_socket_matches,
    })
}

fn lb_policy(proto: &pb::Cluster) -> Result<LbPolicy, ConvertError> {
    let policy = match cluster::LbPolicy::try_from(proto.lb_policy) {
        Ok(cluster::LbPolicy::RoundRobin) => LbPolicy::RoundRobin,
        Ok(cluster::LbPolicy::LeastRequest) => LbPolicy::LeastRequest,
        Ok(cluster::LbPolicy::Random) => LbPolicy::Random,
        Ok(cluster::LbPolicy::RingHash) => LbPolicy::RingHash,
        Ok(cluster::LbPolicy::Maglev) => LbPolicy::Maglev,
        Ok(cluster::LbPolicy::ClusterProvided) => LbPolicy::ClusterProvided,
        Ok(other) => {
            return Err(ConvertError::unsupported_value(
                "lb_policy",
                other.as_str_name(),
            ))
        }
        Err(_) => {
            return Err(ConvertError::unsupported_value(
                "lb_policy",
                proto.lb_policy.to_string(),
            ))
        }
    };
    Ok(policy)
}

/// `upstream_bind_config`: a source IP (port 0), nothing else.
fn bind_address(bind: &BindConfig) -> Result<std::net::IpAddr, ConvertError> {
    #[allow(deprecated)]
    {
        reject_set!(
            bind,
            socket_options,
            extra_source_addresses,
            additional_source_addresses,
            local_address_selector,
        );
    }
    reject_true(bind.freebind.as_ref(), "freebind")?;
    let Some(source) = &bind.source_address else {
        return Err(ConvertError::missing("source_address"));
    };
    let ip = socket_ip(source).at("source_address")?;
    if let Some(
        envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier::PortValue(port),
    ) = source.port_specifier
    {
        if port != 0 {
            return Err(
                ConvertError::unsupported_value("port_value", port.to_string())
                    .at("source_address"),
            );
        }
    }
    Ok(ip)
}

/// The upstream protocol, from `HttpProtocolOptions` or the legacy cluster fields.
#[allow(deprecated)]
fn upstream_protocol(
    proto: &pb::Cluster,
    connection: &mut ConnectionOptions,
) -> Result<UpstreamProtocol, ConvertError> {
    let mut typed = None;
    for (key, any) in &proto.typed_extension_protocol_options {
        if key != HTTP_PROTOCOL_OPTIONS {
            return Err(ConvertError::UnsupportedField {
                at: Location::default(),
            }
            .at_key("typed_extension_protocol_options", key));
        }
        let options: HttpProtocolOptions =
            decode_any(any).map_err(|e| e.at_key("typed_extension_protocol_options", key))?;
        typed = Some((key, options));
    }
    let legacy = proto.http2_protocol_options.is_some()
        || proto.http_protocol_options.is_some()
        || proto.common_http_protocol_options.is_some()
        || proto.upstream_http_protocol_options.is_some()
        || proto.protocol_selection
            != cluster::ClusterProtocolSelection::UseConfiguredProtocol as i32;
    let Some((key, options)) = typed else {
        if let Some(common) = &proto.common_http_protocol_options {
            common_http_options(common, connection).at("common_http_protocol_options")?;
        }
        if let Some(h2) = &proto.http2_protocol_options {
            http2_options(h2, connection);
        }
        return Ok(match &proto.http2_protocol_options {
            Some(_)
                if proto.protocol_selection
                    == cluster::ClusterProtocolSelection::UseDownstreamProtocol as i32 =>
            {
                UpstreamProtocol::UseDownstream
            }
            Some(_) => UpstreamProtocol::Http2,
            None => UpstreamProtocol::Http1,
        });
    };
    if legacy {
        return Err(ConvertError::inconsistent(
            "HttpProtocolOptions and the legacy protocol options cannot both be set",
        )
        .at_key("typed_extension_protocol_options", key));
    }
    http_protocol_options(options, connection)
        .map_err(|e| e.at_key("typed_extension_protocol_options", key))
}

fn http_protocol_options(
    options: HttpProtocolOptions,
    connection: &mut ConnectionOptions,
) -> Result<UpstreamProtocol, ConvertError> {
    if let Some(common) = &options.common_http_protocol_options {
        common_http_options(common, connection).at("common_http_protocol_options")?;
    }
    reject_set!(
        options,
        http_filters,
        header_validation_config,
        outlier_detection,
        request_mirror_policies,
        hash_policy,
        retry_policy,
    );
    match options.upstream_protocol_options {
        Some(http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(explicit)) => {
            match explicit.protocol_config {
                Some(explicit_http_config::ProtocolConfig::HttpProtocolOptions(_)) => {
                    Ok(UpstreamProtocol::Http1)
                }
                Some(explicit_http_config::ProtocolConfig::Http2ProtocolOptions(h2)) => {
                    http2_options(&h2, connection);
                    Ok(UpstreamProtocol::Http2)
                }
                Some(explicit_http_config::ProtocolConfig::Http3ProtocolOptions(_)) => {
                    Err(ConvertError::unsupported("http3_protocol_options")
                        .at("explicit_http_config"))
                }
                None => Err(ConvertError::missing("protocol_config").at("explicit_http_config")),
            }
        }
        Some(http_protocol_options::UpstreamProtocolOptions::UseDownstreamProtocolConfig(d)) => {
            if d.http3_protocol_options.is_some() {
                return Err(ConvertError::unsupported("http3_protocol_options")
                    .at("use_downstream_protocol_config"));
            }
            if let Some(h2) = &d.http2_protocol_options {
                http2_options(h2, connection);
            }
            Ok(UpstreamProtocol::UseDownstream)
        }
        Some(http_protocol_options::UpstreamProtocolOptions::AutoConfig(_)) => {
            Err(ConvertError::unsupported("auto_config"))
        }
        None => Err(ConvertError::missing("upstream_protocol_options")),
    }
}
