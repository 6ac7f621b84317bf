use std::collections::BTreeMap;
use std::path::Path;

use super::*;
use crate::config::parse_str;

fn telemetries(yaml: &str) -> Telemetries {
    let parsed = parse_str(Path::new("t.yaml"), yaml);
    assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
    Telemetries::from_objects(&parsed.objects.iter().collect::<Vec<_>>())
}

fn labels(l: &[(&str, &str)]) -> BTreeMap<String, String> {
    l.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

const CONFIG: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |
    extensionProviders:
    - name: otel
      opentelemetry: {service: otel.istio-system.svc.cluster.local, port: 4317}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  accessLogging:
  - providers: [{name: envoy}]
    filter: {expression: "response.code >= 400"}
  tracing:
  - randomSamplingPercentage: 5
---
apiVersion: telemetry.istio.io/v1alpha1
kind: Telemetry
metadata: {name: ns, namespace: shop}
spec:
  tracing:
  - providers: [{name: otel}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: quiet, namespace: shop}
spec:
  selector: {matchLabels: {app: quiet}}
  accessLogging:
  - disabled: true
    match: {mode: SERVER}
  tracing:
  - randomSamplingPercentage: 100
"#;

#[test]
fn levels_override_root_then_namespace_then_workload() {
    let t = telemetries(CONFIG);
    // Another namespace: the mesh-wide resource only (no provider: sampling alone).
    let other = t.resolve("default", &labels(&[("app", "x")]));
    assert_eq!(
        other.server.access_log,
        Some(AccessLogPolicy::On {
            filter: Some("response.code >= 400".into())
        })
    );
    assert_eq!(
        other.client.tracing,
        Some(TracingPolicy {
            sampling: Some(5.0),
            provider: None
        })
    );
    // The namespace adds the provider, keeping the mesh's sampling.
    let shop = t.resolve("shop", &labels(&[("app", "x")]));
    let otel = OtelTarget {
        provider: "otel".into(),
        service: "otel.istio-system.svc.cluster.local".into(),
        port: 4317,
    };
    assert_eq!(
        shop.client.tracing,
        Some(TracingPolicy {
            sampling: Some(5.0),
            provider: Some(otel.clone())
        })
    );
    assert_eq!(
        otel.cluster(),
        "outbound|4317||otel.istio-system.svc.cluster.local"
    );
    // The workload: its server side's log off, its client side's as the mesh's; 100%.
    let quiet = t.resolve("shop", &labels(&[("app", "quiet")]));
    assert_eq!(quiet.server.access_log, Some(AccessLogPolicy::Off));
    assert_eq!(quiet.client.access_log, other.client.access_log);
    assert_eq!(
        quiet.server.tracing,
        Some(TracingPolicy {
            sampling: Some(100.0),
            provider: Some(otel)
        })
    );
    // Nothing at all: nothing said.
    assert_eq!(
        Telemetries::default().resolve("shop", &labels(&[])),
        Resolved::default()
    );
}

#[test]
fn the_listener_gets_access_log_and_tracing_only_when_told() {
    let mut listener = crate::xds::listeners::virtual_outbound(true);
    let before = listener.clone();
    apply(&mut listener, &SidePolicy::default(), "x.default");
    assert_eq!(listener, before);
    let policy = SidePolicy {
        access_log: Some(AccessLogPolicy::Off),
        tracing: None,
    };
    apply(&mut listener, &policy, "x.default");
    let json = crate::xds::render::listener(listener).unwrap().to_string();
    assert!(json.contains(r#""expression":"false""#), "{json}");
    assert!(json.contains(r#""path":"/dev/stdout""#), "{json}");
}

#[test]
fn bad_telemetry_is_rejected_naming_the_field() {
    let yaml = r#"
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: bad, namespace: shop}
spec:
  accessLogging:
  - filter: {expression: "request.url_path == '/x'"}
  tracing:
  - randomSamplingPercentage: 101
    providers: [{name: a}, {name: b}]
"#;
    let parsed = parse_str(Path::new("bad.yaml"), yaml);
    let fields: Vec<String> = parsed
        .errors
        .iter()
        .map(|e| {
            assert_eq!(e.file(), Path::new("bad.yaml"));
            assert_eq!(e.object().as_deref(), Some("Telemetry shop/bad"));
            e.field().unwrap_or_default().to_string()
        })
        .collect();
    assert_eq!(
        fields,
        [
            "spec.tracing[0].randomSamplingPercentage",
            "spec.tracing[0].providers",
            "spec.accessLogging[0].filter.expression"
        ]
    );
    let msg = parsed.errors[2].to_string();
    assert!(
        msg.contains("request.url_path") && msg.contains("not supported"),
        "{msg}"
    );
    let unknown = parse_str(
        Path::new("u.yaml"),
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: u}\nspec: {acessLogging: []}\n",
    );
    assert_eq!(unknown.errors[0].field(), Some("spec.acessLogging"));
    let mesh = parse_str(
        Path::new("mesh.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\ndata:\n  mesh: |\n    extensionProviders:\n    - name: otel\n      opentelemetry: {port: 4317}\n",
    );
    assert_eq!(
        mesh.errors[0].field(),
        Some("data.mesh.extensionProviders[0].opentelemetry.service")
    );
}
