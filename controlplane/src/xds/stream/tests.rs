use std::collections::BTreeSet;
use std::sync::Arc;

use crate::xds::cache::Name;
use crate::xds::wire::SharedResponse;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::google::rpc;
use prost::Message;
use tokio::time::Instant;

use super::{RequestKind, StreamState};
use crate::config::{ConfigSnapshot, ConfigStore};
use crate::metrics::Metrics;
use crate::registry::{MeshSnapshot, ProxyInfo};
use crate::xds::push::PushRequest;
use crate::xds::status::{ProxyStatus, StatusEntry, SyncStatus};
use crate::xds::ResourceType::{self, Cluster as C, Endpoint as E, Listener as L, Route as R};

const REVIEWS: &str = "outbound|9080||reviews.default.svc.cluster.local";
const RATINGS: &str = "outbound|9080||ratings.default.svc.cluster.local";

fn service(name: &str, ip: &str, port: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n\
         spec: {{clusterIP: {ip}, selector: {{app: {name}}}, ports: [{{name: http, port: {port}}}]}}\n---\n"
    )
}

fn endpoints(name: &str, ips: &[&str], port: u16) -> String {
    let addresses: Vec<String> = ips.iter().map(|ip| format!("{{ip: {ip}}}")).collect();
    format!(
        "apiVersion: v1\nkind: Endpoints\nmetadata: {{name: {name}, namespace: default}}\n\
         subsets: [{{addresses: [{}], ports: [{{name: http, port: {port}}}]}}]\n---\n",
        addresses.join(", ")
    )
}

/// A config snapshot of `yaml`, loaded as the control plane loads a directory.
fn config(yaml: &str) -> Arc<ConfigSnapshot> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.yaml"), yaml).unwrap();
    let snap = ConfigStore::load(dir.path()).current();
    assert!(snap.errors.is_empty(), "{:?}", snap.errors);
    snap
}

fn mesh(yaml: &str, version: u64) -> Arc<MeshSnapshot> {
    let mut m = MeshSnapshot::build(&config(yaml), [], "cluster.local");
    m.version = version;
    Arc::new(m)
}

fn two_services() -> String {
    service("reviews", "10.96.0.20", 9080)
        + &service("ratings", "10.96.0.30", 9080)
        + &endpoints("reviews", &["10.1.0.1"], 9080)
        + &endpoints("ratings", &["10.1.0.2"], 9080)
}

fn request(
    kind: ResourceType,
    names: &[&str],
    version: &str,
    nonce: &str,
    nack: Option<&str>,
) -> DiscoveryRequest {
    DiscoveryRequest {
        version_info: version.into(),
        resource_names: names.iter().map(|s| s.to_string()).collect(),
        type_url: kind.type_url().into(),
        response_nonce: nonce.into(),
        error_detail: nack.map(|m| rpc::Status {
            code: 3,
            message: m.into(),
            ..Default::default()
        }),
        node: Some(Default::default()),
        ..Default::default()
    }
}

struct Fixture {
    status: Arc<SyncStatus>,
    _entry: StatusEntry,
    metrics: Metrics,
    s: StreamState,
}

impl Fixture {
    fn new(m: &Arc<MeshSnapshot>) -> Fixture {
        let status = Arc::new(SyncStatus::default());
        let entry = status.register(ProxyStatus::new(7, None));
        let metrics = Metrics::unregistered();
        let mut s = StreamState::new(7, entry.writer.clone(), metrics.clone(), m.clone());
        s.proxy = Some(Arc::new(ProxyInfo {
            id: "sidecar~10.1.0.9~client.default~default.svc.cluster.local".into(),
            pod: Some("client".into()),
            namespace: Some("default".into()),
            ips: vec!["10.1.0.9".parse().unwrap()],
            ..Default::default()
        }));
        Fixture {
            status,
            _entry: entry,
            metrics,
            s,
        }
    }

    /// Sends a request and returns the responses.
    fn req(
        &mut self,
        m: &MeshSnapshot,
        kind: ResourceType,
        names: &[&str],
        nack: Option<&str>,
    ) -> (RequestKind, Vec<SharedResponse>) {
        self.s.on_request(request(kind, names, "", "", nack), m)
    }

    fn ack(&mut self, m: &MeshSnapshot, r: &SharedResponse, names: &[&str]) -> Vec<SharedResponse> {
        let kind = ResourceType::from_type_url(r.type_url).unwrap();
        let (meaning, out) = self
            .s
            .on_request(request(kind, names, &r.version_info, &r.nonce, None), m);
        assert_eq!(meaning, RequestKind::Ack);
        out
    }

    fn nack(&mut self, m: &MeshSnapshot, r: &SharedResponse, names: &[&str], msg: &str) {
        let kind = ResourceType::from_type_url(r.type_url).unwrap();
        let (meaning, out) = self
            .s
            .on_request(request(kind, names, "", &r.nonce, Some(msg)), m);
        assert_eq!((meaning, out.len()), (RequestKind::Nack, 0));
    }

    /// An Envoy-like initial sync: each type requested and ACKed.
    fn sync(&mut self, m: &MeshSnapshot, eds: &[&str], rds: &[&str]) {
        for (kind, names) in [(C, &[][..]), (E, eds), (L, &[][..]), (R, rds)] {
            let (meaning, out) = self.req(m, kind, names, None);
            assert_eq!((meaning, out.len()), (RequestKind::Initial, 1), "{kind:?}");
            assert!(self.ack(m, &out[0], names).is_empty());
        }
    }

    fn type_status(&self, kind: &str) -> crate::xds::status::TypeStatus {
        self.status.snapshot()[0].types[kind].clone()
    }
}

fn kinds(out: &[SharedResponse]) -> Vec<ResourceType> {
    out.iter()
        .map(|r| ResourceType::from_type_url(r.type_url).unwrap())
        .collect()
}

fn names<T: Message + Default>(r: &SharedResponse, name: fn(&T) -> String) -> BTreeSet<String> {
    r.resources
        .iter()
        .map(|a| name(&T::decode(a.any().value.as_slice()).unwrap()))
        .collect()
}

fn clusters(r: &SharedResponse) -> BTreeSet<String> {
    names::<Cluster>(r, |c| c.name.clone())
}

fn cla_names(r: &SharedResponse) -> BTreeSet<String> {
    names::<ClusterLoadAssignment>(r, |c| c.cluster_name.clone())
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn requests_acks_nacks_and_stale_nonces() {
    let m = mesh(&two_services(), 0);
    let mut f = Fixture::new(&m);
    let (kind, out) = f.req(&m, C, &[], None);
    assert_eq!(kind, RequestKind::Initial);
    let cds = out[0].clone();
    assert_eq!(clusters(&cds).len(), 5, "two outbound, three special");

    // A nonce that is not the last one sent is ignored and counted.
    let (kind, out) = f.s.on_request(request(C, &[], "", "bogus", None), &m);
    assert_eq!((kind, out.len()), (RequestKind::Stale, 0));
    assert_eq!(f.metrics.expired_nonce.with_label_values(&["cds"]).get(), 1);
    assert_eq!(f.type_status("cds").expired_nonces, 1);

    f.nack(&m, &cds, &[], "cluster \"x\": bad");
    let st = f.type_status("cds");
    assert_eq!(st.last_nack.as_deref(), Some("cluster \"x\": bad"));
    assert_eq!(st.nacked_nonce.as_deref(), Some(cds.nonce.as_str()));
    assert_eq!(st.acked_nonce, None);
    assert_eq!(f.metrics.xds_rejects.with_label_values(&["cds"]).get(), 1);
    let node = "sidecar~10.1.0.9~client.default~default.svc.cluster.local";
    assert_eq!(
        f.metrics
            .cds_reject
            .with_label_values(&[node, "InvalidArgument"])
            .get(),
        1
    );

    assert!(f.ack(&m, &cds, &[]).is_empty());
    let st = f.type_status("cds");
    assert_eq!(st.acked_version.as_deref(), Some(cds.version_info.as_str()));
    assert_eq!(st.acked_nonce.as_deref(), Some(cds.nonce.as_str()));
    assert_eq!(st.last_nack, None);
    assert_eq!(
        f.metrics
            .ack_time
            .with_label_values(&["cds"])
            .get_sample_count(),
        2
    );

    // Unknown types are ignored; an EDS request without names gets no response.
    let mut unknown = request(E, &["x"], "", "", None);
    unknown.type_url =
        "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret".into();
    assert_eq!(f.s.on_request(unknown, &m).0, RequestKind::UnknownType);
    assert!(f.req(&m, E, &[], None).1.is_empty());
}

#[test]
fn subscriptions_are_answered_for_added_names_only() {
    let m = mesh(&two_services(), 0);
    let mut f = Fixture::new(&m);
    let (_, out) = f.req(&m, E, &[REVIEWS], None);
    assert_eq!(cla_names(&out[0]), set(&[REVIEWS]));
    // Adding a name (in the ACK, as Envoy does) sends just that name.
    let out = f.ack(&m, &out[0].clone(), &[REVIEWS, RATINGS]);
    assert_eq!(out.len(), 1);
    assert_eq!(cla_names(&out[0]), set(&[RATINGS]));
    // Removing one sends nothing; the subscription shows in syncz.
    assert!(f.ack(&m, &out[0].clone(), &[RATINGS]).is_empty());
    assert_eq!(f.type_status("eds").resource_names, set(&[RATINGS]));
}

#[test]
fn an_endpoint_change_pushes_only_the_changed_load_assignments() {
    let m0 = mesh(&two_services(), 0);
    let mut f = Fixture::new(&m0);
    f.sync(&m0, &[REVIEWS, RATINGS], &["9080"]);
    let eds_before = f.type_status("eds").sent_version;
    let m1 = mesh(
        &(service("reviews", "10.96.0.20", 9080)
            + &service("ratings", "10.96.0.30", 9080)
            + &endpoints("reviews", &["10.1.0.1", "10.1.0.3"], 9080)
            + &endpoints("ratings", &["10.1.0.2"], 9080)),
        1,
    );
    let req = PushRequest::between(&m0, &m1, Instant::now());
    assert!(!req.full, "{req:?}");
    assert_eq!(
        req.endpoints_updated,
        set(&["reviews.default.svc.cluster.local"])
    );
    let out = f.s.on_push(&req, &m1);
    assert_eq!(kinds(&out), [E]);
    assert_eq!(cla_names(&out[0]), set(&[REVIEWS]));
    assert_ne!(out[0].version_info, eds_before.unwrap());
    assert_eq!(f.type_status("eds").resources, 2, "the proxy holds both");
    assert_eq!(
        f.metrics.pushes.with_label_values(&["cds"]).get(),
        1,
        "initial only"
    );
    assert_eq!(f.metrics.convergence_time.get_sample_count(), 1);
}

#[test]
fn a_new_service_is_pushed_cds_then_lds_and_rds() {
    let m0 = mesh(&two_services(), 0);
    let mut f = Fixture::new(&m0);
    f.sync(&m0, &[REVIEWS, RATINGS], &["9080"]);
    let m1 = mesh(
        &(two_services() + &service("details", "10.96.0.40", 9080)),
        1,
    );
    let req = PushRequest::between(&m0, &m1, Instant::now());
    assert!(req.full);
    let out = f.s.on_push(&req, &m1);
    // Unchanged load assignments are not sent again; the listeners are unchanged (the
    // port's listener exists already): CDS, then the route with the new virtual host.
    assert_eq!(kinds(&out), [C, R]);
    let details = "outbound|9080||details.default.svc.cluster.local";
    assert!(clusters(&out[0]).contains(details));
    // Envoy then asks for the new cluster's endpoints: just those come.
    let out = f.ack(&m1, &out[0].clone(), &[]);
    assert!(out.is_empty());
    let eds_last = f.type_status("eds");
    let (_, out) = f.s.on_request(
        request(
            E,
            &[REVIEWS, RATINGS, details],
            eds_last.sent_version.as_deref().unwrap(),
            eds_last.sent_nonce.as_deref().unwrap(),
            None,
        ),
        &m1,
    );
    assert_eq!(cla_names(&out[0]), set(&[details]));
}

#[test]
fn a_removed_service_leaves_cds_after_the_routes_stop_referencing_it() {
    let m0 = mesh(&two_services(), 0);
    let mut f = Fixture::new(&m0);
    f.sync(&m0, &[REVIEWS, RATINGS], &["9080"]);
    let m1 = mesh(
        &(service("reviews", "10.96.0.20", 9080) + &endpoints("reviews", &["10.1.0.1"], 9080)),
        1,
    );
    let out =
        f.s.on_push(&PushRequest::between(&m0, &m1, Instant::now()), &m1);
    // ratings stays in CDS while the route still names it: the proxy holds it already, so
    // only the route goes out now.
    assert_eq!(kinds(&out), [R]);
    let route = RouteConfiguration::decode(out[0].resources[0].any().value.as_slice()).unwrap();
    assert!(route
        .virtual_hosts
        .iter()
        .all(|v| !v.name.contains("ratings")));
    // A NACK of the route keeps it: the proxy still routes to ratings.
    f.nack(&m1, &out[0].clone(), &["9080"], "bad route");
    // The next push that changes the route, ACKed, lets it go.
    let m2 = mesh(
        &(service("reviews", "10.96.0.20", 9080)
            + &service("details", "10.96.0.40", 9080)
            + &endpoints("reviews", &["10.1.0.1"], 9080)),
        2,
    );
    let out =
        f.s.on_push(&PushRequest::between(&m1, &m2, Instant::now()), &m2);
    assert_eq!(kinds(&out), [C, R]);
    assert!(clusters(&out[0]).contains(RATINGS), "kept");
    assert!(clusters(&out[0]).contains("outbound|9080||details.default.svc.cluster.local"));
    assert!(f.ack(&m2, &out[0].clone(), &[]).is_empty());
    let last = f.ack(&m2, &out[1].clone(), &["9080"]);
    assert_eq!(kinds(&last), [C]);
    assert!(!clusters(&last[0]).contains(RATINGS));
    assert!(clusters(&last[0]).contains(REVIEWS));
    assert_eq!(f.type_status("cds").resources, 5);
}

fn tcp(name: &str, ip: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n\
         spec: {{clusterIP: {ip}, ports: [{{name: tcp, port: 5000}}]}}\n---\n"
    )
}

#[test]
fn a_removed_tcp_service_leaves_cds_after_its_listener() {
    // A TCP service's cluster is named by its own listener: removing the service changes
    // LDS, so the cluster waits for the LDS ACK.
    let m0 = mesh(&(tcp("db", "10.96.0.50") + &tcp("cache", "10.96.0.51")), 0);
    let mut f = Fixture::new(&m0);
    for kind in [C, L] {
        let (_, out) = f.req(&m0, kind, &[], None);
        f.ack(&m0, &out[0].clone(), &[]);
    }
    let m1 = mesh(&tcp("db", "10.96.0.50"), 1);
    let out =
        f.s.on_push(&PushRequest::between(&m0, &m1, Instant::now()), &m1);
    assert_eq!(kinds(&out), [L]);
    let listeners = names::<Listener>(&out[0], |l| l.name.clone());
    assert!(!listeners.contains("10.96.0.51_5000"));
    let last = f.ack(&m1, &out[0].clone(), &[]);
    assert_eq!(kinds(&last), [C]);
    assert!(!clusters(&last[0]).contains("outbound|5000||cache.default.svc.cluster.local"));
    assert_eq!(f.type_status("cds").resources, 4);
}

#[test]
fn after_a_nack_the_next_push_resends_what_the_proxy_lacks() {
    let m0 = mesh(&two_services(), 0);
    let mut f = Fixture::new(&m0);
    f.sync(&m0, &[REVIEWS, RATINGS], &["9080"]);
    let m1 = mesh(
        &(service("reviews", "10.96.0.20", 9080)
            + &service("ratings", "10.96.0.30", 9080)
            + &endpoints("reviews", &["10.1.0.5"], 9080)
            + &endpoints("ratings", &["10.1.0.2"], 9080)),
        1,
    );
    let out =
        f.s.on_push(&PushRequest::between(&m0, &m1, Instant::now()), &m1);
    f.nack(&m1, &out[0].clone(), &[REVIEWS, RATINGS], "bad endpoint");
    let m2 = mesh(
        &(service("reviews", "10.96.0.20", 9080)
            + &service("ratings", "10.96.0.30", 9080)
            + &endpoints("reviews", &["10.1.0.5"], 9080)
            + &endpoints("ratings", &["10.1.0.6"], 9080)),
        2,
    );
    let out =
        f.s.on_push(&PushRequest::between(&m1, &m2, Instant::now()), &m2);
    assert_eq!(kinds(&out), [E]);
    // ratings changed now; reviews was rejected before and is sent again.
    assert_eq!(cla_names(&out[0]), set(&[REVIEWS, RATINGS]));
}

#[test]
fn a_push_that_changes_nothing_for_the_proxy_sends_nothing() {
    let m0 = mesh(&two_services(), 0);
    let mut f = Fixture::new(&m0);
    f.sync(&m0, &[REVIEWS], &["9080"]);
    // ratings' endpoints change; this proxy does not subscribe to them.
    let m1 = mesh(
        &(service("reviews", "10.96.0.20", 9080)
            + &service("ratings", "10.96.0.30", 9080)
            + &endpoints("reviews", &["10.1.0.1"], 9080)
            + &endpoints("ratings", &["10.1.0.7"], 9080)),
        1,
    );
    assert!(f
        .s
        .on_push(&PushRequest::between(&m0, &m1, Instant::now()), &m1)
        .is_empty());
    assert_eq!(
        f.metrics
            .push_time
            .with_label_values(&["eds"])
            .get_sample_count(),
        1
    );
}

#[test]
fn a_cluster_nothing_references_leaves_at_once() {
    // A headless TCP service has a cluster and no listener.
    let m0 = mesh(&(tcp("db", "10.96.0.50") + &tcp("cache", "None")), 0);
    let mut f = Fixture::new(&m0);
    for kind in [C, L] {
        let (_, out) = f.req(&m0, kind, &[], None);
        f.ack(&m0, &out[0].clone(), &[]);
    }
    let m1 = mesh(&tcp("db", "10.96.0.50"), 1);
    let out =
        f.s.on_push(&PushRequest::between(&m0, &m1, Instant::now()), &m1);
    assert_eq!(kinds(&out), [C]);
    assert!(!clusters(&out[0]).contains("outbound|5000||cache.default.svc.cluster.local"));
}

#[test]
fn a_nacked_full_state_type_is_sent_again_by_the_next_push_that_concerns_it() {
    let m = mesh(&two_services(), 0);
    let mut f = Fixture::new(&m);
    let (_, out) = f.req(&m, C, &[], None);
    f.nack(
        &m,
        &out[0].clone(),
        &[],
        "cluster \"x\": outlier_detection: not supported",
    );
    // Nothing changed, but the proxy's last CDS is a rejected one: it is told again.
    let again = f.s.on_push(&PushRequest::everything(Instant::now()), &m);
    assert_eq!(kinds(&again), [C]);
    assert_eq!(again[0].version_info, out[0].version_info);
    assert!(f.ack(&m, &again[0].clone(), &[]).is_empty());
    assert_eq!(f.type_status("cds").last_nack, None);
    assert!(f
        .s
        .on_push(&PushRequest::everything(Instant::now()), &m)
        .is_empty());
}

#[test]
fn acks_and_nacks_settle_what_changed_since_the_last_ack() {
    let state = |f: &Fixture, k| f.s.types[&k].sent.clone();
    let acked = |f: &Fixture, k| f.s.types[&k].acked.clone();
    let m0 = mesh(&two_services(), 0);
    let mut f = Fixture::new(&m0);
    f.sync(&m0, &[REVIEWS, RATINGS], &["9080"]);
    let held = acked(&f, E);
    assert_eq!(held, state(&f, E));
    let eds = |reviews: &str, ratings: &str| {
        service("reviews", "10.96.0.20", 9080)
            + &service("ratings", "10.96.0.30", 9080)
            + &endpoints("reviews", &[reviews], 9080)
            + &endpoints("ratings", &[ratings], 9080)
    };
    // Two EDS responses, neither ACKed; the second is NACKed.
    let m1 = mesh(&eds("10.1.0.5", "10.1.0.2"), 1);
    let first =
        f.s.on_push(&PushRequest::between(&m0, &m1, Instant::now()), &m1);
    let m2 = mesh(&eds("10.1.0.5", "10.1.0.6"), 2);
    let second =
        f.s.on_push(&PushRequest::between(&m1, &m2, Instant::now()), &m2);
    assert_eq!((kinds(&first), kinds(&second)), (vec![E], vec![E]));
    f.nack(&m2, &second[0].clone(), &[REVIEWS, RATINGS], "bad endpoint");
    // The proxy holds what it ACKed: both load assignments are owed.
    assert_eq!((state(&f, E), acked(&f, E)), (held.clone(), held.clone()));
    assert_eq!(
        f.s.types[&E].retry,
        [REVIEWS, RATINGS].map(Name::from).into()
    );
    let again = f.s.on_push(&PushRequest::everything(Instant::now()), &m2);
    assert_eq!(kinds(&again), [E]);
    assert_eq!(cla_names(&again[0]), set(&[REVIEWS, RATINGS]));
    assert!(f
        .ack(&m2, &again[0].clone(), &[REVIEWS, RATINGS])
        .is_empty());
    assert_eq!(acked(&f, E), state(&f, E));
    assert_ne!(acked(&f, E), held);
    assert!(f.s.types[&E].unacked.is_empty());
    // A full-state type: a new cluster, ACKed; then CDS without it (once the routes stop
    // naming it), NACKed: the proxy still holds it.
    let m3 = mesh(
        &(eds("10.1.0.5", "10.1.0.6") + &service("details", "10.96.0.40", 9080)),
        3,
    );
    let out =
        f.s.on_push(&PushRequest::between(&m2, &m3, Instant::now()), &m3);
    for r in &out {
        let names: &[&str] = match ResourceType::from_type_url(r.type_url).unwrap() {
            E => &[REVIEWS, RATINGS],
            R => &["9080"],
            _ => &[],
        };
        assert!(f.ack(&m3, r, names).is_empty());
    }
    assert_eq!(acked(&f, C), state(&f, C));
    let clusters_held = acked(&f, C);
    let out =
        f.s.on_push(&PushRequest::between(&m3, &m2, Instant::now()), &m2);
    assert_eq!(kinds(&out), [R]);
    let cds = f.ack(&m2, &out[0].clone(), &["9080"]);
    assert_eq!(kinds(&cds), [C]);
    assert_ne!(state(&f, C), clusters_held);
    f.nack(&m2, &cds[0].clone(), &[], "no");
    assert_eq!(
        (state(&f, C), acked(&f, C)),
        (clusters_held.clone(), clusters_held)
    );
}
