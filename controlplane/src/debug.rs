//! The debug HTTP server (`--debug-addr`, 127.0.0.1:8080 by default):
//! - `/debug/syncz`: JSON list, one entry per connected proxy: node id, pod, namespace, IPs,
//!   cluster id, version, the serving control plane, and per type (`cds`, `eds`, `lds`,
//!   `rds`) the subscribed names, the sent version, nonce and time, the ACKed version, nonce
//!   and time, the last NACK's message and nonce, and counters (see
//!   [`crate::xds::status::TypeStatus`]);
//! - `/debug/configz`: JSON of the objects in force (with their file, and whether they are a
//!   kept last valid version), of every rejected document with its error, and the analyzers'
//!   messages about the objects in force (`analysis`);
//! - `/debug/registryz`: JSON of the Services, their ports' protocols and endpoints (from
//!   Endpoints/EndpointSlice objects and from connected proxies, with the labels subsets
//!   select on);
//! - `/debug/endpointz`: JSON list, one entry per endpoint of every Service port, flat as
//!   istiod's: service hostname, namespace, port name and number, endpoint address, health,
//!   locality, weight, tls mode, labels, and where it came from;
//! - `/debug/config_dump?proxyID=ID`: what the control plane currently computes for a
//!   connected proxy (ID: node id, `POD.NAMESPACE` or pod name), in Envoy's JSON form, with
//!   EDS and RDS for the names that proxy subscribed to;
//! - `/ready`: 200 once the server is up (the config is loaded before it starts).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::ConfigSnapshot;
use crate::registry::{MeshSnapshot, RegistryHandle};
use crate::xds::status::SyncStatus;
use crate::xds::{self, ResourceType};

/// What the debug endpoints read.
#[derive(Clone, Debug)]
pub struct DebugState {
    /// The registry.
    pub registry: RegistryHandle,
    /// Connected proxies.
    pub status: Arc<SyncStatus>,
    /// The config in force.
    pub config: watch::Receiver<Arc<ConfigSnapshot>>,
}

/// One error of `/debug/configz`.
#[derive(Serialize)]
struct ErrorView {
    file: String,
    object: Option<String>,
    field: Option<String>,
    message: String,
}

/// The body of `/debug/configz`; `analysis` holds the analyzers' messages (what Istio writes
/// into objects' `status`), e.g. an AuthorizationPolicy with action CUSTOM, which this mesh
/// enforces by denying (MESH0004).
pub fn configz(snapshot: &ConfigSnapshot, cluster_domain: &str) -> serde_json::Value {
    let objects: Vec<_> = snapshot
        .objects
        .iter()
        .map(|(key, stored)| {
            json!({
                "key": key.to_string(),
                "file": stored.file.display().to_string(),
                "kept_last_valid_version": stored.kept,
                "object": stored.object,
            })
        })
        .collect();
    let errors: Vec<_> = snapshot
        .errors
        .iter()
        .map(|e| ErrorView {
            file: e.file().display().to_string(),
            object: e.object(),
            field: e.field().map(str::to_string),
            message: e.to_string(),
        })
        .collect();
    let analysis: Vec<_> = crate::analyze::analyze(snapshot, cluster_domain)
        .messages
        .into_iter()
        .map(|m| {
            json!({
                "level": m.code.level.to_string(),
                "code": m.code.code,
                "name": m.code.name,
                "object": m.object,
                "file": m.file.display().to_string(),
                "message": m.text,
            })
        })
        .collect();
    json!({
        "root": snapshot.root.display().to_string(),
        "generation": snapshot.generation,
        "objects": objects,
        "errors": errors,
        "analysis": analysis,
    })
}

/// The body of `/debug/registryz`.
pub fn registryz(mesh: &MeshSnapshot) -> serde_json::Value {
    let services: Vec<_> = mesh
        .services
        .iter()
        .map(|(key, svc)| {
            let ports: Vec<_> = svc
                .ports
                .iter()
                .map(|p| {
                    let endpoints: Vec<_> = mesh
                        .endpoints_of(key, p.port)
                        .iter()
                        .map(|e| {
                            json!({
                                "address": std::net::SocketAddr::new(e.ip, e.port).to_string(),
                                "healthy": e.healthy,
                                "locality": e.locality,
                                "source": e.source,
                                "weight": e.weight,
                                "tls_mode": e.tls_mode.as_str(),
                                "labels": e.labels,
                            })
                        })
                        .collect();
                    let dns_endpoints: Vec<_> = mesh
                        .dns_endpoints_of(key, p.port)
                        .iter()
                        .map(|e| {
                            json!({
                                "host": e.host,
                                "port": e.port,
                                "locality": e.locality,
                                "source": e.source,
                                "labels": e.labels,
                            })
                        })
                        .collect();
                    json!({
                        "name": p.name,
                        "port": p.port,
                        "target_port": p.target_port,
                        "protocol": p.protocol,
                        "endpoints": endpoints,
                        "dns_endpoints": dns_endpoints,
                    })
                })
                .collect();
            json!({
                "namespace": svc.namespace,
                "name": svc.name,
                "hostname": svc.hostname,
                "cluster_ip": svc.cluster_ip,
                "addresses": svc.addresses,
                "origin": svc.origin,
                "resolution": svc.resolution,
                "mesh_external": svc.mesh_external,
                "export_to": svc.export_to,
                "selector": svc.selector,
                "ports": ports,
            })
        })
        .collect();
    json!({ "version": mesh.version, "services": services })
}

/// The body of `/debug/endpointz`: every endpoint of every Service port, one entry each,
/// ordered by service, port and address.
pub fn endpointz(mesh: &MeshSnapshot) -> serde_json::Value {
    let mut out = Vec::new();
    for (key, svc) in mesh.services.iter() {
        for p in &svc.ports {
            for e in mesh.endpoints_of(key, p.port).iter() {
                out.push(json!({
                    "service": svc.hostname,
                    "namespace": svc.namespace,
                    "port_name": p.name,
                    "port": p.port,
                    "address": std::net::SocketAddr::new(e.ip, e.port).to_string(),
                    "healthy": e.healthy,
                    "locality": e.locality,
                    "weight": e.weight,
                    "tls_mode": e.tls_mode.as_str(),
                    "labels": e.labels,
                    "source": e.source,
                }));
            }
        }
    }
    out.sort_by(|a, b| {
        let k = |v: &serde_json::Value| {
            (
                v["service"].as_str().unwrap_or_default().to_string(),
                v["port"].as_u64(),
                v["address"].as_str().unwrap_or_default().to_string(),
            )
        };
        k(a).cmp(&k(b))
    });
    serde_json::Value::Array(out)
}

/// Decodes `%XX` escapes (and `+` as space) of a query value.
fn percent_decode(value: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
    }
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match bytes.get(i..i + 3) {
            Some([b'%', h, l]) => hex(*h).zip(hex(*l)).map(|(h, l)| h * 16 + l),
            _ => None,
        };
        match (escaped, bytes[i]) {
            (Some(b), _) => {
                out.push(b);
                i += 3;
                continue;
            }
            (None, b'+') => out.push(b' '),
            (None, b) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| percent_decode(v))
    })
}

/// The body of `/debug/config_dump?proxyID=ID`, or a message when there is no such proxy.
fn config_dump(state: &DebugState, id: Option<String>) -> Response<Full<Bytes>> {
    let Some(id) = id else {
        return reply(
            StatusCode::BAD_REQUEST,
            "text/plain",
            "proxyID is required\n",
        );
    };
    let Some(status) = state.status.find(&id) else {
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            format!("no connected proxy {id}\n"),
        );
    };
    let names = |kind: ResourceType| {
        status
            .types
            .get(kind.short_name())
            .map(|t| t.resource_names.clone())
            .unwrap_or_default()
    };
    let proxy = status.proxy.clone().unwrap_or_default();
    let mesh = state.registry.current();
    match xds::dump(
        &mesh,
        &proxy,
        &names(ResourceType::Endpoint),
        &names(ResourceType::Route),
    ) {
        Ok(dump) => json_reply(&dump),
        Err(e) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            format!("{e}\n"),
        ),
    }
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    resp
}

fn json_reply(value: &impl Serialize) -> Response<Full<Bytes>> {
    match serde_json::to_vec_pretty(value) {
        Ok(body) => reply(StatusCode::OK, "application/json", body),
        Err(e) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            e.to_string(),
        ),
    }
}

/// Answers one request.
pub fn handle(state: &DebugState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n");
    }
    match req.uri().path() {
        "/debug/syncz" => json_reply(&state.status.snapshot()),
        "/debug/configz" => {
            let domain = state.registry.current().cluster_domain.clone();
            let snapshot = state.config.borrow().clone();
            json_reply(&configz(&snapshot, &domain))
        }
        "/debug/registryz" => json_reply(&registryz(&state.registry.current())),
        "/debug/endpointz" => json_reply(&endpointz(&state.registry.current())),
        "/debug/config_dump" => config_dump(state, query_param(req.uri().query(), "proxyID")),
        "/ready" => reply(StatusCode::OK, "text/plain", "ready\n"),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found; try /debug/syncz, /debug/configz, /debug/registryz, \
             /debug/config_dump?proxyID=POD.NAMESPACE, /ready\n",
        ),
    }
}

/// Serves the debug endpoints on `listener` until `shutdown` becomes true.
pub async fn serve(listener: TcpListener, state: DebugState, mut shutdown: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait_for(|down| *down) => return,
        };
        let (stream, _) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "debug server accept failed");
                continue;
            }
        };
        let state = state.clone();
        let mut conn_shutdown = shutdown.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let resp = handle(&state, &req);
                async move { Ok::<_, Infallible>(resp) }
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
