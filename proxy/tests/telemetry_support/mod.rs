//! The scene of the telemetry tests: an OTLP collector on the published protos, the xDS
//! resources of a client and a server sidecar, and Prometheus scrapes.

use super::*;
use common::{curl, Ports};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::trace::v1::Span;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// The test's OTLP collector: every span received, with its resource's service name.
#[derive(Clone, Default)]
pub struct Collector(pub Arc<Mutex<Vec<(String, Span)>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.0.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    any_value::Value::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    spans.push((service.clone(), span));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

pub async fn collector() -> (SocketAddr, Collector) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let c = Collector::default();
    let service = TraceServiceServer::new(c.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    (addr, c)
}

pub fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.clone()),
            other => Some(format!("{other:?}")),
        })
}

/// The client sidecar: `reviews` routes to the server sidecar's inbound listener; `nowhere`
/// to a cluster without endpoints (503 `UH`).
pub fn client_resources(ports: &Ports, server_inbound: SocketAddr) -> Resources {
    let out = ports.outbound.port();
    let rds = out.to_string();
    Resources::default()
        .listener(virtual_outbound(
            vec![],
            Some(chain(
                "PassthroughFilterChain",
                None,
                tcp("PassthroughCluster", None),
            )),
        ))
        .listener(listener(
            &format!("0.0.0.0_{out}"),
            &format!("0.0.0.0:{out}"),
            false,
            false,
            false,
            vec![chain("", None, hcm_rds(&rds))],
            None,
        ))
        .route(route_config(
            &rds,
            vec![
                vhost(
                    "reviews.default.svc.cluster.local:9080",
                    &["reviews", "reviews:9080"],
                    vec![route_to(REVIEWS, None)],
                ),
                vhost(
                    "nowhere",
                    &["nowhere"],
                    vec![route_to(
                        "outbound|80||nowhere.default.svc.cluster.local",
                        None,
                    )],
                ),
            ],
        ))
        .cluster(original_dst_cluster("PassthroughCluster", None))
        .cluster(eds_cluster(REVIEWS, Proto::Http1))
        .endpoints(cla(REVIEWS, &[server_inbound]))
        .cluster(eds_cluster(
            "outbound|80||nowhere.default.svc.cluster.local",
            Proto::Http1,
        ))
        .endpoints(cla("outbound|80||nowhere.default.svc.cluster.local", &[]))
}

/// The server sidecar: its inbound port delivers to the app; it also knows the `reviews`
/// Service's endpoints (itself), as every sidecar of the mesh does.
pub fn server_resources(ports: &Ports, app: SocketAddr) -> Resources {
    let inb = ports.inbound.port();
    Resources::default()
        .listener(virtual_inbound(
            vec![chain(
                &format!("0.0.0.0_{inb}"),
                Some(on_port(inb, &[])),
                hcm_inline(route_config(
                    "inbound|9080||",
                    vec![vhost(
                        "inbound|http|9080",
                        &["*"],
                        vec![route_to("inbound|9080||", None)],
                    )],
                )),
            )],
            None,
        ))
        .cluster(static_cluster("inbound|9080||", &[app], Proto::Http1))
        .cluster(eds_cluster(REVIEWS, Proto::Http1))
        .endpoints(cla(REVIEWS, &[ports.inbound]))
}

pub async fn scrape(addr: SocketAddr) -> Vec<prometheus_parse::Sample> {
    let text = curl(&["-s", &format!("http://{addr}/stats/prometheus")]).await;
    let lines = text.lines().map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines)
        .expect("valid Prometheus text")
        .samples
}

pub fn find<'a>(
    samples: &'a [prometheus_parse::Sample],
    metric: &str,
    labels: &[(&str, &str)],
) -> Option<&'a prometheus_parse::Sample> {
    samples
        .iter()
        .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
}

pub fn counter(s: &prometheus_parse::Sample) -> f64 {
    match s.value {
        prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => v,
        ref other => panic!("{}: not a counter: {other:?}", s.metric),
    }
}
