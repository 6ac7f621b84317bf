//! `x-forwarded-client-cert` as Envoy's connection manager sets it (Istio: `SANITIZE`, the
//! default, on outbound chains, so that an app cannot forge one; `APPEND_FORWARD` with
//! `Subject`, `URI` and `DNS` on inbound chains). On a connection without a verified client
//! certificate the header is removed, whatever was sent, except with `ALWAYS_FORWARD_ONLY`.
//! An element reads `By=<own URI SAN>;Hash=<SHA-256 of the client certificate, hex>;
//! Subject="<subject>";URI=<client URI SAN>;DNS=<each DNS SAN>`.

use pingora_http::RequestHeader;
use xds_client::model::tls::{ForwardClientCert, Xfcc};

use crate::listener::conn::ConnContext;
use crate::tls::server::Accepted;

/// The header's name.
pub const XFCC: &str = "x-forwarded-client-cert";

/// This connection's element of the header.
pub fn element(
    session: &Accepted,
    details: &xds_client::model::tls::ClientCertDetails,
) -> Option<String> {
    let peer = session.peer.as_ref()?;
    let mut parts = Vec::new();
    if let Some(by) = &session.local_uri {
        parts.push(format!("By={by}"));
    }
    parts.push(format!("Hash={}", peer.hash));
    if details.subject {
        parts.push(format!("Subject=\"{}\"", peer.subject.replace('"', "\\\"")));
    }
    if details.uri {
        if let Some(uri) = peer.uris.first() {
            parts.push(format!("URI={uri}"));
        }
    }
    if details.dns {
        for dns in &peer.dns {
            parts.push(format!("DNS={dns}"));
        }
    }
    Some(parts.join(";"))
}

/// Applies the chain's policy to a request received on `conn`.
pub fn apply(req: &mut RequestHeader, conn: &ConnContext, xfcc: Xfcc) {
    if xfcc.forward == ForwardClientCert::AlwaysForwardOnly {
        return;
    }
    let current = conn
        .tls_session
        .as_ref()
        .and_then(|s| element(s, &xfcc.details));
    let Some(current) = current else {
        // Not mutual TLS: never trust what the client sent.
        req.remove_header(XFCC);
        return;
    };
    match xfcc.forward {
        ForwardClientCert::ForwardOnly | ForwardClientCert::AlwaysForwardOnly => {}
        ForwardClientCert::Sanitize => {
            req.remove_header(XFCC);
        }
        ForwardClientCert::SanitizeSet => {
            let _ = req.insert_header(XFCC, current);
        }
        ForwardClientCert::AppendForward => {
            let previous: Vec<String> = req
                .headers
                .get_all(XFCC)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .map(str::to_string)
                .collect();
            let value = if previous.is_empty() {
                current
            } else {
                format!("{},{current}", previous.join(","))
            };
            let _ = req.insert_header(XFCC, value);
        }
    }
}

#[cfg(test)]
mod tests;
