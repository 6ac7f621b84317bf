//! One connection of the load generator, in each protocol the paths use: HTTP/1.1 kept alive,
//! HTTP/1.1 with a new connection per request, HTTP/2 prior knowledge (h2c), and gRPC unary
//! over h2c. Every request is a POST of the same body; the upstream echoes it back.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::upstream::{grpc_frame, GRPC_PATH};

/// Longest wait for one request (connect included) before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How requests travel.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// HTTP/1.1, connections kept alive.
    Http1,
    /// HTTP/1.1, `Connection: close`: a new connection for every request.
    Http1Close,
    /// HTTP/2 with prior knowledge (h2c), one stream at a time per connection.
    H2,
    /// gRPC unary calls over h2c.
    Grpc,
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The TCP connection failed.
    #[error("connect: {0}")]
    Connect(#[source] std::io::Error),
    /// HTTP failed (handshake, send or receive).
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
    /// The request could not be built.
    #[error("request: {0}")]
    Request(#[from] http::Error),
    /// The answer's status was not 200.
    #[error("status {0}")]
    Status(StatusCode),
    /// A gRPC answer carried a non-zero `grpc-status`, or none.
    #[error("grpc-status {0}")]
    GrpcStatus(String),
    /// The answer's body was not the echo of the request.
    #[error("short answer: {got} bytes, expected {expected}")]
    ShortBody {
        /// Bytes received.
        got: usize,
        /// Bytes expected.
        expected: usize,
    },
    /// No answer in time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

/// One connection's client state.
pub struct Client {
    mode: Mode,
    target: SocketAddr,
    authority: HeaderValue,
    body: Bytes,
    conn: Option<Sender>,
}

async fn connect(target: SocketAddr) -> Result<TokioIo<TcpStream>, Error> {
    let stream = TcpStream::connect(target).await.map_err(Error::Connect)?;
    stream.set_nodelay(true).map_err(Error::Connect)?;
    Ok(TokioIo::new(stream))
}

impl Client {
    /// A client that connects lazily.
    pub fn new(mode: Mode, target: SocketAddr, authority: String, body: Bytes) -> Client {
        let body = match mode {
            Mode::Grpc => grpc_frame(&body),
            _ => body,
        };
        Client {
            mode,
            target,
            authority: HeaderValue::from_str(&authority)
                .unwrap_or_else(|_| HeaderValue::from_static("localhost")),
            body,
            conn: None,
        }
    }

    /// Sends one request and reads the whole answer.
    pub async fn request(&mut self) -> Result<(), Error> {
        match tokio::time::timeout(REQUEST_TIMEOUT, self.exchange()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                // Start over on a fresh connection after any failure.
                self.conn = None;
                Err(e)
            }
            Err(_) => {
                self.conn = None;
                Err(Error::Timeout(REQUEST_TIMEOUT))
            }
        }
    }

    /// The connection's sender, ready for a request: the current one if still usable, else
    /// a new connection.
    async fn ready(&mut self) -> Result<&mut Sender, Error> {
        let mut current = self.conn.take();
        let alive = match &mut current {
            None => false,
            Some(Sender::H1(s)) => s.ready().await.is_ok(),
            Some(Sender::H2(s)) => s.ready().await.is_ok(),
        };
        let sender = match current {
            Some(sender) if alive => sender,
            _ => {
                let io = connect(self.target).await?;
                match self.mode {
                    Mode::Http1 | Mode::Http1Close => {
                        let (send, conn) = http1::handshake(io).await?;
                        tokio::task::spawn_local(conn);
                        Sender::H1(send)
                    }
                    Mode::H2 | Mode::Grpc => {
                        let (send, conn) = http2::handshake(TokioExecutor::new(), io).await?;
                        tokio::task::spawn_local(conn);
                        Sender::H2(send)
                    }
                }
            }
        };
        Ok(self.conn.insert(sender))
    }

    fn build(&self) -> Result<Request<Full<Bytes>>, Error> {
        let mut b = Request::builder().method(Method::POST);
        b = match self.mode {
            Mode::Http1 | Mode::Http1Close => b.uri("/").header(header::HOST, &self.authority),
            Mode::H2 | Mode::Grpc => {
                let path = if self.mode == Mode::Grpc {
                    GRPC_PATH
                } else {
                    "/"
                };
                let auth = self.authority.to_str().unwrap_or("localhost");
                b.uri(format!("http://{auth}{path}"))
                    .version(http::Version::HTTP_2)
            }
        };
        b = match self.mode {
            Mode::Grpc => b
                .header(header::CONTENT_TYPE, "application/grpc")
                .header(header::TE, "trailers"),
            _ => b.header(header::CONTENT_TYPE, "application/octet-stream"),
        };
        if self.mode == Mode::Http1Close {
            b = b.header(header::CONNECTION, "close");
        }
        Ok(b.body(Full::new(self.body.clone()))?)
    }

    async fn exchange(&mut self) -> Result<(), Error> {
        let req = self.build()?;
        let resp = match self.ready().await? {
            Sender::H1(s) => s.send_request(req).await?,
            Sender::H2(s) => s.send_request(req).await?,
        };
        if resp.status() != StatusCode::OK {
            return Err(Error::Status(resp.status()));
        }
        let header_status = resp.headers().get("grpc-status").cloned();
        let collected = resp.into_body().collect().await?;
        let trailer_status = collected
            .trailers()
            .and_then(|t| t.get("grpc-status"))
            .cloned();
        let got = collected.to_bytes().len();
        if got < self.body.len() {
            return Err(Error::ShortBody {
                got,
                expected: self.body.len(),
            });
        }
        if self.mode == Mode::Grpc {
            let status = trailer_status.or(header_status);
            let code = status.as_ref().and_then(|s| s.to_str().ok()).unwrap_or("");
            if code != "0" {
                return Err(Error::GrpcStatus(if code.is_empty() {
                    "missing".to_owned()
                } else {
                    code.to_owned()
                }));
            }
        }
        if self.mode == Mode::Http1Close {
            self.conn = None;
        }
        Ok(())
    }
}
