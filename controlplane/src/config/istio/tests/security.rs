//! PeerAuthentication and AuthorizationPolicy tables, and the dry-run annotation.

use std::path::Path;

use super::{run_table, Case, Want};
use crate::config::parse_str;

#[test]
fn peer_authentications() {
    let cases: Vec<Case<'_>> = vec![
        ("namespace wide", "{mtls: {mode: STRICT}}", Want::Ok),
        ("empty", "{}", Want::Ok),
        ("port level", "{selector: {matchLabels: {app: a}}, mtls: {mode: PERMISSIVE}, portLevelMtls: {8080: {mode: DISABLE}, '9090': {mode: UNSET}}}", Want::Ok),
        ("bad mode", "{mtls: {mode: BLAH}}", Want::Err("spec.mtls.mode", "unknown variant `BLAH`")),
        ("ports without selector", "{portLevelMtls: {80: {mode: STRICT}}}", Want::Err("spec.portLevelMtls", "portLevelMtls requires selector")),
        ("ports with empty selector", "{selector: {}, portLevelMtls: {80: {mode: STRICT}}}", Want::Err("spec.portLevelMtls", "portLevelMtls requires selector")),
        ("empty ports", "{selector: {matchLabels: {app: a}}, portLevelMtls: {}}", Want::Err("spec.portLevelMtls", "must have at least one element")),
        ("port 0", "{selector: {matchLabels: {app: a}}, portLevelMtls: {0: {mode: STRICT}}}", Want::Err("spec.portLevelMtls[0]", "port must be between 1-65535")),
        ("port name", "{selector: {matchLabels: {app: a}}, portLevelMtls: {http: {mode: STRICT}}}", Want::Err("spec.portLevelMtls[http]", "type conversion error from \"http\"")),
        ("selector wildcard", "{selector: {matchLabels: {'a*': b}}}", Want::Err("spec.selector.matchLabels[a*]", "wildcard is not supported")),
        ("selector without labels", "{selector: {}}", Want::Warn("spec.selector.matchLabels", "workload selector specified without labels")),
    ];
    for api in ["security.istio.io/v1", "security.istio.io/v1beta1"] {
        run_table(api, "PeerAuthentication", &cases);
    }
}

#[test]
fn authorization_policies() {
    let full = r#"
selector: {matchLabels: {app: httpbin}}
action: ALLOW
rules:
- from:
  - source: {principals: ["cluster.local/ns/default/sa/sleep", "*-suffix", "prefix-*", "*"], requestPrincipals: ["issuer/sub"], namespaces: [default]}
  - source: {ipBlocks: [10.0.0.0/8, 1.2.3.4], notRemoteIpBlocks: ["fd00::/8"]}
  - source: {serviceAccounts: [sleep, other/sa], trustDomains: [cluster.local]}
  to:
  - operation: {methods: [GET], paths: ["/api/*", "/items/{*}/detail", "/files/{**}"], hosts: ["*.example.com"], ports: ["8080"], notPaths: [/admin]}
  when:
  - {key: "request.headers[x-version]", values: [v1]}
  - {key: source.ip, values: [10.0.0.0/8]}
  - {key: destination.port, notValues: ["22"]}
  - {key: "request.auth.claims[groups]", values: [admins]}
  - {key: source.serviceAccount, values: [default/sleep]}
  - {key: connection.sni, values: ["*.example.com"]}
- {}
"#;
    let cases: Vec<Case<'_>> = vec![
        ("full", full, Want::Ok),
        ("allow nothing", "{}", Want::Ok),
        ("deny", "{action: DENY, rules: [{to: [{operation: {ports: ['22']}}]}]}", Want::Ok),
        ("audit", "{action: AUDIT, rules: [{}]}", Want::Ok),
        ("custom", "{action: CUSTOM, provider: {name: ext-authz}, rules: [{to: [{operation: {paths: [/admin]}}]}]}", Want::Ok),
        ("target ref", "{targetRef: {kind: Service, name: reviews}, rules: [{}]}", Want::Ok),
        ("target refs", "{targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}], rules: [{}]}", Want::Ok),
        ("deny without rules", "{action: DENY}", Want::Err("spec.rules", "DENY action without `rules` is meaningless")),
        ("deny with an empty list", "{action: DENY, rules: []}", Want::Ok),
        ("custom without rules", "{action: CUSTOM, provider: {name: x}}", Want::Err("spec.rules", "CUSTOM action without `rules`")),
        ("custom without provider", "{action: CUSTOM, rules: [{}]}", Want::Err("spec.provider.name", "`provider.name` must not be empty")),
        ("custom with principals", "{action: CUSTOM, provider: {name: x}, rules: [{from: [{source: {principals: [a]}}]}]}", Want::Err("spec.rules[0].from[0].source.principals", "From.Principals is currently not supported with CUSTOM action")),
        ("custom with jwt condition", "{action: CUSTOM, provider: {name: x}, rules: [{when: [{key: request.auth.principal, values: [a]}]}]}", Want::Err("spec.rules[0].when[0].key", "request.auth.principal is currently not supported with CUSTOM action")),
        ("provider with allow", "{provider: {name: x}, rules: [{}]}", Want::Err("spec.provider", "`provider` must not be with non CUSTOM action, found ALLOW")),
        ("bad action", "{action: PERMIT}", Want::Err("spec.action", "unknown variant `PERMIT`")),
        ("empty from", "{rules: [{from: []}]}", Want::Err("spec.rules[0].from", "`from` must not be empty, found at rule 0")),
        ("nil source", "{rules: [{from: [{}]}]}", Want::Err("spec.rules[0].from[0].source", "`from.source` must not be nil, found at rule 0")),
        ("empty source", "{rules: [{from: [{source: {}}]}]}", Want::Err("spec.rules[0].from[0].source", "`from.source` must not be empty, found at rule 0")),
        ("empty to", "{rules: [{to: []}]}", Want::Err("spec.rules[0].to", "`to` must not be empty")),
        ("empty operation", "{rules: [{to: [{operation: {}}]}]}", Want::Err("spec.rules[0].to[0].operation", "`to.operation` must not be empty")),
        ("empty principal", "{rules: [{from: [{source: {principals: ['']}}]}]}", Want::Err("spec.rules[0].from[0].source.principals", "empty value not allowed, found in Principals")),
        ("bad cidr", "{rules: [{from: [{source: {ipBlocks: [1.2.3.4/99]}}]}]}", Want::Err("spec.rules[0].from[0].source.ipBlocks", "bad CIDR range (1.2.3.4/99)")),
        ("bad ip", "{rules: [{from: [{source: {remoteIpBlocks: [1.2.3]}}]}]}", Want::Err("spec.rules[0].from[0].source.remoteIpBlocks", "bad IP address (1.2.3)")),
        ("bad port", "{rules: [{to: [{operation: {ports: ['70000']}}]}]}", Want::Err("spec.rules[0].to[0].operation.ports", "bad port (70000)")),
        ("accounts with namespaces", "{rules: [{from: [{source: {serviceAccounts: [ns/sa], namespaces: [ns]}}]}]}", Want::Err("spec.rules[0].from[0].source", "Cannot set serviceAccounts with namespaces or principals")),
        ("account format", "{rules: [{from: [{source: {serviceAccounts: [a/b/c]}}]}]}", Want::Err("spec.rules[0].from[0].source.serviceAccounts", "expected format 'serviceAccount' or 'namespace/serviceAccount'")),
        ("account wildcard", "{rules: [{from: [{source: {notServiceAccounts: ['ns/*']}}]}]}", Want::Err("spec.rules[0].from[0].source.notServiceAccounts", "wildcard not allowed")),
        ("path template", "{rules: [{to: [{operation: {paths: ['/a/{name}']}}]}]}", Want::Err("spec.rules[0].to[0].operation.paths", "invalid or unsupported path")),
        ("path template order", "{rules: [{to: [{operation: {paths: ['/{**}/a/{**}']}}]}]}", Want::Err("spec.rules[0].to[0].operation.paths", "{**} is not the last operator")),
        ("empty key", "{rules: [{when: [{values: [a]}]}]}", Want::Err("spec.rules[0].when[0].key", "`key` must not be empty")),
        ("no values", "{rules: [{when: [{key: source.ip}]}]}", Want::Err("spec.rules[0].when[0]", "at least one of `values` or `notValues` must be set for key source.ip")),
        ("unknown key", "{rules: [{when: [{key: source.color, values: [red]}]}]}", Want::Err("spec.rules[0].when[0].values", "unknown attribute: source.color")),
        ("bad header key", "{rules: [{when: [{key: 'request.headers[]', values: [a]}]}]}", Want::Err("spec.rules[0].when[0].values", "should have format a[b]")),
        ("replaced key", "{rules: [{when: [{key: destination.namespace, values: [a]}]}]}", Want::Err("spec.rules[0].when[0].values", "replaced by the metadata.namespace")),
        ("bad condition ip", "{rules: [{when: [{key: destination.ip, notValues: [nope]}]}]}", Want::Err("spec.rules[0].when[0].notValues", "invalid `notValue` for `key` destination.ip")),
        ("selector and target", "{selector: {matchLabels: {a: b}}, targetRef: {kind: Service, name: s}}", Want::Err("spec", "only one of targetRefs or workloadSelector")),
        ("target kind", "{targetRef: {kind: Deployment, name: d}}", Want::Err("spec.targetRef.kind", "targetRef must be to one of")),
        ("target namespace", "{targetRef: {kind: Service, name: s, namespace: other}}", Want::Err("spec.targetRef.namespace", "cross namespace referencing is not supported")),
        ("deny http only", "{action: DENY, rules: [{to: [{operation: {methods: [GET]}}]}]}", Want::Warn("spec.rules[0]", "deny all traffic to TCP ports")),
    ];
    for api in ["security.istio.io/v1", "security.istio.io/v1beta1"] {
        run_table(api, "AuthorizationPolicy", &cases);
    }
}

#[test]
fn dry_run_annotation() {
    let doc = |kind: &str, value: &str, spec: &str| {
        format!(
            "apiVersion: security.istio.io/v1\nkind: {kind}\n\
             metadata: {{name: p, namespace: ns, annotations: {{istio.io/dry-run: '{value}'}}}}\n\
             spec: {spec}\n"
        )
    };
    let ok = parse_str(
        Path::new("d.yaml"),
        &doc("AuthorizationPolicy", "true", "{action: DENY, rules: [{}]}"),
    );
    assert!(ok.errors.is_empty(), "{:?}", ok.errors);
    let cases = [
        (
            "AuthorizationPolicy",
            "maybe",
            "{action: DENY, rules: [{}]}",
            "invalid value (maybe)",
        ),
        (
            "AuthorizationPolicy",
            "true",
            "{action: AUDIT, rules: [{}]}",
            "only supports action ALLOW/DENY, found action AUDIT in ns/p",
        ),
        (
            "PeerAuthentication",
            "true",
            "{}",
            "ns/p has unsupported annotation istio.io/dry-run",
        ),
    ];
    for (kind, value, spec, words) in cases {
        let parsed = parse_str(Path::new("d.yaml"), &doc(kind, value, spec));
        let e = parsed.errors.first().expect("rejected");
        assert_eq!(e.field(), Some("metadata.annotations[istio.io/dry-run]"));
        assert!(e.to_string().contains(words), "{e}");
    }
}
