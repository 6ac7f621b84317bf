//! Distributed tracing: each sidecar continues the trace a request carries (W3C Trace Context
//! or B3, see [`propagation`]) or starts one, records a span (client span at the caller's
//! sidecar, server span at the callee's) with Istio's span tags, passes its own span on to
//! the next hop, and exports sampled spans over OTLP/gRPC ([`export`]).
//!
//! Sampling: a decision made upstream (`traceparent` flags, `x-b3-sampled`, `x-b3-flags`,
//! `b3`) is honoured; otherwise the request is sampled at the configured percentage
//! (`--tracing-sampling`, 1% by default as in Istio). Unsampled requests still propagate a
//! context (with the decision) and cost no span. Export never blocks a request: finished spans
//! go to a bounded queue; a full queue or a failed export drops spans and counts them.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod export;
pub mod propagation;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use tokio::sync::mpsc;

use self::propagation::Format;

/// Spans that may wait for the exporter before new ones are dropped.
pub const QUEUE: usize = 4096;

/// Tracing settings of the proxy.
#[derive(Clone, Debug)]
pub struct TracingSettings {
    /// Percentage of requests without an upstream decision that are sampled (0 to 100).
    pub sampling: f64,
    /// The OTLP/gRPC collector (`http://host:4317`, `--tracing-otlp-endpoint`); `None`: spans
    /// are exported only where the listener's tracing (Telemetry API) names a collector.
    pub endpoint: Option<String>,
    /// The `service.name` resource attribute (Istio's `<canonical service>.<namespace>`).
    pub service_name: String,
    /// Tags added to every span: Istio's `istio.*` tags and `node_id`.
    pub tags: Vec<(&'static str, String)>,
}

/// Which side of a call a span stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The caller's sidecar: a client span.
    Client,
    /// The callee's sidecar: a server span.
    Server,
}

/// A request's place in its trace, from the moment its headers are read.
#[derive(Clone, Debug)]
pub struct SpanState {
    /// The trace.
    pub trace_id: [u8; 16],
    /// This proxy's span.
    pub span_id: [u8; 8],
    /// The span it is a child of (from the request), if any.
    pub parent: Option<[u8; 8]>,
    /// Whether the trace is sampled.
    pub sampled: bool,
    /// The format the request used, to answer in kind.
    pub format: Option<Format>,
    /// `tracestate`, passed on.
    pub tracestate: Option<String>,
    /// Client or server span.
    pub side: Side,
}

impl SpanState {
    /// The headers carrying this span to the next hop.
    pub fn headers(&self) -> Vec<(HeaderName, HeaderValue)> {
        propagation::inject(
            &self.trace_id,
            &self.span_id,
            self.parent.as_ref(),
            self.sampled,
            self.format,
            self.tracestate.as_deref(),
        )
    }
}

/// What a finished request tells its span.
#[derive(Debug, Default)]
pub struct Finished<'a> {
    /// Span name (Istio's route decorator form, `HOST:PORT/*`).
    pub name: String,
    /// When the request started.
    pub start: Option<SystemTime>,
    /// `http.method`.
    pub method: &'a str,
    /// `http.url`.
    pub url: String,
    /// `http.protocol`.
    pub protocol: &'a str,
    /// `http.status_code` (0: nothing sent).
    pub status: u16,
    /// `response_flags`.
    pub response_flags: &'a str,
    /// `guid:x-request-id`.
    pub request_id: Option<&'a str>,
    /// `user_agent`.
    pub user_agent: Option<&'a str>,
    /// `peer.address`.
    pub peer_address: Option<String>,
    /// `upstream_cluster` (and `upstream_cluster.name`).
    pub upstream_cluster: Option<&'a str>,
    /// `upstream_address`.
    pub upstream_address: Option<String>,
    /// `request_size`.
    pub request_size: u64,
    /// `response_size`.
    pub response_size: u64,
}

/// The tracer shared by every request: settings, the export queue and its counters.
#[derive(Debug)]
pub struct Tracer {
    settings: TracingSettings,
    tx: mpsc::Sender<(String, SpanData)>,
    rx: std::sync::Mutex<Option<mpsc::Receiver<(String, SpanData)>>>,
    /// Spans dropped (queue full, no exporter running, export failed).
    pub dropped: Arc<AtomicU64>,
    /// Spans exported.
    pub exported: Arc<AtomicU64>,
    threshold: u64,
}

/// The random draw below which a request is sampled, for a percentage.
fn threshold(percentage: f64) -> u64 {
    (percentage.clamp(0.0, 100.0) / 100.0 * u64::MAX as f64) as u64
}

fn random_bytes<const N: usize>() -> [u8; N] {
    loop {
        let b: [u8; N] = rand::random();
        if b != [0; N] {
            return b;
        }
    }
}

impl Tracer {
    /// A tracer with `settings`; the exporter is started with [`Tracer::take_receiver`] and
    /// [`export::run`].
    pub fn new(settings: TracingSettings) -> Tracer {
        let (tx, rx) = mpsc::channel(QUEUE);
        Tracer {
            threshold: threshold(settings.sampling),
            settings,
            tx,
            rx: std::sync::Mutex::new(Some(rx)),
            dropped: Arc::default(),
            exported: Arc::default(),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &TracingSettings {
        &self.settings
    }

    /// The export queue's receiving end (once): each span with its collector.
    pub fn take_receiver(&self) -> Option<mpsc::Receiver<(String, SpanData)>> {
        self.rx.lock().ok()?.take()
    }

    /// The span of a request arriving with `headers`, sampled at the proxy's percentage.
    pub fn begin(&self, headers: &HeaderMap, side: Side) -> SpanState {
        self.begin_with(headers, side, None)
    }

    /// The span of a request arriving with `headers`; `sampling` (a percentage, from the
    /// listener's tracing) replaces the proxy's own when given.
    pub fn begin_with(&self, headers: &HeaderMap, side: Side, sampling: Option<f64>) -> SpanState {
        let threshold = sampling.map_or(self.threshold, threshold);
        let sample =
            || threshold > 0 && (threshold == u64::MAX || rand::random::<u64>() < threshold);
        match propagation::extract(headers) {
            Ok(ctx) => SpanState {
                trace_id: ctx.trace_id,
                span_id: random_bytes(),
                parent: Some(ctx.span_id),
                sampled: ctx.sampled.unwrap_or_else(sample),
                format: Some(ctx.format),
                tracestate: ctx.tracestate,
                side,
            },
            Err(decision) => SpanState {
                trace_id: random_bytes(),
                span_id: random_bytes(),
                parent: None,
                sampled: decision.unwrap_or_else(sample),
                format: None,
                tracestate: None,
                side,
            },
        }
    }

    /// Record a finished request's span for the proxy's collector (sampled spans only, when
    /// one is configured); never waits.
    pub fn finish(&self, state: &SpanState, done: Finished<'_>) {
        self.finish_to(state, done, None);
    }

    /// Record a finished request's span for `collector` (`http://host:port`), else the
    /// proxy's; sampled spans only; never waits.
    pub fn finish_to(&self, state: &SpanState, done: Finished<'_>, collector: Option<String>) {
        let Some(endpoint) = collector.or_else(|| self.settings.endpoint.clone()) else {
            return;
        };
        if !state.sampled {
            return;
        }
        let span = self.span_data(state, done);
        if self.tx.try_send((endpoint, span)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn span_data(&self, state: &SpanState, d: Finished<'_>) -> SpanData {
        let mut attributes: Vec<KeyValue> = self
            .settings
            .tags
            .iter()
            .map(|(k, v)| KeyValue::new(*k, v.clone()))
            .collect();
        let mut add = |k: &'static str, v: String| attributes.push(KeyValue::new(k, v));
        add("component", "proxy".into());
        add("http.method", d.method.into());
        add("http.url", d.url);
        add("http.protocol", d.protocol.into());
        add("http.status_code", d.status.to_string());
        add("response_flags", d.response_flags.into());
        add("request_size", d.request_size.to_string());
        add("response_size", d.response_size.to_string());
        add("downstream_cluster", "-".into());
        if let Some(id) = d.request_id {
            add("guid:x-request-id", id.into());
        }
        if let Some(ua) = d.user_agent {
            add("user_agent", ua.into());
        }
        if let Some(peer) = d.peer_address {
            add("peer.address", peer);
        }
        if let Some(cluster) = d.upstream_cluster {
            add("upstream_cluster", cluster.into());
            add("upstream_cluster.name", cluster.into());
        }
        if let Some(address) = d.upstream_address {
            add("upstream_address", address);
        }
        let error = d.status == 0 || d.status >= 500;
        if error {
            add("error", "true".into());
        }
        let end = SystemTime::now();
        SpanData {
            span_context: SpanContext::new(
                TraceId::from_bytes(state.trace_id),
                SpanId::from_bytes(state.span_id),
                TraceFlags::SAMPLED,
                false,
                TraceState::NONE,
            ),
            parent_span_id: state.parent.map_or(SpanId::INVALID, SpanId::from_bytes),
            parent_span_is_remote: state.parent.is_some(),
            span_kind: match state.side {
                Side::Client => SpanKind::Client,
                Side::Server => SpanKind::Server,
            },
            name: d.name.into(),
            start_time: d.start.unwrap_or(end),
            end_time: end,
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: if error {
                Status::error("")
            } else {
                Status::Unset
            },
            instrumentation_scope: InstrumentationScope::builder("mesh-proxy").build(),
        }
    }
}

#[cfg(test)]
mod tests;
