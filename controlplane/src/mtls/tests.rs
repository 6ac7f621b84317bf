use std::collections::BTreeMap;

use super::*;
use crate::config::istio::peer_authentication::{MutualTls, PortKey};
use crate::config::istio::types::WorkloadSelector;

fn policy(ns: &str, name: &str, selector: &[(&str, &str)], mode: Option<MtlsMode>) -> PolicyEntry {
    PolicyEntry {
        name: name.into(),
        namespace: ns.into(),
        spec: PeerAuthentication {
            selector: (!selector.is_empty()).then(|| WorkloadSelector {
                match_labels: selector
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            }),
            mtls: Some(MutualTls { mode }),
            port_level_mtls: None,
        },
    }
}

fn labels(l: &[(&str, &str)]) -> BTreeMap<String, String> {
    l.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn permissive_by_default_and_each_level_overrides() {
    let none = PeerAuthentications::default();
    assert_eq!(
        none.mode("default", &labels(&[]), Some(9080)),
        Mode::Permissive
    );

    let mut pas = PeerAuthentications {
        policies: vec![policy(
            "istio-system",
            "default",
            &[],
            Some(MtlsMode::Strict),
        )],
    };
    assert_eq!(pas.mode("default", &labels(&[]), None), Mode::Strict);
    // A namespace policy overrides; UNSET inherits.
    pas.policies
        .push(policy("legacy", "default", &[], Some(MtlsMode::Permissive)));
    pas.policies
        .push(policy("payments", "default", &[], Some(MtlsMode::Unset)));
    assert_eq!(pas.mode("legacy", &labels(&[]), None), Mode::Permissive);
    assert_eq!(pas.mode("payments", &labels(&[]), None), Mode::Strict);
    // A workload policy overrides for the workloads it selects only.
    pas.policies.push(policy(
        "legacy",
        "db",
        &[("app", "db")],
        Some(MtlsMode::Disable),
    ));
    assert_eq!(
        pas.mode("legacy", &labels(&[("app", "db")]), None),
        Mode::Disable
    );
    assert_eq!(
        pas.mode("legacy", &labels(&[("app", "web")]), None),
        Mode::Permissive
    );
    // A selector in the root namespace does not apply mesh-wide.
    pas.policies.push(policy(
        "istio-system",
        "gw",
        &[("app", "web")],
        Some(MtlsMode::Disable),
    ));
    assert_eq!(
        pas.mode("payments", &labels(&[("app", "web")]), None),
        Mode::Strict
    );
}

#[test]
fn port_level_modes_override_the_workloads() {
    let mut p = policy(
        "default",
        "reviews",
        &[("app", "reviews")],
        Some(MtlsMode::Strict),
    );
    p.spec.port_level_mtls = Some(BTreeMap::from([
        (
            PortKey("9000".into()),
            MutualTls {
                mode: Some(MtlsMode::Disable),
            },
        ),
        (
            PortKey("9100".into()),
            MutualTls {
                mode: Some(MtlsMode::Unset),
            },
        ),
    ]));
    let pas = PeerAuthentications { policies: vec![p] };
    let l = labels(&[("app", "reviews")]);
    assert_eq!(pas.mode("default", &l, Some(9080)), Mode::Strict);
    assert_eq!(pas.mode("default", &l, Some(9000)), Mode::Disable);
    assert_eq!(pas.mode("default", &l, Some(9100)), Mode::Strict);
    assert_eq!(pas.mode("default", &l, None), Mode::Strict);
}
