//! The control plane's own metrics, under istiod's names and labels so that its dashboards and
//! alerts carry over, served in Prometheus text on `--monitoring-addr` (`/metrics`).
//!
//! One [`Metrics`] is built on a [`Registry`] at start and passed down (to the ADS streams,
//! the push coordinator, the config watcher): nothing here is global.
//!
//! | name | type | labels | what |
//! | --- | --- | --- | --- |
//! | `pilot_xds` | gauge | `version` | connected proxies, by the proxy's `ISTIO_VERSION` |
//! | `pilot_xds_pushes` | counter | `type` | responses sent (`cds`, `eds`, `lds`, `rds`), and send failures (`cds_senderr`...) |
//! | `pilot_xds_push_time` | histogram | `type` | seconds to build one response for one proxy |
//! | `pilot_xds_send_time` | histogram | | seconds to hand one response to the stream |
//! | `pilot_xds_config_size_bytes` | histogram | `type` | size of each response |
//! | `pilot_proxy_convergence_time` | histogram | | seconds from the first change of a push to its last response sent to a proxy |
//! | `pilot_proxy_queue_time` | histogram | | seconds a proxy's push waited before its stream took it |
//! | `pilot_debounce_time` | histogram | | seconds from the first change of a burst to the end of its debounce |
//! | `pilot_push_triggers` | counter | `type` | pushes by reason (`config`, `service`, `endpoint`, `unknown`) |
//! | `pilot_inbound_updates` | counter | `type` | changes received (`config`, `eds`, `svc`, `svcdelete`) |
//! | `pilot_k8s_cfg_events` | counter | `type`, `event` | config objects added, updated or deleted, by kind |
//! | `pilot_services` | gauge | | Services known |
//! | `pilot_virt_services` | gauge | | VirtualServices known |
//! | `pilot_total_rejected_configs` | counter | `type`, `name` | config objects rejected, per load |
//! | `pilot_total_xds_rejects` | counter | `type` | NACKs |
//! | `pilot_xds_cds_reject`, `_eds_`, `_lds_`, `_rds_` | gauge | `node`, `err` | NACKs per proxy and error code (istiod's older per-type form) |
//! | `pilot_xds_expired_nonce` | counter | `type` | requests with a nonce that is not the last one sent (ignored) |
//! | `mesh_xds_ack_time` | histogram | `type` | seconds from a response sent to its ACK or NACK (no istiod equivalent) |

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Errors registering metrics (a name registered twice on one registry).
#[derive(Debug, thiserror::Error)]
#[error("cannot register metric: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

/// istiod's buckets for push and debounce times.
const PUSH_BUCKETS: [f64; 8] = [0.01, 0.1, 1.0, 3.0, 5.0, 10.0, 20.0, 30.0];
/// istiod's buckets for convergence and queue times.
const CONVERGENCE_BUCKETS: [f64; 8] = [0.1, 0.5, 1.0, 3.0, 5.0, 10.0, 20.0, 30.0];
/// istiod's buckets for config sizes: 10 kB, 1 MB, 4 MB (gRPC's default limit), 10 MB, 40 MB.
const SIZE_BUCKETS: [f64; 6] = [
    1.0,
    10_000.0,
    1_000_000.0,
    4_000_000.0,
    10_000_000.0,
    40_000_000.0,
];
/// Buckets for the time to ACK (finer than istiod's: an ACK takes milliseconds).
const ACK_BUCKETS: [f64; 9] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0];

/// Every metric of the control plane.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    /// `pilot_xds{version}`.
    pub xds_clients: IntGaugeVec,
    /// `pilot_xds_pushes{type}`.
    pub pushes: IntCounterVec,
    /// `pilot_xds_push_time{type}`.
    pub push_time: HistogramVec,
    /// `pilot_xds_send_time`.
    pub send_time: Histogram,
    /// `pilot_xds_config_size_bytes{type}`.
    pub config_size: HistogramVec,
    /// `pilot_proxy_convergence_time`.
    pub convergence_time: Histogram,
    /// `pilot_proxy_queue_time`.
    pub queue_time: Histogram,
    /// `pilot_debounce_time`.
    pub debounce_time: Histogram,
    /// `pilot_push_triggers{type}`.
    pub push_triggers: IntCounterVec,
    /// `pilot_inbound_updates{type}`.
    pub inbound_updates: IntCounterVec,
    /// `pilot_k8s_cfg_events{type,event}`.
    pub config_events: IntCounterVec,
    /// `pilot_services`.
    pub services: IntGauge,
    /// `pilot_virt_services`.
    pub virtual_services: IntGauge,
    /// `pilot_total_rejected_configs{type,name}`.
    pub rejected_configs: IntCounterVec,
    /// `pilot_total_xds_rejects{type}`.
    pub xds_rejects: IntCounterVec,
    /// `pilot_xds_cds_reject{node,err}`.
    pub cds_reject: IntGaugeVec,
    /// `pilot_xds_eds_reject{node,err}`.
    pub eds_reject: IntGaugeVec,
    /// `pilot_xds_lds_reject{node,err}`.
    pub lds_reject: IntGaugeVec,
    /// `pilot_xds_rds_reject{node,err}`.
    pub rds_reject: IntGaugeVec,
    /// `pilot_xds_expired_nonce{type}`.
    pub expired_nonce: IntCounterVec,
    /// `mesh_xds_ack_time{type}`.
    pub ack_time: HistogramVec,
}

fn counter(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, MetricsError> {
    let m = IntCounterVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(m.clone()))?;
    Ok(m)
}

fn gauge_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntGaugeVec, MetricsError> {
    let m = IntGaugeVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(m.clone()))?;
    Ok(m)
}

fn gauge(r: &Registry, name: &str, help: &str) -> Result<IntGauge, MetricsError> {
    let m = IntGauge::new(name, help)?;
    r.register(Box::new(m.clone()))?;
    Ok(m)
}

fn histogram_vec(
    r: &Registry,
    name: &str,
    help: &str,
    buckets: &[f64],
    labels: &[&str],
) -> Result<HistogramVec, MetricsError> {
    let m = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )?;
    r.register(Box::new(m.clone()))?;
    Ok(m)
}

fn histogram(
    r: &Registry,
    name: &str,
    help: &str,
    buckets: &[f64],
) -> Result<Histogram, MetricsError> {
    let m = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))?;
    r.register(Box::new(m.clone()))?;
    Ok(m)
}

impl Metrics {
    /// Registers every metric on `registry`.
    pub fn new(registry: Registry) -> Result<Metrics, MetricsError> {
        let r = &registry;
        let node_err = ["node", "err"];
        Ok(Metrics {
            xds_clients: gauge_vec(r, "pilot_xds", "Number of endpoints connected to this pilot using XDS.", &["version"])?,
            pushes: counter(r, "pilot_xds_pushes", "Pilot build and send errors for lds, rds, cds and eds.", &["type"])?,
            push_time: histogram_vec(r, "pilot_xds_push_time", "Total time in seconds Pilot takes to push lds, rds, cds and eds.", &PUSH_BUCKETS, &["type"])?,
            send_time: histogram(r, "pilot_xds_send_time", "Total time in seconds Pilot takes to send generated configuration.", &PUSH_BUCKETS)?,
            config_size: histogram_vec(r, "pilot_xds_config_size_bytes", "Distribution of configuration sizes pushed to clients", &SIZE_BUCKETS, &["type"])?,
            convergence_time: histogram(r, "pilot_proxy_convergence_time", "Delay in seconds between config change and a proxy receiving all required configuration.", &CONVERGENCE_BUCKETS)?,
            queue_time: histogram(r, "pilot_proxy_queue_time", "Time in seconds, a proxy is in the push queue before being dequeued.", &CONVERGENCE_BUCKETS)?,
            debounce_time: histogram(r, "pilot_debounce_time", "Delay in seconds between the first config enters debouncing and the merged push request is pushed into the push queue.", &PUSH_BUCKETS)?,
            push_triggers: counter(r, "pilot_push_triggers", "Total number of times a push was triggered, labeled by reason for the push.", &["type"])?,
            inbound_updates: counter(r, "pilot_inbound_updates", "Total number of updates received by pilot.", &["type"])?,
            config_events: counter(r, "pilot_k8s_cfg_events", "Events from k8s config.", &["type", "event"])?,
            services: gauge(r, "pilot_services", "Total services known to pilot.")?,
            virtual_services: gauge(r, "pilot_virt_services", "Total virtual services known to pilot.")?,
            rejected_configs: counter(r, "pilot_total_rejected_configs", "Total number of configs that Pilot had to reject or ignore.", &["type", "name"])?,
            xds_rejects: counter(r, "pilot_total_xds_rejects", "Total number of XDS responses from pilot rejected by proxy.", &["type"])?,
            cds_reject: gauge_vec(r, "pilot_xds_cds_reject", "Pilot rejected CDS configs.", &node_err)?,
            eds_reject: gauge_vec(r, "pilot_xds_eds_reject", "Pilot rejected EDS.", &node_err)?,
            lds_reject: gauge_vec(r, "pilot_xds_lds_reject", "Pilot rejected LDS.", &node_err)?,
            rds_reject: gauge_vec(r, "pilot_xds_rds_reject", "Pilot rejected RDS.", &node_err)?,
            expired_nonce: counter(r, "pilot_xds_expired_nonce", "Total number of XDS requests with an expired nonce.", &["type"])?,
            ack_time: histogram_vec(r, "mesh_xds_ack_time", "Time in seconds from an xDS response sent to its ACK or NACK.", &ACK_BUCKETS, &["type"])?,
            registry,
        })
    }

    /// Metrics on a registry of their own (tests, tools).
    pub fn unregistered() -> Metrics {
        // Names are unique and valid: registering on a fresh registry cannot fail.
        Metrics::new(Registry::new()).unwrap_or_else(|e| unreachable!("{e}"))
    }

    /// The registry the metrics are on.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Everything in Prometheus' text format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Text encoding into a Vec only fails on metric families that cannot be encoded,
        // which the registry never holds.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "metrics encoding failed");
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// Serves `GET /metrics` (Prometheus text) on `listener` until `shutdown` becomes true; any
/// other path is 404.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Metrics,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    use http_body_util::Full;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;

    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait_for(|down| *down) => return,
        };
        let (stream, _) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "monitoring server accept failed");
                continue;
            }
        };
        let metrics = metrics.clone();
        let mut conn_shutdown = shutdown.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let (status, content_type, body) = if req.uri().path() == "/metrics" {
                    (
                        http::StatusCode::OK,
                        "text/plain; version=0.0.4",
                        metrics.render(),
                    )
                } else {
                    (
                        http::StatusCode::NOT_FOUND,
                        "text/plain",
                        "not found; try /metrics\n".to_string(),
                    )
                };
                let mut resp = http::Response::new(Full::new(bytes::Bytes::from(body)));
                *resp.status_mut() = status;
                resp.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static(content_type),
                );
                async move { Ok::<_, std::convert::Infallible>(resp) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = conn_shutdown.wait_for(|down| *down) => conn.as_mut().graceful_shutdown(),
            }
        });
    }
}
