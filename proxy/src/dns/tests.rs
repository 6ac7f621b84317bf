use std::collections::HashMap;
use std::sync::Mutex;

use xds_client::model::{Cluster, DnsTarget};

use super::*;
use crate::upstream::{ClusterRuntime, OriginalDestination};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn discovery(mode: DnsMode, hosts: &[(&str, u32)]) -> DnsDiscovery {
    DnsDiscovery {
        mode,
        lookup_family: DnsLookupFamily::V4Only,
        refresh_rate: Duration::from_millis(50),
        failure_refresh: (Duration::from_millis(10), Duration::from_millis(40)),
        targets: hosts
            .iter()
            .map(|(h, w)| DnsTarget {
                host: h.to_string(),
                port: 80,
                weight: *w,
                locality: String::new(),
            })
            .collect(),
    }
}

/// Names and their addresses, changed by the tests while resolvers run.
type Names = Arc<Mutex<HashMap<String, Vec<SocketAddr>>>>;

/// A resolver answering from a table the test changes; a missing name fails.
fn table(entries: &[(&str, &[&str])]) -> (Lookup, Names) {
    let map: HashMap<String, Vec<SocketAddr>> = entries
        .iter()
        .map(|(h, ips)| {
            let addrs = ips
                .iter()
                .map(|i| SocketAddr::new(i.parse().unwrap(), 0))
                .collect();
            (h.to_string(), addrs)
        })
        .collect();
    let shared = Arc::new(Mutex::new(map));
    let view = shared.clone();
    let lookup: Lookup = Arc::new(move |host: String, port: u16| {
        let answer = view.lock().unwrap().get(&host).cloned();
        Box::pin(async move {
            answer
                .map(|v| {
                    v.into_iter()
                        .map(|a| SocketAddr::new(a.ip(), port))
                        .collect()
                })
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such host"))
        })
    });
    (lookup, shared)
}

async fn wait_for(state: &DnsState, want: &[&str]) {
    let want: Vec<SocketAddr> = want.iter().map(|a| addr(a)).collect();
    for _ in 0..200 {
        let got: Vec<SocketAddr> = state.addresses().iter().map(|(a, _)| *a).collect();
        if got == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("wanted {want:?}, have {:?}", state.addresses());
}

#[test]
fn family_filter_and_fallbacks() {
    let both = vec![addr("10.0.0.1:1"), addr("[fd00::1]:1")];
    let v4 = vec![addr("10.0.0.1:1")];
    let v6 = vec![addr("[fd00::1]:1")];
    assert_eq!(filter_family(both.clone(), DnsLookupFamily::V4Only), v4);
    assert_eq!(filter_family(both.clone(), DnsLookupFamily::V6Only), v6);
    assert_eq!(filter_family(both.clone(), DnsLookupFamily::All), both);
    assert_eq!(filter_family(both.clone(), DnsLookupFamily::Auto), v6);
    assert_eq!(filter_family(v4.clone(), DnsLookupFamily::Auto), v4);
    assert_eq!(filter_family(both, DnsLookupFamily::V4Preferred), v4);
    assert_eq!(filter_family(v6.clone(), DnsLookupFamily::V4Preferred), v6);
}

#[test]
fn strict_takes_every_address_logical_the_first() {
    let answers = vec![
        Some(vec![addr("10.0.0.1:80"), addr("10.0.0.2:80")]),
        Some(vec![addr("10.0.0.2:80"), addr("10.0.0.3:80")]),
    ];
    let strict = discovery(DnsMode::Strict, &[("a", 1), ("b", 3)]);
    assert_eq!(
        endpoints(&strict, &answers),
        [
            (addr("10.0.0.1:80"), 1),
            (addr("10.0.0.2:80"), 1),
            (addr("10.0.0.3:80"), 3)
        ]
    );
    let logical = discovery(DnsMode::Logical, &[("a", 1)]);
    assert_eq!(
        endpoints(&logical, &answers[..1]),
        [(addr("10.0.0.1:80"), 1)]
    );
    assert!(endpoints(&strict, &[None, None]).is_empty());
}

#[tokio::test]
async fn resolves_refreshes_and_keeps_the_last_good_answer() {
    let (lookup, names) = table(&[
        ("a.test", &["10.0.0.1"]),
        ("b.test", &["10.0.0.2", "fd00::2"]),
    ]);
    let state = Arc::new(DnsState::default());
    let d = discovery(DnsMode::Strict, &[("a.test", 1), ("b.test", 1)]);
    let task = tokio::spawn(resolve_forever(d, state.clone(), lookup, "c".into()));
    wait_for(&state, &["10.0.0.1:80", "10.0.0.2:80"]).await;
    // A refresh picks up a changed answer.
    names
        .lock()
        .unwrap()
        .insert("a.test".into(), vec![addr("10.0.0.9:0")]);
    wait_for(&state, &["10.0.0.9:80", "10.0.0.2:80"]).await;
    // A failing name keeps its last answer.
    names.lock().unwrap().remove("b.test");
    names
        .lock()
        .unwrap()
        .insert("a.test".into(), vec![addr("10.0.0.8:0")]);
    wait_for(&state, &["10.0.0.8:80", "10.0.0.2:80"]).await;
    task.abort();
}

#[tokio::test]
async fn resolvers_follow_the_config_and_feed_the_cluster_runtime() {
    let (lookup, names) = table(&[("a.test", &["10.0.0.1", "10.0.0.3"])]);
    let resolvers = DnsResolvers::new(lookup);
    let cluster = Cluster::new(
        "outbound|80||a.test",
        Discovery::Dns(discovery(DnsMode::Strict, &[("a.test", 1)])),
    );
    let mut config = ProxyConfig::default();
    config
        .clusters
        .insert(cluster.name.clone(), cluster.clone());
    let states = resolvers.sync(&config);
    let state = states[&cluster.name].clone();
    wait_for(&state, &["10.0.0.1:80", "10.0.0.3:80"]).await;
    let rt = ClusterRuntime::with_dns(&cluster, state.clone(), None);
    assert!(rt.has_healthy_endpoint());
    let dst = OriginalDestination {
        address: addr("10.9.9.9:80"),
        redirected: true,
    };
    let picks: Vec<SocketAddr> = (0..4).map(|_| rt.pick(&dst).unwrap()).collect();
    assert_eq!(
        picks,
        [
            addr("10.0.0.1:80"),
            addr("10.0.0.3:80"),
            addr("10.0.0.1:80"),
            addr("10.0.0.3:80")
        ]
    );
    // A new answer reaches the same runtime (no new snapshot), and a host still in the
    // answer keeps its live state.
    let states_of = |rt: &ClusterRuntime| -> HashMap<SocketAddr, Arc<_>> {
        (0..4)
            .map(|_| {
                let p = rt.pick_host(&dst, &Default::default()).unwrap();
                (p.address, p.state.unwrap())
            })
            .collect()
    };
    let before = states_of(&rt);
    names.lock().unwrap().insert(
        "a.test".into(),
        vec![addr("10.0.0.1:0"), addr("10.0.0.7:0")],
    );
    wait_for(&state, &["10.0.0.1:80", "10.0.0.7:80"]).await;
    let after = states_of(&rt);
    let mut seen: Vec<SocketAddr> = after.keys().copied().collect();
    seen.sort();
    assert_eq!(seen, [addr("10.0.0.1:80"), addr("10.0.0.7:80")]);
    let one = addr("10.0.0.1:80");
    assert!(Arc::ptr_eq(&before[&one], &after[&one]));
    // The same settings keep the resolver (and its answers); removal stops it.
    let again = resolvers.sync(&config);
    assert!(Arc::ptr_eq(&again[&cluster.name], &state));
    assert_eq!(resolvers.resolved()[&cluster.name].len(), 2);
    assert!(resolvers.sync(&ProxyConfig::default()).is_empty());
    assert!(resolvers.resolved().is_empty());
}

#[test]
fn without_a_runtime_dns_clusters_have_no_endpoints() {
    let (lookup, _) = table(&[]);
    let resolvers = DnsResolvers::new(lookup);
    let mut config = ProxyConfig::default();
    config.clusters.insert(
        "d".into(),
        Cluster::new(
            "d",
            Discovery::Dns(discovery(DnsMode::Logical, &[("x", 1)])),
        ),
    );
    let states = resolvers.sync(&config);
    assert!(states["d"].addresses().is_empty());
}
