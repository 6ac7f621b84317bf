//! Tables for the proxy scope: Sidecar selection, egress host imports, exportTo, one service
//! per host name, and ServiceEntry/WorkloadEntry conversion corners the golden cases do not
//! show.

use super::*;
use crate::config::parse_str;
use crate::registry::sidecar::HostImport;
use crate::registry::{MeshSnapshot, ProxyInfo, Resolution};

fn mesh(yaml: &str) -> MeshSnapshot {
    mesh_with(yaml, &[])
}

fn mesh_with(yaml: &str, proxies: &[ProxyInfo]) -> MeshSnapshot {
    let parsed = parse_str(std::path::Path::new("t.yaml"), yaml);
    assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
    let mut snap = crate::config::ConfigSnapshot::default();
    for o in parsed.objects {
        snap.objects.insert(
            o.key(),
            crate::config::StoredObject {
                object: o,
                file: "t.yaml".into(),
                kept: false,
            },
        );
    }
    MeshSnapshot::build(&std::sync::Arc::new(snap), proxies, "cluster.local")
}

fn proxy(ns: &str, labels: &[(&str, &str)]) -> ProxyInfo {
    ProxyInfo {
        namespace: Some(ns.to_string()),
        ips: vec!["10.9.0.1".parse().unwrap()],
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..ProxyInfo::default()
    }
}

fn hosts(scope: &ProxyScope) -> Vec<String> {
    scope.services.iter().map(|s| s.hostname.clone()).collect()
}

fn svc(ns: &str, name: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}{extra}}}\n\
         spec:\n  clusterIP: 10.96.9.{n}\n  ports:\n  - {{name: http, port: 80}}\n---\n",
        n = name.len() + ns.len()
    )
}

fn sidecar(ns: &str, name: &str, body: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{body}\n---\n"
    )
}

#[test]
fn sidecar_selection_order() {
    let yaml = [
        svc("a", "one", ""),
        svc("b", "two", ""),
        svc("istio-system", "three", ""),
        sidecar(
            "a",
            "sel",
            "  workloadSelector: {labels: {app: x}}\n  egress: [{hosts: [\"b/*\"]}]",
        ),
        sidecar("a", "default", "  egress: [{hosts: [\"./*\"]}]"),
        sidecar(
            "istio-system",
            "default",
            "  egress: [{hosts: [\"istio-system/*\"]}]",
        ),
        sidecar(
            "istio-system",
            "sel",
            "  workloadSelector: {labels: {app: y}}\n  egress: [{hosts: [\"*/*\"]}]",
        ),
    ]
    .concat();
    let m = mesh(&yaml);
    type Case<'a> = (
        &'a str,
        &'a [(&'a str, &'a str)],
        Option<&'a str>,
        &'a [&'a str],
    );
    let cases: &[Case] = &[
        (
            "a",
            &[("app", "x")],
            Some("a/sel"),
            &["two.b.svc.cluster.local"],
        ),
        (
            "a",
            &[("app", "z")],
            Some("a/default"),
            &["one.a.svc.cluster.local"],
        ),
        // The root namespace's Sidecar with a selector is not a default for others.
        (
            "b",
            &[("app", "y")],
            Some("istio-system/default"),
            &["three.istio-system.svc.cluster.local"],
        ),
        (
            "istio-system",
            &[("app", "y")],
            Some("istio-system/sel"),
            &[
                "one.a.svc.cluster.local",
                "two.b.svc.cluster.local",
                "three.istio-system.svc.cluster.local",
            ],
        ),
    ];
    for (ns, labels, want_sidecar, want_hosts) in cases {
        let scope = ProxyScope::new(&m, &proxy(ns, labels));
        assert_eq!(scope.sidecar.as_deref(), *want_sidecar, "{ns} {labels:?}");
        let mut got = hosts(&scope);
        got.sort();
        let mut want: Vec<String> = want_hosts.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(got, want, "{ns} {labels:?}");
    }
}

#[test]
fn egress_host_imports() {
    let cases: &[(&str, &str, &str, Option<&str>, bool)] = &[
        ("*/*", "any", "x.any.svc.cluster.local", Some("me"), true),
        ("./*", "me", "x.me.svc.cluster.local", Some("me"), true),
        (
            "./*",
            "other",
            "x.other.svc.cluster.local",
            Some("me"),
            false,
        ),
        ("./*", "me", "x.me.svc.cluster.local", None, false),
        ("~/*", "me", "x.me.svc.cluster.local", Some("me"), false),
        ("ns/*.example.com", "ns", "a.example.com", None, true),
        ("ns/*.example.com", "ns", "*.b.example.com", None, true),
        ("ns/a.example.com", "ns", "*.example.com", None, false),
        ("ns/a.example.com", "ns", "a.example.com", None, true),
        ("ns/a.example.com", "other", "a.example.com", None, false),
        (
            "*/x.me.svc.cluster.local",
            "me",
            "x.me.svc.cluster.local",
            None,
            true,
        ),
        // Short names are not expanded, as in Istio.
        ("./x", "me", "x.me.svc.cluster.local", Some("me"), false),
    ];
    for (import, ns, host, proxy_ns, want) in cases {
        let h = HostImport::parse(import).unwrap();
        assert_eq!(
            h.imports(ns, host, *proxy_ns),
            *want,
            "{import} {ns} {host}"
        );
    }
    assert!(HostImport::parse("no-namespace").is_none());
}

#[test]
fn export_to_hides_services_and_egress_cannot_bring_them_back() {
    let yaml = [
        svc("a", "open", ""),
        svc(
            "a",
            "closed",
            ", annotations: {networking.istio.io/exportTo: \".\"}",
        ),
        sidecar("b", "default", "  egress: [{hosts: [\"a/*\"]}]"),
    ]
    .concat();
    let m = mesh(&yaml);
    let from_b = ProxyScope::new(&m, &proxy("b", &[]));
    assert_eq!(hosts(&from_b), ["open.a.svc.cluster.local"]);
    let from_a = ProxyScope::new(&m, &proxy("a", &[]));
    assert_eq!(from_a.services.len(), 2);
    let anonymous = ProxyScope::new(&m, &ProxyInfo::default());
    assert_eq!(hosts(&anonymous), ["open.a.svc.cluster.local"]);
}

/// ServiceEntries contending for hosts: `api.example.com` from namespaces a and b, and one in
/// a claiming the Kubernetes host `web.c.svc.cluster.local`.
const CONTESTED_HOSTS: &str = "
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: e1, namespace: a}
spec: {hosts: [api.example.com], ports: [{number: 80, name: http, protocol: HTTP}]}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: e2, namespace: b}
spec: {hosts: [api.example.com], ports: [{number: 81, name: http, protocol: HTTP}]}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: squat, namespace: a}
spec: {hosts: [web.c.svc.cluster.local], ports: [{number: 82, name: http, protocol: HTTP}]}
";

#[test]
fn one_service_per_host_kubernetes_then_own_namespace() {
    let yaml = format!("{CONTESTED_HOSTS}---\n{}", svc("c", "web", ""));
    let m = mesh(&yaml);
    let port_of = |scope: &ProxyScope, host: &str| {
        let s = scope.services.iter().find(|s| s.hostname == host).unwrap();
        (s.namespace.clone(), s.ports[0].port)
    };
    let from_b = ProxyScope::new(&m, &proxy("b", &[]));
    assert_eq!(port_of(&from_b, "api.example.com"), ("b".into(), 81));
    let from_c = ProxyScope::new(&m, &proxy("c", &[]));
    assert_eq!(port_of(&from_c, "api.example.com"), ("a".into(), 80));
    let from_a = ProxyScope::new(&m, &proxy("a", &[]));
    assert_eq!(
        port_of(&from_a, "web.c.svc.cluster.local"),
        ("c".into(), 80)
    );
}

#[test]
fn egress_port_trims_and_listeners_merge_ports() {
    let yaml = "
apiVersion: v1
kind: Service
metadata: {name: multi, namespace: a}
spec:
  clusterIP: 10.96.9.1
  ports: [{name: http, port: 80}, {name: grpc, port: 90}, {name: tcp, port: 100}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: a}
spec:
  egress:
  - port: {number: 90, protocol: GRPC, name: grpc}
    hosts: [./multi.a.svc.cluster.local]
  - port: {number: 80, protocol: HTTP, name: http}
    hosts: [./multi.a.svc.cluster.local]
";
    let m = mesh(yaml);
    let scope = ProxyScope::new(&m, &proxy("a", &[]));
    let ports: Vec<u16> = scope.services[0].ports.iter().map(|p| p.port).collect();
    assert_eq!(ports, [80, 90], "port 100 is in no egress listener");
    assert_eq!(scope.route_services(90).len(), 1);
    assert!(
        scope.route_services(100).is_empty(),
        "no catch-all listener"
    );
}

#[test]
fn outbound_traffic_policy_mode() {
    let cases = [
        (
            "  outboundTrafficPolicy: {mode: REGISTRY_ONLY}",
            OutboundMode::RegistryOnly,
        ),
        (
            "  outboundTrafficPolicy: {mode: ALLOW_ANY}",
            OutboundMode::AllowAny,
        ),
        ("  outboundTrafficPolicy: {}", OutboundMode::RegistryOnly),
        ("  egress: [{hosts: [\"*/*\"]}]", OutboundMode::AllowAny),
    ];
    for (body, want) in cases {
        let m = mesh(&sidecar("a", "default", body));
        assert_eq!(
            ProxyScope::new(&m, &proxy("a", &[])).outbound,
            want,
            "{body}"
        );
        // Without egress listeners a Sidecar imports everything.
        assert_eq!(m.sidecars[0].egress.len(), 1);
    }
    assert_eq!(
        ProxyScope::new(&mesh(""), &proxy("a", &[])).outbound,
        OutboundMode::AllowAny
    );
}

#[test]
fn service_entry_conversion_corners() {
    let yaml = "
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: dyn, namespace: a}
spec:
  hosts: ['*.dyn.example']
  resolution: DYNAMIC_DNS
  ports: [{number: 80, name: http, protocol: HTTP}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: two-hosts, namespace: a}
spec:
  hosts: [one.example, two.example]
  addresses: [240.1.0.0/24, 240.2.0.1/32]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 10.1.0.1}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: sock, namespace: a}
spec:
  hosts: [sock.example]
  resolution: STATIC
  ports: [{number: 81, name: foo}]
  endpoints: [{address: 'unix:///var/run/x.sock'}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: unlabelled, namespace: a}
spec: {address: 10.1.0.9}
---
apiVersion: v1
kind: Service
metadata: {name: k, namespace: a}
spec:
  clusterIP: 10.96.9.9
  selector: {}
  ports: [{name: http, port: 80}]
";
    let m = mesh(yaml);
    assert!(
        !m.services.values().any(|s| s.hostname == "*.dyn.example"),
        "DYNAMIC_DNS is not supported"
    );
    let one = m
        .services
        .values()
        .find(|s| s.hostname == "one.example")
        .unwrap();
    assert_eq!(one.resolution, Resolution::ClientSideLb);
    assert!(!one.mesh_external);
    assert_eq!(one.cluster_ip, Some("240.2.0.1".parse().unwrap()));
    assert_eq!(one.addresses.len(), 2);
    assert!(m.services.values().any(|s| s.hostname == "two.example"));
    assert_eq!(m.endpoints_of(&one.key(), 80).len(), 1);
    let sock = m
        .services
        .values()
        .find(|s| s.hostname == "sock.example")
        .unwrap();
    assert_eq!(sock.ports[0].protocol, crate::registry::Protocol::Auto);
    assert!(
        m.endpoints_of(&sock.key(), 81).is_empty(),
        "Unix sockets are skipped"
    );
    let k = m.services.values().find(|s| s.name == "k").unwrap();
    assert!(m.endpoints_of(&k.key(), 80).is_empty());
}

#[test]
fn proxies_register_with_selecting_service_entries() {
    let yaml = "
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: vm, namespace: a}
spec:
  hosts: [vm.a.mesh]
  location: MESH_INTERNAL
  resolution: STATIC
  workloadSelector: {labels: {app: vm}}
  ports: [{number: 80, name: http, protocol: HTTP, targetPort: 8080}]
";
    // A sidecar with a workload certificate carries Istio's tlsMode label.
    let p = proxy(
        "a",
        &[("app", "vm"), ("security.istio.io/tlsMode", "istio")],
    );
    let m = mesh_with(yaml, &[p]);
    let svc = m.services.values().next().unwrap();
    let eps = m.endpoints_of(&svc.key(), 80);
    assert_eq!(eps.len(), 1);
    assert_eq!(eps[0].port, 8080);
    assert_eq!(eps[0].tls_mode, crate::registry::TlsMode::Istio);
    // One without (no certificate: an Envoy peer here) takes plaintext.
    let m = mesh_with(yaml, &[proxy("a", &[("app", "vm")])]);
    let eps = m.endpoints_of(&svc.key(), 80);
    assert_eq!(eps[0].tls_mode, crate::registry::TlsMode::Disabled);
}

#[test]
fn scope_for_hosts_is_the_full_scope_restricted() {
    let more = "
apiVersion: v1
kind: Service
metadata: {name: multi, namespace: a}
spec:
  clusterIP: 10.96.9.1
  ports: [{name: http, port: 80}, {name: grpc, port: 90}, {name: tcp, port: 100}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: a}
spec:
  egress:
  - port: {number: 90, protocol: GRPC, name: grpc}
    hosts: [./multi.a.svc.cluster.local]
  - hosts: [./*, c/*]
";
    let yaml = format!(
        "{CONTESTED_HOSTS}---\n{more}---\n{}{}",
        svc("c", "web", ""),
        svc(
            "b",
            "hidden",
            ", annotations: {networking.istio.io/exportTo: \".\"}"
        )
    );
    let m = mesh(&yaml);
    let all: Vec<&str> = m.services.values().map(|s| s.hostname.as_str()).collect();
    let shown = |services: &[std::sync::Arc<crate::registry::Service>], hosts: &[&str]| {
        services
            .iter()
            .filter(|s| hosts.contains(&s.hostname.as_str()))
            .map(|s| (s.key(), s.hostname.clone(), s.ports.clone()))
            .collect::<Vec<_>>()
    };
    for ns in ["a", "b", "c"] {
        let p = proxy(ns, &[]);
        let full = ProxyScope::new(&m, &p);
        let subsets: Vec<Vec<&str>> = all
            .iter()
            .map(|h| vec![*h])
            .chain([
                all.clone(),
                vec!["api.example.com", "multi.a.svc.cluster.local"],
            ])
            .collect();
        for hosts in subsets {
            let set: std::collections::BTreeSet<&str> = hosts.iter().copied().collect();
            let part = ProxyScope::for_hosts(&m, &p, &set);
            assert_eq!(shown(&part.services, &hosts), shown(&full.services, &hosts));
            assert_eq!(part.services.len(), shown(&full.services, &hosts).len());
            assert_eq!(part.egress.len(), full.egress.len());
            for (e, f) in part.egress.iter().zip(&full.egress) {
                assert_eq!(shown(&e.services, &hosts), shown(&f.services, &hosts));
            }
        }
    }
}
