//! The TCP proxy: connect to the cluster's endpoint (or the original destination), then copy
//! bytes both ways until both sides are done, closing each direction's write half when its
//! read half ends, or until the idle timeout passes with no byte either way.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use xds_client::model::TcpProxy;

use crate::accesslog::{AccessLogEntry, Detail, ResponseFlag};
use crate::listener::conn::{ConnContext, Role};
use crate::metrics::istio::TcpKey;
use crate::metrics::ClusterStats;
use crate::shared::Shared;
use crate::stats::Stats;
use crate::upstream::host::{AttemptResult, HostState};
use crate::upstream::lb::PickRequest;
use crate::upstream::PickError;

#[cfg(test)]
mod tests;

/// Why an upstream connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The socket could not be created or bound to the cluster's bind address.
    #[error("cannot bind the upstream socket to {addr}: {source}")]
    Bind {
        /// The bind address.
        addr: IpAddr,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The connection failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The upstream address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The connect timeout passed.
    #[error("connecting to {addr} timed out after {timeout:?}")]
    Timeout {
        /// The upstream address.
        addr: SocketAddr,
        /// The cluster's connect timeout.
        timeout: Duration,
    },
}

/// Connect to `addr`, from `bind` (port chosen by the kernel) when given, within `timeout`.
pub async fn connect(
    addr: SocketAddr,
    bind: Option<IpAddr>,
    timeout: Duration,
) -> Result<TcpStream, Error> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(|source| Error::Connect { addr, source })?;
    if let Some(ip) = bind {
        socket
            .bind(SocketAddr::new(ip, 0))
            .map_err(|source| Error::Bind { addr: ip, source })?;
    }
    let stream = tokio::time::timeout(timeout, socket.connect(addr))
        .await
        .map_err(|_| Error::Timeout { addr, timeout })?
        .map_err(|source| Error::Connect { addr, source })?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Byte counts of a finished relay.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Relayed {
    /// Bytes read from the downstream (sent upstream).
    pub from_downstream: u64,
    /// Bytes read from the upstream (sent downstream).
    pub from_upstream: u64,
    /// Whether the idle timeout ended it.
    pub idle_timeout: bool,
    /// Why the configuration ended it (a policy that no longer allows the connection).
    pub revoked: Option<Detail>,
}

/// Copy both ways between `downstream` and `upstream` until both directions end (each EOF
/// shuts down the other side's write half), an error occurs, or nothing moves for `idle`.
pub async fn relay<D, U>(downstream: &mut D, upstream: &mut U, idle: Option<Duration>) -> Relayed
where
    D: AsyncRead + AsyncWrite + Unpin + ?Sized,
    U: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    relay_until(downstream, upstream, idle, std::future::pending()).await
}

/// [`relay`], also ended (both sides closed) when `stop` resolves, with its reason.
pub async fn relay_until<D, U>(
    downstream: &mut D,
    upstream: &mut U,
    idle: Option<Duration>,
    stop: impl Future<Output = Detail>,
) -> Relayed
where
    D: AsyncRead + AsyncWrite + Unpin + ?Sized,
    U: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let epoch = Instant::now();
    let activity = AtomicU64::new(0);
    let mut down = Metered::new(downstream, &activity, epoch);
    let mut up = Metered::new(upstream, &activity, epoch);
    let mut idle_timeout = false;
    let mut revoked = None;
    {
        let copy = tokio::io::copy_bidirectional(&mut down, &mut up);
        tokio::pin!(copy);
        tokio::pin!(stop);
        loop {
            let deadline = idle.map(|idle| {
                let last = Duration::from_millis(activity.load(Ordering::Relaxed));
                (idle, tokio::time::Instant::from_std(epoch + last + idle))
            });
            let timer = async {
                match deadline {
                    Some((_, at)) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut copy => break,
                reason = &mut stop => {
                    revoked = Some(reason);
                    break;
                }
                _ = timer => {
                    if let Some((idle, _)) = deadline {
                        let last = Duration::from_millis(activity.load(Ordering::Relaxed));
                        if epoch.elapsed() >= last + idle {
                            idle_timeout = true;
                            break;
                        }
                    }
                }
            }
        }
    }
    Relayed {
        from_downstream: down.read,
        from_upstream: up.read,
        idle_timeout,
        revoked,
    }
}

/// Proxy one captured connection with `settings`; writes its access-log line.
pub async fn proxy<D>(downstream: &mut D, conn: &ConnContext, settings: &TcpProxy, shared: &Shared)
where
    D: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    Stats::incr(&shared.stats.tcp_sessions_total);
    let start_time = SystemTime::now();
    let started = Instant::now();
    let mut entry = AccessLogEntry::new(start_time);
    entry.downstream_remote_address = conn.peer_addr;
    entry.downstream_local_address = Some(conn.destination.address);
    entry.requested_server_name = conn.server_name().map(str::to_string);
    entry.downstream_peer_uri_san = conn.peer_principal().map(str::to_string);

    let snapshot = shared.snapshot.load();
    let cluster_name = choose_cluster(settings, rand::random());
    entry.upstream_cluster = Some(cluster_name.to_string());
    // The peer's workload from the endpoints' metadata: inbound, the caller's address; outbound,
    // the chosen endpoint's (below).
    let caller = match conn.role {
        Role::Inbound => conn.peer_addr.and_then(|a| snapshot.workload_at(a.ip())),
        Role::Outbound => None,
    };
    let peer = caller.map(|w| shared.metrics.peers.workload(Some(w)));
    let mut parties = crate::http::telemetry::parties(shared, conn, peer, Some(cluster_name), None);
    let mut opened = None;
    match snapshot.cluster(cluster_name) {
        None => entry.response_flags = ResponseFlag::NoClusterFound.into(),
        Some(cluster) => match cluster.pick_host(&conn.destination, &PickRequest::default()) {
            Err(PickError::NoHealthyUpstream) | Err(PickError::NotRedirected) => {
                entry.response_flags = ResponseFlag::NoHealthyUpstream.into();
            }
            Ok(picked) => {
                let addr = picked.address;
                entry.upstream_host = Some(addr);
                if conn.role == Role::Outbound {
                    parties.peer = shared
                        .metrics
                        .peers
                        .workload(snapshot.workload_at(addr.ip()));
                }
                let max = cluster.cluster().circuit_breakers.max_connections;
                let permit = cluster.limits().try_connection(max);
                let bind = cluster.bind_address();
                let stats = shared.metrics.envoy.cluster(cluster.name());
                match permit {
                    Err(_) => {
                        stats.upstream_cx_overflow.inc();
                        entry.response_flags = ResponseFlag::UpstreamOverflow.into();
                    }
                    Ok(permit) => match connect(addr, bind, cluster.connect_timeout()).await {
                        Err(e) => {
                            tracing::debug!(error = %e, cluster = cluster.name(), "tcp upstream connect failed");
                            Stats::incr(&shared.stats.tcp_connect_fail);
                            stats.upstream_cx_connect_fail.inc();
                            if let Some(host) = &picked.state {
                                host.connect_failed();
                                cluster.report(host, AttemptResult::LocalFailure);
                            }
                            entry.response_flags = ResponseFlag::UpstreamConnectionFailure.into();
                        }
                        Ok(upstream) => {
                            entry.upstream_local_address = upstream.local_addr().ok();
                            let _active = picked.state.as_ref().map(|s| s.start_request());
                            let _open = OpenUpstream::new(stats, picked.state.clone());
                            let _permit = permit;
                            let tls = cluster.tls_for(addr).cloned();
                            drop(snapshot);
                            // Mutual TLS to the upstream: the server's verified SPIFFE ID is the
                            // destination principal, this workload's the source principal (as
                            // Envoy's peer metadata and SSL info give them to Istio's stats).
                            let mut upstream = match tls {
                                None => Ok(Upstream::Plain(upstream)),
                                Some(tls) => match tls.connect(upstream, &shared.identity).await {
                                    Ok((secured, peer)) => {
                                        Stats::incr(&shared.stats.upstream_ssl_handshake);
                                        if let Some(uri) = peer.uris.first() {
                                            parties.peer_principal = Some(uri.as_str().into());
                                            parties.local_principal =
                                                shared.metrics.local_principal.clone();
                                        }
                                        Ok(Upstream::Tls(Box::new(secured)))
                                    }
                                    Err(e) => Err(e),
                                },
                            };
                            if upstream.is_ok() {
                                // Counted as open while it is, under the label set of a
                                // connection without flags.
                                let handles = shared.metrics.istio.tcp(&TcpKey {
                                    parties: parties.clone(),
                                    response_flags: shared.metrics.flags("-"),
                                });
                                handles.opened.inc();
                                opened = Some(handles);
                            }
                            let revoked = crate::listener::revoked(conn, shared);
                            let relayed = match &mut upstream {
                                Ok(Upstream::Plain(up)) => Some(
                                    relay_until(downstream, up, settings.idle_timeout, revoked)
                                        .await,
                                ),
                                Ok(Upstream::Tls(up)) => Some(
                                    relay_until(
                                        downstream,
                                        up.as_mut(),
                                        settings.idle_timeout,
                                        revoked,
                                    )
                                    .await,
                                ),
                                Err(e) => {
                                    upstream_tls_failed(shared, e);
                                    tracing::debug!(error = %e, %addr, "upstream TLS failed");
                                    entry.response_flags =
                                        ResponseFlag::UpstreamConnectionFailure.into();
                                    entry.upstream_transport_failure_reason = Some(e.to_string());
                                    None
                                }
                            };
                            if let Some(relayed) = relayed {
                                entry.bytes_received = relayed.from_downstream;
                                entry.bytes_sent = relayed.from_upstream;
                                if relayed.idle_timeout {
                                    entry.response_flags = ResponseFlag::StreamIdleTimeout.into();
                                }
                                entry.connection_termination_details = relayed.revoked;
                            }
                        }
                    },
                }
            }
        },
    }
    entry.duration = started.elapsed().as_millis() as u64;
    let key = TcpKey {
        parties,
        response_flags: shared.metrics.flags(&entry.response_flags.to_string()),
    };
    let closed = match opened {
        Some(h) if key.response_flags.as_ref() == "-" => h,
        _ => {
            // A connection that failed (or ended flagged) is counted under its flags, as
            // Envoy's TCP stats filter does: opened and closed there.
            let h = shared.metrics.istio.tcp(&key);
            if opened.is_none() {
                h.opened.inc();
            }
            h
        }
    };
    closed.closed.inc();
    closed.received.inc_by(entry.bytes_received);
    closed.sent.inc_by(entry.bytes_sent);
    // The Telemetry API's loggers of the TCP proxy (none: the proxy's default).
    if xds_client::model::telemetry::should_log(&settings.access_log, entry.response_code) {
        shared.access_log.log(entry);
    }
}

/// The cluster of a connection: the only one, or one of the weighted clusters chosen by
/// `draw` (uniform) in proportion to their weights.
pub fn choose_cluster(settings: &TcpProxy, draw: u64) -> &str {
    let total: u64 = settings
        .weighted_clusters
        .iter()
        .map(|(_, w)| u64::from(*w))
        .sum();
    if total == 0 {
        return &settings.cluster;
    }
    let mut point = draw % total;
    for (name, weight) in &settings.weighted_clusters {
        if point < u64::from(*weight) {
            return name;
        }
        point -= u64::from(*weight);
    }
    &settings.cluster
}

/// The upstream side of a proxied connection.
enum Upstream {
    /// Plaintext.
    Plain(TcpStream),
    /// Mutual (or simple) TLS.
    Tls(Box<pingora_boringssl::tokio_ssl::SslStream<TcpStream>>),
}

/// Counts a failed TLS connection to an upstream.
pub fn upstream_tls_failed(shared: &Shared, error: &crate::tls::TlsError) {
    Stats::incr(&shared.stats.upstream_ssl_connection_error);
    if matches!(error, crate::tls::TlsError::SanMismatch { .. }) {
        Stats::incr(&shared.stats.upstream_ssl_fail_verify_san);
    }
}

/// A stream wrapper that counts bytes read and stamps the time of the last read.
struct Metered<'a, S: ?Sized> {
    inner: &'a mut S,
    read: u64,
    activity: &'a AtomicU64,
    epoch: Instant,
}

impl<'a, S: ?Sized> Metered<'a, S> {
    fn new(inner: &'a mut S, activity: &'a AtomicU64, epoch: Instant) -> Self {
        Metered {
            inner,
            read: 0,
            activity,
            epoch,
        }
    }
}

impl<S: AsyncRead + Unpin + ?Sized> AsyncRead for Metered<'_, S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut *this.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            this.read += n as u64;
            this.activity
                .store(this.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        }
        result
    }
}

impl<S: AsyncWrite + Unpin + ?Sized> AsyncWrite for Metered<'_, S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().inner).poll_shutdown(cx)
    }
}

/// One upstream connection of a TCP proxy, counted in its cluster's and host's
/// `upstream_cx_total` and, until dropped, `upstream_cx_active`.
struct OpenUpstream {
    stats: Arc<ClusterStats>,
    host: Option<Arc<HostState>>,
}

impl OpenUpstream {
    fn new(stats: Arc<ClusterStats>, host: Option<Arc<HostState>>) -> OpenUpstream {
        stats.upstream_cx_total.inc();
        stats.upstream_cx_active.inc();
        if let Some(h) = &host {
            h.connection_opened();
        }
        OpenUpstream { stats, host }
    }
}

impl Drop for OpenUpstream {
    fn drop(&mut self) {
        self.stats.upstream_cx_active.dec();
        if let Some(h) = &self.host {
            h.connection_closed();
        }
    }
}
