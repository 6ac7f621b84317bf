use super::*;

const SYNCZ: &str = r#"[
  {"node_id": "sidecar~10.1.0.2~reviews-v1.default~default.svc.cluster.local", "pod": "reviews-v1",
   "namespace": "default", "cluster_id": "Kubernetes", "istio_version": "1.27.0",
   "control_plane": "mesh-controlplane.host",
   "types": {
     "cds": {"sent_nonce": "1-4", "acked_nonce": "1-4", "sent_version": "a", "acked_version": "a"},
     "eds": {"sent_nonce": "1-5", "acked_nonce": "1-2"},
     "lds": {"sent_nonce": "1-6", "acked_nonce": "1-3", "last_nack": "listener \"x\": filter_chains[0]: unsupported filter \"envoy.filters.network.redis_proxy\""},
     "rds": {"sent_nonce": "1-7"}
   }},
  {"node_id": "sidecar~10.1.0.1~client.default~default.svc.cluster.local", "pod": "client",
   "namespace": "default", "types": {}, "control_plane": "mesh-controlplane.host"}
]"#;

fn proxies() -> Vec<ProxyView> {
    select(serde_json::from_str(SYNCZ).unwrap(), None)
}

#[test]
fn states_follow_istioctl() {
    let p = &proxies()[1];
    assert_eq!(p.name(), "reviews-v1.default");
    assert_eq!(SyncState::of(p.types.get("cds")), SyncState::Synced);
    assert_eq!(SyncState::of(p.types.get("eds")), SyncState::Stale);
    assert!(
        matches!(SyncState::of(p.types.get("lds")), SyncState::Nacked(m) if m.contains("redis_proxy"))
    );
    assert_eq!(
        SyncState::of(p.types.get("rds")),
        SyncState::NeverAcknowledged
    );
    assert_eq!(SyncState::of(p.types.get("ecds")), SyncState::NotSent);
}

#[test]
fn the_table_is_istioctls_with_nacks_in_full_below() {
    let out = table(&proxies());
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "NAME                   CLUSTER        CDS          LDS                                                           EDS          RDS                            ECDS         ISTIOD                     VERSION"
    );
    assert!(lines[1].starts_with("client.default    "), "{out}");
    assert!(lines[1].contains("NOT SENT     NOT SENT"), "{out}");
    assert!(lines[2].starts_with("reviews-v1.default     Kubernetes     SYNCED       STALE (NACK: listener \"x\": filter_chains[0]: unsuppor...)     STALE        STALE (Never Acknowledged)     NOT SENT     mesh-controlplane.host     1.27.0"), "{out}");
    assert_eq!(lines[4], "Rejected (NACK):");
    assert!(
        lines[5].ends_with("unsupported filter \"envoy.filters.network.redis_proxy\""),
        "{out}"
    );
}

#[test]
fn json_rows_carry_states_and_nonces() {
    let rows = serde_json::to_value(json(&proxies())).unwrap();
    let lds = &rows[1]["types"]["lds"];
    assert_eq!(lds["status"], "STALE");
    assert!(lds["nack"].as_str().unwrap().contains("redis_proxy"));
    assert_eq!(lds["sent_nonce"], "1-6");
    assert_eq!(rows[1]["types"]["cds"]["status"], "SYNCED");
    assert_eq!(rows[0]["types"]["cds"]["status"], "NOT SENT");
    assert_eq!(rows[1]["cluster"], "Kubernetes");
}

#[test]
fn a_filter_selects_by_name() {
    let all: Vec<ProxyView> = serde_json::from_str(SYNCZ).unwrap();
    let some = select(all, Some("reviews"));
    assert_eq!(some.len(), 1);
    assert!(matches!(
        fetch("nonsense"),
        Err(ProxyStatusError::Address(_))
    ));
}
