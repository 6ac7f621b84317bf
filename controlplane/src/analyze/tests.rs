use super::*;
use crate::config::ConfigStore;

const SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: default}
spec:
  selector: {app: ratings}
  ports: [{name: http, port: 9080}, {name: grpc, port: 9090}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
"#;

/// Analyzes SERVICES plus `extra`; returns (code, object, text) of every message.
fn run(extra: &str) -> (Vec<(String, String, String)>, Report) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("base.yaml"), SERVICES).unwrap();
    std::fs::write(dir.path().join("extra.yaml"), extra).unwrap();
    let snapshot = ConfigStore::load(dir.path()).current();
    let report = analyze(&snapshot, "cluster.local");
    let messages = report
        .messages
        .iter()
        .map(|m| (m.code.code.to_string(), m.object.clone(), m.text.clone()))
        .collect();
    (messages, report)
}

fn has(messages: &[(String, String, String)], code: &str, object: &str, words: &str) -> bool {
    messages
        .iter()
        .any(|(c, o, t)| c == code && o == object && t.contains(words))
}

const GOOD_VS: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route: [{destination: {host: reviews.default.svc.cluster.local, subset: v1}}]
"#;

#[test]
fn a_consistent_config_has_no_messages() {
    let (messages, report) = run(GOOD_VS);
    assert!(messages.is_empty(), "{messages:#?}");
    assert!(!report.has_errors());
}

#[test]
fn references_to_missing_hosts_subsets_gateways_and_delegates() {
    let vs = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: broken, namespace: default}
spec:
  hosts: [ratings]
  gateways: [mesh, missing-gw]
  http:
  - match: [{uri: {prefix: /a}}]
    route: [{destination: {host: nope}}]
  - match: [{uri: {prefix: /b}}]
    route: [{destination: {host: reviews, subset: v3}}]
    mirror: {host: ghost.example.com}
  - route: [{destination: {host: ratings}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: root, namespace: default}
spec:
  hosts: [root.example.com]
  gateways: [missing-gw]
  http: [{delegate: {name: absent}}]
"#;
    let (m, report) = run(vs);
    let vs = "VirtualService default/broken";
    assert!(
        has(&m, "IST0101", vs, "Referenced host not found: \"nope\""),
        "{m:#?}"
    );
    assert!(
        has(
            &m,
            "IST0101",
            vs,
            "Referenced host not found: \"ghost.example.com\""
        ),
        "{m:#?}"
    );
    assert!(has(
        &m,
        "IST0101",
        vs,
        "Referenced host+subset in destinationrule not found: \"reviews+v3\""
    ));
    assert!(has(
        &m,
        "IST0101",
        vs,
        "Referenced gateway not found: \"default/missing-gw\""
    ));
    assert!(has(
        &m,
        "IST0101",
        "VirtualService default/root",
        "Referenced virtualservice not found: \"default/absent\""
    ));
    assert!(report.has_errors());
    assert!(report.count(Level::Error) >= 5);
    // The store rejects the VirtualService for its subset; analyze reports that once, as
    // IST0101, and still checks the rest of the object.
    let subset_messages = m
        .iter()
        .filter(|(_, _, t)| t.contains("host+subset"))
        .count();
    assert_eq!(subset_messages, 1, "{m:#?}");
    assert!(!m.iter().any(|(c, _, _)| c == "IST0106"), "{m:#?}");
}

#[test]
fn mesh_hosts_ports_and_gateway_hosts() {
    let extra = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-a, namespace: default}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-b, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local, ghost]
  http: [{route: [{destination: {host: reviews}}]}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: [bookinfo.example.com]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: edge, namespace: default}
spec:
  hosts: [bookinfo.example.com, other.example.com]
  gateways: [gw]
  http: [{route: [{destination: {host: ratings}}]}]
"#;
    let (m, _) = run(extra);
    for vs in [
        "VirtualService default/reviews-a",
        "VirtualService default/reviews-b",
    ] {
        assert!(
            has(
                &m,
                "IST0109",
                vs,
                "define the same host reviews.default.svc.cluster.local"
            ),
            "{m:#?}"
        );
    }
    assert!(has(
        &m,
        "MESH0001",
        "VirtualService default/reviews-b",
        "host \"ghost\""
    ));
    let edge = "VirtualService default/edge";
    assert!(
        has(&m, "IST0112", edge, "exposes multiple ports [9080 9090]"),
        "{m:#?}"
    );
    assert!(
        has(&m, "IST0132", edge, "one or more host [other.example.com]"),
        "{m:#?}"
    );
    assert!(
        !has(&m, "MESH0001", edge, ""),
        "gateway hosts are not services"
    );
}

#[test]
fn destination_rules_of_one_host() {
    let extra = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews-more, namespace: default}
spec:
  host: reviews.default.svc.cluster.local
  trafficPolicy: {loadBalancer: {simple: RANDOM}}
  subsets: [{name: v1, labels: {version: v1}}, {name: v3, labels: {version: v3}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: a-policy, namespace: default}
spec:
  host: ratings
  trafficPolicy: {loadBalancer: {simple: RANDOM}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: b-policy, namespace: default}
spec:
  host: ratings
  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
"#;
    let (m, _) = run(extra);
    assert!(
        has(
            &m,
            "MESH0002",
            "DestinationRule default/reviews-more",
            "subset \"v1\" of host reviews.default.svc.cluster.local is also defined by DestinationRule default/reviews"
        ),
        "{m:#?}"
    );
    assert!(has(
        &m,
        "MESH0003",
        "DestinationRule default/b-policy",
        "default/a-policy"
    ));
}

#[test]
fn selectors_sidecars_and_gateways() {
    let extra = r#"
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm-1, namespace: default}
spec: {address: 10.0.0.9, labels: {app: vm, version: v1}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: nobody, namespace: default}
spec: {selector: {matchLabels: {app: nothing}}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-v1, namespace: default}
spec: {selector: {matchLabels: {app: reviews, version: v1}}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: vm-v2, namespace: default}
spec: {selector: {matchLabels: {app: vm, version: v2}}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default-a, namespace: default}
spec: {egress: [{hosts: ["./*"]}]}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default-b, namespace: default}
spec: {egress: [{hosts: ["./*"]}]}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: vm-a, namespace: default}
spec: {workloadSelector: {labels: {app: vm}}, egress: [{hosts: ["./*"]}]}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: vm-b, namespace: default}
spec: {workloadSelector: {labels: {version: v1}}, egress: [{hosts: ["./*"]}]}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw-a, namespace: default, annotations: {sidecar.istio.io/inject: "false"}}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*.example.com"]}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw-b, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["ns/www.example.com"]}]
"#;
    let (m, _) = run(extra);
    assert!(
        has(
            &m,
            "IST0127",
            "AuthorizationPolicy default/nobody",
            "No matching workloads for this resource with the following labels: app=nothing"
        ),
        "{m:#?}"
    );
    assert!(!has(
        &m,
        "IST0127",
        "AuthorizationPolicy default/reviews-v1",
        ""
    ));
    assert!(has(
        &m,
        "IST0127",
        "PeerAuthentication default/vm-v2",
        "app=vm,version=v2"
    ));
    for s in ["Sidecar default/default-a", "Sidecar default/default-b"] {
        assert!(has(&m, "IST0111", s, "[default-a default-b]"), "{m:#?}");
    }
    for s in ["Sidecar default/vm-a", "Sidecar default/vm-b"] {
        assert!(
            has(&m, "IST0110", s, "select the same workload pod \"vm-1\""),
            "{m:#?}"
        );
    }
    assert!(has(
        &m,
        "IST0145",
        "Gateway default/gw-b",
        "Conflict with gateways default/gw-a (workload selector istio=ingressgateway, port 80, hosts www.example.com)"
    ));
    assert!(has(
        &m,
        "IST0107",
        "Gateway default/gw-a",
        "Misplaced annotation: sidecar.istio.io/inject can only be applied to Pod"
    ));
}

#[test]
fn store_findings_carry_codes() {
    let extra = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: broken, namespace: default}
spec: {host: reviews, trafficPolicy: {}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: twice, namespace: default}
spec:
  hosts: [ratings]
  http:
  - route: [{destination: {host: ratings, port: {number: 9080}}}]
  - route: [{destination: {host: ratings, port: {number: 9080}}}]
---
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: ef, namespace: default}
spec: {}
"#;
    let (m, report) = run(extra);
    assert!(has(
        &m,
        "IST0106",
        "DestinationRule default/broken",
        "spec.trafficPolicy: traffic policy must have at least one field"
    ));
    assert!(has(
        &m,
        "IST0130",
        "VirtualService default/twice",
        "only the last rule can have no matches"
    ));
    assert_eq!(report.store_errors.len(), 1);
    assert!(report.store_errors[0].to_string().contains("EnvoyFilter"));
    let line = report.messages[0].to_string();
    assert!(
        line.starts_with("Error [IST0106] (DestinationRule default/broken) "),
        "{line}"
    );
}

#[test]
fn authorization_policies_this_mesh_cannot_enforce_as_written() {
    let extra = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext, namespace: default}
spec:
  action: CUSTOM
  provider: {name: opa}
  rules: [{to: [{operation: {paths: ["/x"]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: targeted, namespace: default}
spec:
  targetRefs: [{kind: Service, group: "", name: reviews}]
  rules: [{}]
"#;
    let (m, report) = run(extra);
    assert!(
        has(&m, "MESH0004", "AuthorizationPolicy default/ext", "\"opa\""),
        "{m:#?}"
    );
    assert!(has(
        &m,
        "MESH0005",
        "AuthorizationPolicy default/targeted",
        "not to sidecars"
    ));
    assert!(
        report.has_errors(),
        "CUSTOM is an error: meshctl analyze exits 1"
    );
}
