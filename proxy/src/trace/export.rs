//! The span exporter: a task on the control runtime that takes finished spans from the
//! tracer's bounded queue, batches them (up to [`BATCH`] spans or [`BATCH_DELAY`]) and sends
//! them with `opentelemetry-otlp`'s gRPC exporter. A batch that fails (collector down, slow
//! or refusing) is dropped and counted; the next batch tries again on a fresh attempt of the
//! same lazily connected channel.

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

/// Export what arrives on `rx` to `endpoint` until the queue closes; `service_name` is the
/// `service.name` resource attribute. Counts exported and dropped spans.
pub async fn run(
    mut rx: mpsc::Receiver<SpanData>,
    endpoint: String,
    service_name: String,
    exported: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
) -> Result<(), ExportError> {
    let mut exporter = SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.clone())
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| ExportError {
            endpoint: endpoint.clone(),
            reason: e.to_string(),
        })?;
    exporter.set_resource(
        &Resource::builder_empty()
            .with_attributes([KeyValue::new("service.name", service_name)])
            .build(),
    );
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let Some(first) = rx.recv().await else {
            return Ok(());
        };
        batch.push(first);
        let deadline = tokio::time::Instant::now() + BATCH_DELAY;
        while batch.len() < BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(span)) => batch.push(span),
                Ok(None) | Err(_) => break,
            }
        }
        let n = batch.len() as u64;
        let spans = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
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
