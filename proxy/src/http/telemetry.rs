//! The HTTP proxy's telemetry: the peer metadata exchange (Istio's `x-envoy-peer-metadata`
//! headers), trace context and spans, Istio's standard metrics, the per-cluster Envoy
//! counters and the access-log fields only telemetry knows. Called from the phases of
//! [`super::MeshHttp`] at four points: the request's headers, the upstream request, the
//! upstream response and the end of the request.

use std::sync::Arc;
use std::time::Instant;

use http::HeaderName;
use pingora_http::{RequestHeader, ResponseHeader};

use super::ctx::RequestCtx;
use crate::accesslog::{AccessLogEntry, ResponseFlag};
use crate::listener::conn::{ConnContext, Role};
use crate::metrics::istio::{HttpKey, Parties, RequestProtocol};
use crate::metrics::peer::{METADATA_HEADER, METADATA_ID_HEADER};
use crate::metrics::{ClusterStats, PeerInfo, Reporter, ServiceInfo};
use crate::shared::Shared;
use crate::trace::{Finished, Side, SpanState};

const METADATA: HeaderName = HeaderName::from_static(METADATA_HEADER);
const METADATA_ID: HeaderName = HeaderName::from_static(METADATA_ID_HEADER);
/// Envoy's router header: milliseconds the upstream took to answer.
const SERVICE_TIME: HeaderName = HeaderName::from_static("x-envoy-upstream-service-time");

/// The telemetry state of one request.
#[derive(Debug, Default)]
pub struct RequestTelemetry {
    /// The other sidecar's workload, from its metadata headers.
    pub peer: Option<Arc<PeerInfo>>,
    /// This proxy's span.
    pub span: Option<SpanState>,
    /// When the (last) upstream attempt was sent.
    pub upstream_started: Option<Instant>,
    /// Milliseconds from sending upstream to the response headers.
    pub upstream_service_time: Option<u64>,
    /// `grpc-status` of the response (headers or trailers).
    pub grpc_status: Option<u16>,
    /// The cluster's counters.
    pub cluster: Option<Arc<ClusterStats>>,
    /// Whether the request is gRPC.
    pub grpc: bool,
    /// Outbound over mutual TLS: the server's verified SPIFFE ID and this workload's own
    /// (the principals Istio's client sidecar reports from the upstream connection).
    pub upstream_principals: Option<(Arc<str>, Option<Arc<str>>)>,
    /// The local address of the (last) upstream connection (`upstream_local_address`).
    pub upstream_local: Option<std::net::SocketAddr>,
}

fn side(conn: &ConnContext) -> Side {
    match conn.role {
        Role::Outbound => Side::Client,
        Role::Inbound => Side::Server,
    }
}

/// The request's headers arrived: take (and remove) the peer's metadata headers; start the
/// span.
pub fn on_request(
    shared: &Shared,
    conn: &ConnContext,
    req: &mut RequestHeader,
    t: &mut RequestTelemetry,
) {
    t.grpc = super::reply::is_grpc(req);
    let header = req.headers.get(&METADATA).map(|v| v.as_bytes().to_vec());
    if req.headers.contains_key(&METADATA) || req.headers.contains_key(&METADATA_ID) {
        req.remove_header(&METADATA);
        req.remove_header(&METADATA_ID);
    }
    // Only the server's sidecar trusts a peer's metadata on the request; what an application
    // sends is dropped above and never counted.
    // Without its headers (a caller without a sidecar), the caller is the workload the
    // endpoints' metadata places at its address, if any.
    if conn.role == Role::Inbound {
        t.peer = Some(match header.as_deref() {
            Some(h) => shared.metrics.peers.peer(Some(h)),
            None => workload_at(shared, conn.peer_addr.map(|a| a.ip())),
        });
    }
    if let Some(tracer) = &shared.tracer {
        // Traced when the proxy has a collector, or the listener's tracing (Telemetry API)
        // is set; its sampling percentage wins over the proxy's.
        let chain = chain_tracing(conn);
        if tracer.settings().endpoint.is_some() || chain.is_some() {
            let sampling = chain.and_then(|c| c.sampling);
            t.span = Some(tracer.begin_with(&req.headers, side(conn), sampling));
        }
    }
}

/// The workload at `ip` by the endpoints' telemetry metadata (unknown when none is there).
fn workload_at(shared: &Shared, ip: Option<std::net::IpAddr>) -> Arc<PeerInfo> {
    let snapshot = shared.snapshot.load();
    shared
        .metrics
        .peers
        .workload(ip.and_then(|ip| snapshot.workload_at(ip)))
}

/// The tracing settings of the connection's HTTP chain, if it has any.
fn chain_tracing(conn: &ConnContext) -> Option<&xds_client::model::TracingConfig> {
    match &conn.chain.kind {
        crate::snapshot::ChainKind::Http(c) => c.tracing.as_ref(),
        crate::snapshot::ChainKind::Tcp(_) => None,
    }
}

/// The OTLP endpoint of a collector cluster: one of its endpoints, as `http://ADDRESS`.
fn collector_endpoint(shared: &Shared, cluster: &str) -> Option<String> {
    let snapshot = shared.snapshot.load();
    let hosts = snapshot.cluster(cluster)?.host_states();
    hosts
        .iter()
        .find(|(_, ejected, _)| !ejected)
        .or(hosts.first())
        .map(|(addr, _, _)| format!("http://{addr}"))
}

/// An upstream connection was made or reused for the request: over TLS, the server's
/// verified SPIFFE ID (and, when this proxy presented its workload certificate, its own)
/// become the principals of the request's metrics.
pub fn on_upstream_connected(
    shared: &Shared,
    peer: &pingora_core::upstreams::peer::HttpPeer,
    digest: Option<&pingora_core::protocols::Digest>,
    t: &mut RequestTelemetry,
) {
    t.upstream_principals = None;
    t.upstream_local = digest
        .and_then(|d| d.socket_digest.as_ref())
        .and_then(|s| s.local_addr()?.as_inet().copied());
    if !peer.is_tls() {
        return;
    }
    let uri = digest
        .and_then(|d| d.ssl_digest.as_ref())
        .and_then(|d| d.extension.get::<crate::tls::client::PeerCheck>())
        .and_then(|c| c.result.as_ref().ok())
        .and_then(|p| p.uris.iter().find(|u| u.starts_with("spiffe://")));
    if let Some(uri) = uri {
        let local = peer
            .client_cert_key
            .is_some()
            .then(|| shared.metrics.local_principal.clone())
            .flatten();
        t.upstream_principals = Some((Arc::from(uri.as_str()), local));
    }
}

/// The request goes upstream (each attempt): this proxy's metadata (outbound, to mesh
/// clusters), the span's context, the cluster's request counter.
pub fn on_upstream_request(
    shared: &Shared,
    conn: &ConnContext,
    cluster: Option<&str>,
    upstream: &mut RequestHeader,
    t: &mut RequestTelemetry,
) -> pingora_error::Result<()> {
    t.upstream_started = Some(Instant::now());
    if let Some(name) = cluster {
        cluster_stats(shared, t, name).upstream_rq_total.inc();
    }
    let mesh_cluster = cluster.is_some_and(|c| c.starts_with("outbound|"));
    if conn.role == Role::Outbound && mesh_cluster {
        let local = &shared.metrics.local;
        upstream.insert_header(METADATA_ID, local.id_header.clone())?;
        upstream.insert_header(METADATA, local.header.clone())?;
    }
    if let Some(span) = &t.span {
        for (name, value) in span.headers() {
            upstream.insert_header(name, value)?;
        }
    }
    Ok(())
}

/// The upstream's response headers arrived: the service time; outbound, take (and remove)
/// the server's metadata; inbound, add this proxy's for the client's sidecar.
pub fn on_upstream_response(
    shared: &Shared,
    conn: &ConnContext,
    resp: &mut ResponseHeader,
    t: &mut RequestTelemetry,
) -> pingora_error::Result<()> {
    if let Some(started) = t.upstream_started {
        let ms = started.elapsed().as_millis() as u64;
        t.upstream_service_time = Some(ms);
        resp.insert_header(SERVICE_TIME, ms.to_string())?;
    }
    if let Some(stats) = &t.cluster {
        stats.response(resp.status.as_u16());
    }
    if let Some(s) = resp
        .headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok()?.parse().ok())
    {
        t.grpc_status = Some(s);
    }
    match conn.role {
        Role::Outbound => {
            let header = resp.headers.get(&METADATA).map(|v| v.as_bytes().to_vec());
            if header.is_some() {
                t.peer = Some(shared.metrics.peers.peer(header.as_deref()));
            }
            resp.remove_header(&METADATA);
            resp.remove_header(&METADATA_ID);
        }
        Role::Inbound => {
            let local = &shared.metrics.local;
            resp.insert_header(METADATA_ID, local.id_header.clone())?;
            resp.insert_header(METADATA, local.header.clone())?;
        }
    }
    Ok(())
}

/// The destination Service of the request: outbound, from the route's cluster; inbound, the
/// Service whose endpoints hold the original destination (when several Services select the
/// workload on that port, the one the request's authority names, else the first by name).
fn service(
    shared: &Shared,
    conn: &ConnContext,
    cluster: Option<&str>,
    authority: Option<&str>,
) -> Arc<ServiceInfo> {
    match conn.role {
        Role::Outbound => shared.metrics.services.for_cluster(cluster.unwrap_or("")),
        Role::Inbound => {
            let snapshot = shared.snapshot.load();
            let candidates = snapshot.clusters_of_endpoint(conn.destination.address);
            let named = authority.and_then(|a| {
                let host = a.rsplit_once(':').map_or(a, |(h, _)| h);
                candidates.iter().find(|c| {
                    let fqdn = c.rsplit('|').next().unwrap_or("");
                    !host.is_empty()
                        && (fqdn == host
                            || fqdn
                                .strip_prefix(host)
                                .is_some_and(|rest| rest.starts_with('.')))
                })
            });
            match named.or(candidates.first()) {
                Some(c) => shared.metrics.services.for_cluster(c),
                None => shared.metrics.services.unknown(),
            }
        }
    }
}

/// The two parties of a request or connection as this proxy reports them: reporter from the
/// listener's direction, the peer's workload when its metadata came with the request
/// (else unknown), the principals of mutual TLS, the destination Service (inbound, the one
/// `authority` names among those of the workload's port).
pub fn parties(
    shared: &Shared,
    conn: &ConnContext,
    peer: Option<Arc<PeerInfo>>,
    cluster: Option<&str>,
    authority: Option<&str>,
) -> Parties {
    Parties {
        reporter: match conn.role {
            Role::Outbound => Reporter::Source,
            Role::Inbound => Reporter::Destination,
        },
        local: shared.metrics.local.info.clone(),
        peer: peer.unwrap_or_else(|| shared.metrics.peers.unknown().clone()),
        local_principal: shared.metrics.local_principal.clone().filter(|_| conn.tls),
        peer_principal: conn.peer_principal.clone(),
        mutual_tls: conn.tls && conn.peer_principal.is_some(),
        service: service(shared, conn, cluster, authority),
    }
}

/// The cluster's counters, looked up once per request.
pub fn cluster_stats(
    shared: &Shared,
    t: &mut RequestTelemetry,
    cluster: &str,
) -> Arc<ClusterStats> {
    t.cluster
        .get_or_insert_with(|| shared.metrics.envoy.cluster(cluster))
        .clone()
}

/// The request ended (its access-log entry is complete): Istio's metrics, the cluster's
/// timeout and retry-success counters, the span.
pub fn on_logging(shared: &Shared, conn: &ConnContext, ctx: &mut RequestCtx, e: &AccessLogEntry) {
    let flags = e.response_flags_str();
    let t = &mut ctx.telemetry;
    if let Some(stats) = &t.cluster {
        if e.response_flags
            .contains(ResponseFlag::UpstreamRequestTimeout)
        {
            stats.upstream_rq_timeout.inc();
        }
        if ctx.retry.attempts > 1 && (1..500).contains(&e.response_code) {
            stats.upstream_rq_retry_success.inc();
        }
    }
    let cluster = e.upstream_cluster.as_deref();
    // A response that brought no metadata (no sidecar there, or none reached): the chosen
    // endpoint's workload, as Istio's sidecars fall back to the endpoint metadata.
    if t.peer.is_none() && conn.role == Role::Outbound {
        if let Some(host) = e.upstream_host {
            t.peer = Some(workload_at(shared, Some(host.ip())));
        }
    }
    let mut parties = parties(
        shared,
        conn,
        t.peer.clone(),
        cluster,
        e.authority.as_deref(),
    );
    if conn.role == Role::Outbound {
        if let Some((server, local)) = &t.upstream_principals {
            parties.peer_principal = Some(server.clone());
            parties.local_principal = local.clone();
        }
    }
    let key = HttpKey {
        parties,
        protocol: if t.grpc {
            RequestProtocol::Grpc
        } else {
            RequestProtocol::Http
        },
        response_code: e.response_code,
        grpc_status: if t.grpc { t.grpc_status } else { None },
        response_flags: shared.metrics.flags(&flags),
    };
    shared.metrics.istio.http(&key).record(
        ctx.started.elapsed().as_secs_f64() * 1000.0,
        e.bytes_received,
        e.bytes_sent,
    );
    let (Some(tracer), Some(span)) = (&shared.tracer, &t.span) else {
        return;
    };
    let name = match (conn.role, cluster) {
        (Role::Outbound, Some(c)) => match crate::metrics::istio::cluster_host_port(c) {
            Some(hp) => format!("{hp}/*"),
            None => c.to_string(),
        },
        _ => format!(
            "{}:{}/*",
            key.parties.service.host,
            conn.destination.address.port()
        ),
    };
    let collector = chain_tracing(conn)
        .and_then(|c| c.collector.as_deref())
        .and_then(|c| collector_endpoint(shared, c));
    tracer.finish_to(
        span,
        Finished {
            name,
            start: Some(ctx.start_time),
            method: e.method.as_deref().unwrap_or(""),
            url: format!(
                "{}://{}{}",
                conn.scheme(),
                e.authority.as_deref().unwrap_or(""),
                e.path.as_deref().unwrap_or("")
            ),
            protocol: e.protocol.unwrap_or(""),
            status: e.response_code,
            response_flags: &flags,
            request_id: e.request_id.as_deref(),
            user_agent: e.user_agent.as_deref(),
            peer_address: conn.peer_addr.map(|a| a.to_string()),
            upstream_cluster: cluster,
            upstream_address: e.upstream_host.map(|a| a.to_string()),
            request_size: e.bytes_received,
            response_size: e.bytes_sent,
        },
        collector,
    );
}
