//! A cluster's traffic policy: load-balancer settings, circuit breakers, outlier detection,
//! upstream connection options (what istiod derives from a DestinationRule).
//!
//! Ignored fields: `CircuitBreakers.Thresholds.track_remaining` and thresholds for the `HIGH`
//! priority (no route asks for it), `CommonLbConfig.{update_merge_window,
//! ignore_new_hosts_until_first_hc, close_connections_on_host_set_change}`,
//! `OutlierDetection.{success_rate_*, failure_percentage_* (with enforcement 0),
//! max_ejection_time_jitter, successful_active_health_check_uneject_host}`,
//! `core.HttpProtocolOptions.{max_headers_count, max_response_headers_kb,
//! headers_with_underscores_action, max_connection_duration_jitter}`,
//! `Http2ProtocolOptions` other than its stream limits and windows,
//! `UpstreamConnectionOptions.{set_local_interface_name_on_upstream_connections,
//! happy_eyeballs_config}`, `RingHashLbConfig.hash_function` (one hash function).

use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::{
    circuit_breakers, cluster, CircuitBreakers as PbBreakers, Cluster as PbCluster,
    OutlierDetection as PbOutlier, UpstreamConnectionOptions,
};
use envoy_types::pb::envoy::config::core::v3::{
    Http2ProtocolOptions, HttpProtocolOptions as CommonOptions, RoutingPriority,
};

use super::{duration, is_default, reject_set, ConvertError, Within};
use crate::model::{
    CircuitBreakers, ConnectionOptions, LbSettings, OutlierDetection, TcpKeepalive,
};

/// `lb_config` and `common_lb_config`.
pub(super) fn lb_settings(proto: &PbCluster) -> Result<LbSettings, ConvertError> {
    let mut out = LbSettings::default();
    match &proto.lb_config {
        None => {}
        Some(cluster::LbConfig::RingHashLbConfig(c)) => {
            let min = c
                .minimum_ring_size
                .as_ref()
                .map_or(out.ring_size.0, |v| v.value);
            let max = c
                .maximum_ring_size
                .as_ref()
                .map_or(out.ring_size.1, |v| v.value);
            if min == 0 || max < min || max > 8 * 1024 * 1024 {
                return Err(ConvertError::invalid("ring size", format!("{min}..{max}"))
                    .at("ring_hash_lb_config"));
            }
            out.ring_size = (min, max);
        }
        Some(cluster::LbConfig::MaglevLbConfig(c)) => {
            if let Some(size) = &c.table_size {
                if !is_prime(size.value) || size.value > 5_000_011 {
                    return Err(ConvertError::invalid("table size", size.value.to_string())
                        .at("table_size")
                        .at("maglev_lb_config"));
                }
                out.maglev_table_size = size.value;
            }
        }
        Some(cluster::LbConfig::LeastRequestLbConfig(c)) => {
            reject_set!(c, slow_start_config);
            if let Some(bias) = &c.active_request_bias {
                if bias.default_value != 1.0 {
                    return Err(ConvertError::unsupported_value(
                        "active_request_bias",
                        bias.default_value.to_string(),
                    )
                    .at("least_request_lb_config"));
                }
            }
            if let Some(n) = &c.choice_count {
                if n.value < 2 {
                    return Err(ConvertError::invalid("choice count", n.value.to_string())
                        .at("choice_count")
                        .at("least_request_lb_config"));
                }
                out.least_request_choices = n.value;
            }
        }
        Some(cluster::LbConfig::RoundRobinLbConfig(c)) => {
            reject_set!(c, slow_start_config);
        }
        Some(cluster::LbConfig::OriginalDstLbConfig(c)) if !is_default(c) => {
            return Err(ConvertError::unsupported("original_dst_lb_config"))
        }
        Some(cluster::LbConfig::OriginalDstLbConfig(_)) => {}
    }
    if let Some(common) = &proto.common_lb_config {
        common_lb(common, &mut out).at("common_lb_config")?;
    }
    Ok(out)
}

fn common_lb(common: &cluster::CommonLbConfig, out: &mut LbSettings) -> Result<(), ConvertError> {
    reject_set!(
        common,
        consistent_hashing_lb_config,
        override_host_status,
        locality_config_specifier
    );
    if let Some(p) = &common.healthy_panic_threshold {
        if !(0.0..=100.0).contains(&p.value) {
            return Err(ConvertError::invalid("percentage", p.value.to_string())
                .at("healthy_panic_threshold"));
        }
        out.healthy_panic_threshold = p.value;
    }
    Ok(())
}

fn is_prime(n: u64) -> bool {
    n >= 2
        && (2..)
            .take_while(|d| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}

/// `circuit_breakers`: the default priority's thresholds (Envoy's defaults for those unset);
/// per-host thresholds only when unlimited.
pub(super) fn circuit_breakers(
    proto: Option<&PbBreakers>,
) -> Result<CircuitBreakers, ConvertError> {
    let mut out = CircuitBreakers::default();
    let Some(breakers) = proto else {
        return Ok(out);
    };
    for (i, t) in breakers.thresholds.iter().enumerate() {
        let at = |e: ConvertError| e.at_index("thresholds", i);
        reject_set!(t, retry_budget);
        check_unlimited(&t.max_connection_pools, "max_connection_pools").map_err(at)?;
        if t.priority == RoutingPriority::High as i32 {
            continue;
        }
        if t.priority != RoutingPriority::Default as i32 {
            return Err(at(ConvertError::unsupported_value(
                "priority",
                t.priority.to_string(),
            )));
        }
        let set = |v: &Option<envoy_types::pb::google::protobuf::UInt32Value>, into: &mut u32| {
            if let Some(v) = v {
                *into = v.value;
            }
        };
        set(&t.max_connections, &mut out.max_connections);
        set(&t.max_pending_requests, &mut out.max_pending_requests);
        set(&t.max_requests, &mut out.max_requests);
        set(&t.max_retries, &mut out.max_retries);
    }
    for (i, t) in breakers.per_host_thresholds.iter().enumerate() {
        let check = |t: &circuit_breakers::Thresholds| -> Result<(), ConvertError> {
            reject_set!(t, retry_budget);
            check_unlimited(&t.max_connections, "max_connections")?;
            check_unlimited(&t.max_pending_requests, "max_pending_requests")?;
            check_unlimited(&t.max_requests, "max_requests")?;
            check_unlimited(&t.max_retries, "max_retries")?;
            check_unlimited(&t.max_connection_pools, "max_connection_pools")
        };
        check(t).at_index("per_host_thresholds", i)?;
    }
    Ok(out)
}

fn check_unlimited(
    value: &Option<envoy_types::pb::google::protobuf::UInt32Value>,
    field: &'static str,
) -> Result<(), ConvertError> {
    match value {
        Some(v) if v.value != u32::MAX => {
            Err(ConvertError::unsupported_value(field, v.value.to_string()))
        }
        _ => Ok(()),
    }
}

/// `outlier_detection`, with Envoy's defaults for unset fields. Success-rate and
/// failure-percentage detection must be disabled (enforcement 0), as istiod sends it.
pub(super) fn outlier_detection(proto: &PbOutlier) -> Result<OutlierDetection, ConvertError> {
    reject_set!(proto, monitors, detect_degraded_hosts);
    let get = |v: &Option<envoy_types::pb::google::protobuf::UInt32Value>, default: u32| {
        v.as_ref().map_or(default, |v| v.value)
    };
    let percent = |v: &Option<envoy_types::pb::google::protobuf::UInt32Value>,
                   default: u32,
                   field: &'static str|
     -> Result<u32, ConvertError> {
        let value = get(v, default);
        if value > 100 {
            return Err(ConvertError::invalid("percentage", value.to_string()).at(field));
        }
        Ok(value)
    };
    let time = |v: &Option<envoy_types::pb::google::protobuf::Duration>,
                default: Duration,
                field: &'static str|
     -> Result<Duration, ConvertError> {
        match v {
            None => Ok(default),
            Some(d) => {
                let d = duration(d).at(field)?;
                if d.is_zero() {
                    return Err(ConvertError::invalid("duration", "0s").at(field));
                }
                Ok(d)
            }
        }
    };
    let success_rate = percent(&proto.enforcing_success_rate, 100, "enforcing_success_rate")?;
    if success_rate != 0 {
        return Err(ConvertError::unsupported_value(
            "enforcing_success_rate",
            success_rate.to_string(),
        ));
    }
    for (value, field) in [
        (
            &proto.enforcing_failure_percentage,
            "enforcing_failure_percentage",
        ),
        (
            &proto.enforcing_failure_percentage_local_origin,
            "enforcing_failure_percentage_local_origin",
        ),
    ] {
        if get(value, 0) != 0 {
            return Err(ConvertError::unsupported_value(
                field,
                get(value, 0).to_string(),
            ));
        }
    }
    if proto.split_external_local_origin_errors
        && get(&proto.enforcing_local_origin_success_rate, 100) != 0
    {
        return Err(ConvertError::unsupported_value(
            "enforcing_local_origin_success_rate",
            get(&proto.enforcing_local_origin_success_rate, 100).to_string(),
        ));
    }
    let base_ejection_time = time(
        &proto.base_ejection_time,
        Duration::from_secs(30),
        "base_ejection_time",
    )?;
    let max_ejection_time = time(
        &proto.max_ejection_time,
        Duration::from_secs(300).max(base_ejection_time),
        "max_ejection_time",
    )?;
    if max_ejection_time < base_ejection_time {
        return Err(ConvertError::inconsistent(
            "max_ejection_time must not be less than base_ejection_time",
        )
        .at("max_ejection_time"));
    }
    Ok(OutlierDetection {
        consecutive_5xx: get(&proto.consecutive_5xx, 5),
        enforcing_consecutive_5xx: percent(
            &proto.enforcing_consecutive_5xx,
            100,
            "enforcing_consecutive_5xx",
        )?,
        consecutive_gateway_failure: get(&proto.consecutive_gateway_failure, 5),
        enforcing_consecutive_gateway_failure: percent(
            &proto.enforcing_consecutive_gateway_failure,
            0,
            "enforcing_consecutive_gateway_failure",
        )?,
        split_external_local_origin_errors: proto.split_external_local_origin_errors,
        consecutive_local_origin_failure: get(&proto.consecutive_local_origin_failure, 5),
        enforcing_consecutive_local_origin_failure: percent(
            &proto.enforcing_consecutive_local_origin_failure,
            100,
            "enforcing_consecutive_local_origin_failure",
        )?,
        interval: time(&proto.interval, Duration::from_secs(10), "interval")?,
        base_ejection_time,
        max_ejection_time,
        max_ejection_percent: percent(&proto.max_ejection_percent, 10, "max_ejection_percent")?,
        always_eject_one_host: proto
            .always_eject_one_host
            .as_ref()
            .is_some_and(|b| b.value),
    })
}

/// `upstream_connection_options`.
pub(super) fn connection_options(
    proto: Option<&UpstreamConnectionOptions>,
    out: &mut ConnectionOptions,
) -> Result<(), ConvertError> {
    let Some(keepalive) = proto.and_then(|o| o.tcp_keepalive.as_ref()) else {
        return Ok(());
    };
    let secs = |v: &Option<envoy_types::pb::google::protobuf::UInt32Value>| {
        v.as_ref().map(|v| Duration::from_secs(u64::from(v.value)))
    };
    out.tcp_keepalive = Some(TcpKeepalive {
        probes: keepalive.keepalive_probes.as_ref().map(|v| v.value),
        time: secs(&keepalive.keepalive_time),
        interval: secs(&keepalive.keepalive_interval),
    });
    Ok(())
}

/// `core.HttpProtocolOptions` (`common_http_protocol_options`).
pub(super) fn common_http_options(
    proto: &CommonOptions,
    out: &mut ConnectionOptions,
) -> Result<(), ConvertError> {
    if let Some(d) = &proto.max_stream_duration {
        if !duration(d).at("max_stream_duration")?.is_zero() {
            return Err(ConvertError::unsupported("max_stream_duration"));
        }
    }
    if let Some(d) = &proto.idle_timeout {
        let d = duration(d).at("idle_timeout")?;
        out.idle_timeout = (!d.is_zero()).then_some(d);
    }
    if let Some(d) = &proto.max_connection_duration {
        let d = duration(d).at("max_connection_duration")?;
        out.max_connection_duration = (!d.is_zero()).then_some(d);
    }
    if let Some(n) = &proto.max_requests_per_connection {
        out.max_requests_per_connection = (n.value > 0).then_some(n.value);
    }
    Ok(())
}

/// The stream limit and windows of `Http2ProtocolOptions`.
pub(super) fn http2_options(proto: &Http2ProtocolOptions, out: &mut ConnectionOptions) {
    out.h2_max_concurrent_streams = proto.max_concurrent_streams.as_ref().map(|v| v.value);
    out.h2_initial_stream_window = proto.initial_stream_window_size.as_ref().map(|v| v.value);
    out.h2_initial_connection_window = proto
        .initial_connection_window_size
        .as_ref()
        .map(|v| v.value);
}
