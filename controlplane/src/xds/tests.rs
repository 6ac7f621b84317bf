use std::collections::BTreeSet;
use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::google::rpc;
use envoy_types::util::pack_any;

use super::status::{ProxyStatus, SyncStatus};
use super::stream::{RequestKind, StreamState};
use super::*;
use crate::config::objects::TargetPort;
use crate::registry::{Service, ServicePort};

fn service(ns: &str, name: &str, ip: Option<&str>) -> Service {
    Service {
        name: name.into(),
        namespace: ns.into(),
        hostname: format!("{name}.{ns}.svc.cluster.local"),
        cluster_ip: ip.map(|i| i.parse().unwrap()),
        ports: vec![ServicePort {
            name: Some("http".into()),
            port: 9080,
            target_port: TargetPort::Number(9080),
            protocol: Protocol::Http,
        }],
        selector: None,
    }
}

fn mesh(services: Vec<Service>) -> MeshSnapshot {
    let mut m = MeshSnapshot {
        cluster_domain: "cluster.local".into(),
        ..Default::default()
    };
    for s in services {
        let key = crate::registry::ServiceKey {
            namespace: s.namespace.clone(),
            name: s.name.clone(),
        };
        m.services.insert(key, Arc::new(s));
    }
    m
}

#[test]
fn domains_depend_on_the_proxy_namespace() {
    let svc = service("shop", "cart", Some("10.96.0.7"));
    assert_eq!(
        routes::domains(&svc, 9080, Some("shop")),
        [
            "cart.shop.svc.cluster.local",
            "cart.shop.svc.cluster.local:9080",
            "cart",
            "cart:9080",
            "cart.shop",
            "cart.shop:9080",
            "cart.shop.svc",
            "cart.shop.svc:9080",
            "10.96.0.7",
            "10.96.0.7:9080",
        ]
    );
    let other = routes::domains(&svc, 9080, Some("default"));
    assert!(!other.contains(&"cart".to_string()) && other.contains(&"cart.shop".to_string()));
    let headless = service("shop", "cart", None);
    assert_eq!(routes::domains(&headless, 9080, None).len(), 6);
}

#[test]
fn duplicate_domains_are_left_to_the_first_virtual_host() {
    let m = mesh(vec![
        service("a", "x", Some("10.96.0.9")),
        service("b", "y", Some("10.96.0.9")),
    ]);
    let route = routes::outbound_route(&m, &ProxyInfo::default(), 9080);
    let all: Vec<&String> = route
        .virtual_hosts
        .iter()
        .flat_map(|v| &v.domains)
        .collect();
    let unique: BTreeSet<&String> = all.iter().copied().collect();
    assert_eq!(all.len(), unique.len());
    assert!(route.virtual_hosts[0]
        .domains
        .contains(&"10.96.0.9".to_string()));
    assert!(!route.virtual_hosts[1]
        .domains
        .contains(&"10.96.0.9".to_string()));
    assert_eq!(route.virtual_hosts.last().unwrap().name, "allow_any");
}

#[test]
fn rendering_refuses_fields_it_does_not_cover() {
    let mut cluster = clusters::outbound("outbound|80||a.b.svc.cluster.local", Protocol::Http);
    assert!(render::any(pack_any(cluster.clone())).is_ok());
    cluster.alt_stat_name = "surprise".into();
    let err = render::any(pack_any(cluster)).unwrap_err();
    assert!(
        err.to_string().contains("Cluster: fields not covered"),
        "{err}"
    );
    let unknown = envoy_types::pb::google::protobuf::Any {
        type_url: "type.googleapis.com/x.Y".into(),
        value: vec![],
    };
    assert!(matches!(
        render::any(unknown),
        Err(render::RenderError::UnknownAny(_))
    ));
}

fn request(
    kind: ResourceType,
    names: &[&str],
    version: &str,
    nonce: &str,
    nack: Option<&str>,
) -> DiscoveryRequest {
    DiscoveryRequest {
        version_info: version.into(),
        resource_names: names.iter().map(|s| s.to_string()).collect(),
        type_url: kind.type_url().into(),
        response_nonce: nonce.into(),
        error_detail: nack.map(|m| rpc::Status {
            message: m.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn stream_state_follows_the_protocol() {
    let status = Arc::new(SyncStatus::default());
    let entry = status.register(ProxyStatus::new(7, None));
    let mut s = StreamState::new(7, entry.writer.clone());
    let m = mesh(vec![service("default", "reviews", Some("10.96.0.20"))]);
    let first = request(ResourceType::Cluster, &[], "", "", None);
    assert!(s.identify(&first));
    let (kind, out) = s.on_request(first, &m);
    assert_eq!(kind, RequestKind::Initial);
    let cds = &out[0];
    assert_eq!(cds.resources.len(), 4);
    assert!(cds
        .resources
        .iter()
        .all(|a| a.type_url == <Cluster as prost::Name>::type_url()));

    let (kind, out) = s.on_request(request(ResourceType::Cluster, &[], "", "bogus", None), &m);
    assert_eq!((kind, out.len()), (RequestKind::Stale, 0));
    let (kind, out) = s.on_request(
        request(ResourceType::Cluster, &[], "", &cds.nonce, Some("bad")),
        &m,
    );
    assert_eq!((kind, out.len()), (RequestKind::Nack, 0));
    assert_eq!(
        status.snapshot()[0].types["cds"].last_nack.as_deref(),
        Some("bad")
    );
    let (kind, out) = s.on_request(
        request(
            ResourceType::Cluster,
            &[],
            &cds.version_info,
            &cds.nonce,
            None,
        ),
        &m,
    );
    assert_eq!((kind, out.len()), (RequestKind::Ack, 0));
    let snap = &status.snapshot()[0].types["cds"];
    assert_eq!(
        snap.acked_version.as_deref(),
        Some(cds.version_info.as_str())
    );
    assert_eq!(snap.last_nack, None);

    // Unchanged content is not pushed again; changed content is, with a new version.
    assert!(s.on_mesh_change(&m).is_empty());
    let bigger = mesh(vec![
        service("default", "reviews", Some("10.96.0.20")),
        service("default", "ratings", Some("10.96.0.30")),
    ]);
    let pushed = s.on_mesh_change(&bigger);
    assert_eq!(pushed.len(), 1);
    assert_ne!(pushed[0].version_info, cds.version_info);

    // EDS: no response for an empty subscription; names answered; unknown types ignored.
    let (_, out) = s.on_request(request(ResourceType::Endpoint, &[], "", "", None), &bigger);
    assert!(out.is_empty());
    let mut unknown = request(ResourceType::Endpoint, &["x"], "", "", None);
    unknown.type_url =
        "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret".into();
    assert_eq!(s.on_request(unknown, &bigger).0, RequestKind::UnknownType);
    drop(entry);
    assert!(status.snapshot().is_empty());
}

/// The chains of a sniffed port, as Envoy matches them (level by level, no backtracking):
/// both halves sit on the `raw_buffer` branch, so a connection that is not HTTP (say, a
/// server-first protocol) reaches the TCP half instead of falling off the listener.
#[test]
fn sniffed_ports_keep_both_halves_on_the_plaintext_branch() {
    let mut svc = service("default", "legacy", Some("10.96.0.11"));
    svc.ports[0] = ServicePort {
        name: None,
        port: 9101,
        target_port: TargetPort::Number(9101),
        protocol: Protocol::Auto,
    };
    svc.selector = Some([("app".to_string(), "legacy".to_string())].into());
    let m = mesh(vec![svc]);
    let proxy = ProxyInfo {
        id: "sidecar~10.211.0.5~legacy-v1.default~default.svc.cluster.local".into(),
        pod: Some("legacy-v1".into()),
        namespace: Some("default".into()),
        ips: vec!["10.211.0.5".parse().unwrap()],
        labels: [("app".to_string(), "legacy".to_string())].into(),
        ..Default::default()
    };
    let all = listeners::listeners(&m, &proxy);
    let chain = |listener: &str, chain: &str| {
        let l = all.iter().find(|l| l.name == listener).expect(listener);
        let c = l
            .filter_chains
            .iter()
            .find(|c| c.name == chain)
            .expect(chain);
        c.filter_chain_match.clone().unwrap_or_default()
    };
    for (listener, prefix, port) in [
        (
            "10.96.0.11_9101",
            "outbound|9101||legacy.default.svc.cluster.local",
            None,
        ),
        ("virtualInbound", "inbound|9101||", Some(9101)),
    ] {
        let http = chain(listener, &format!("{prefix}-http"));
        let tcp = chain(listener, &format!("{prefix}-tcp"));
        assert_eq!(http.transport_protocol, "raw_buffer", "{listener}");
        assert_eq!(tcp.transport_protocol, "raw_buffer", "{listener}");
        assert_eq!(
            http.application_protocols,
            ["http/1.1", "h2c"],
            "{listener}"
        );
        assert!(tcp.application_protocols.is_empty(), "{listener}");
        assert_eq!(http.destination_port.map(|p| p.value), port, "{listener}");
        assert_eq!(tcp.destination_port.map(|p| p.value), port, "{listener}");
    }
}
