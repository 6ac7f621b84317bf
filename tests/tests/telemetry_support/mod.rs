//! The scene of the end-to-end telemetry test: an OTLP collector on the published protos in
//! a pod's reach, Prometheus scrapes of a pod's stats port, and the pods of the test.
#![allow(dead_code)]

use super::*;
use anyhow::{bail, ensure, Context, Result};
use common::{reviews_echo, Mesh, NS};
use mesh_tests::harness::{http_get, Pod, ProxyOptions};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prometheus_parse::{Sample, Scrape, Value};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The test's OTLP collector: every span received, with its resource's `service.name`.
#[derive(Clone, Default)]
pub struct Collector(pub Arc<Mutex<Vec<(String, Span)>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| string(kv.value.as_ref()?.value.as_ref()?))
                .unwrap_or_default();
            for span in rs.scope_spans.into_iter().flat_map(|ss| ss.spans) {
                spans.push((service.clone(), span));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Collector {
    pub fn spans(&self) -> Vec<(String, Span)> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

pub fn string(v: &any_value::Value) -> Option<String> {
    match v {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        any_value::Value::BoolValue(b) => Some(b.to_string()),
        _ => None,
    }
}

pub fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| string(kv.value.as_ref()?.value.as_ref()?))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The collector's Service name, in the mesh's root namespace [`ROOT`].
pub const COLLECTOR: &str = "otel-collector";
/// The mesh's root namespace, where istiod's mesh config lives.
pub const ROOT: &str = "istio-system";

/// Makes the collector at `otlp` the Service `COLLECTOR.ROOT` and the mesh config's
/// OpenTelemetry provider `otel` (ConfigMap `istio`, key `mesh`, as istiod reads it).
pub fn collector_as_provider(mesh: &Mesh, otlp: SocketAddr) -> Result<()> {
    mesh.topo.add_namespace(ROOT)?;
    mesh.topo.add_service(
        &mesh_tests::harness::ServiceSpec::new(COLLECTOR, ROOT).port(
            "grpc",
            otlp.port(),
            otlp.port(),
        ),
    )?;
    let SocketAddr::V4(host) = otlp else {
        bail!("the collector listens on IPv4");
    };
    mesh.topo
        .add_endpoints(COLLECTOR, ROOT, &[*host.ip()], &[("grpc", otlp.port())])?;
    let port = otlp.port();
    mesh.topo.write_config(
        "mesh-config.yaml",
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: istio, namespace: {ROOT}}}\ndata:\n  mesh: |\n    extensionProviders:\n    - name: otel\n      opentelemetry:\n        service: {COLLECTOR}.{ROOT}.svc.cluster.local\n        port: {port}\n"
        ),
    )?;
    Ok(())
}

/// Starts the collector on the host's bridge address (the sidecars run as UID 1337, so their
/// own connections are not captured) on a runtime of its own.
pub fn start_collector(mesh: &Mesh) -> Result<(tokio::runtime::Runtime, SocketAddr, Collector)> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let collector = Collector::default();
    let listener = rt.block_on(tokio::net::TcpListener::bind(SocketAddr::from((
        mesh.topo.host_ip(),
        0,
    ))))?;
    let addr = listener.local_addr()?;
    let service = TraceServiceServer::new(collector.clone());
    rt.spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    Ok((rt, addr, collector))
}

/// The sidecar's Prometheus text, scraped from the host, parsed.
pub fn scrape(pod: &Pod) -> Result<Vec<Sample>> {
    let addr = SocketAddr::from((pod.ip(), STATS_PORT));
    let r = http_get(addr, "/stats/prometheus", Duration::from_secs(5))?;
    ensure!(
        r.status == 200,
        "{}: /stats/prometheus answered {}",
        pod.name(),
        r.status
    );
    let scrape = Scrape::parse(r.body.lines().map(|l| Ok(l.to_owned())))
        .with_context(|| format!("{}: not Prometheus text", pod.name()))?;
    Ok(scrape.samples)
}

/// The only sample of `metric` whose labels include `labels`.
pub fn sample<'a>(
    samples: &'a [Sample],
    metric: &str,
    labels: &[(&str, &str)],
) -> Result<&'a Sample> {
    let found: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .collect();
    match found.as_slice() {
        [one] => Ok(one),
        [] => bail!("no {metric} with {labels:?}"),
        many => bail!(
            "{} series of {metric} with {labels:?}: {many:?}",
            many.len()
        ),
    }
}

pub fn value(s: &Sample) -> Result<f64> {
    match &s.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Ok(*v),
        Value::Histogram(buckets) => Ok(buckets.last().map_or(0.0, |b| b.count)),
        other => bail!("{}: unexpected value {other:?}", s.metric),
    }
}

/// Every `(label, value)` of `want` is on `s`.
pub fn labels(s: &Sample, want: &[(&str, &str)]) -> Result<()> {
    for (k, v) in want {
        ensure!(
            s.labels.get(k) == Some(*v),
            "{}: label {k} is {:?}, want {v:?} (all: {:?})",
            s.metric,
            s.labels.get(k),
            s.labels
        );
    }
    Ok(())
}

/// The labels of the `client` workload as source and `reviews-v1` as destination of
/// `reviews` (the sidecars talk mutual TLS: the principals are checked per reporter).
pub fn client_to_reviews() -> Vec<(&'static str, &'static str)> {
    vec![
        ("source_workload", "client"),
        ("source_workload_namespace", NS),
        ("source_app", "client"),
        ("source_version", "unknown"),
        ("source_canonical_service", "client"),
        ("source_canonical_revision", "latest"),
        ("source_cluster", "Kubernetes"),
        ("destination_workload", "reviews-v1"),
        ("destination_workload_namespace", NS),
        ("destination_app", "reviews"),
        ("destination_version", "v1"),
        ("destination_canonical_service", "reviews"),
        ("destination_canonical_revision", "v1"),
        ("destination_cluster", "Kubernetes"),
        ("destination_service", REVIEWS),
        ("destination_service_name", "reviews"),
        ("destination_service_namespace", NS),
    ]
}

pub fn reviews_pod(mesh: &Mesh, opts: &ProxyOptions) -> Result<Pod> {
    let pod = mesh.topo.injected_pod_with(
        "reviews-v1",
        NS,
        &[("app", "reviews"), ("version", "v1")],
        opts,
    )?;
    let echo = pod.spawn_echo(&reviews_echo("v1"))?;
    echo.wait_for_log("\"event\":\"listening\"", Duration::from_secs(10))?;
    Ok(pod)
}
