//! `STRICT_DNS` and `LOGICAL_DNS` clusters.

#![allow(deprecated)]

use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::{self as cl, cluster};
use envoy_types::pb::envoy::config::core::v3::{HealthStatus, Locality};
use envoy_types::pb::envoy::config::endpoint::v3 as ep;

use super::*;
use crate::model::{Cluster, Discovery, DnsDiscovery, DnsLookupFamily, DnsMode, DnsTarget};

fn dns(name: &str, kind: cluster::DiscoveryType, hosts: &[(&str, u32)]) -> cl::Cluster {
    cl::Cluster {
        name: name.into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(kind as i32)),
        connect_timeout: Some(secs(10)),
        dns_lookup_family: cluster::DnsLookupFamily::V4Only as i32,
        dns_refresh_rate: Some(secs(60)),
        respect_dns_ttl: true,
        load_assignment: Some(ep::ClusterLoadAssignment {
            cluster_name: name.into(),
            endpoints: vec![ep::LocalityLbEndpoints {
                locality: Some(Locality {
                    region: "r".into(),
                    zone: "z".into(),
                    sub_zone: String::new(),
                }),
                lb_endpoints: hosts.iter().map(|(h, p)| lb_endpoint(h, *p)).collect(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn discovery(c: cl::Cluster) -> DnsDiscovery {
    match Cluster::try_from(c).unwrap().discovery {
        Discovery::Dns(d) => d,
        other => panic!("not DNS: {other:?}"),
    }
}

#[test]
fn strict_dns_with_host_names_and_ips() {
    let mut c = dns(
        "outbound|80||httpbin.example.org",
        cluster::DiscoveryType::StrictDns,
        &[
            ("httpbin.example.org", 80),
            ("10.0.0.9", 8080),
            ("b_1.internal", 81),
        ],
    );
    if let Some(cla) = c.load_assignment.as_mut() {
        cla.endpoints[0].lb_endpoints[1].load_balancing_weight = u32v(3);
        cla.endpoints[0].lb_endpoints[2].health_status = HealthStatus::Unhealthy as i32;
    }
    let d = discovery(c);
    assert_eq!(d.mode, DnsMode::Strict);
    assert_eq!(d.lookup_family, DnsLookupFamily::V4Only);
    assert_eq!(d.refresh_rate, Duration::from_secs(60));
    assert_eq!(
        d.failure_refresh,
        (Duration::from_secs(60), Duration::from_secs(60))
    );
    assert_eq!(
        d.targets,
        [
            DnsTarget {
                host: "httpbin.example.org".into(),
                port: 80,
                weight: 1,
                locality: "r/z/".into(),
            },
            DnsTarget {
                host: "10.0.0.9".into(),
                port: 8080,
                weight: 3,
                locality: "r/z/".into(),
            },
        ],
        "the unhealthy endpoint is left out"
    );
}

#[test]
fn logical_dns_and_defaults() {
    let mut c = dns(
        "l",
        cluster::DiscoveryType::LogicalDns,
        &[("es.example.com", 9200)],
    );
    c.dns_lookup_family = 0;
    c.dns_refresh_rate = None;
    c.dns_failure_refresh_rate = Some(cluster::RefreshRate {
        base_interval: Some(secs(1)),
        max_interval: Some(secs(30)),
    });
    let d = discovery(c);
    assert_eq!(d.mode, DnsMode::Logical);
    assert_eq!(d.lookup_family, DnsLookupFamily::Auto);
    assert_eq!(d.refresh_rate, Duration::from_secs(5));
    assert_eq!(
        d.failure_refresh,
        (Duration::from_secs(1), Duration::from_secs(30))
    );
}

#[test]
fn dns_cluster_errors() {
    let two = dns(
        "l",
        cluster::DiscoveryType::LogicalDns,
        &[("a.example", 1), ("b.example", 2)],
    );
    let bad_host = dns("s", cluster::DiscoveryType::StrictDns, &[("bad host!", 80)]);
    let no_port = dns("s", cluster::DiscoveryType::StrictDns, &[("a.example", 0)]);
    let mut fast = dns("s", cluster::DiscoveryType::StrictDns, &[("a.example", 80)]);
    fast.dns_refresh_rate = Some(secs(0));
    let mut backwards = dns("s", cluster::DiscoveryType::StrictDns, &[("a.example", 80)]);
    backwards.dns_failure_refresh_rate = Some(cluster::RefreshRate {
        base_interval: Some(secs(10)),
        max_interval: Some(secs(1)),
    });
    let cases = [
        (
            two,
            "cluster \"l\": load_assignment: LOGICAL_DNS clusters must have a single \
             locality_lb_endpoint and a single lb_endpoint",
        ),
        (
            bad_host,
            "cluster \"s\": load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.\
             socket_address.address: invalid host name \"bad host!\"",
        ),
        (
            no_port,
            "cluster \"s\": load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.\
             socket_address.port_value: invalid port \"0\"",
        ),
        (
            fast,
            "cluster \"s\": dns_refresh_rate: invalid duration \"0ns\"",
        ),
        (
            backwards,
            "cluster \"s\": dns_failure_refresh_rate: base_interval must be at least 1ms and \
             max_interval at least base_interval",
        ),
    ];
    for (proto, expected) in cases {
        assert_eq!(message(Cluster::try_from(proto)), expected);
    }
}
