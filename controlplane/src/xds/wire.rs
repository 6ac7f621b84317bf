//! ADS responses written from shared encodings.
//!
//! A state-of-the-world response to a proxy in a big mesh is most of a MiB, and every proxy
//! gets one on a full push. Encoded the usual way, each stream would copy every resource into
//! a `DiscoveryResponse`, then into its gRPC encode buffer, which keeps the capacity of the
//! largest message the stream ever sent: about 1 MiB per connected proxy, held for good.
//! Here a response holds its resources as [`Shared`] encodings (each already the bytes of a
//! `resources` entry, see [`Rendered::field`](super::cache::Rendered::field)), and its gRPC
//! message is written in chunks of at most [`CHUNK`] bytes, one at a time, as the connection
//! takes them: a stream holds one chunk beyond what the HTTP/2 connection has buffered, and
//! nothing once the response is sent.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use envoy_types::pb::envoy::config::core::v3::ControlPlane;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
use http::{HeaderMap, HeaderValue};
use http_body::Frame;
use prost::Message;
use tokio::sync::mpsc;

use super::cache::Shared;

/// The largest chunk of a response written at once (a resource bigger than this goes
/// alone, without a copy).
pub const CHUNK: usize = 16 * 1024;

/// Length of the gRPC message prefix: the compressed flag and the message length.
const GRPC_PREFIX: usize = 5;

/// A `DiscoveryResponse` whose resources are shared encodings.
#[derive(Clone, Debug, PartialEq)]
pub struct SharedResponse {
    /// `version_info`.
    pub version_info: String,
    /// `type_url`.
    pub type_url: &'static str,
    /// `nonce`.
    pub nonce: String,
    /// `control_plane.identifier`.
    pub control_plane: &'static str,
    /// The resources, in order.
    pub resources: Vec<Shared>,
}

impl SharedResponse {
    /// The fields other than `resources`, encoded.
    fn head(&self) -> DiscoveryResponse {
        DiscoveryResponse {
            version_info: self.version_info.clone(),
            type_url: self.type_url.to_string(),
            nonce: self.nonce.clone(),
            control_plane: Some(ControlPlane {
                identifier: self.control_plane.to_string(),
            }),
            ..Default::default()
        }
    }

    /// The length of the encoded `DiscoveryResponse`.
    pub fn encoded_len(&self) -> usize {
        self.head().encoded_len() + self.resources.iter().map(|r| r.field.len()).sum::<usize>()
    }

    /// The same response as a `DiscoveryResponse` (a copy of every resource: for tests and
    /// debugging, not for sending).
    pub fn to_discovery_response(&self) -> DiscoveryResponse {
        DiscoveryResponse {
            resources: self.resources.iter().map(|r| r.any()).collect(),
            ..self.head()
        }
    }

    /// The gRPC message (uncompressed) in chunks: the prefix and the fields other than
    /// `resources` first, then the resources, copied into chunks of at most [`CHUNK`] bytes
    /// (a bigger one goes alone, shared).
    pub fn into_chunks(self) -> Chunks {
        let head = self.head().encode_to_vec();
        let len = head.len() + self.resources.iter().map(|r| r.field.len()).sum::<usize>();
        let mut first = BytesMut::with_capacity(GRPC_PREFIX + head.len());
        first.put_u8(0);
        // A response over 4 GiB cannot be framed; no mesh comes near (the proxies' limit is
        // far lower), so the length saturates and the proxy rejects the message.
        first.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
        first.put_slice(&head);
        Chunks {
            pending: Some(first),
            resources: self.resources.into(),
        }
    }
}

/// A response's gRPC message, chunk by chunk (see [`SharedResponse::into_chunks`]).
#[derive(Debug)]
pub struct Chunks {
    /// The chunk being filled.
    pending: Option<BytesMut>,
    resources: VecDeque<Shared>,
}

impl Iterator for Chunks {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        loop {
            let Some(next) = self.resources.front() else {
                return self.pending.take().map(BytesMut::freeze);
            };
            let size = next.field.len();
            let filled = self.pending.as_ref().map_or(0, BytesMut::len);
            if filled > 0 && filled + size > CHUNK {
                return self.pending.take().map(BytesMut::freeze);
            }
            if size >= CHUNK {
                let big = self.resources.pop_front()?;
                return Some(big.field.clone());
            }
            let pending = self
                .pending
                .get_or_insert_with(|| BytesMut::with_capacity(CHUNK));
            pending.put_slice(&next.field);
            self.resources.pop_front();
        }
    }
}

/// The body of an ADS response stream: the responses a stream task queues, written chunk by
/// chunk, then the `grpc-status: 0` trailer once the task ends the stream (drops its
/// sender).
#[derive(Debug)]
pub struct ResponseBody {
    rx: mpsc::Receiver<SharedResponse>,
    current: Option<Chunks>,
    done: bool,
}

impl ResponseBody {
    /// The body of the responses sent on `rx`.
    pub fn new(rx: mpsc::Receiver<SharedResponse>) -> ResponseBody {
        ResponseBody {
            rx,
            current: None,
            done: false,
        }
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        loop {
            if let Some(chunk) = self.current.as_mut().and_then(Iterator::next) {
                return Poll::Ready(Some(Ok(Frame::data(chunk))));
            }
            self.current = None;
            if self.done {
                return Poll::Ready(None);
            }
            match ready!(self.rx.poll_recv(cx)) {
                Some(response) => self.current = Some(response.into_chunks()),
                None => {
                    self.done = true;
                    let mut trailers = HeaderMap::new();
                    trailers.insert("grpc-status", HeaderValue::from_static("0"));
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.current.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xds::cache::Rendered;
    use envoy_types::pb::google::protobuf::Any;

    fn resource(name: &str, size: usize) -> Shared {
        Rendered::new(
            name.to_string(),
            Any {
                type_url: "type.googleapis.com/test".into(),
                value: vec![7; size],
            },
        )
    }

    fn response(sizes: &[usize]) -> SharedResponse {
        SharedResponse {
            version_info: "v1".into(),
            type_url: "type.googleapis.com/test",
            nonce: "1-1".into(),
            control_plane: "cp",
            resources: sizes
                .iter()
                .enumerate()
                .map(|(i, s)| resource(&format!("r{i}"), *s))
                .collect(),
        }
    }

    #[test]
    fn the_chunks_are_one_grpc_message_of_the_discovery_response() {
        for sizes in [
            &[][..],
            &[10],
            &[100; 500],
            &[CHUNK * 2, 10, CHUNK - 20, 30, CHUNK],
        ] {
            let r = response(sizes);
            let want = r.to_discovery_response();
            assert_eq!(r.encoded_len(), want.encoded_len());
            let chunks: Vec<Bytes> = r.into_chunks().collect();
            assert!(chunks.iter().all(|c| !c.is_empty()));
            let message: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
            assert_eq!(message[0], 0, "uncompressed");
            let len = u32::from_be_bytes(message[1..5].try_into().unwrap()) as usize;
            assert_eq!(len, message.len() - GRPC_PREFIX);
            assert_eq!(DiscoveryResponse::decode(&message[5..]).unwrap(), want);
            for c in &chunks {
                assert!(c.len() <= CHUNK || sizes.iter().any(|s| *s >= CHUNK));
            }
        }
    }

    #[test]
    fn a_resource_of_a_chunk_or_more_goes_alone_and_shared() {
        let r = response(&[10, CHUNK * 3, 10]);
        let big = r.resources[1].field.clone();
        let chunks: Vec<Bytes> = r.into_chunks().collect();
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks[1].as_ptr(), big.as_ptr(), "not copied");
    }

    #[tokio::test]
    async fn the_body_writes_each_response_then_the_ok_trailer() {
        use http_body_util::BodyExt;
        let (tx, rx) = mpsc::channel(4);
        tx.send(response(&[20, 30])).await.unwrap();
        tx.send(response(&[CHUNK])).await.unwrap();
        drop(tx);
        let collected = ResponseBody::new(rx).collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["grpc-status"], "0");
        let bytes = collected.to_bytes();
        let first = u32::from_be_bytes(bytes[1..5].try_into().unwrap()) as usize;
        let one = DiscoveryResponse::decode(&bytes[5..5 + first]).unwrap();
        let two = DiscoveryResponse::decode(&bytes[10 + first..]).unwrap();
        assert_eq!((one.resources.len(), two.resources.len()), (2, 1));
    }
}
