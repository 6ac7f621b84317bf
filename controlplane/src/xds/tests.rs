use std::collections::BTreeSet;
use std::sync::Arc;

use envoy_types::util::pack_any;

use super::*;
use crate::config::objects::TargetPort;
use crate::registry::{Service, ServicePort};

fn service(ns: &str, name: &str, ip: Option<&str>) -> Service {
    Service {
        name: name.into(),
        namespace: ns.into(),
        hostname: format!("{name}.{ns}.svc.cluster.local"),
        cluster_ip: ip.map(|i| i.parse().unwrap()),
        addresses: ip
            .map(|i| i.parse::<std::net::IpAddr>().unwrap().into())
            .into_iter()
            .collect(),
        ports: vec![ServicePort {
            name: Some("http".into()),
            port: 9080,
            target_port: TargetPort::Number(9080),
            protocol: Protocol::Http,
        }],
        ..Service::default()
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

fn endpoint(ip: &str) -> crate::registry::Endpoint {
    crate::registry::Endpoint {
        locality: Default::default(),
        ip: ip.parse().unwrap(),
        port: 9080,
        healthy: true,
        source: crate::registry::EndpointSource::Config,
        weight: 1,
        tls_mode: Default::default(),
        labels: Default::default(),
        service_account: Some("cart".into()),
        workload: None,
    }
}

#[test]
fn proxies_with_the_same_view_share_one_rendering_across_snapshots() {
    let mut m = mesh(vec![
        service("shop", "cart", Some("10.96.0.7")),
        service("web", "front", Some("10.96.0.8")),
    ]);
    let cart_key = crate::registry::ServiceKey {
        namespace: "shop".into(),
        name: "cart".into(),
    };
    m.endpoints
        .insert((cart_key.clone(), 9080), vec![endpoint("10.1.0.1")]);
    let proxy = |ns: &str| ProxyInfo {
        namespace: Some(ns.into()),
        ..ProxyInfo::default()
    };
    let (a, b) = (proxy("shop"), proxy("web"));
    let none = BTreeSet::new();
    let find = |v: &[cache::Shared], name: &str| {
        v.iter()
            .find(|r| &*r.name == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} missing"))
    };
    let cart = "outbound|9080||cart.shop.svc.cluster.local";
    let ca = rendered(ResourceType::Cluster, &m, &a, &none);
    let cb = rendered(ResourceType::Cluster, &m, &b, &none);
    assert!(Arc::ptr_eq(&find(&ca, cart), &find(&cb, cart)));
    // The shared rendering is the cluster the translation builds.
    let plain: Vec<(String, Any)> = resources(ResourceType::Cluster, &m, &a, &none);
    assert_eq!(plain.len(), ca.len());
    let cached = m.render_cache.len();

    // The next snapshot adds a Service: only its cluster is rendered, the others are reused.
    let mut next = m.clone();
    next.version = 1;
    let added = service("web", "extra", Some("10.96.0.9"));
    next.services.insert(added.key(), Arc::new(added));
    let cn = rendered(ResourceType::Cluster, &next, &a, &none);
    assert!(Arc::ptr_eq(&find(&ca, cart), &find(&cn, cart)));
    assert_eq!(next.render_cache.len(), cached + 1);

    // A changed Service, or new endpoint identities, render again.
    let mut changed = next.clone();
    changed.version = 2;
    changed
        .endpoints
        .insert((cart_key, 9080), vec![endpoint("10.1.0.2")]);
    let mut ep = endpoint("10.1.0.3");
    ep.service_account = Some("other".into());
    let front_key = crate::registry::ServiceKey {
        namespace: "web".into(),
        name: "front".into(),
    };
    changed.endpoints.insert((front_key, 9080), vec![ep]);
    let cc = rendered(ResourceType::Cluster, &changed, &a, &none);
    let front = "outbound|9080||front.web.svc.cluster.local";
    assert!(Arc::ptr_eq(&find(&cn, cart), &find(&cc, cart)));
    assert!(!Arc::ptr_eq(&find(&cn, front), &find(&cc, front)));

    // Load assignments: shared while the endpoints are the same, rendered again when not.
    let names: BTreeSet<String> = [cart.to_string()].into();
    let ea = rendered(ResourceType::Endpoint, &next, &a, &names);
    let eb = rendered(ResourceType::Endpoint, &next, &b, &names);
    assert!(Arc::ptr_eq(&ea[0], &eb[0]));
    let ec = rendered(ResourceType::Endpoint, &changed, &b, &names);
    assert_ne!(ea[0].hash, ec[0].hash);
    use prost::Message;
    let cla = envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment::decode(
        ec[0].any().value.as_slice(),
    )
    .unwrap();
    assert!(format!("{cla:?}").contains("10.1.0.2"));
}

/// A snapshot of `yaml`, loaded as the control plane loads a directory.
fn mesh_of(yaml: &str) -> MeshSnapshot {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.yaml"), yaml).unwrap();
    let snap = crate::config::ConfigStore::load(dir.path()).current();
    assert!(snap.errors.is_empty(), "{:?}", snap.errors);
    MeshSnapshot::build(&snap, [], "cluster.local")
}

#[test]
fn route_configurations_share_virtual_hosts_only_between_equal_views() {
    let svc = |name: &str, ns: &str, ip: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\n\
             spec: {{clusterIP: {ip}, ports: [{{name: http, port: 9080}}]}}\n---\n"
        )
    };
    // cart's consistent hash applies in `web` only; `dup` clashes with front's cluster IP.
    let yaml = svc("cart", "shop", "10.96.0.7")
        + &svc("front", "web", "10.96.0.8")
        + &svc("dup", "web", "10.96.0.8")
        + "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
           metadata: {name: cart-hash, namespace: web}\n\
           spec: {host: cart.shop.svc.cluster.local, exportTo: [\".\"], trafficPolicy: \
           {loadBalancer: {consistentHash: {httpHeaderName: x-user}}}}\n";
    let m = mesh_of(&yaml);
    let proxy = |ns: &str, app: &str| ProxyInfo {
        namespace: Some(ns.into()),
        labels: [("app".to_string(), app.to_string())].into(),
        ..ProxyInfo::default()
    };
    let names: BTreeSet<String> = ["9080".to_string()].into();
    let route = |p: &ProxyInfo| {
        let r = rendered(ResourceType::Route, &m, p, &names);
        assert_eq!(r.len(), 1);
        // The assembled encoding is the encoding of the configuration the translation builds.
        let message = routes::outbound_route(&m, p, 9080);
        assert_eq!(r[0].any().value, message.encode_to_vec());
        (r[0].clone(), message)
    };
    use prost::Message;
    let vhost = |rc: &envoy_types::pb::envoy::config::route::v3::RouteConfiguration, name: &str| {
        rc.virtual_hosts
            .iter()
            .find(|v| v.name == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} missing"))
    };
    let cart = "cart.shop.svc.cluster.local:9080";

    let (web_a, web_a_rc) = route(&proxy("web", "a"));
    let cached = m.render_cache.len();
    let (web_b, _) = route(&proxy("web", "b"));
    assert_eq!(
        web_a.hash, web_b.hash,
        "same namespace and rules: same route"
    );
    assert_eq!(m.render_cache.len(), cached, "nothing rendered again");

    let (shop, shop_rc) = route(&proxy("shop", "c"));
    let (other, other_rc) = route(&proxy("other", "d"));
    assert_ne!(web_a.hash, shop.hash);
    assert_ne!(web_a.hash, other.hash);
    // The short name is a domain in the Service's own namespace only.
    assert!(vhost(&shop_rc, cart).domains.contains(&"cart".to_string()));
    assert!(!vhost(&other_rc, cart).domains.contains(&"cart".to_string()));
    // The DestinationRule's hash reaches the proxies of `web` only.
    let hashes = |rc| {
        let vh = vhost(rc, cart);
        match &vh.routes[0].action {
            Some(envoy_types::pb::envoy::config::route::v3::route::Action::Route(a)) => {
                a.hash_policy.len()
            }
            _ => panic!("not a route action"),
        }
    };
    assert_eq!(hashes(&web_a_rc), 1);
    assert_eq!(hashes(&other_rc), 0);
    // The cluster IP goes to the first of the two Services only, for every proxy.
    for rc in [&web_a_rc, &other_rc] {
        let ip = "10.96.0.8".to_string();
        assert!(vhost(rc, "dup.web.svc.cluster.local:9080")
            .domains
            .contains(&ip));
        assert!(!vhost(rc, "front.web.svc.cluster.local:9080")
            .domains
            .contains(&ip));
    }
}
