//! Scope, placement, fail-closed generation and path normalization.

use std::collections::BTreeMap;
use std::path::Path;

use envoy_types::pb::envoy::config::rbac::v3::rbac::Action as RbacAction;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;

use super::builder::{build, build_all, is_dry_run, PolicyObject};
use super::*;
use crate::config::{parse_str, Object};

fn policies(yaml: &str) -> Vec<PolicyObject> {
    let parsed = parse_str(Path::new("policies.yaml"), yaml);
    assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
    parsed
        .objects
        .into_iter()
        .map(|o| match o {
            Object::AuthorizationPolicy(p) => *p,
            other => panic!("{other:?}"),
        })
        .collect()
}

fn authorization(yaml: &str) -> Authorization {
    let mut by_key = BTreeMap::new();
    for p in policies(yaml) {
        by_key.insert((p.namespace.clone(), p.name.clone()), Arc::new(p));
    }
    Authorization {
        policies: by_key.into_values().collect(),
        path_normalization: PathNormalization::Base,
    }
}

fn names(list: &[&PolicyObject]) -> Vec<String> {
    list.iter()
        .map(|p| format!("{}/{}", p.namespace, p.name))
        .collect()
}

const SCOPES: &str = "
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: root, namespace: istio-system}
spec: {action: DENY, rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: root-for-b, namespace: istio-system}
spec: {selector: {matchLabels: {app: b}}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ns-wide, namespace: foo}
spec: {rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: for-a, namespace: foo}
spec: {selector: {matchLabels: {app: a}}, action: AUDIT, rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: empty-selector, namespace: foo}
spec: {selector: {}, action: CUSTOM, provider: {name: x}, rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: targeted, namespace: foo}
spec: {targetRef: {kind: Gateway, group: gateway.networking.k8s.io, name: gw}, rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: elsewhere, namespace: bar}
spec: {rules: [{}]}
";

#[test]
fn scope_root_namespace_selector_and_target_ref() {
    let a = authorization(SCOPES);
    let labels = |app: &str| BTreeMap::from([("app".to_string(), app.to_string())]);
    let s = a.select(Some("foo"), &labels("a"));
    assert_eq!(names(&s.deny), ["istio-system/root"]);
    assert_eq!(names(&s.allow), ["foo/ns-wide"]);
    assert_eq!(names(&s.audit), ["foo/for-a"]);
    assert_eq!(names(&s.custom), ["foo/empty-selector"]);
    let s = a.select(Some("foo"), &labels("b"));
    assert_eq!(names(&s.allow), ["istio-system/root-for-b", "foo/ns-wide"]);
    assert!(s.audit.is_empty());
    let s = a.select(Some("baz"), &labels("c"));
    assert_eq!(names(&s.deny), ["istio-system/root"]);
    assert!(s.allow.is_empty());
    let s = a.select(None, &BTreeMap::new());
    assert_eq!(names(&s.deny), ["istio-system/root"]);
}

const TCP: &str = "
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: p, namespace: foo}
spec:
  action: ACTION
  rules:
  - to: [{operation: {methods: [GET]}}]
  - from: [{source: {namespaces: [ns1]}}]
    to: [{operation: {ports: ['80'], paths: [/x]}}]
  - when: [{key: 'request.headers[x-a]', values: [b]}]
";

fn policy_names(built: &super::builder::Built) -> Vec<String> {
    let mut n: Vec<_> = built
        .rules
        .as_ref()
        .unwrap()
        .policies
        .keys()
        .cloned()
        .collect();
    n.sort();
    n
}

#[test]
fn http_attributes_on_tcp_drop_allow_rules_and_widen_deny_rules() {
    let bundle = trust_domain::Bundle::new("cluster.local", &[]);
    let allow = policies(&TCP.replace("ACTION", "ALLOW"));
    let allow: Vec<&PolicyObject> = allow.iter().collect();
    let http = build(&allow, RbacAction::Allow, false, &bundle).unwrap();
    assert_eq!(policy_names(&http).len(), 3);
    let tcp = build(&allow, RbacAction::Allow, true, &bundle).unwrap();
    assert!(
        policy_names(&tcp).is_empty(),
        "every ALLOW rule uses an HTTP field"
    );
    let deny = policies(&TCP.replace("ACTION", "DENY"));
    let deny: Vec<&PolicyObject> = deny.iter().collect();
    let tcp = build(&deny, RbacAction::Deny, true, &bundle).unwrap();
    let rules = tcp.rules.unwrap();
    assert_eq!(rules.policies.len(), 3, "DENY rules stay, wider");
    let widened = &rules.policies["ns[foo]-policy[p]-rule[0]"];
    assert_eq!(
        widened.permissions,
        vec![matchers::perm_and(vec![matchers::perm_any()])]
    );
    // The port and namespace of rule 1 stay; its path goes.
    let narrowed = &rules.policies["ns[foo]-policy[p]-rule[1]"];
    let text = format!("{narrowed:?}");
    assert!(
        text.contains("DestinationPort(80)") && !text.contains("UrlPath"),
        "{text}"
    );
}

#[test]
fn dry_run_and_empty_policies() {
    let bundle = trust_domain::Bundle::new("cluster.local", &[]);
    let ps = policies(
        "
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: dry, namespace: foo, annotations: {istio.io/dry-run: 'True'}}
spec: {rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: nothing, namespace: foo}
spec: {}
",
    );
    assert!(is_dry_run(&ps[0]) && !is_dry_run(&ps[1]));
    let only_dry = build(&[&ps[0]], RbacAction::Allow, false, &bundle).unwrap();
    assert!(only_dry.rules.is_none(), "dry run only: nothing enforced");
    assert_eq!(only_dry.shadow.unwrap().policies.len(), 1);
    let both = build(&[&ps[0], &ps[1]], RbacAction::Allow, false, &bundle).unwrap();
    let never = &both.rules.unwrap().policies["ns[foo]-policy[nothing]-rule[0]"];
    assert_eq!(never, &rule::never());
}

#[test]
fn filters_go_first_in_inbound_chains_but_the_black_hole() {
    use crate::xds::build::{http_connection_manager, tcp_proxy, Routes};
    use envoy_types::pb::envoy::config::listener::v3::FilterChain;
    let a = authorization(SCOPES);
    let selected = a.select(Some("foo"), &BTreeMap::from([("app".into(), "a".into())]));
    let filters = InboundFilters::new(&selected, "cluster.local");
    assert_eq!(filters.http.len(), 4, "CUSTOM, AUDIT, DENY, ALLOW");
    assert_eq!(filters.tcp.len(), 4);
    let chain = |name: &str, f| FilterChain {
        name: name.into(),
        filters: vec![f],
        ..Default::default()
    };
    let mut listener = Listener {
        filter_chains: vec![
            chain(
                "http",
                http_connection_manager("p", Routes::Rds("r".into())),
            ),
            chain("tcp", tcp_proxy("c")),
            chain("virtualInbound-blackhole", tcp_proxy("BlackHoleCluster")),
        ],
        default_filter_chain: Some(chain("default", tcp_proxy("d"))),
        ..Default::default()
    };
    apply_inbound(&mut listener, &filters, "virtualInbound-blackhole");
    normalize_paths(&mut listener, PathNormalization::DecodeAndMergeSlashes);
    let hcm: HttpConnectionManager = typed(&listener.filter_chains[0].filters[0]).unwrap();
    let http: Vec<_> = hcm.http_filters.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        http,
        [
            "envoy.filters.http.rbac",
            "envoy.filters.http.rbac",
            "envoy.filters.http.rbac",
            "envoy.filters.http.rbac",
            "envoy.filters.http.fault",
            "envoy.filters.http.cors",
            "envoy.filters.http.router"
        ]
    );
    assert!(hcm.normalize_path.unwrap().value);
    assert!(hcm.merge_slashes);
    assert_eq!(
        hcm.path_with_escaped_slashes_action,
        PathWithEscapedSlashesAction::UnescapeAndForward as i32
    );
    let tcp: Vec<_> = listener.filter_chains[1]
        .filters
        .iter()
        .map(|f| f.name.as_str())
        .collect();
    assert_eq!(tcp.len(), 5);
    assert_eq!(tcp[4], "envoy.filters.network.tcp_proxy");
    assert_eq!(
        listener.filter_chains[2].filters.len(),
        1,
        "black hole untouched"
    );
    assert_eq!(listener.default_filter_chain.unwrap().filters.len(), 5);
}

#[test]
fn path_normalization_modes() {
    for (text, mode) in [
        ("none", PathNormalization::None),
        ("BASE", PathNormalization::Base),
        ("merge_slashes", PathNormalization::MergeSlashes),
        (
            "DECODE_AND_MERGE_SLASHES",
            PathNormalization::DecodeAndMergeSlashes,
        ),
    ] {
        assert_eq!(text.parse::<PathNormalization>(), Ok(mode));
        assert_eq!(mode.to_string().parse::<PathNormalization>(), Ok(mode));
    }
    assert!("merge".parse::<PathNormalization>().is_err());
    let mut hcm = HttpConnectionManager::default();
    PathNormalization::None.apply(&mut hcm);
    assert!(!hcm.normalize_path.unwrap().value);
    let all = build_all(
        &Selected::default(),
        false,
        &trust_domain::Bundle::new("td", &[]),
    );
    assert!(all.is_empty());
}
