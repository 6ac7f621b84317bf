//! The `mesh-echo` test app, like Istio's echo server: every reply says what the server saw
//! and who answered.
//!
//! # Server
//!
//! `mesh-echo [--http-port P]... [--grpc-port P]... [--tcp-port P]... [--tcp-banner-port P]...
//! [--name NAME] [--version VERSION] [--namespace NS]`
//!
//! Every port flag is repeatable; each port is bound on `0.0.0.0` and, when IPv6 is available,
//! on `[::]` (IPv6 only). Port 0 picks a free port. Once every port is bound, one JSON line is
//! printed on stdout, e.g.
//! `{"event":"listening","grpc":[],"http":[8080],"name":"reviews","tcp":[],"tcp_banner":[],"version":"v2"}`;
//! nothing else goes to stdout. One log line per request (per connection for TCP) goes to
//! stderr (`RUST_LOG` filters it). SIGTERM and SIGINT exit at once.
//!
//! - `--http-port`: HTTP/1.1 and h2c with prior knowledge on the same port (HTTP/1.1
//!   `Upgrade: h2c` is not performed: such a request is answered over HTTP/1.1). A request
//!   asking for a WebSocket upgrade (`Connection: upgrade`, `Upgrade: websocket`, any path) is
//!   upgraded and every text or binary message is echoed back unchanged, as the same kind;
//!   no message is sent first. Every other request is answered with the JSON
//!   [`http::EchoReply`]: `name`, `version`, `namespace`, `hostname`, `protocol` (`HTTP/1.1`,
//!   `HTTP/1.0`, `HTTP/2`), `method`, `path` (with query), `host` (`Host`, or `:authority`
//!   for HTTP/2), `headers` (name to every value in order), `peer` and `local` (`ip:port` as
//!   seen by the server), `port` (the served port), `status`, `body_len` (request body bytes),
//!   and when relevant `fail_call`, `error`, `padding`. Every HTTP response, including the
//!   WebSocket handshake, carries `x-echo-name` and `x-echo-version` headers.
//! - `--grpc-port`: gRPC (h2c) `mesh.echo.v1.EchoService` (`tests/proto/echo.proto`: unary
//!   `Echo`, server-streaming `StreamEcho`, bidi `Chat`) and `grpc.health.v1.Health` (always
//!   `SERVING`). Replies carry the same information as fields.
//! - `--tcp-port`: raw TCP echo.
//! - `--tcp-banner-port`: server-first TCP: writes `mesh-echo NAME VERSION\n` on accept, before
//!   reading anything, then echoes.
//!
//! # Behaviour controls
//!
//! Read from request headers (gRPC: metadata) `x-echo-NAME`, or for HTTP also from the query
//! parameter `NAME` (`_` may replace `-`; a header wins over the query parameter).
//!
//! | NAME | example | effect |
//! | --- | --- | --- |
//! | `delay` | `x-echo-delay: 250ms`, `?delay=250ms` | wait before answering (humantime, or bare milliseconds) |
//! | `status` | `x-echo-status: 503`, `?status=503` | HTTP: answer this status (200-599), body unchanged |
//! | `grpc-status` | `x-echo-grpc-status: 14` | gRPC: answer this code (0-16) |
//! | `fail-first` | `x-echo-fail-first: 3` | the first 3 calls on the fail key fail, the next ones succeed |
//! | `fail-key` | `x-echo-fail-key: k1` | the counter `fail-first` uses; default: the request path without query (gRPC: the method path) |
//! | `fail-status` | `x-echo-fail-status: 500` | HTTP status of failed calls (default 503) |
//! | `fail-grpc-status` | `x-echo-fail-grpc-status: 4` | gRPC code of failed calls (default 14, `UNAVAILABLE`) |
//! | `response-header` | `x-echo-response-header: k=v`, `?response_header=k%3Dv` | add a response header (gRPC: initial metadata); repeatable |
//! | `size` | `?size=1024`, `x-echo-size: 1024` | pad the reply: HTTP body exactly that many bytes when larger than the unpadded reply; gRPC `padding` of that many bytes |
//!
//! The delay applies before every other control. Counters are per server process and shared
//! by all its ports. An invalid value is answered with 400 (gRPC `INVALID_ARGUMENT`) and a
//! message naming it. A WebSocket handshake obeys the controls too: it is upgraded only if
//! the status it would get is 200.
//!
//! # Client
//!
//! `mesh-echo client http|grpc|ws|tcp ...`: see [`client`].

#![forbid(unsafe_code)]

pub mod client;
pub mod control;
pub mod grpc;
pub mod http;
pub mod proto;
pub mod tcp;

use std::io::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio::task::JoinSet;

use control::FailCounters;

/// Who answers: printed in every reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Service name (`--name`).
    pub name: String,
    /// Version (`--version`).
    pub version: String,
    /// Namespace (`--namespace`), if given.
    pub namespace: Option<String>,
    /// Host name of the machine (UTS namespace) the server runs in.
    pub hostname: String,
}

/// The server's command-line flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// HTTP/1.1 + h2c + WebSocket port (repeatable; 0 picks a free port).
    #[arg(long = "http-port", value_name = "PORT")]
    pub http_ports: Vec<u16>,
    /// gRPC port (repeatable; 0 picks a free port).
    #[arg(long = "grpc-port", value_name = "PORT")]
    pub grpc_ports: Vec<u16>,
    /// Raw TCP echo port (repeatable; 0 picks a free port).
    #[arg(long = "tcp-port", value_name = "PORT")]
    pub tcp_ports: Vec<u16>,
    /// Server-first TCP port: banner line `mesh-echo NAME VERSION` on accept, then echo.
    #[arg(long = "tcp-banner-port", value_name = "PORT")]
    pub tcp_banner_ports: Vec<u16>,
    /// Service name printed in every reply.
    #[arg(long, default_value = "echo")]
    pub name: String,
    /// Version printed in every reply.
    #[arg(long, default_value = "v1")]
    pub version: String,
    /// Namespace printed in every reply.
    #[arg(long)]
    pub namespace: Option<String>,
}

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// No port flag was given.
    #[error("no port to serve: give at least one of --http-port, --grpc-port, --tcp-port, --tcp-banner-port")]
    NoPorts,
    /// Binding `0.0.0.0:PORT` failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Writing the listening line to stdout failed.
    #[error("cannot write the listening line to stdout: {0}")]
    Stdout(#[source] std::io::Error),
}

/// What a port serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Http,
    Grpc,
    Tcp,
    TcpBanner,
}

/// State shared by every connection of one server process.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) identity: Identity,
    pub(crate) counters: FailCounters,
}

/// The addresses of one accepted connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnInfo {
    pub(crate) peer: SocketAddr,
    pub(crate) local: SocketAddr,
}

/// A server with every port bound, ready to [`run`](BoundServer::run).
#[derive(Debug)]
pub struct BoundServer {
    state: Arc<State>,
    listeners: Vec<(Kind, TcpListener)>,
    ports: BoundPorts,
}

/// The ports actually bound (port 0 resolved), by kind, in flag order.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BoundPorts {
    /// HTTP ports.
    pub http: Vec<u16>,
    /// gRPC ports.
    pub grpc: Vec<u16>,
    /// TCP echo ports.
    pub tcp: Vec<u16>,
    /// Server-first TCP ports.
    pub tcp_banner: Vec<u16>,
}

impl BoundServer {
    /// Binds every port of `args` on `0.0.0.0` and, when possible, `[::]`.
    pub async fn bind(args: &ServerArgs) -> Result<Self, ServeError> {
        let identity = Identity {
            name: args.name.clone(),
            version: args.version.clone(),
            namespace: args.namespace.clone(),
            hostname: hostname(),
        };
        let groups = [
            (Kind::Http, &args.http_ports),
            (Kind::Grpc, &args.grpc_ports),
            (Kind::Tcp, &args.tcp_ports),
            (Kind::TcpBanner, &args.tcp_banner_ports),
        ];
        if groups.iter().all(|(_, ports)| ports.is_empty()) {
            return Err(ServeError::NoPorts);
        }
        let mut listeners = Vec::new();
        let mut ports = BoundPorts::default();
        for (kind, wanted) in groups {
            for &port in wanted {
                let (bound, mut ls) = bind_all(port)?;
                listeners.extend(ls.drain(..).map(|l| (kind, l)));
                match kind {
                    Kind::Http => ports.http.push(bound),
                    Kind::Grpc => ports.grpc.push(bound),
                    Kind::Tcp => ports.tcp.push(bound),
                    Kind::TcpBanner => ports.tcp_banner.push(bound),
                }
            }
        }
        let state = Arc::new(State {
            identity,
            counters: FailCounters::default(),
        });
        Ok(Self {
            state,
            listeners,
            ports,
        })
    }

    /// The ports bound.
    pub fn ports(&self) -> &BoundPorts {
        &self.ports
    }

    /// Prints the listening line (see the module docs) on stdout.
    pub fn announce(&self) -> Result<(), ServeError> {
        let id = &self.state.identity;
        let line = serde_json::json!({
            "event": "listening",
            "name": id.name,
            "version": id.version,
            "http": self.ports.http,
            "grpc": self.ports.grpc,
            "tcp": self.ports.tcp,
            "tcp_banner": self.ports.tcp_banner,
        });
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")
            .and_then(|()| out.flush())
            .map_err(ServeError::Stdout)
    }

    /// Serves every port until the process ends. Never returns on its own: accept errors are
    /// logged and retried.
    pub async fn run(self) {
        let mut tasks = JoinSet::new();
        for (kind, listener) in self.listeners {
            tasks.spawn(accept_loop(kind, listener, self.state.clone()));
        }
        while tasks.join_next().await.is_some() {}
    }
}

/// How the connections of one listener are served.
#[derive(Clone)]
enum Handler {
    Http,
    Grpc(tonic::service::Routes),
    Tcp { banner: bool },
}

async fn accept_loop(kind: Kind, listener: TcpListener, state: Arc<State>) {
    let handler = match kind {
        Kind::Http => Handler::Http,
        Kind::Grpc => Handler::Grpc(grpc::routes(state.clone())),
        Kind::Tcp => Handler::Tcp { banner: false },
        Kind::TcpBanner => Handler::Tcp { banner: true },
    };
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(local) = stream.local_addr() else {
            continue;
        };
        // Latency over throughput: replies are small.
        let _ = stream.set_nodelay(true);
        let conn = ConnInfo { peer, local };
        let state = state.clone();
        let handler = handler.clone();
        tokio::spawn(async move {
            match handler {
                Handler::Http => http::serve_connection(state, stream, conn).await,
                Handler::Grpc(routes) => grpc::serve_connection(routes, stream, conn).await,
                Handler::Tcp { banner } => tcp::serve(&state, stream, conn, banner).await,
            }
        });
    }
}

/// Binds `port` on `0.0.0.0` (required) and `[::]` IPv6-only (skipped with a log line when
/// unavailable). Returns the port actually bound and the listeners.
fn bind_all(port: u16) -> Result<(u16, Vec<TcpListener>), ServeError> {
    let v4 = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    let listener = listen(v4, false).map_err(|source| ServeError::Bind { addr: v4, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { addr: v4, source })?
        .port();
    let mut listeners = vec![listener];
    let v6 = SocketAddr::from((Ipv6Addr::UNSPECIFIED, bound));
    match listen(v6, true) {
        Ok(l) => listeners.push(l),
        Err(e) => tracing::info!("not listening on {v6}: {e}"),
    }
    Ok((bound, listeners))
}

fn listen(addr: SocketAddr, v6_only: bool) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if v6_only {
        nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::Ipv6V6Only, &true)
            .map_err(std::io::Error::from)?;
    }
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// The host name of this machine (its UTS namespace): `/proc/sys/kernel/hostname`, else
/// `$HOSTNAME`, else `unknown`.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_string())
}
