use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;
use crate::metrics::Metrics;

fn peer(workload: &str, app: &str) -> Arc<PeerInfo> {
    let labels: BTreeMap<String, String> = [("app", app), ("version", "v1")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Arc::new(PeerInfo::from_metadata(
        workload,
        None,
        "default",
        &labels,
        "Kubernetes",
    ))
}

fn scrape(m: &Metrics) -> Vec<prometheus_parse::Sample> {
    let text = String::from_utf8(m.encode()).unwrap();
    let lines = text.lines().map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines).unwrap().samples
}

#[test]
fn cluster_names_give_istio_service_labels() {
    let s = ServiceInfo::from_cluster("outbound|9080|v2|reviews.default.svc.cluster.local");
    assert_eq!(&*s.host, "reviews.default.svc.cluster.local");
    assert_eq!(&*s.name, "reviews");
    assert_eq!(&*s.namespace, "default");
    let e = ServiceInfo::from_cluster("outbound|443||api.example.com");
    assert_eq!((&*e.name, &*e.namespace), ("api.example.com", "unknown"));
    let p = ServiceInfo::from_cluster("PassthroughCluster");
    assert_eq!((&*p.host, &*p.name), ("unknown", "PassthroughCluster"));
    assert_eq!(
        ServiceInfo::from_cluster("inbound|80||"),
        ServiceInfo::unknown()
    );
}

#[test]
fn both_reporters_label_source_and_destination_the_same_way() {
    let m = Metrics::unlabelled();
    let client = peer("productpage-v1", "productpage");
    let server = peer("reviews-v2", "reviews");
    let service = Arc::new(ServiceInfo::from_host("reviews.default.svc.cluster.local"));
    let flags: Arc<str> = "-".into();
    for (reporter, local, remote) in [
        (Reporter::Source, &client, &server),
        (Reporter::Destination, &server, &client),
    ] {
        let key = HttpKey {
            parties: Parties {
                reporter,
                local: local.clone(),
                peer: remote.clone(),
                local_principal: None,
                peer_principal: None,
                mutual_tls: false,
                service: service.clone(),
            },
            protocol: RequestProtocol::Http,
            response_code: 200,
            grpc_status: None,
            response_flags: flags.clone(),
        };
        let h = m.istio.http(&key);
        assert!(Arc::ptr_eq(&h, &m.istio.http(&key)), "cached");
        h.record(3.0, 10, 2000);
    }
    let samples = scrape(&m);
    let requests: Vec<_> = samples
        .iter()
        .filter(|s| s.metric == "istio_requests_total")
        .collect();
    assert_eq!(requests.len(), 2);
    for s in requests {
        let l = &s.labels;
        assert_eq!(l.get("source_workload"), Some("productpage-v1"));
        assert_eq!(l.get("source_app"), Some("productpage"));
        assert_eq!(l.get("destination_workload"), Some("reviews-v2"));
        assert_eq!(l.get("destination_canonical_service"), Some("reviews"));
        assert_eq!(l.get("destination_canonical_revision"), Some("v1"));
        assert_eq!(l.get("destination_service_name"), Some("reviews"));
        assert_eq!(l.get("response_code"), Some("200"));
        assert_eq!(l.get("grpc_response_status"), Some(""));
        assert_eq!(l.get("source_principal"), Some("unknown"));
        let policy = match l.get("reporter") {
            Some("source") => "unknown",
            Some("destination") => "none",
            other => panic!("reporter {other:?}"),
        };
        assert_eq!(l.get("connection_security_policy"), Some(policy));
        assert!(matches!(s.value, prometheus_parse::Value::Counter(v) if v == 1.0));
    }
    let bucket = samples
        .iter()
        .find(|s| s.metric == "istio_request_duration_milliseconds")
        .unwrap();
    let prometheus_parse::Value::Histogram(buckets) = &bucket.value else {
        panic!("not a histogram: {:?}", bucket.value)
    };
    let les: Vec<f64> = buckets.iter().map(|b| b.less_than).collect();
    assert_eq!(&les[..DEFAULT_BUCKETS.len()], &DEFAULT_BUCKETS);
    let five = buckets.iter().find(|b| b.less_than == 5.0).unwrap();
    assert_eq!(five.count, 1.0);
}

#[test]
fn tcp_metrics_carry_the_tcp_protocol_and_no_response_code() {
    let m = Metrics::unlabelled();
    let key = TcpKey {
        parties: Parties {
            reporter: Reporter::Destination,
            local: peer("db", "db"),
            peer: m.peers.unknown().clone(),
            local_principal: Some("spiffe://cluster.local/ns/default/sa/db".into()),
            peer_principal: Some("spiffe://cluster.local/ns/default/sa/client".into()),
            mutual_tls: true,
            service: Arc::new(ServiceInfo::unknown()),
        },
        response_flags: "-".into(),
    };
    let h = m.istio.tcp(&key);
    h.opened.inc();
    h.received.inc_by(5);
    let samples = scrape(&m);
    let opened = samples
        .iter()
        .find(|s| s.metric == "istio_tcp_connections_opened_total")
        .unwrap();
    assert_eq!(opened.labels.get("request_protocol"), Some("tcp"));
    assert_eq!(opened.labels.get("response_code"), None);
    assert_eq!(
        opened.labels.get("connection_security_policy"),
        Some("mutual_tls")
    );
    assert_eq!(
        opened.labels.get("source_principal"),
        Some("spiffe://cluster.local/ns/default/sa/client")
    );
    assert_eq!(opened.labels.get("source_workload"), Some("unknown"));
}

#[test]
fn the_series_cache_is_bounded() {
    let m = Metrics::unlabelled();
    let service = Arc::new(ServiceInfo::unknown());
    let local = peer("a", "a");
    for i in 0..MAX_SERIES + 5 {
        let key = HttpKey {
            parties: Parties {
                reporter: Reporter::Destination,
                local: local.clone(),
                peer: peer(&format!("w{i}"), "x"),
                local_principal: None,
                peer_principal: None,
                mutual_tls: false,
                service: service.clone(),
            },
            protocol: RequestProtocol::Http,
            response_code: 200,
            grpc_status: None,
            response_flags: "-".into(),
        };
        m.istio.http(&key).requests.inc();
    }
    assert!(m.istio.http.read().unwrap().len() <= MAX_SERIES + 1);
}
