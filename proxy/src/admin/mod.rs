//! The admin port (127.0.0.1:15000), the readiness port (15021: `/healthz/ready`), the
//! Prometheus port (15090: `/stats/prometheus`) and the merged stats and health port (15020:
//! both), as small hyper servers.
//!
//! Admin endpoints: `/ready`, `/config_dump` (`?resource=` one section), `/clusters`,
//! `/listeners` (`?format=json`), `/stats` (text, `?format=prometheus|json`),
//! `/stats/prometheus`, `/logging` (`?level=`, `?paths=MOD:LEVEL,...`, `?MOD=LEVEL`; POST to
//! change), `/memory`, `/drain_listeners` (POST, `?graceful`, `?inboundonly`),
//! `/quitquitquit` (POST). A bad parameter is answered 400 with the reason.
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

mod dump;
pub mod pages;

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
    /// The Prometheus port (15090).
    Stats,
    /// The merged stats and health port (15020).
    Status,
}

impl Port {
    fn name(self) -> &'static str {
        match self {
            Port::Admin => "admin",
            Port::Readiness => "readiness",
            Port::Stats => "stats",
            Port::Status => "status",
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
    /// The reloadable log filter behind `/logging` (`None`: not reloadable here).
    pub logging: Option<Arc<pages::LogControl>>,
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
    /// Envoy-like sections (bootstrap, listeners, routes, clusters, endpoints, secrets), each
    /// with its version.
    configs: Vec<serde_json::Value>,
    /// The addresses DNS clusters resolved to, by cluster name.
    dns_endpoints: std::collections::BTreeMap<String, Vec<std::net::SocketAddr>>,
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
    let target = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_string(), |p| p.as_str().to_string());
    route(state, port, req.method(), &target)
}

fn json_response(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut resp = text(status, body);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

fn prometheus_response(state: &AdminState) -> Response<Full<Bytes>> {
    let mut resp = text(StatusCode::OK, pages::prometheus(state));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    resp
}

fn bad(e: pages::BadRequest) -> Response<Full<Bytes>> {
    text(StatusCode::BAD_REQUEST, e.0)
}

fn readiness(state: &AdminState) -> Response<Full<Bytes>> {
    if state.state() == ServerState::Live {
        text(StatusCode::OK, "")
    } else {
        text(StatusCode::SERVICE_UNAVAILABLE, state.state().as_str())
    }
}

const HELP: &str = "admin commands are:
  /clusters: upstream clusters and their endpoints (?format=json)
  /config_dump: the applied configuration (?resource=dynamic_listeners|dynamic_route_configs|dynamic_active_clusters|dynamic_endpoint_configs|dynamic_active_secrets)
  /drain_listeners (POST): stop accepting connections (?graceful: after the drain duration; ?inboundonly; ?graceful&skip_exit: never)
  /listeners: the listeners (?format=json)
  /logging: log levels (POST ?level=LEVEL, ?paths=MODULE:LEVEL,..., ?MODULE=LEVEL)
  /memory: allocator statistics
  /quitquitquit (POST): drain and exit
  /ready: server state
  /stats: counters (?format=prometheus|json)
  /stats/prometheus: every metric in Prometheus text format
";

/// The response for `method target` on `port` (the routing, separate from hyper for
/// tests); `target` is the path with its query.
pub fn route(
    state: &AdminState,
    port: Port,
    method: &Method,
    target: &str,
) -> Response<Full<Bytes>> {
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let query = pages::parse_query(query);
    match (port, path) {
        (Port::Readiness | Port::Status, "/healthz/ready") => readiness(state),
        (Port::Stats | Port::Status | Port::Admin, "/stats/prometheus") => {
            match pages::only(&query, &[]) {
                Ok(()) => prometheus_response(state),
                Err(e) => bad(e),
            }
        }
        (Port::Readiness | Port::Stats | Port::Status, _) => {
            text(StatusCode::NOT_FOUND, "not found\n")
        }
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
            if let Err(e) = pages::only(&query, &["resource", "include_eds"]) {
                return bad(e);
            }
            match config_dump(state, pages::param(&query, "resource")) {
                Ok(body) => json_response(StatusCode::OK, body),
                Err(e) => bad(e),
            }
        }
        (Port::Admin, "/stats") => {
            if let Err(e) = pages::only(&query, &["format"]) {
                return bad(e);
            }
            match pages::param(&query, "format") {
                Some("prometheus") => prometheus_response(state),
                None | Some("text") | Some("json") => {
                    let dropped = state.shared.access_log.dropped();
                    let xds = state.xds.status();
                    let mut extra = vec![
                        ("access_log.dropped", dropped),
                        ("xds.connected", u64::from(xds.connected)),
                        ("xds.connects", xds.connects),
                        ("xds.failed_attempts", xds.failed_attempts),
                        ("xds.acks", xds.acks),
                        ("xds.nacks", xds.nacks),
                    ];
                    if let Some(t) = &state.shared.tracer {
                        use std::sync::atomic::Ordering::Relaxed;
                        extra.push(("tracing.spans_exported", t.exported.load(Relaxed)));
                        extra.push(("tracing.spans_dropped", t.dropped.load(Relaxed)));
                    }
                    let mut lines = state.shared.stats.render(&extra);
                    for (name, c) in state.shared.metrics.envoy.clusters() {
                        for (stat, v) in [
                            ("upstream_rq_total", c.upstream_rq_total.get()),
                            ("upstream_rq_retry", c.upstream_rq_retry.get()),
                            ("upstream_rq_timeout", c.upstream_rq_timeout.get()),
                            (
                                "upstream_rq_pending_overflow",
                                c.upstream_rq_pending_overflow.get(),
                            ),
                            ("upstream_cx_total", c.upstream_cx_total.get()),
                        ] {
                            lines.push_str(&format!("cluster.{name}.{stat}: {v}\n"));
                        }
                    }
                    if pages::param(&query, "format") == Some("json") {
                        let stats: Vec<serde_json::Value> = lines
                            .lines()
                            .filter_map(|l| l.rsplit_once(": "))
                            .map(|(k, v)| {
                                serde_json::json!({"name": k, "value": v.parse::<u64>().unwrap_or(0)})
                            })
                            .collect();
                        json_response(
                            StatusCode::OK,
                            serde_json::json!({ "stats": stats }).to_string(),
                        )
                    } else {
                        text(StatusCode::OK, lines)
                    }
                }
                Some(other) => bad(pages::BadRequest(format!(
                    "invalid format `{other}`: expected text, json or prometheus\n"
                ))),
            }
        }
        (Port::Admin, "/listeners") => listing(&query, |json| pages::listeners(state, json)),
        (Port::Admin, "/clusters") => listing(&query, |json| pages::clusters(state, json)),
        (Port::Admin, "/memory") => match pages::only(&query, &[]) {
            Ok(()) => json_response(StatusCode::OK, pages::memory_page().to_string()),
            Err(e) => bad(e),
        },
        (Port::Admin, "/logging") => {
            let Some(control) = &state.logging else {
                return text(
                    StatusCode::NOT_FOUND,
                    "log levels are not reloadable here\n",
                );
            };
            if query.is_empty() {
                return text(
                    StatusCode::OK,
                    format!(
                        "active filter: {}\nlevels: {}\n",
                        control.current(),
                        pages::LEVELS.join(", ")
                    ),
                );
            }
            if method != Method::POST {
                return text(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "use POST to change log levels\n",
                );
            }
            match control.apply(&query) {
                Ok(filter) => {
                    tracing::info!(%filter, "log levels changed");
                    text(StatusCode::OK, format!("active filter: {filter}\n"))
                }
                Err(e) => bad(e),
            }
        }
        (Port::Admin, "/drain_listeners") => {
            if method != Method::POST {
                return text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n");
            }
            if let Err(e) = pages::only(&query, &["graceful", "inboundonly", "skip_exit"]) {
                return bad(e);
            }
            let request = crate::shared::DrainRequest {
                graceful: pages::param(&query, "graceful").is_some(),
                inbound_only: pages::param(&query, "inboundonly").is_some(),
                skip_exit: pages::param(&query, "skip_exit").is_some(),
            };
            if request.skip_exit && !request.graceful {
                return bad(pages::BadRequest(
                    "skip_exit requires graceful: use /drain_listeners?graceful&skip_exit\n".into(),
                ));
            }
            tracing::info!(?request, "/drain_listeners");
            state.shared.lifecycle.drain_listeners(request);
            text(StatusCode::OK, "OK\n")
        }
        (Port::Admin, "/quitquitquit") => {
            if method != Method::POST {
                return text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n");
            }
            tracing::info!("/quitquitquit: draining and exiting");
            state.shared.lifecycle.request_quit();
            text(StatusCode::OK, "OK\n")
        }
        (Port::Admin, "/") => text(StatusCode::OK, HELP),
        (Port::Admin, _) => text(StatusCode::NOT_FOUND, "invalid path\n"),
    }
}

fn listing(
    query: &pages::Query,
    page: impl FnOnce(bool) -> (String, bool),
) -> Response<Full<Bytes>> {
    if let Err(e) = pages::only(query, &["format"]) {
        return bad(e);
    }
    match pages::wants_json(query) {
        Ok(json) => match page(json) {
            (body, true) => json_response(StatusCode::OK, body),
            (body, false) => text(StatusCode::OK, body),
        },
        Err(e) => bad(e),
    }
}

fn config_dump(state: &AdminState, resource: Option<&str>) -> Result<Vec<u8>, pages::BadRequest> {
    let snapshot = state.shared.snapshot.load();
    let sections = dump::sections(state, snapshot.config());
    let value = match resource {
        None => {
            let dump = ConfigDump {
                node: &state.node,
                state: state.state().as_str(),
                xds_status: state.xds.status(),
                identity: state.shared.identity.dump(),
                config: snapshot.config(),
                configs: sections,
                dns_endpoints: state.shared.snapshot.dns().resolved(),
            };
            serde_json::to_value(&dump).map_err(|e| pages::BadRequest(e.to_string()))?
        }
        Some(name) => dump::resource(sections, name)?,
    };
    serde_json::to_vec_pretty(&value).map_err(|e| pages::BadRequest(e.to_string()))
}
