//! What the capture listener decided about a connection, carried to every request on it.
//!
//! The HTTP proxy runs Pingora's own connection handling, so the decision travels with the
//! stream itself: it is stored in the stream's `ProxyDigest` user data before the stream is
//! handed to `HttpProxy`, and Pingora copies that digest into every HTTP/1 session and into
//! the shared digest of an HTTP/2 connection (every stream). No map keyed by connection, no
//! race with a recycled file descriptor or address. The digest's response header is unused
//! (it exists for CONNECT proxies, which these listeners never are).

use std::net::SocketAddr;
use std::sync::Arc;

use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::Digest;
use pingora_http::ResponseHeader;

use crate::snapshot::{ChainKind, ChainRuntime, HttpChain};
use crate::tls::server::Accepted;
use crate::upstream::OriginalDestination;

/// Which capture listener accepted a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The outbound capture listener (15001).
    Outbound,
    /// The inbound capture listener (15006).
    Inbound,
}

impl Role {
    /// The name of the configured listener this capture listener stands for when none is
    /// bound on its port.
    pub fn listener_name(self) -> &'static str {
        match self {
            Role::Outbound => "virtualOutbound",
            Role::Inbound => "virtualInbound",
        }
    }
}

/// One captured connection: where it was going and which chain handles it.
#[derive(Debug)]
pub struct ConnContext {
    /// The capture listener that accepted it.
    pub role: Role,
    /// The address that capture listener is bound to.
    pub capture: SocketAddr,
    /// The downstream peer.
    pub peer_addr: Option<SocketAddr>,
    /// The local address of the accepted socket (the capture listener).
    pub local_addr: Option<SocketAddr>,
    /// The original destination and whether it was redirected.
    pub destination: OriginalDestination,
    /// Name of the (virtual) listener that handles it.
    pub listener: String,
    /// The filter chain that handles it, as of the snapshot it was accepted under.
    pub chain: Arc<ChainRuntime>,
    /// The sniffed application protocol, if sniffing happened and found HTTP.
    pub application_protocol: Option<&'static str>,
    /// Whether the connection is TLS (terminated by the proxy).
    pub tls: bool,
    /// The peer's verified identity (the SPIFFE ID of its certificate) on a mutual-TLS
    /// connection; what `authenticated` RBAC principals match.
    pub peer_principal: Option<Arc<str>>,
    /// The server name (SNI) the client asked for on a TLS connection.
    pub server_name: Option<Arc<str>>,
    /// What the TLS handshake established (peer certificate, own identity, ALPN), when the
    /// chain terminated TLS: the source of `x-forwarded-client-cert`.
    pub tls_session: Option<Accepted>,
}

impl ConnContext {
    /// The verified peer identity, if any.
    pub fn peer_principal(&self) -> Option<&str> {
        self.peer_principal.as_deref()
    }

    /// The TLS server name, if any.
    pub fn server_name(&self) -> Option<&str> {
        self.server_name.as_deref()
    }

    /// `https` on TLS connections, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls {
            "https"
        } else {
            "http"
        }
    }

    /// The HTTP connection manager of the chain, if it is an HTTP chain.
    pub fn http_chain(&self) -> Option<&HttpChain> {
        match &self.chain.kind {
            ChainKind::Http(http) => Some(http),
            ChainKind::Tcp(_) => None,
        }
    }

    /// A `ProxyDigest` carrying this context, to set on the stream before it is handed to
    /// the HTTP proxy.
    pub fn into_digest(self: Arc<Self>) -> ProxyDigest {
        let unused = ResponseHeader::from(http::Response::new(()).into_parts().0);
        ProxyDigest::new(Box::new(unused), Some(Box::new(self)))
    }

    /// The context attached by [`ConnContext::into_digest`] to a session's connection.
    pub fn from_digest(digest: Option<&Digest>) -> Option<Arc<ConnContext>> {
        digest?
            .proxy_digest
            .as_ref()?
            .user_data
            .as_ref()?
            .downcast_ref::<Arc<ConnContext>>()
            .cloned()
    }
}
