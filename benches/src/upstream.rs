//! `mesh-bench upstream`: the app behind every path, as Istio's benchmark uses fortio's echo
//! server. Each port serves HTTP/1.1 and h2c (prior knowledge); a request's body is echoed
//! back, and a gRPC unary call (`application/grpc`) gets its message back with `grpc-status: 0`
//! in the trailers. One thread, so that its cost stays on the core it is pinned to.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::{BufMut, Bytes, BytesMut};
use futures::stream;
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// The path of the benchmark's gRPC unary method.
pub const GRPC_PATH: &str = "/mesh.bench.v1.Bench/Unary";

/// Errors of the upstream server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The runtime could not be built.
    #[error("cannot start the runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// A port could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Flags of `mesh-bench upstream`.
#[derive(clap::Args, Debug, Clone)]
pub struct UpstreamArgs {
    /// Addresses to listen on (repeatable).
    #[arg(long = "listen", required = true)]
    pub listen: Vec<SocketAddr>,
}

/// A gRPC length-prefixed message whose protobuf payload is `bytes payload = 1`.
pub fn grpc_frame(payload: &[u8]) -> Bytes {
    let mut msg = BytesMut::with_capacity(payload.len() + 16);
    msg.put_u8(0x0a);
    let mut len = payload.len() as u64;
    while len >= 0x80 {
        msg.put_u8((len as u8 & 0x7f) | 0x80);
        len >>= 7;
    }
    msg.put_u8(len as u8);
    msg.put_slice(payload);
    let mut frame = BytesMut::with_capacity(msg.len() + 5);
    frame.put_u8(0);
    frame.put_u32(msg.len() as u32);
    frame.put_slice(&msg);
    frame.freeze()
}

type Body = Either<
    Full<Bytes>,
    StreamBody<stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>,
>;

async fn handle(req: Request<Incoming>) -> Result<Response<Body>, hyper::Error> {
    let grpc = req
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let body = req.into_body().collect().await?.to_bytes();
    if !grpc {
        let mut resp = Response::new(Either::Left(Full::new(body)));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        return Ok(resp);
    }
    // The request is one length-prefixed message: echo it as it came.
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let frames = vec![Ok(Frame::data(body)), Ok(Frame::trailers(trailers))];
    let mut resp = Response::new(Either::Right(StreamBody::new(stream::iter(frames))));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    Ok(resp)
}

async fn serve(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        // Latency matters more than batching small writes.
        let _ = stream.set_nodelay(true);
        tokio::task::spawn_local(async move {
            let builder = auto::Builder::new(TokioExecutor::new());
            // A connection ending in an error (a client gone) is no concern of the server.
            let _ = builder
                .serve_connection(TokioIo::new(stream), service_fn(handle))
                .await;
        });
    }
}

/// Serves until killed.
pub fn run(args: &UpstreamArgs) -> Result<(), Error> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        let mut listeners = Vec::new();
        for addr in &args.listen {
            let l = TcpListener::bind(addr)
                .await
                .map_err(|source| Error::Bind {
                    addr: *addr,
                    source,
                })?;
            listeners.push(l);
        }
        eprintln!("mesh-bench upstream: listening on {:?}", args.listen);
        let tasks: Vec<_> = listeners
            .into_iter()
            .map(|l| tokio::task::spawn_local(serve(l)))
            .collect();
        for t in tasks {
            let _ = t.await;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::grpc_frame;

    #[test]
    fn grpc_frame_is_length_prefixed_protobuf() {
        let f = grpc_frame(&[7u8; 300]);
        assert_eq!(f[0], 0);
        let len = u32::from_be_bytes([f[1], f[2], f[3], f[4]]) as usize;
        assert_eq!(len, f.len() - 5);
        // Field 1, wire type 2, then 300 as a varint (0xac 0x02).
        assert_eq!(&f[5..8], &[0x0a, 0xac, 0x02]);
    }
}
