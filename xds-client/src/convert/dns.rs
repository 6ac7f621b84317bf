//! `STRICT_DNS` and `LOGICAL_DNS` clusters: host names in `load_assignment`, resolved by the
//! proxy with the system resolver (so `/etc/hosts` applies).
//!
//! Converted: `dns_lookup_family`, `dns_refresh_rate` (Envoy's default 5 s; at least 1 ms),
//! `dns_failure_refresh_rate` (base and max interval; the refresh rate when absent), and the
//! endpoints (host or IP literal, port, weight, health, locality). A `LOGICAL_DNS` cluster
//! must have exactly one endpoint, as in Envoy.
//!
//! Ignored: `respect_dns_ttl` (the system resolver reports no TTL, so the refresh rate
//! applies), `dns_jitter`, `typed_dns_resolver_config`, `dns_resolvers`,
//! `use_tcp_for_dns_lookups`, `dns_resolution_config` (the system resolver is always used).

use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::{self as pb, cluster};
use envoy_types::pb::envoy::config::core::v3::{
    address, socket_address, HealthStatus as PbHealth, Locality,
};
use envoy_types::pb::envoy::config::endpoint::v3::{lb_endpoint, ClusterLoadAssignment};

use super::{duration, reject_set, ConvertError, Within};
use crate::model::{DnsDiscovery, DnsLookupFamily, DnsMode, DnsTarget};

/// Envoy's default `dns_refresh_rate`.
pub const DEFAULT_REFRESH_RATE: Duration = Duration::from_secs(5);

/// The DNS settings and targets of a `STRICT_DNS` or `LOGICAL_DNS` cluster.
#[allow(deprecated)]
pub(super) fn dns_discovery(
    proto: &pb::Cluster,
    mode: DnsMode,
) -> Result<DnsDiscovery, ConvertError> {
    let lookup_family = match cluster::DnsLookupFamily::try_from(proto.dns_lookup_family) {
        Ok(cluster::DnsLookupFamily::Auto) => DnsLookupFamily::Auto,
        Ok(cluster::DnsLookupFamily::V4Only) => DnsLookupFamily::V4Only,
        Ok(cluster::DnsLookupFamily::V6Only) => DnsLookupFamily::V6Only,
        Ok(cluster::DnsLookupFamily::V4Preferred) => DnsLookupFamily::V4Preferred,
        Ok(cluster::DnsLookupFamily::All) => DnsLookupFamily::All,
        Err(_) => {
            return Err(ConvertError::unsupported_value(
                "dns_lookup_family",
                proto.dns_lookup_family.to_string(),
            ))
        }
    };
    let refresh_rate = match &proto.dns_refresh_rate {
        None => DEFAULT_REFRESH_RATE,
        Some(d) => {
            let d = duration(d).at("dns_refresh_rate")?;
            if d < Duration::from_millis(1) {
                return Err(
                    ConvertError::invalid("duration", format!("{d:?}")).at("dns_refresh_rate")
                );
            }
            d
        }
    };
    let failure_refresh = match &proto.dns_failure_refresh_rate {
        None => (refresh_rate, refresh_rate),
        Some(r) => {
            let base = r
                .base_interval
                .as_ref()
                .ok_or_else(|| ConvertError::missing("base_interval"))
                .and_then(duration)
                .at("dns_failure_refresh_rate")?;
            let max = match &r.max_interval {
                Some(m) => duration(m)
                    .at("max_interval")
                    .at("dns_failure_refresh_rate")?,
                None => base * 10,
            };
            if base < Duration::from_millis(1) || max < base {
                return Err(ConvertError::inconsistent(
                    "base_interval must be at least 1ms and max_interval at least base_interval",
                )
                .at("dns_failure_refresh_rate"));
            }
            (base, max)
        }
    };
    let Some(cla) = &proto.load_assignment else {
        return Err(ConvertError::missing("load_assignment"));
    };
    let targets = targets(cla).at("load_assignment")?;
    if mode == DnsMode::Logical && targets.len() != 1 {
        return Err(ConvertError::inconsistent(
            "LOGICAL_DNS clusters must have a single locality_lb_endpoint and a single lb_endpoint",
        )
        .at("load_assignment"));
    }
    Ok(DnsDiscovery {
        mode,
        lookup_family,
        refresh_rate,
        failure_refresh,
        targets,
    })
}

fn locality(locality: Option<&Locality>) -> String {
    match locality {
        Some(l) if !(l.region.is_empty() && l.zone.is_empty() && l.sub_zone.is_empty()) => {
            format!("{}/{}/{}", l.region, l.zone, l.sub_zone)
        }
        _ => String::new(),
    }
}

/// A host name or IP literal: letters, digits, `-`, `.`, `_`, `:` (IPv6), not empty.
fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':'))
}

fn targets(cla: &ClusterLoadAssignment) -> Result<Vec<DnsTarget>, ConvertError> {
    reject_set!(cla, named_endpoints);
    if let Some(policy) = &cla.policy {
        reject_set!(policy, drop_overloads);
    }
    let mut out = Vec::new();
    for (i, group) in cla.endpoints.iter().enumerate() {
        reject_set!(group, priority, lb_config);
        let locality = locality(group.locality.as_ref());
        for (j, lb) in group.lb_endpoints.iter().enumerate() {
            let target = target(lb, &locality)
                .at_index("lb_endpoints", j)
                .at_index("endpoints", i)?;
            out.extend(target);
        }
    }
    Ok(out)
}

/// One endpoint; `None` when its health excludes it.
fn target(
    lb: &envoy_types::pb::envoy::config::endpoint::v3::LbEndpoint,
    locality: &str,
) -> Result<Option<DnsTarget>, ConvertError> {
    let endpoint = match &lb.host_identifier {
        Some(lb_endpoint::HostIdentifier::Endpoint(e)) => e,
        Some(lb_endpoint::HostIdentifier::EndpointName(_)) => {
            return Err(ConvertError::unsupported("endpoint_name"))
        }
        None => return Err(ConvertError::missing("endpoint")),
    };
    reject_set!(endpoint, additional_addresses);
    let sa = match endpoint.address.as_ref().and_then(|a| a.address.as_ref()) {
        Some(address::Address::SocketAddress(sa)) => sa,
        Some(_) => {
            return Err(ConvertError::unsupported("address").at("endpoint"));
        }
        None => return Err(ConvertError::missing("address").at("endpoint")),
    };
    let at = |e: ConvertError| e.at("socket_address").at("address").at("endpoint");
    if sa.protocol != socket_address::Protocol::Tcp as i32 {
        return Err(at(ConvertError::unsupported_value(
            "protocol",
            sa.protocol.to_string(),
        )));
    }
    reject_set!(sa, resolver_name, network_namespace_filepath);
    if !valid_host(&sa.address) {
        return Err(at(
            ConvertError::invalid("host name", sa.address.clone()).at("address")
        ));
    }
    let port = match &sa.port_specifier {
        Some(socket_address::PortSpecifier::PortValue(p)) if *p > 0 => u16::try_from(*p)
            .map_err(|_| at(ConvertError::invalid("port", p.to_string()).at("port_value")))?,
        Some(socket_address::PortSpecifier::NamedPort(_)) => {
            return Err(at(ConvertError::unsupported("named_port")))
        }
        _ => return Err(at(ConvertError::invalid("port", "0").at("port_value"))),
    };
    let weight = match &lb.load_balancing_weight {
        None => 1,
        Some(w) if w.value >= 1 => w.value,
        Some(w) => {
            return Err(
                ConvertError::invalid("weight", w.value.to_string()).at("load_balancing_weight")
            )
        }
    };
    match PbHealth::try_from(lb.health_status) {
        Ok(PbHealth::Unknown | PbHealth::Healthy) => {}
        Ok(PbHealth::Unhealthy | PbHealth::Draining | PbHealth::Timeout) => return Ok(None),
        _ => {
            return Err(ConvertError::unsupported_value(
                "health_status",
                lb.health_status.to_string(),
            ))
        }
    }
    Ok(Some(DnsTarget {
        host: sa.address.clone(),
        port,
        weight,
        locality: locality.to_string(),
    }))
}
