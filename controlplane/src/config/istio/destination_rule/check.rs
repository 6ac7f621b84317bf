//! Istio's DestinationRule rules (`ValidateDestinationRule`, `validateTrafficPolicy`,
//! `agent.ValidateTLS`, `agent.ValidateLocalityLbSetting`) and the CRD schema's ranges.

use std::collections::BTreeSet;

use super::locality::check_locality;
use super::{
    ClientTlsMode, ClientTlsSettings, ConnectionPoolSettings, DestinationRule, H2UpgradePolicy,
    LoadBalancerSettings, OutlierDetection, TrafficPolicy, TunnelSettings,
};
use crate::config::istio::names::{self, validate_labels, validate_selector_labels};
use crate::config::istio::values::{self, validate_duration};
use crate::config::istio::{at, idx, Checker};

/// What is wrong with a DestinationRule.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Problem {
    /// Two subsets with one name.
    #[error("duplicate subset names: {0}")]
    DuplicateSubset(String),
    /// An empty subset name.
    #[error("subset name cannot be empty")]
    SubsetEmpty,
    /// A subset name that is not a DNS label.
    #[error("subset name is invalid: {0}")]
    SubsetName(String),
    /// `trafficPolicy: {}`.
    #[error("traffic policy must have at least one field")]
    PolicyEmpty,
    /// Tunnel and PROXY protocol together.
    #[error("tunnel and proxyProtocol must not be set together")]
    TunnelAndProxyProtocol,
    /// A tunnel protocol other than CONNECT, POST.
    #[error("tunnel protocol must be \"CONNECT\" or \"POST\"")]
    TunnelProtocol,
    /// A tunnel target that is neither a host nor an IP.
    #[error("tunnel target host must be valid FQDN or IP address: {0}")]
    TunnelHost(String),
    /// A bad tunnel port.
    #[error("tunnel target port is invalid: {0}")]
    TunnelPort(String),
    /// Deprecated consecutiveErrors (a warning).
    #[error("outlier detection consecutive errors is deprecated, use consecutiveGatewayErrors or consecutive5xxErrors instead")]
    ConsecutiveErrors,
    /// Local origin failures without splitting them.
    #[error("outlier detection consecutive local origin failures is specified, but split external local origin errors is set to false")]
    LocalOriginWithoutSplit,
    /// `connectionPool: {}`.
    #[error("connection pool must have at least one field")]
    PoolEmpty,
    /// A negative limit.
    #[error("{0} must be non-negative")]
    Negative(&'static str),
    /// Client protocol with forced upgrade.
    #[error("use client protocol must not be true when H2UpgradePolicy is UPGRADE")]
    ClientProtocolUpgrade,
    /// A cookie hash without cookie name.
    #[error("name required for HttpCookie")]
    CookieName,
    /// Deprecated minimumRingSize (a warning).
    #[error("consistent hash MinimumRingSize is deprecated, use ConsistentHashLB's RingHash configuration instead")]
    MinimumRingSizeDeprecated,
    /// minimumRingSize with ringHash or maglev.
    #[error("only one of MinimumRingSize or Maglev/Ringhash can be specified")]
    RingSizeAndAlgorithm,
    /// Maglev without table size.
    #[error("tableSize must be set for maglev")]
    MaglevUnset,
    /// Maglev table too large.
    #[error("tableSize must be less than 5000011 for maglev")]
    MaglevTooLarge,
    /// Maglev table size not prime.
    #[error("tableSize must be a prime number for maglev")]
    MaglevNotPrime,
    /// Several exclusive fields (the CRD's oneOf).
    #[error("only one of {0} can be set")]
    OneOf(&'static str),
    /// Warmup without duration.
    #[error("duration is required")]
    WarmupDuration,
    /// Warmup minimum percentage out of range.
    #[error("minimumPercent value should be between 0 and 100 (got {0})")]
    WarmupMinimumPercent(f64),
    /// Warmup aggression under 1.
    #[error("aggression should be greater than or equal to 1")]
    WarmupAggression,
    /// Retry budget percentage out of range.
    #[error("percent should be between 0 and 100 (got {0})")]
    RetryBudgetPercent(f64),
    /// A configmap:// credential of another namespace.
    #[error("invalid configmap:// credentialName: namespace must match the configuration namespace {0:?}")]
    ConfigMapNamespace(String),
    /// SIMPLE with insecureSkipVerify and verification material.
    #[error("cannot specify CaCertificates or CredentialName or SubjectAltNames when InsecureSkipVerify is set true")]
    SimpleSkipVerify,
    /// MUTUAL with insecureSkipVerify and verification material.
    #[error(
        "cannot specify CaCertificates or SubjectAltNames when InsecureSkipVerify is set true"
    )]
    MutualSkipVerify,
    /// Files together with a credential.
    #[error(
        "cannot specify client certificates or CA certificate or CA CRL If credentialName is set"
    )]
    FilesWithCredential,
    /// MUTUAL without certificate.
    #[error("client certificate required for mutual tls")]
    ClientCertificate,
    /// MUTUAL without key.
    #[error("private key required for mutual tls")]
    PrivateKey,
    /// A port policy without port.
    #[error("portTrafficPolicy must have valid port")]
    PortPolicyPort,
    /// A port policy without settings.
    #[error("port traffic policy must have at least one field")]
    PortPolicyEmpty,
    /// distribute and failover together.
    #[error("can not simultaneously specify 'distribute' and 'failover'")]
    DistributeAndFailover,
    /// failover with a topology label in failoverPriority.
    #[error(
        "can not simultaneously set 'failover' and topology label '{0}' in 'failover_priority'"
    )]
    FailoverTopologyPriority(String),
    /// A locality weight outside 1-100.
    #[error("locality weight must be in range [1, 100]")]
    LocalityWeight,
    /// Locality weights not adding up to 100.
    #[error("total locality weight {0} != 100")]
    LocalityTotal(u64),
    /// Failover to the same region.
    #[error("locality lb failover settings must specify different regions")]
    FailoverSameRegion,
    /// Failover with zones.
    #[error("locality lb failover only specify region")]
    FailoverRegionOnly,
    /// Failover with wildcards.
    #[error("locality lb failover region should not contain '*' wildcard")]
    FailoverWildcard,
    /// Failover without outlier detection (a warning).
    #[error("outlier detection policy must be provided for failover")]
    FailoverWithoutOutlier,
    /// A misplaced wildcard in a locality.
    #[error("locality {0} wildcard '*' number can not exceed 1 and must be in the end")]
    LocalityWildcard(String),
    /// Overlapping localities.
    #[error("locality {0} overlap with previous specified ones")]
    LocalityOverlap(String),
    /// An empty region, zone or subzone.
    #[error("locality {0} must not contain empty region/zone/subzone info")]
    LocalityEmptyPart(String),
}

/// Checks a DestinationRule's spec.
pub(crate) fn check(c: &mut Checker, dr: &DestinationRule) {
    if dr.host.is_empty() {
        c.required("spec.host");
    } else {
        c.check("spec.host", names::validate_wildcard_domain(&dr.host));
    }
    if let Some(tp) = &dr.traffic_policy {
        check_traffic_policy(c, "spec.trafficPolicy", tp);
    }
    let mut seen = BTreeSet::new();
    for (i, subset) in dr.subsets.iter().enumerate() {
        let path = idx("spec.subsets", i);
        if !seen.insert(subset.name.clone()) {
            c.err(
                at(&path, "name"),
                Problem::DuplicateSubset(subset.name.clone()),
            );
        }
        check_subset_name(c, &at(&path, "name"), &subset.name);
        validate_labels(c, &at(&path, "labels"), &subset.labels);
        if let Some(tp) = &subset.traffic_policy {
            check_traffic_policy(c, &at(&path, "trafficPolicy"), tp);
        }
    }
    let with_selector = dr.workload_selector.is_some();
    names::validate_export_to(c, "spec.exportTo", &dr.export_to, false, with_selector);
    if let Some(sel) = &dr.workload_selector {
        validate_selector_labels(c, "spec.workloadSelector.matchLabels", &sel.match_labels);
    }
}

fn check_subset_name(c: &mut Checker, path: &str, name: &str) {
    if name.is_empty() {
        c.err(path, Problem::SubsetEmpty);
    } else if !names::is_dns1123_label(name) {
        c.err(path, Problem::SubsetName(name.to_string()));
    }
}

fn check_traffic_policy(c: &mut Checker, path: &str, tp: &TrafficPolicy) {
    let nothing = tp.outlier_detection.is_none()
        && tp.connection_pool.is_none()
        && tp.load_balancer.is_none()
        && tp.tls.is_none()
        && tp.port_level_settings.is_none()
        && tp.tunnel.is_none()
        && tp.proxy_protocol.is_none()
        && tp.retry_budget.is_none();
    if nothing {
        c.err(path, Problem::PolicyEmpty);
        return;
    }
    if tp.tunnel.is_some() && tp.proxy_protocol.is_some() {
        c.err(path, Problem::TunnelAndProxyProtocol);
        return;
    }
    if let Some(o) = &tp.outlier_detection {
        check_outlier(c, &at(path, "outlierDetection"), o);
    }
    if let Some(p) = &tp.connection_pool {
        check_connection_pool(c, &at(path, "connectionPool"), p);
    }
    if let Some(lb) = &tp.load_balancer {
        check_load_balancer(
            c,
            &at(path, "loadBalancer"),
            lb,
            tp.outlier_detection.is_some(),
        );
    }
    if let Some(tls) = &tp.tls {
        check_tls(c, &at(path, "tls"), tls);
    }
    for (i, p) in tp.port_level_settings.iter().flatten().enumerate() {
        let pp = idx(&at(path, "portLevelSettings"), i);
        if p.port.is_none() {
            c.err(at(&pp, "port"), Problem::PortPolicyPort);
        }
        if p.outlier_detection.is_none()
            && p.connection_pool.is_none()
            && p.load_balancer.is_none()
            && p.tls.is_none()
        {
            c.err(pp, Problem::PortPolicyEmpty);
            continue;
        }
        if let Some(o) = &p.outlier_detection {
            check_outlier(c, &at(&pp, "outlierDetection"), o);
        }
        if let Some(cp) = &p.connection_pool {
            check_connection_pool(c, &at(&pp, "connectionPool"), cp);
        }
        if let Some(lb) = &p.load_balancer {
            check_load_balancer(
                c,
                &at(&pp, "loadBalancer"),
                lb,
                p.outlier_detection.is_some(),
            );
        }
        if let Some(tls) = &p.tls {
            check_tls(c, &at(&pp, "tls"), tls);
        }
    }
    if let Some(t) = &tp.tunnel {
        check_tunnel(c, &at(path, "tunnel"), t);
    }
    if let Some(p) = tp.retry_budget.and_then(|b| b.percent) {
        if !(0.0..=100.0).contains(&p) {
            c.err(
                at(&at(path, "retryBudget"), "percent"),
                Problem::RetryBudgetPercent(p),
            );
        }
    }
}

fn check_tunnel(c: &mut Checker, path: &str, t: &TunnelSettings) {
    if !matches!(t.protocol.as_str(), "" | "CONNECT" | "POST") {
        c.err(at(path, "protocol"), Problem::TunnelProtocol);
    }
    match &t.target_host {
        None => c.required(at(path, "targetHost")),
        Some(h) => {
            if let (Err(fqdn), Err(ip)) = (names::validate_fqdn(h), values::validate_ip(h)) {
                c.err(
                    at(path, "targetHost"),
                    Problem::TunnelHost(format!("{fqdn}; {ip}")),
                );
            }
        }
    }
    match t.target_port {
        None => c.required(at(path, "targetPort")),
        Some(p) => {
            if let Err(e) = values::validate_port(i64::from(p)) {
                c.err(at(path, "targetPort"), Problem::TunnelPort(e.to_string()));
            }
        }
    }
}

/// Outlier detection (shared with port-level settings).
fn check_outlier(c: &mut Checker, path: &str, o: &OutlierDetection) {
    if let Some(d) = o.base_ejection_time {
        c.check(at(path, "baseEjectionTime"), validate_duration(d));
    }
    if o.consecutive_errors != 0 {
        c.warn(at(path, "consecutiveErrors"), Problem::ConsecutiveErrors);
    }
    if !o.split_external_local_origin_errors && o.consecutive_local_origin_failures.unwrap_or(0) > 0
    {
        c.err(
            at(path, "consecutiveLocalOriginFailures"),
            Problem::LocalOriginWithoutSplit,
        );
    }
    if let Some(d) = o.interval {
        c.check(at(path, "interval"), validate_duration(d));
    }
    c.check(
        at(path, "maxEjectionPercent"),
        values::validate_percent(i64::from(o.max_ejection_percent)),
    );
    c.check(
        at(path, "minHealthPercent"),
        values::validate_percent(i64::from(o.min_health_percent)),
    );
}

/// Connection pool settings (shared with Sidecar's inbound pools).
pub(crate) fn check_connection_pool(c: &mut Checker, path: &str, p: &ConnectionPoolSettings) {
    if p.http.is_none() && p.tcp.is_none() {
        c.err(path, Problem::PoolEmpty);
        return;
    }
    if let Some(h) = &p.http {
        let hp = at(path, "http");
        for (leaf, value, what) in [
            (
                "http1MaxPendingRequests",
                h.http1_max_pending_requests,
                "http1 max pending requests",
            ),
            (
                "http2MaxRequests",
                h.http2_max_requests,
                "http2 max requests",
            ),
            (
                "maxRequestsPerConnection",
                h.max_requests_per_connection,
                "max requests per connection",
            ),
            ("maxRetries", h.max_retries, "max retries"),
            (
                "maxConcurrentStreams",
                h.max_concurrent_streams,
                "max concurrent streams",
            ),
        ] {
            if value < 0 {
                c.err(at(&hp, leaf), Problem::Negative(what));
            }
        }
        if let Some(d) = h.idle_timeout {
            c.check(at(&hp, "idleTimeout"), validate_duration(d));
        }
        if h.h2_upgrade_policy == Some(H2UpgradePolicy::Upgrade) && h.use_client_protocol {
            c.err(at(&hp, "useClientProtocol"), Problem::ClientProtocolUpgrade);
        }
        if let Some(ka) = &h.http2_keep_alive {
            let kp = at(&hp, "http2KeepAlive");
            for (leaf, d) in [("interval", ka.interval), ("timeout", ka.timeout)] {
                if let Some(d) = d {
                    c.check(at(&kp, leaf), validate_duration(d));
                }
            }
        }
    }
    if let Some(t) = &p.tcp {
        let tp = at(path, "tcp");
        if t.max_connections < 0 {
            c.err(
                at(&tp, "maxConnections"),
                Problem::Negative("max connections"),
            );
        }
        for (leaf, d) in [
            ("connectTimeout", t.connect_timeout),
            ("maxConnectionDuration", t.max_connection_duration),
        ] {
            if let Some(d) = d {
                c.check(at(&tp, leaf), validate_duration(d));
            }
        }
        // `0s` disables the idle timeout.
        if let Some(d) = t.idle_timeout.filter(|d| d.as_nanos() / 1_000_000 != 0) {
            c.check(at(&tp, "idleTimeout"), validate_duration(d));
        }
        if let Some(ka) = &t.tcp_keepalive {
            let kp = at(&tp, "tcpKeepalive");
            for (leaf, d) in [("time", ka.time), ("interval", ka.interval)] {
                if let Some(d) = d {
                    c.check(at(&kp, leaf), validate_duration(d));
                }
            }
        }
    }
}

/// Envoy's primality test for Maglev table sizes.
fn is_prime(x: u64) -> bool {
    if x != 0 && x < 4 {
        return true;
    }
    if x & 1 == 0 {
        return false;
    }
    let mut f = 3u64;
    while f.saturating_mul(f) <= x {
        if x.is_multiple_of(f) {
            return false;
        }
        f += 2;
    }
    true
}

fn check_load_balancer(c: &mut Checker, path: &str, lb: &LoadBalancerSettings, outlier: bool) {
    if lb.simple.is_some() && lb.consistent_hash.is_some() {
        c.err(path, Problem::OneOf("simple or consistentHash"));
    }
    if let Some(ch) = &lb.consistent_hash {
        let cp = at(path, "consistentHash");
        let keys = [
            ch.http_header_name.is_some(),
            ch.http_cookie.is_some(),
            ch.use_source_ip.is_some(),
            ch.http_query_parameter_name.is_some(),
        ];
        if keys.iter().filter(|b| **b).count() > 1 {
            c.err(
                cp.clone(),
                Problem::OneOf("httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName"),
            );
        }
        if ch.ring_hash.is_some() && ch.maglev.is_some() {
            c.err(cp.clone(), Problem::OneOf("ringHash or maglev"));
        }
        if ch.http_cookie.as_ref().is_some_and(|k| k.name.is_empty()) {
            c.err(at(&at(&cp, "httpCookie"), "name"), Problem::CookieName);
        }
        if let Some(ttl) = ch.http_cookie.as_ref().and_then(|k| k.ttl) {
            if ttl.as_nanos() < 0 {
                c.err(
                    at(&at(&cp, "httpCookie"), "ttl"),
                    values::Problem::DurationTooShort,
                );
            }
        }
        if ch.minimum_ring_size != 0 {
            let field = at(&cp, "minimumRingSize");
            c.warn(field.clone(), Problem::MinimumRingSizeDeprecated);
            if ch.ring_hash.is_some() || ch.maglev.is_some() {
                c.err(field, Problem::RingSizeAndAlgorithm);
            }
        }
        if let Some(m) = &ch.maglev {
            let field = at(&at(&cp, "maglev"), "tableSize");
            if m.table_size == 0 {
                c.err(field.clone(), Problem::MaglevUnset);
            }
            if m.table_size >= 5_000_011 {
                c.err(field.clone(), Problem::MaglevTooLarge);
            }
            if !is_prime(m.table_size) {
                c.err(field, Problem::MaglevNotPrime);
            }
        }
    }
    if let Some(l) = &lb.locality_lb_setting {
        check_locality(c, &at(path, "localityLbSetting"), l, outlier);
    }
    if let Some(d) = lb.warmup_duration_secs {
        c.check(at(path, "warmupDurationSecs"), validate_duration(d));
    }
    if let Some(w) = &lb.warmup {
        let wp = at(path, "warmup");
        match w.duration {
            None => c.err(at(&wp, "duration"), Problem::WarmupDuration),
            Some(d) => c.check(at(&wp, "duration"), validate_duration(d)),
        }
        if let Some(p) = w.minimum_percent.filter(|p| !(0.0..=100.0).contains(p)) {
            c.err(at(&wp, "minimumPercent"), Problem::WarmupMinimumPercent(p));
        }
        if w.aggression.is_some_and(|a| a < 1.0) {
            c.err(at(&wp, "aggression"), Problem::WarmupAggression);
        }
    }
}

/// Upstream TLS (`agent.ValidateTLS`).
fn check_tls(c: &mut Checker, path: &str, t: &ClientTlsSettings) {
    if let Some(rest) = t.credential_name.strip_prefix("configmap://") {
        let ns = rest.split_once('/').map(|(ns, _)| ns);
        if ns.is_some_and(|ns| ns != c.namespace) || c.namespace.is_empty() {
            let namespace = c.namespace.clone();
            c.err(
                at(path, "credentialName"),
                Problem::ConfigMapNamespace(namespace),
            );
        }
    }
    let mode = t.mode.unwrap_or(ClientTlsMode::Disable);
    if t.insecure_skip_verify == Some(true) {
        if mode == ClientTlsMode::Simple
            && (!t.ca_certificates.is_empty()
                || !t.credential_name.is_empty()
                || t.subject_alt_names.is_some())
        {
            c.err(at(path, "insecureSkipVerify"), Problem::SimpleSkipVerify);
        }
        if mode == ClientTlsMode::Mutual
            && (!t.ca_certificates.is_empty() || t.subject_alt_names.is_some())
        {
            c.err(at(path, "insecureSkipVerify"), Problem::MutualSkipVerify);
        }
    }
    let simple_or_mutual = matches!(mode, ClientTlsMode::Simple | ClientTlsMode::Mutual);
    if simple_or_mutual && !t.credential_name.is_empty() {
        if !t.client_certificate.is_empty()
            || !t.ca_certificates.is_empty()
            || !t.private_key.is_empty()
            || !t.ca_crl.is_empty()
        {
            c.err(at(path, "credentialName"), Problem::FilesWithCredential);
        }
        return;
    }
    if mode == ClientTlsMode::Mutual {
        if t.client_certificate.is_empty() {
            c.err(at(path, "clientCertificate"), Problem::ClientCertificate);
        }
        if t.private_key.is_empty() {
            c.err(at(path, "privateKey"), Problem::PrivateKey);
        }
    }
}
