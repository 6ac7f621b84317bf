use std::sync::Arc;

use pingora_http::RequestHeader;
use xds_client::model::tls::{ClientCertDetails, ForwardClientCert, Xfcc};
use xds_client::model::{FilterChainMatch, TcpProxy};

use super::*;
use crate::listener::conn::{ConnContext, Role};
use crate::snapshot::{ChainKind, ChainRuntime};
use crate::tls::server::Accepted;
use crate::tls::PeerCert;
use crate::upstream::OriginalDestination;

const BY: &str = "spiffe://cluster.local/ns/default/sa/reviews";
const URI: &str = "spiffe://cluster.local/ns/default/sa/productpage";

fn conn(mtls: bool) -> ConnContext {
    ConnContext {
        role: Role::Inbound,
        capture: "0.0.0.0:15006".parse().unwrap(),
        peer_addr: None,
        local_addr: None,
        destination: OriginalDestination {
            address: "10.0.0.1:9080".parse().unwrap(),
            redirected: true,
        },
        listener: "virtualInbound".into(),
        chain: Arc::new(ChainRuntime {
            name: "c".into(),
            matcher: FilterChainMatch::default(),
            rbac: Vec::new(),
            tls: None,
            kind: ChainKind::Tcp(TcpProxy {
                stat_prefix: "c".into(),
                cluster: "c".into(),
                idle_timeout: None,
                weighted_clusters: Vec::new(),
                access_log: Vec::new(),
            }),
        }),
        application_protocol: None,
        tls: mtls,
        peer_principal: None,
        server_name: None,
        tls_session: mtls.then(|| Accepted {
            peer: Some(PeerCert {
                uris: vec![URI.into()],
                dns: Vec::new(),
                subject: String::new(),
                hash: "ab".repeat(32),
            }),
            local_uri: Some(BY.into()),
            alpn: None,
            server_name: None,
        }),
    }
}

const ISTIO_INBOUND: Xfcc = Xfcc {
    forward: ForwardClientCert::AppendForward,
    details: ClientCertDetails {
        subject: true,
        uri: true,
        dns: true,
    },
};

fn request(xfcc: Option<&str>) -> RequestHeader {
    let mut req = RequestHeader::build("GET", b"/", None).unwrap();
    if let Some(v) = xfcc {
        req.insert_header(XFCC, v).unwrap();
    }
    req
}

fn header(req: &RequestHeader) -> Option<String> {
    req.headers
        .get(XFCC)
        .map(|v| v.to_str().unwrap().to_string())
}

#[test]
fn mutual_tls_requests_carry_istios_element() {
    let mut req = request(None);
    apply(&mut req, &conn(true), ISTIO_INBOUND);
    assert_eq!(
        header(&req).as_deref(),
        Some(&*format!(
            "By={BY};Hash={};Subject=\"\";URI={URI}",
            "ab".repeat(32)
        ))
    );
}

#[test]
fn a_spoofed_header_is_never_trusted() {
    const SPOOF: &str =
        "By=spiffe://evil;Hash=00;URI=spiffe://cluster.local/ns/kube-system/sa/admin";
    // Plaintext: removed, whatever the policy (but ALWAYS_FORWARD_ONLY).
    for forward in [
        ForwardClientCert::Sanitize,
        ForwardClientCert::AppendForward,
        ForwardClientCert::SanitizeSet,
        ForwardClientCert::ForwardOnly,
    ] {
        let mut req = request(Some(SPOOF));
        apply(
            &mut req,
            &conn(false),
            Xfcc {
                forward,
                ..ISTIO_INBOUND
            },
        );
        assert_eq!(header(&req), None, "{forward:?}");
    }
    // An outbound chain (Envoy's default, SANITIZE) removes what the app sent.
    let mut req = request(Some(SPOOF));
    apply(&mut req, &conn(false), Xfcc::default());
    assert_eq!(header(&req), None);
    // SANITIZE_SET replaces it on mutual TLS.
    let mut req = request(Some(SPOOF));
    apply(
        &mut req,
        &conn(true),
        Xfcc {
            forward: ForwardClientCert::SanitizeSet,
            ..ISTIO_INBOUND
        },
    );
    assert!(!header(&req).unwrap().contains("evil"));
}
