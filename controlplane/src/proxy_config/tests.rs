use serde_json::json;

use super::*;

fn dump() -> Value {
    json!({"configs": [
        {"bootstrap": {"node": {"id": "sidecar~10.0.0.2~client.default~default.svc.cluster.local",
            "metadata": {"NAME": "client", "NAMESPACE": "default"}}}},
        {"dynamic_listeners": [{"name": "virtualOutbound", "active_state": {"version_info": "3",
            "listener": {"name": "virtualOutbound", "address": "0.0.0.0:15001",
                "filter_chains": [],
                "default_filter_chain": {"filter_chain_match": {},
                    "filters": {"TcpProxy": {"cluster": "PassthroughCluster"}}}}}}]},
        {"dynamic_active_clusters": [
            {"version_info": "3", "cluster": {"name": "outbound|9080|v1|reviews.default.svc.cluster.local",
                "discovery": {"Eds": {"service_name": "outbound|9080|v1|reviews.default.svc.cluster.local"}}}},
            {"version_info": "3", "cluster": {"name": "PassthroughCluster", "discovery": "OriginalDst"}}]},
        {"dynamic_route_configs": [{"version_info": "3", "route_config": {"name": "9080",
            "virtual_hosts": [{"name": "reviews.default.svc.cluster.local:9080",
                "domains": ["reviews", "reviews:9080"], "routes": [{}, {}]}]}}]},
        {"dynamic_endpoint_configs": [{"version_info": "3", "endpoint_config": {
            "cluster_name": "outbound|9080||reviews.default.svc.cluster.local",
            "endpoints": [{"address": "10.0.0.3:9080", "weight": 1, "health": "Healthy"}]}}]},
        {"dynamic_active_secrets": [
            {"name": "default", "secret": {"tls_certificate": {"serial_number": "0a1b",
                "expiration_time": "2026-11-28T00:00:00Z", "valid_from": "2026-11-27T00:00:00Z",
                "private_key": {"inline_string": "[redacted]"}}}},
            {"name": "ROOTCA", "secret": {"validation_context": {}}}]}
    ]})
}

#[test]
fn the_dump_must_be_the_pods() {
    let d = dump();
    assert_eq!(dump_pod(&d).as_deref(), Some("client.default"));
    assert!(same_pod("client.default", "client"));
    assert!(same_pod("client.default", "client.default"));
    assert!(!same_pod("client.default", "client.other"));
    assert!(!same_pod("client.default", "reviews"));
}

#[test]
fn clusters_table_splits_istio_names() {
    let t = table(Kind::Clusters, &section(&dump(), Kind::Clusters));
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(lines.len(), 3, "{t}");
    assert!(lines[0].starts_with("SERVICE FQDN"), "{t}");
    let row = lines
        .iter()
        .find(|l| l.starts_with("reviews.default.svc.cluster.local"))
        .unwrap();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cells,
        [
            "reviews.default.svc.cluster.local",
            "9080",
            "v1",
            "outbound",
            "EDS"
        ]
    );
    assert!(
        t.contains("PassthroughCluster") && t.contains("ORIGINAL_DST"),
        "{t}"
    );
}

#[test]
fn routes_endpoints_listeners_and_secrets_tables() {
    let d = dump();
    let routes = table(Kind::Routes, &section(&d, Kind::Routes));
    assert!(
        routes
            .lines()
            .nth(1)
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>()
            == [
                "9080",
                "reviews.default.svc.cluster.local:9080",
                "reviews,",
                "reviews:9080",
                "2"
            ],
        "{routes}"
    );
    let eps = table(Kind::Endpoints, &section(&d, Kind::Endpoints));
    assert_eq!(
        eps.lines()
            .nth(1)
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        [
            "10.0.0.3:9080",
            "HEALTHY",
            "1",
            "outbound|9080||reviews.default.svc.cluster.local"
        ]
    );
    let ls = table(Kind::Listeners, &section(&d, Kind::Listeners));
    assert!(
        ls.contains("virtualOutbound") && ls.contains("Cluster: PassthroughCluster"),
        "{ls}"
    );
    let secrets = table(Kind::Secret, &section(&d, Kind::Secret));
    assert!(
        secrets.contains("0a1b") && secrets.contains("ROOTCA"),
        "{secrets}"
    );
    assert!(!secrets.contains("redacted"));
}
