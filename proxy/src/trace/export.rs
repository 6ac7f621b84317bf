//! The span exporter: a task on the control runtime that takes finished spans from the
//! tracer's bounded queue, batches them (up to [`BATCH`] spans or [`BATCH_DELAY`]) and sends
//! them with `opentelemetry-otlp`'s gRPC exporter to each span's collector (the proxy's
//! `--tracing-otlp-endpoint`, or the one a listener's tracing names). A batch that fails (collector down, slow
//! or refusing) is dropped and counted; the next batch tries again on a fresh attempt of the
//! same lazily connected channel.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::trace::{SpanData, SpanExporter as _};
use opentelemetry_sdk::Resource;
use tokio::sync::mpsc;

/// Most spans per export call.
pub const BATCH: usize = 512;
/// Longest a finished span waits for its batch.
pub const BATCH_DELAY: Duration = Duration::from_millis(500);
/// Longest one export call may take.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(3);

/// Errors of the exporter setup.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the OTLP exporter for {endpoint}: {reason}")]
pub struct ExportError {
    /// The endpoint.
    pub endpoint: String,
    /// Why.
    pub reason: String,
}

/// Export what arrives on `rx` (each span with its collector) until the queue closes, one
/// lazily built exporter per collector; `service_name` is the `service.name` resource
/// attribute. Counts exported and dropped spans.
pub async fn run(
    mut rx: mpsc::Receiver<(String, SpanData)>,
    service_name: String,
    exported: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
) {
    let mut exporters: HashMap<String, SpanExporter> = HashMap::new();
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let Some(first) = rx.recv().await else {
            return;
        };
        batch.push(first);
        let deadline = tokio::time::Instant::now() + BATCH_DELAY;
        while batch.len() < BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(span)) => batch.push(span),
                Ok(None) | Err(_) => break,
            }
        }
        let mut by_endpoint: HashMap<String, Vec<SpanData>> = HashMap::new();
        for (endpoint, span) in batch.drain(..) {
            by_endpoint.entry(endpoint).or_default().push(span);
        }
        for (endpoint, spans) in by_endpoint {
            let n = spans.len() as u64;
            if !exporters.contains_key(&endpoint) {
                match build(&endpoint, &service_name) {
                    Ok(e) => {
                        exporters.insert(endpoint.clone(), e);
                    }
                    Err(e) => {
                        dropped.fetch_add(n, Ordering::Relaxed);
                        tracing::warn!(error = %e, "span exporter");
                        continue;
                    }
                }
            }
            let Some(exporter) = exporters.get_mut(&endpoint) else {
                continue;
            };
            match tokio::time::timeout(EXPORT_TIMEOUT * 2, exporter.export(spans)).await {
                Ok(Ok(())) => {
                    exported.fetch_add(n, Ordering::Relaxed);
                }
                Ok(Err(e)) => {
                    dropped.fetch_add(n, Ordering::Relaxed);
                    tracing::debug!(error = %e, spans = n, %endpoint, "span export failed");
                }
                Err(_) => {
                    dropped.fetch_add(n, Ordering::Relaxed);
                    tracing::debug!(spans = n, %endpoint, "span export timed out");
                }
            }
        }
    }
}

/// An exporter to `endpoint`.
pub fn build(endpoint: &str, service_name: &str) -> Result<SpanExporter, ExportError> {
    let mut exporter = SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.to_string())
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| ExportError {
            endpoint: endpoint.to_string(),
            reason: e.to_string(),
        })?;
    exporter.set_resource(
        &Resource::builder_empty()
            .with_attributes([KeyValue::new("service.name", service_name.to_string())])
            .build(),
    );
    Ok(exporter)
}
