//! The capture listeners (outbound 15001, inbound 15006): one Pingora `ServerApp` that takes
//! every accepted connection from its original destination to a filter chain, and from there
//! to the HTTP proxy or the TCP proxy.
//!
//! Per connection:
//! 1. Read the original destination (`SO_ORIGINAL_DST`; the listener's own address when the
//!    connection was not redirected — then an `ORIGINAL_DST` upstream is refused rather than
//!    looped back).
//! 2. Close at once if no configuration has been applied yet (fail closed).
//! 3. Choose the virtual listener and the filter chain ([`select`]): inspect the first bytes
//!    for a TLS ClientHello (SNI, ALPN; [`crate::tls::hello`]) when a chain names the `tls`
//!    transport or server names, sniff plaintext ([`sniff`]) only when the remaining chains
//!    differ by application protocol, and put the bytes back.
//! 4. Terminate TLS when the chain has a `DownstreamTlsContext` ([`crate::tls::server`]): a
//!    failed handshake (no client certificate, one from another CA) closes the connection.
//! 5. HTTP chains: attach the [`conn::ConnContext`] to the stream and hand it to this
//!    direction's `HttpProxy` (a terminated TLS connection as a plaintext virtual socket,
//!    [`secure`]). TCP chains: [`crate::tcp::proxy`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod conn;
pub mod secure;
pub mod select;
pub mod sniff;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::{GetProxyDigest, GetSocketDigest, Stream};
use pingora_core::server::ShutdownWatch;
use pingora_proxy::HttpProxy;

use self::conn::{ConnContext, Role};
use self::select::{ConnectionFacts, RAW_BUFFER};
use crate::accesslog::{AccessLogEntry, Detail, ResponseFlag};
use crate::authz;
use crate::http::MeshHttp;
use crate::shared::Shared;
use crate::snapshot::{ChainKind, ChainRuntime, Snapshot};
use crate::stats::Stats;
use crate::tls;
use crate::upstream::OriginalDestination;
use pingora_boringssl::tokio_ssl::SslStream;

/// One capture listener: its bound address, its role and its HTTP proxy.
pub struct CaptureListener {
    /// The address the listener is bound to.
    pub bound: SocketAddr,
    /// Outbound or inbound.
    pub role: Role,
    /// The HTTP proxy for this direction (its own upstream connection pools).
    pub http: Arc<HttpProxy<MeshHttp>>,
}

/// The `ServerApp` behind both capture listeners.
pub struct CaptureApp {
    shared: Arc<Shared>,
    listeners: Vec<CaptureListener>,
    detection_timeout: Duration,
}

impl CaptureApp {
    /// The app for `listeners` (distinguished by the local port of accepted connections).
    pub fn new(
        shared: Arc<Shared>,
        listeners: Vec<CaptureListener>,
        detection_timeout: Duration,
    ) -> CaptureApp {
        CaptureApp {
            shared,
            listeners,
            detection_timeout,
        }
    }

    fn listener_for(&self, local: Option<SocketAddr>) -> Option<&CaptureListener> {
        let local = local?;
        self.listeners.iter().find(|l| {
            l.bound.port() == local.port()
                && (l.bound.ip().is_unspecified() || l.bound.ip() == local.ip())
        })
    }

    async fn handle(&self, mut stream: Box<L4Stream>, shutdown: &ShutdownWatch) {
        let shared = &self.shared;
        let digest = stream.get_socket_digest();
        let peer_addr = digest
            .as_ref()
            .and_then(|d| d.peer_addr()?.as_inet().copied());
        let local_addr = digest
            .as_ref()
            .and_then(|d| d.local_addr()?.as_inet().copied());
        let Some(capture) = self.listener_for(local_addr) else {
            tracing::warn!(?local_addr, "connection on an unknown capture listener");
            return;
        };
        if shared
            .lifecycle
            .refuses_connections(capture.role == Role::Inbound)
        {
            tracing::debug!(?peer_addr, "listeners drained: closing a new connection");
            return;
        }
        let Some(original_dst) = digest
            .as_ref()
            .and_then(|d| d.original_dst()?.as_inet().copied())
            .or(local_addr)
        else {
            return;
        };
        let destination = OriginalDestination {
            address: original_dst,
            redirected: Some(original_dst) != local_addr,
        };

        let snapshot = shared.snapshot.load();
        if !snapshot.is_ready() {
            Stats::incr(&shared.stats.downstream_cx_no_config);
            tracing::debug!(?peer_addr, "no configuration yet: closing the connection");
            return;
        }
        let Some(capture_listener) =
            snapshot.capture_listener(capture.bound, capture.role.listener_name())
        else {
            Stats::incr(&shared.stats.downstream_cx_no_chain);
            tracing::debug!(role = ?capture.role, "no listener for the capture port");
            return;
        };
        let listener = select::virtual_listener(&snapshot, capture_listener, original_dst);
        // Transport protocol and SNI, when a chain depends on them (Envoy's TLS inspector).
        let mut hello = None;
        let mut silent = false;
        if select::needs_transport_protocol(&listener.chains) {
            match tls::hello::detect(&mut *stream, self.detection_timeout).await {
                Ok((found, bytes)) => {
                    silent = bytes.is_empty();
                    stream.rewind(&bytes);
                    hello = found;
                }
                Err(e) => {
                    tracing::debug!(error = %e, ?peer_addr, "read error while inspecting TLS");
                    return;
                }
            }
        }
        let server_name = hello.as_ref().and_then(|h| h.server_name.clone());
        let facts = ConnectionFacts {
            destination: original_dst,
            server_name: server_name.as_deref(),
            transport_protocol: if hello.is_some() {
                select::TLS
            } else {
                RAW_BUFFER
            },
        };
        let candidates = select::candidates(&listener.chains, &facts);
        let mut application_protocol = None;
        let chain = match &hello {
            Some(h) => {
                let offered: Vec<&str> = h.alpn.iter().map(String::as_str).collect();
                select::chain_for_any(listener, candidates, &offered)
            }
            None => {
                // A client that sent nothing while the TLS inspector waited is server-first:
                // no need to wait again for HTTP.
                if !silent && select::needs_application_protocol(&listener.chains, &candidates) {
                    Stats::incr(&shared.stats.downstream_cx_sniffed);
                    match sniff::detect(&mut *stream, self.detection_timeout).await {
                        Ok((detected, bytes)) => {
                            stream.rewind(&bytes);
                            application_protocol = detected.application_protocol();
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, ?peer_addr, "read error while sniffing");
                            return;
                        }
                    }
                }
                select::chain_for(listener, candidates, application_protocol)
            }
        };
        let Some(chain) = chain else {
            Stats::incr(&shared.stats.downstream_cx_no_chain);
            let mut entry = AccessLogEntry::new(SystemTime::now());
            entry.response_flags = ResponseFlag::NoRoute.into();
            entry.response_code_details = Some("filter_chain_not_found".into());
            entry.downstream_remote_address = peer_addr;
            entry.downstream_local_address = Some(original_dst);
            entry.requested_server_name = server_name;
            shared.access_log.log(entry);
            return;
        };
        let listener_name = listener.name.clone();
        drop(snapshot);
        // TLS terminated on the chain: the handshake with the current workload certificate;
        // a failure closes the connection before any byte reaches the upstream.
        let mut downstream = Downstream::Plain(stream);
        let mut tls_session = None;
        if let Some(server) = chain.tls.clone() {
            let Downstream::Plain(plain) = downstream else {
                return;
            };
            match server.accept(plain, &shared.identity).await {
                Ok((tls, accepted)) => {
                    Stats::incr(&shared.stats.ssl_handshake);
                    downstream = Downstream::Tls(Box::new(tls));
                    tls_session = Some(accepted);
                }
                Err(e) => {
                    secure::handshake_failed(
                        shared,
                        &e,
                        peer_addr,
                        original_dst,
                        server_name.as_deref(),
                    );
                    return;
                }
            }
        }
        let peer_principal = tls_session
            .as_ref()
            .and_then(|t| t.peer.as_ref())
            .and_then(|p| p.spiffe_id())
            .map(Arc::from);
        let conn = Arc::new(ConnContext {
            role: capture.role,
            capture: capture.bound,
            peer_addr,
            local_addr,
            destination,
            listener: listener_name,
            chain,
            application_protocol,
            tls: tls_session.is_some(),
            peer_principal,
            server_name: server_name.map(Arc::from),
            tls_session,
        });
        if !conn.chain.rbac.is_empty() && !authorize_connection(&conn, shared) {
            return;
        }
        tracing::trace!(
            listener = %conn.listener,
            chain = %conn.chain.name,
            ?application_protocol,
            tls = conn.tls,
            "connection dispatched"
        );
        match (&conn.chain.kind, downstream) {
            (ChainKind::Tcp(settings), Downstream::Plain(mut stream)) => {
                crate::tcp::proxy(&mut *stream, &conn, settings, shared).await;
            }
            (ChainKind::Tcp(settings), Downstream::Tls(mut tls)) => {
                crate::tcp::proxy(&mut *tls, &conn, settings, shared).await;
            }
            (ChainKind::Http(_), Downstream::Plain(mut stream)) => {
                stream.set_proxy_digest(conn.clone().into_digest());
                let stream: Stream = stream;
                // The HTTP proxy never hands a connection back to the listener.
                let _ = capture.http.process_new(stream, shutdown).await;
            }
            (ChainKind::Http(_), Downstream::Tls(tls)) => {
                let mut stream = secure::TlsSocket(*tls).into_stream();
                stream.set_proxy_digest(conn.clone().into_digest());
                let stream: Stream = Box::new(stream);
                let _ = capture.http.process_new(stream, shutdown).await;
            }
        }
    }
}

/// The chain that applies to `conn` under `snapshot`: the connection's own chain while the
/// snapshot still holds it (its listener is unchanged), else the chain selection picks for the
/// same connection now (`None` when no chain would take it). A connection outlives the
/// configuration it was accepted under; what it carries must not.
pub fn current_chain(conn: &ConnContext, snapshot: &Snapshot) -> Option<Arc<ChainRuntime>> {
    let capture = snapshot.capture_listener(conn.capture, conn.role.listener_name())?;
    let listener = select::virtual_listener(snapshot, capture, conn.destination.address);
    let held = listener
        .chains
        .iter()
        .chain(listener.default_chain.iter())
        .any(|c| Arc::ptr_eq(c, &conn.chain));
    if held {
        return Some(conn.chain.clone());
    }
    let facts = ConnectionFacts {
        destination: conn.destination.address,
        server_name: conn.server_name(),
        transport_protocol: if conn.tls { "tls" } else { RAW_BUFFER },
    };
    let candidates = select::candidates(&listener.chains, &facts);
    select::chain_for(listener, candidates, conn.application_protocol)
}

/// Resolves when a configuration published after the call no longer lets the TCP connection
/// `conn` continue: no chain would take it now, or the network RBAC filters of the chain that
/// applies now deny it (Envoy drains a replaced chain's connections; a denial here closes
/// the connection at once). Returns the termination details for the access log.
pub async fn revoked(conn: &ConnContext, shared: &Shared) -> Detail {
    let mut changes = shared.snapshot.subscribe();
    loop {
        if changes.changed().await.is_err() {
            return std::future::pending().await;
        }
        let snapshot = shared.snapshot.load();
        let Some(chain) = current_chain(conn, &snapshot) else {
            return Detail::Static("filter_chain_not_found");
        };
        if Arc::ptr_eq(&chain, &conn.chain) || chain.rbac.is_empty() {
            continue;
        }
        let outcome = authz::check_all(&chain.rbac, &attributes(conn));
        if let Some(details) = outcome.denied_details.filter(|_| !outcome.allowed) {
            tracing::debug!(peer = ?conn.peer_addr, %details, "open connection denied by a new policy");
            return Detail::Shared(details);
        }
    }
}

/// What the network RBAC filters of `conn`'s chain can read.
fn attributes(conn: &ConnContext) -> authz::Attributes<'_> {
    authz::Attributes {
        source: conn
            .peer_addr
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
        destination: conn.destination.address,
        principal: conn.peer_principal(),
        server_name: conn.server_name(),
        request: None,
    }
}

/// The downstream connection after the chain's transport socket.
enum Downstream {
    /// Plaintext (possibly TLS passed through).
    Plain(Box<L4Stream>),
    /// TLS terminated by the proxy.
    Tls(Box<SslStream<Box<L4Stream>>>),
}

/// The chain's network RBAC filters, once per connection, before anything reaches the
/// upstream: a denied connection is closed (and logged, with
/// `connection_termination_details` naming the policy); dry-run results are logged too.
fn authorize_connection(conn: &ConnContext, shared: &Shared) -> bool {
    let outcome = authz::check_all(&conn.chain.rbac, &attributes(conn));
    let audit = conn.chain.rbac.iter().any(|f| f.has_log_rules());
    if outcome.allowed && outcome.shadow.is_none() && !audit {
        return true;
    }
    if !outcome.allowed || outcome.shadow.is_some() || outcome.log {
        let mut entry = AccessLogEntry::new(SystemTime::now());
        entry.downstream_remote_address = conn.peer_addr;
        entry.downstream_local_address = Some(conn.destination.address);
        entry.requested_server_name = conn.server_name().map(str::to_string);
        entry.downstream_peer_uri_san = conn.peer_principal().map(str::to_string);
        if let Some(shadow) = &outcome.shadow {
            entry.shadow_engine_result = Some(if shadow.allowed { "allowed" } else { "denied" });
            entry.shadow_effective_policy_id = shadow.policy.clone().map(Detail::Shared);
        }
        if audit {
            entry.access_log_hint = Some(outcome.log);
        }
        if let Some(details) = outcome.denied_details.clone() {
            tracing::debug!(peer = ?conn.peer_addr, %details, "connection denied by RBAC");
            entry.connection_termination_details = Some(Detail::Shared(details));
            shared.access_log.log(entry);
        } else if outcome.shadow.is_some() || outcome.log {
            // Allowed: the TCP proxy writes the connection's line; this one records the
            // dry-run or audit result at the start of the connection.
            shared.access_log.log(entry);
        }
    }
    outcome.allowed
}

#[async_trait]
impl ServerApp for CaptureApp {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let _active = self.shared.stats.connection();
        let stream = stream.into_any().downcast::<L4Stream>().ok();
        match stream {
            Some(stream) => self.handle(stream, shutdown).await,
            None => tracing::warn!("capture listener accepted a non-TCP stream"),
        }
        None
    }

    async fn cleanup(&self) {
        // Lets idle keep-alive connections close as soon as the listeners stop.
        for listener in &self.listeners {
            listener.http.cleanup().await;
        }
    }
}
