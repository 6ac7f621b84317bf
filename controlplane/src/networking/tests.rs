use std::path::Path;

use super::*;
use crate::config::parse_str;
use crate::config::ConfigSnapshot;

fn rules(yaml: &str) -> Rules {
    let parsed = parse_str(Path::new("t.yaml"), yaml);
    assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
    let mut snap = ConfigSnapshot::default();
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
    Rules::build(&snap, "cluster.local")
}

fn proxy(ns: &str, labels: &[(&str, &str)]) -> ProxyInfo {
    ProxyInfo {
        namespace: Some(ns.to_string()),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}

const VS: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\n";
const DR: &str = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n";

#[test]
fn short_names_resolve_against_the_writers_namespace() {
    let r = rules(&format!(
        "{VS}metadata: {{name: a, namespace: shop}}\nspec:\n  hosts: [web, api.example.com]\n  http:\n  - route:\n    - destination: {{host: web}}\n"
    ));
    let vs = &r.virtual_services[0];
    assert_eq!(
        vs.spec.hosts,
        ["web.shop.svc.cluster.local", "api.example.com"]
    );
    let dest = vs.spec.http[0].route.as_ref().unwrap()[0]
        .destination
        .as_ref()
        .unwrap();
    assert_eq!(dest.host, "web.shop.svc.cluster.local");
    assert_eq!(
        vs.config_path(),
        "/apis/networking.istio.io/v1/namespaces/shop/virtual-service/a"
    );
}

#[test]
fn visibility_gateways_and_order() {
    let r = rules(&format!(
        "{VS}metadata: {{name: b, namespace: default}}\nspec: {{hosts: [x], http: [{{route: [{{destination: {{host: x}}}}]}}]}}\n---\n\
         {VS}metadata: {{name: a, namespace: default}}\nspec: {{hosts: [y], exportTo: ['.'], http: [{{route: [{{destination: {{host: y}}}}]}}]}}\n---\n\
         {VS}metadata: {{name: c, namespace: other}}\nspec: {{hosts: [z], exportTo: ['.'], http: [{{route: [{{destination: {{host: z}}}}]}}]}}\n---\n\
         {VS}metadata: {{name: d, namespace: default}}\nspec: {{hosts: [w], gateways: [gw], http: [{{route: [{{destination: {{host: w}}}}]}}]}}\n"
    ));
    let names: Vec<&str> = r
        .virtual_services_for(&proxy("default", &[]))
        .iter()
        .map(|v| v.name.as_str())
        .collect();
    // Private to the proxy's namespace first, then public; other namespaces' private ones
    // and gateway-only ones never.
    assert_eq!(names, ["a", "b"]);
    let other: Vec<&str> = r
        .virtual_services_for(&proxy("other", &[]))
        .iter()
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(other, ["c", "b"]);
}

#[test]
fn delegates_merge_into_their_root() {
    let r = rules(&format!(
        "{VS}metadata: {{name: root, namespace: default}}\nspec:\n  hosts: [reviews]\n  http:\n  - name: r\n    match: [{{uri: {{prefix: /api}}}}]\n    timeout: 3s\n    delegate: {{name: leaf}}\n  - route: [{{destination: {{host: reviews}}}}]\n---\n\
         {VS}metadata: {{name: leaf, namespace: default}}\nspec:\n  http:\n  - name: l\n    match: [{{uri: {{prefix: /api/v2}}}}, {{uri: {{prefix: /other}}}}]\n    route: [{{destination: {{host: reviews, subset: v2}}}}]\n  - name: l2\n    match: [{{uri: {{prefix: /api/v1}}}}]\n    route: [{{destination: {{host: reviews, subset: v1}}}}]\n"
    ));
    assert_eq!(
        r.virtual_services.len(),
        1,
        "the delegate is not applied alone"
    );
    let http = &r.virtual_services[0].spec.http;
    // `l` has a match outside the root's prefix: it conflicts and is dropped.
    let names: Vec<&str> = http.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["r-l2", ""]);
    assert_eq!(
        http[0].timeout,
        Some(crate::config::istio::Duration::from_millis(3000))
    );
    assert_eq!(
        http[0].matches[0].uri.as_ref().unwrap().prefix.as_deref(),
        Some("/api/v1")
    );
}

#[test]
fn destination_rule_lookup_order_and_consolidation() {
    let r = rules(&format!(
        "{DR}metadata: {{name: a, namespace: default}}\nspec: {{host: reviews, subsets: [{{name: v1, labels: {{version: v1}}}}]}}\n---\n\
         {DR}metadata: {{name: b, namespace: default}}\nspec: {{host: reviews.default.svc.cluster.local, trafficPolicy: {{loadBalancer: {{simple: RANDOM}}}}, subsets: [{{name: v1, labels: {{version: other}}}}, {{name: v2, labels: {{version: v2}}}}]}}\n---\n\
         {DR}metadata: {{name: wide, namespace: default}}\nspec: {{host: '*.default.svc.cluster.local', subsets: [{{name: all, labels: {{x: y}}}}]}}\n---\n\
         {DR}metadata: {{name: local, namespace: shop}}\nspec: {{host: reviews.default.svc.cluster.local, subsets: [{{name: v9, labels: {{version: v9}}}}]}}\n---\n\
         {DR}metadata: {{name: root, namespace: istio-system}}\nspec: {{host: '*.svc.cluster.local', subsets: [{{name: r, labels: {{r: r}}}}]}}\n"
    ));
    let host = "reviews.default.svc.cluster.local";
    let m = r
        .destination_rule(&proxy("default", &[]), host, "default")
        .unwrap();
    assert_eq!(m.sources, ["default/a", "default/b"]);
    let subsets: Vec<(&str, &str)> = m
        .subsets
        .iter()
        .map(|s| (s.name.as_str(), s.labels["version"].as_str()))
        .collect();
    assert_eq!(subsets, [("v1", "v1"), ("v2", "v2")]);
    assert!(m.traffic_policy.is_some());
    // A proxy's own namespace wins over the service's.
    let shop = r
        .destination_rule(&proxy("shop", &[]), host, "default")
        .unwrap();
    assert_eq!(shop.sources, ["shop/local"]);
    // The most specific host: the wildcard only for other services.
    let other = r
        .destination_rule(
            &proxy("default", &[]),
            "ratings.default.svc.cluster.local",
            "default",
        )
        .unwrap();
    assert_eq!(other.sources, ["default/wide"]);
    // Root namespace last.
    let far = r
        .destination_rule(&proxy("far", &[]), "web.far.svc.cluster.local", "far")
        .unwrap();
    assert_eq!(far.sources, ["istio-system/root"]);
    assert!(r.subset_defined(host, "v2", "default"));
    assert!(!r.subset_defined(host, "v7", "default"));
}
