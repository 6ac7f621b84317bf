//! Unit tests of the peers' configuration.

use super::*;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn nginx_plain_forwards_with_keepalive() {
    let c = nginx_conf(
        &Role::Plain {
            listen: addr("127.0.0.1:18081"),
            upstream: addr("10.211.1.2:8080"),
        },
        Path::new("/tmp/x"),
        None,
    );
    assert!(c.contains("listen 127.0.0.1:18081;"));
    assert!(c.contains("server 10.211.1.2:8080;"));
    assert!(c.contains("proxy_pass http://up;"));
    assert!(c.contains("pid /tmp/x/nginx.pid;"));
}

#[test]
fn haproxy_tls_server_verifies_clients() {
    let certs = Certs {
        ca: "/c/ca.crt".into(),
        server_cert: "/c/s.crt".into(),
        server_key: "/c/s.key".into(),
        server_pem: "/c/s.pem".into(),
        client_cert: "/c/c.crt".into(),
        client_key: "/c/c.key".into(),
        client_pem: "/c/c.pem".into(),
    };
    let c = haproxy_conf(
        &Role::TlsServer {
            listen: addr("0.0.0.0:18443"),
            upstream: addr("127.0.0.1:8080"),
        },
        Some(&certs),
    );
    assert!(c.contains("bind 0.0.0.0:18443 ssl crt /c/s.pem ca-file /c/ca.crt verify required"));
}

#[test]
fn envoy_bootstrap_carries_istio_node_metadata() {
    let b = envoy_bootstrap(
        "c-envoy",
        "bench",
        Ipv4Addr::new(10, 211, 1, 4),
        &[("app", "client")],
        addr("10.211.1.1:15010"),
        None,
    );
    assert!(b.contains("id: \"sidecar~10.211.1.4~c-envoy.bench~bench.svc.cluster.local\""));
    assert!(b.contains("LABELS: {\"app\": \"client\"}"));
    assert!(b.contains("address: \"10.211.1.1\", port_value: 15010"));
    assert!(!b.contains("sds-grpc"));
    let with_sds = envoy_bootstrap(
        "c-envoy",
        "bench",
        Ipv4Addr::new(10, 211, 1, 4),
        &[("app", "client")],
        addr("10.211.1.1:15010"),
        Some(Path::new("/run/p/sds/socket")),
    );
    assert!(with_sds
        .contains("LABELS: {\"app\": \"client\", \"security.istio.io/tlsMode\": \"istio\"}"));
    assert!(with_sds.contains("  - name: sds-grpc\n"));
    assert!(with_sds.contains("address: {pipe: {path: \"/run/p/sds/socket\"}}"));
}
