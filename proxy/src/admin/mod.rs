//! The admin port (127.0.0.1:15000: `/ready`, `/config_dump`, `/stats`, `/quitquitquit`) and
//! the readiness port (15021: `/healthz/ready`), as small hyper servers.
//!
//! They run on the control runtime (one thread, beside the xDS client), never on the data
//! path's threads.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpListener;
use xds_client::{NodeInfo, XdsHandle, XdsStatus};

use crate::shared::Shared;

#[cfg(test)]
mod tests;

/// Errors of the admin servers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A pre-bound listener could not be registered with the runtime.
    #[error("cannot use the {name} listener: {source}")]
    Listener {
        /// Which port (`admin`, `readiness`).
        name: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Which server a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    /// The admin port.
    Admin,
    /// The readiness port.
    Readiness,
}

impl Port {
    fn name(self) -> &'static str {
        match self {
            Port::Admin => "admin",
            Port::Readiness => "readiness",
        }
    }
}

/// What the admin handlers read.
#[derive(Debug)]
pub struct AdminState {
    /// Shared sidecar state.
    pub shared: Arc<Shared>,
    /// The xDS client's handle (status).
    pub xds: XdsHandle,
    /// This proxy's node identity.
    pub node: NodeInfo,
}

/// Envoy's server state, as `/ready` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    /// No configuration received yet.
    PreInitializing,
    /// Some configuration received, not all of it.
    Initializing,
    /// Serving with a complete configuration.
    Live,
    /// Shutting down.
    Draining,
}

impl ServerState {
    /// Envoy's name for the state.
    pub fn as_str(self) -> &'static str {
        match self {
            ServerState::PreInitializing => "PRE_INITIALIZING",
            ServerState::Initializing => "INITIALIZING",
            ServerState::Live => "LIVE",
            ServerState::Draining => "DRAINING",
        }
    }
}

impl AdminState {
    /// The current server state.
    pub fn state(&self) -> ServerState {
        let snapshot = self.shared.snapshot.load();
        if self.shared.lifecycle.is_draining() {
            ServerState::Draining
        } else if snapshot.is_ready() && self.shared.identity.is_ready() {
            ServerState::Live
        } else if snapshot.is_ready() {
            // Configured, but the workload certificate is missing or expired.
            ServerState::Initializing
        } else if snapshot.config().versions.is_empty() {
            ServerState::PreInitializing
        } else {
            ServerState::Initializing
        }
    }
}

#[derive(Serialize)]
struct ConfigDump<'a> {
    node: &'a NodeInfo,
    state: &'static str,
    xds_status: XdsStatus,
    identity: crate::identity::IdentityDump,
    config: &'a xds_client::model::ProxyConfig,
}

/// Serve `port`'s endpoints on `listener` until the runtime stops.
pub async fn serve(
    listener: std::net::TcpListener,
    port: Port,
    state: Arc<AdminState>,
) -> Result<(), Error> {
    let listener = listener
        .set_nonblocking(true)
        .and_then(|()| TcpListener::from_std(listener))
        .map_err(|source| Error::Listener {
            name: port.name(),
            source,
        })?;
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, port = port.name(), "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, port, req)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "admin connection error");
            }
        });
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=UTF-8"),
    );
    resp
}

/// Answer one admin or readiness request.
pub fn handle(state: &AdminState, port: Port, req: Request<Incoming>) -> Response<Full<Bytes>> {
    route(state, port, req.method(), req.uri().path())
}

/// The response for `method path` on `port` (the routing, separate from hyper for tests).
pub fn route(state: &AdminState, port: Port, method: &Method, path: &str) -> Response<Full<Bytes>> {
    match (port, path) {
        (Port::Readiness, "/healthz/ready") => {
            if state.state() == ServerState::Live {
                text(StatusCode::OK, "")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, state.state().as_str())
            }
        }
        (Port::Readiness, _) => text(StatusCode::NOT_FOUND, "not found\n"),
        (Port::Admin, "/ready") => {
            let s = state.state();
            let status = if s == ServerState::Live {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            text(status, format!("{}\n", s.as_str()))
        }
        (Port::Admin, "/config_dump") => {
            let snapshot = state.shared.snapshot.load();
            let dump = ConfigDump {
                node: &state.node,
                state: state.state().as_str(),
                xds_status: state.xds.status(),
                identity: state.shared.identity.dump(),
                config: snapshot.config(),
            };
            match serde_json::to_vec_pretty(&dump) {
                Ok(body) => {
                    let mut resp = text(StatusCode::OK, body);
                    resp.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("application/json"),
                    );
                    resp
                }
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            }
        }
        (Port::Admin, "/stats") => {
            let dropped = state.shared.access_log.dropped();
            let xds = state.xds.status();
            text(
                StatusCode::OK,
                state.shared.stats.render(&[
                    ("access_log.dropped", dropped),
                    ("xds.connected", u64::from(xds.connected)),
                    ("xds.connects", xds.connects),
                    ("xds.failed_attempts", xds.failed_attempts),
                    ("xds.acks", xds.acks),
                    ("xds.nacks", xds.nacks),
                ]),
            )
        }
        (Port::Admin, "/quitquitquit") => {
            if method != Method::POST {
                return text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n");
            }
            tracing::info!("/quitquitquit: draining and exiting");
            state.shared.lifecycle.request_quit();
            text(StatusCode::OK, "OK\n")
        }
        (Port::Admin, "/") => text(
            StatusCode::OK,
            "admin commands are:\n  /config_dump\n  /quitquitquit (POST)\n  /ready\n  /stats\n",
        ),
        (Port::Admin, _) => text(StatusCode::NOT_FOUND, "invalid path\n"),
    }
}
