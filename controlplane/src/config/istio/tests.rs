//! Tables of valid and invalid documents per kind, each invalid one with the field and the
//! words its error must carry, plus versions, durations and unknown fields.

mod destination_rule;
mod gateway_sidecar;
mod security;
mod service_entry;
mod virtual_service;

use std::path::Path;

use super::duration::Duration;
use crate::config::{parse_str, ConfigError, Object};

/// What a case expects.
#[derive(Clone, Copy)]
pub(super) enum Want {
    /// Accepted without warnings.
    Ok,
    /// Rejected, with an error at this field whose message contains these words.
    Err(&'static str, &'static str),
    /// Accepted, with a warning at this field whose message contains these words.
    Warn(&'static str, &'static str),
}

/// A case: a name, a spec in YAML (flow or block) and what is expected.
pub(super) type Case<'a> = (&'a str, &'a str, Want);

/// A document of `kind` named `name` in namespace `ns` with `spec`.
pub(super) fn document(api: &str, kind: &str, spec: &str) -> String {
    let spec: String = spec.lines().map(|l| format!("  {l}\n")).collect();
    format!("apiVersion: {api}\nkind: {kind}\nmetadata: {{name: x, namespace: ns}}\nspec:\n{spec}")
}

/// Runs every case of a table and reports all mismatches at once.
pub(super) fn run_table<S: AsRef<str>>(api: &str, kind: &str, cases: &[(&str, S, Want)]) {
    let mut failures = Vec::new();
    for (name, spec, want) in cases {
        let parsed = parse_str(Path::new("t.yaml"), &document(api, kind, spec.as_ref()));
        let errors: Vec<(String, String)> = parsed
            .errors
            .iter()
            .map(|e| (e.field().unwrap_or_default().to_string(), e.to_string()))
            .collect();
        let warnings: Vec<(String, String)> = parsed
            .warnings
            .iter()
            .map(|w| (w.field.clone(), w.to_string()))
            .collect();
        let found = |list: &[(String, String)], field: &str, words: &str| {
            list.iter().any(|(f, m)| f == field && m.contains(words))
        };
        let ok = match want {
            Want::Ok => errors.is_empty() && warnings.is_empty() && parsed.objects.len() == 1,
            Want::Err(field, words) => parsed.objects.is_empty() && found(&errors, field, words),
            Want::Warn(field, words) => errors.is_empty() && found(&warnings, field, words),
        };
        if !ok {
            failures.push(format!(
                "{kind} {name}: errors {errors:#?} warnings {warnings:#?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_kind_in_every_version() {
    let cases = [
        (
            "VirtualService",
            "{hosts: [a], http: [{route: [{destination: {host: a}}]}]}",
        ),
        ("DestinationRule", "{host: a}"),
        (
            "Gateway",
            "{servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]}",
        ),
        (
            "ServiceEntry",
            "{hosts: [a.example.com], ports: [{number: 80, name: http, protocol: HTTP}]}",
        ),
        ("WorkloadEntry", "{address: 10.0.0.1}"),
        ("Sidecar", "{egress: [{hosts: ['./*']}]}"),
        ("PeerAuthentication", "{mtls: {mode: STRICT}}"),
        ("AuthorizationPolicy", "{action: ALLOW}"),
    ];
    for (kind, spec) in cases {
        let security = kind.ends_with("Authentication") || kind.ends_with("Policy");
        let (group, versions): (&str, &[&str]) = if security {
            ("security.istio.io", &["v1", "v1beta1"])
        } else {
            ("networking.istio.io", &["v1", "v1beta1", "v1alpha3"])
        };
        for v in versions {
            let api = format!("{group}/{v}");
            let parsed = parse_str(Path::new("v.yaml"), &document(&api, kind, spec));
            assert!(
                parsed.errors.is_empty(),
                "{api} {kind}: {:?}",
                parsed.errors
            );
            assert_eq!(parsed.objects.len(), 1);
            let o = &parsed.objects[0];
            assert_eq!(o.kind().as_str(), kind);
            assert_eq!(o.key().namespace, "ns");
        }
        let api = format!("{group}/v2");
        let parsed = parse_str(Path::new("v.yaml"), &document(&api, kind, spec));
        let msg = parsed.errors[0].to_string();
        assert!(
            matches!(parsed.errors[0], ConfigError::Unsupported { .. })
                && msg.contains("not a supported version"),
            "{msg}"
        );
    }
    let parsed = parse_str(
        Path::new("v.yaml"),
        &document("security.istio.io/v1alpha3", "AuthorizationPolicy", "{}"),
    );
    assert!(matches!(parsed.errors[0], ConfigError::Unsupported { .. }));
}

#[test]
fn typed_objects_keep_metadata_and_spec() {
    let text = "apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\n\
                metadata: {name: reviews, labels: {app: r}, annotations: {note: x}}\n\
                spec: {hosts: [reviews], http: [{timeout: 1.5s, route: [{destination: {host: reviews, subset: v1}, weight: 100}]}]}\n";
    let parsed = parse_str(Path::new("vs.yaml"), text);
    assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
    let Object::VirtualService(vs) = &parsed.objects[0] else {
        panic!("not a VirtualService")
    };
    assert_eq!(vs.namespace, "default");
    assert_eq!(vs.api_version, "networking.istio.io/v1beta1");
    assert_eq!(vs.labels["app"], "r");
    assert_eq!(vs.annotations["note"], "x");
    let route = &vs.spec.http[0];
    assert_eq!(route.timeout, Some(Duration::from_millis(1500)));
    let dest = route.route.as_ref().unwrap()[0]
        .destination
        .as_ref()
        .unwrap();
    assert_eq!(dest.subset.as_deref(), Some("v1"));
    let json = serde_json::to_value(&parsed.objects[0]).unwrap();
    assert_eq!(json["kind"], "VirtualService");
    assert_eq!(json["spec"]["http"][0]["timeout"], "1.5s");
}

#[test]
fn durations_as_istio_writes_them() {
    let ok = [
        ("1s", 1_000_000_000),
        ("100ms", 100_000_000),
        ("1h", 3_600_000_000_000),
        ("1h30m", 5_400_000_000_000),
        ("1.5s", 1_500_000_000),
        ("0.000340012s", 340_012),
        ("2us", 2_000),
        ("3µs", 3_000),
        ("4ns", 4),
        ("0", 0),
        ("-1s", -1_000_000_000),
        (".5s", 500_000_000),
    ];
    for (text, nanos) in ok {
        assert_eq!(Duration::parse(text).unwrap().as_nanos(), nanos, "{text}");
    }
    for bad in ["", "1", "s", "1x", "1.s.", "1d", "--1s", "99999999999h"] {
        assert!(Duration::parse(bad).is_err(), "{bad:?}");
    }
    assert_eq!(Duration::from_millis(1500).to_string(), "1.5s");
    assert_eq!(Duration::from_nanos(-2_000_000_000).to_string(), "-2s");
    assert_eq!(Duration::from_nanos(1).to_string(), "0.000000001s");
}

#[test]
fn unknown_fields_are_rejected_at_their_path() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "VirtualService",
            "{hosts: [a], http: [{route: [{destination: {host: a}}], bogus: 1}]}",
            "spec.http[0].bogus",
        ),
        (
            "DestinationRule",
            "{host: a, trafficPolicy: {tls: {mode: SIMPLE, sniff: x}}}",
            "spec.trafficPolicy.tls.sniff",
        ),
        ("Gateway", "{servers: [], extra: true}", "spec.extra"),
    ];
    for (kind, spec, field) in cases {
        let parsed = parse_str(
            Path::new("u.yaml"),
            &document("networking.istio.io/v1", kind, spec),
        );
        let e = parsed.errors.first().expect("rejected");
        assert_eq!(e.field(), Some(*field), "{e}");
        assert!(e.to_string().contains("unknown field"), "{e}");
    }
    let parsed = parse_str(
        Path::new("u.yaml"),
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: p}\nspc: {}\n",
    );
    assert_eq!(parsed.errors[0].field(), Some("spc"));
    let parsed = parse_str(
        Path::new("u.yaml"),
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: p}\nspec: {mtls: {mode: 3}}\n",
    );
    assert_eq!(parsed.errors[0].field(), Some("spec.mtls.mode"));
}
