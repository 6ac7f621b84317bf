//! The gRPC port: `mesh.echo.v1.EchoService` and `grpc.health.v1.Health` over h2c.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt as _};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tonic::codegen::Service as _;
use tonic::metadata::MetadataMap;
use tonic::transport::server::TcpConnectInfo;
use tonic::{Code, Request, Response, Status, Streaming};

use super::control::Controls;
use super::proto::echo::echo_service_server::{EchoService, EchoServiceServer};
use super::proto::echo::{EchoRequest, EchoResponse, Header, StreamEchoRequest};
use super::proto::health::health_check_response::ServingStatus;
use super::proto::health::health_server::{Health, HealthServer};
use super::proto::health::{HealthCheckRequest, HealthCheckResponse};
use super::{ConnInfo, State};

/// The request's `:authority` and path, which tonic does not hand to services; put in the
/// request extensions by [`serve_connection`].
#[derive(Debug, Clone)]
struct Target {
    authority: String,
    method: String,
}

/// The gRPC services of one server process.
pub(crate) fn routes(state: Arc<State>) -> tonic::service::Routes {
    tonic::service::Routes::new(EchoServiceServer::new(Echo { state }))
        .add_service(HealthServer::new(AlwaysServing))
}

/// Serves one h2c connection with `routes` until it closes.
pub(crate) async fn serve_connection(
    routes: tonic::service::Routes,
    stream: TcpStream,
    conn: ConnInfo,
) {
    let service =
        hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
            let target = Target {
                authority: req
                    .uri()
                    .authority()
                    .map(|a| a.to_string())
                    .unwrap_or_default(),
                method: req.uri().path().to_string(),
            };
            req.extensions_mut().insert(target);
            req.extensions_mut().insert(TcpConnectInfo {
                local_addr: Some(conn.local),
                remote_addr: Some(conn.peer),
            });
            // `Routes` is always ready (it is an axum router), so `call` needs no `poll_ready`.
            routes.clone().call(req)
        });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).http2_only();
    if let Err(e) = builder
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        tracing::debug!("grpc connection from {} ended: {e}", conn.peer);
    }
}

/// What one call saw, and its controls.
struct Call {
    template: EchoResponse,
    controls: Controls,
    start: Instant,
}

type ReplyStream = Pin<Box<dyn Stream<Item = Result<EchoResponse, Status>> + Send>>;

/// The `EchoService` implementation.
struct Echo {
    state: Arc<State>,
}

impl Echo {
    /// Reads the call's information and controls, waits for the delay, and fails the call if
    /// the controls say so.
    async fn begin<T>(&self, req: &Request<T>) -> Result<Call, Status> {
        let start = Instant::now();
        let id = &self.state.identity;
        let target = req.extensions().get::<Target>().cloned();
        let (authority, method) = target.map_or_else(Default::default, |t| (t.authority, t.method));
        let local = req.local_addr();
        let template = EchoResponse {
            message: String::new(),
            name: id.name.clone(),
            version: id.version.clone(),
            namespace: id.namespace.clone().unwrap_or_default(),
            hostname: id.hostname.clone(),
            protocol: "HTTP/2".to_string(),
            method,
            authority,
            metadata: metadata_list(req.metadata()),
            peer: req.remote_addr().map(|a| a.to_string()).unwrap_or_default(),
            local: local.map(|a| a.to_string()).unwrap_or_default(),
            port: local.map_or(0, |a| u32::from(a.port())),
            index: 0,
            padding: String::new(),
        };
        let controls = Controls::parse(req.metadata().as_ref(), None).map_err(|e| {
            log_call(&template, Code::InvalidArgument, start);
            Status::invalid_argument(e.to_string())
        })?;
        if let Some(delay) = controls.delay {
            tokio::time::sleep(delay).await;
        }
        let outcome = controls.count_call(&self.state.counters, &template.method);
        let code = Code::from_i32(controls.grpc_code(outcome));
        if code != Code::Ok {
            log_call(&template, code, start);
            let call = outcome.map_or_else(String::new, |o| format!(" (call {})", o.call));
            let mut status = Status::new(code, format!("x-echo controls asked for {code:?}{call}"));
            add_metadata(status.metadata_mut(), &controls);
            return Err(status);
        }
        Ok(Call {
            template,
            controls,
            start,
        })
    }
}

impl Call {
    fn reply(&self, message: String, index: u32) -> EchoResponse {
        EchoResponse {
            message,
            index,
            padding: "x".repeat(self.controls.size.unwrap_or(0)),
            ..self.template.clone()
        }
    }

    fn respond<T>(&self, body: T) -> Response<T> {
        log_call(&self.template, Code::Ok, self.start);
        let mut response = Response::new(body);
        add_metadata(response.metadata_mut(), &self.controls);
        response
    }
}

fn add_metadata(metadata: &mut MetadataMap, controls: &Controls) {
    let mut headers = std::mem::take(metadata).into_headers();
    for (name, value) in &controls.response_headers {
        headers.append(name.clone(), value.clone());
    }
    *metadata = MetadataMap::from_headers(headers);
}

fn metadata_list(metadata: &MetadataMap) -> Vec<Header> {
    metadata
        .as_ref()
        .iter()
        .map(|(name, value)| Header {
            name: name.as_str().to_string(),
            value: String::from_utf8_lossy(value.as_bytes()).into_owned(),
        })
        .collect()
}

fn log_call(template: &EchoResponse, code: Code, start: Instant) {
    tracing::info!(
        "gRPC {} authority={} {code:?} peer={} local={} {:.1}ms",
        template.method,
        template.authority,
        template.peer,
        template.local,
        start.elapsed().as_secs_f64() * 1000.0
    );
}

#[tonic::async_trait]
impl EchoService for Echo {
    async fn echo(&self, req: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        let call = self.begin(&req).await?;
        let reply = call.reply(req.into_inner().message, 0);
        Ok(call.respond(reply))
    }

    type StreamEchoStream = ReplyStream;

    async fn stream_echo(
        &self,
        req: Request<StreamEchoRequest>,
    ) -> Result<Response<Self::StreamEchoStream>, Status> {
        let call = self.begin(&req).await?;
        let StreamEchoRequest {
            message,
            count,
            interval_ms,
        } = req.into_inner();
        let interval = Duration::from_millis(u64::from(interval_ms));
        let replies: Vec<EchoResponse> = (0..count.max(1))
            .map(|i| call.reply(message.clone(), i))
            .collect();
        let stream = futures::stream::iter(replies.into_iter().enumerate()).then(
            move |(i, reply)| async move {
                if i > 0 && !interval.is_zero() {
                    tokio::time::sleep(interval).await;
                }
                Ok(reply)
            },
        );
        Ok(call.respond(Box::pin(stream) as ReplyStream))
    }

    type ChatStream = ReplyStream;

    async fn chat(
        &self,
        req: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<Self::ChatStream>, Status> {
        let call = Arc::new(self.begin(&req).await?);
        let replies = {
            let call = call.clone();
            req.into_inner().enumerate().map(move |(i, msg)| {
                let index = u32::try_from(i).unwrap_or(u32::MAX);
                msg.map(|m| call.reply(m.message, index))
            })
        };
        Ok(call.respond(Box::pin(replies) as ReplyStream))
    }
}

/// A health service that reports every service as `SERVING` while the process runs.
struct AlwaysServing;

#[tonic::async_trait]
impl Health for AlwaysServing {
    async fn check(
        &self,
        _req: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        Ok(Response::new(HealthCheckResponse {
            status: ServingStatus::Serving.into(),
        }))
    }

    type WatchStream =
        Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send + 'static>>;

    async fn watch(
        &self,
        _req: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let first = futures::stream::once(async {
            Ok(HealthCheckResponse {
                status: ServingStatus::Serving.into(),
            })
        });
        // The status never changes: the stream stays open without further messages.
        Ok(Response::new(Box::pin(
            first.chain(futures::stream::pending()),
        )))
    }
}
