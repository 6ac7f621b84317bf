//! Rendering of the cluster fields a DestinationRule's traffic policy sets: circuit breakers,
//! outlier detection, load balancer configs, TCP keepalive and common HTTP options.

use std::mem::take;

use envoy_types::pb::envoy::config::cluster::v3::{
    circuit_breakers::Thresholds,
    cluster::{CommonLbConfig, LbConfig},
    CircuitBreakers, Cluster, OutlierDetection, UpstreamConnectionOptions,
};
use envoy_types::pb::envoy::config::core::v3::{HttpProtocolOptions, TcpKeepalive};
use envoy_types::pb::google::protobuf::UInt64Value;
use serde_json::Value;

use super::{duration, wrapped_u32, Obj, R};

fn thresholds(mut t: Thresholds) -> R {
    let mut o = Obj::default();
    o.msg("max_connections", t.max_connections.take(), wrapped_u32)?;
    o.msg(
        "max_pending_requests",
        t.max_pending_requests.take(),
        wrapped_u32,
    )?;
    o.msg("max_requests", t.max_requests.take(), wrapped_u32)?;
    o.msg("max_retries", t.max_retries.take(), wrapped_u32)?;
    o.bool("track_remaining", take(&mut t.track_remaining));
    o.done(t, "Thresholds")
}

/// Renders circuit breakers.
fn circuit_breakers(mut c: CircuitBreakers) -> R {
    let mut o = Obj::default();
    o.list("thresholds", take(&mut c.thresholds), thresholds)?;
    o.done(c, "CircuitBreakers")
}

fn outlier(mut m: OutlierDetection) -> R {
    let mut o = Obj::default();
    o.msg("consecutive_5xx", m.consecutive_5xx.take(), wrapped_u32)?;
    o.msg("interval", m.interval.take(), duration)?;
    o.msg("base_ejection_time", m.base_ejection_time.take(), duration)?;
    o.msg(
        "max_ejection_percent",
        m.max_ejection_percent.take(),
        wrapped_u32,
    )?;
    o.msg(
        "enforcing_consecutive_5xx",
        m.enforcing_consecutive_5xx.take(),
        wrapped_u32,
    )?;
    o.msg(
        "enforcing_success_rate",
        m.enforcing_success_rate.take(),
        wrapped_u32,
    )?;
    o.msg(
        "consecutive_gateway_failure",
        m.consecutive_gateway_failure.take(),
        wrapped_u32,
    )?;
    o.msg(
        "enforcing_consecutive_gateway_failure",
        m.enforcing_consecutive_gateway_failure.take(),
        wrapped_u32,
    )?;
    o.bool(
        "split_external_local_origin_errors",
        take(&mut m.split_external_local_origin_errors),
    );
    o.msg(
        "consecutive_local_origin_failure",
        m.consecutive_local_origin_failure.take(),
        wrapped_u32,
    )?;
    o.msg(
        "enforcing_consecutive_local_origin_failure",
        m.enforcing_consecutive_local_origin_failure.take(),
        wrapped_u32,
    )?;
    o.msg(
        "enforcing_local_origin_success_rate",
        m.enforcing_local_origin_success_rate.take(),
        wrapped_u32,
    )?;
    o.done(m, "OutlierDetection")
}

/// A uint64 wrapper: a string in proto3 JSON.
fn wrapped_u64(v: UInt64Value) -> R {
    Ok(Value::String(v.value.to_string()))
}

fn keepalive(mut k: TcpKeepalive) -> R {
    let mut o = Obj::default();
    o.msg("keepalive_probes", k.keepalive_probes.take(), wrapped_u32)?;
    o.msg("keepalive_time", k.keepalive_time.take(), wrapped_u32)?;
    o.msg(
        "keepalive_interval",
        k.keepalive_interval.take(),
        wrapped_u32,
    )?;
    o.done(k, "TcpKeepalive")
}

/// Renders the common HTTP protocol options.
pub(super) fn common_http_options(mut h: HttpProtocolOptions) -> R {
    let mut o = Obj::default();
    o.msg("idle_timeout", h.idle_timeout.take(), duration)?;
    o.msg(
        "max_connection_duration",
        h.max_connection_duration.take(),
        duration,
    )?;
    o.msg(
        "max_requests_per_connection",
        h.max_requests_per_connection.take(),
        wrapped_u32,
    )?;
    o.done(h, "HttpProtocolOptions")
}

/// Renders the traffic-policy fields of a cluster into `o`.
pub(super) fn policy_fields(o: &mut Obj, m: &mut Cluster) -> Result<(), super::RenderError> {
    o.msg(
        "circuit_breakers",
        m.circuit_breakers.take(),
        circuit_breakers,
    )?;
    o.msg("outlier_detection", m.outlier_detection.take(), outlier)?;
    o.msg(
        "common_lb_config",
        m.common_lb_config.take(),
        |mut c: CommonLbConfig| {
            let mut o = Obj::default();
            if let Some(p) = c.healthy_panic_threshold.take() {
                let mut inner = Obj::default();
                let mut p = p;
                if p.value != 0.0 {
                    inner.val("value", Some(Value::from(take(&mut p.value))));
                }
                o.val("healthy_panic_threshold", Some(inner.done(p, "Percent")?));
            }
            o.done(c, "CommonLbConfig")
        },
    )?;
    match m.lb_config.take() {
        Some(LbConfig::RingHashLbConfig(mut r)) => {
            let mut inner = Obj::default();
            inner.msg("minimum_ring_size", r.minimum_ring_size.take(), wrapped_u64)?;
            o.val(
                "ring_hash_lb_config",
                Some(inner.done(r, "RingHashLbConfig")?),
            );
        }
        Some(LbConfig::MaglevLbConfig(mut r)) => {
            let mut inner = Obj::default();
            inner.msg("table_size", r.table_size.take(), wrapped_u64)?;
            o.val("maglev_lb_config", Some(inner.done(r, "MaglevLbConfig")?));
        }
        other => m.lb_config = other,
    }
    o.msg(
        "upstream_connection_options",
        m.upstream_connection_options.take(),
        |mut u: UpstreamConnectionOptions| {
            let mut o = Obj::default();
            o.msg("tcp_keepalive", u.tcp_keepalive.take(), keepalive)?;
            o.done(u, "UpstreamConnectionOptions")
        },
    )?;
    Ok(())
}
