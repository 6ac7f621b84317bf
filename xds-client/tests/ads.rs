//! The ADS client against an in-process fake control plane over real sockets.

mod common;

use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::google::protobuf::{value::Kind, Any};
use tonic::Status;
use xds_client::model::{Discovery, ResourceType, UpstreamProtocol};

use common::*;

const REVIEWS: &str = "outbound|9080||reviews.default.svc.cluster.local";
const RATINGS: &str = "outbound|9080||ratings.default.svc.cluster.local";

/// (type, version, nonce, names, error message) of a request.
fn summary(r: &DiscoveryRequest) -> (ResourceType, String, String, Vec<String>, Option<String>) {
    (
        type_of(r),
        r.version_info.clone(),
        r.response_nonce.clone(),
        r.resource_names.clone(),
        r.error_detail.as_ref().map(|e| e.message.clone()),
    )
}

fn req(
    t: ResourceType,
    version: &str,
    nonce: &str,
    names: &[&str],
) -> (ResourceType, String, String, Vec<String>, Option<String>) {
    (
        t,
        version.into(),
        nonce.into(),
        names.iter().map(|n| n.to_string()).collect(),
        None,
    )
}

fn clusters(outbound: &[&str]) -> Vec<Any> {
    let mut all: Vec<Any> = outbound.iter().map(|n| outbound_cluster(n)).collect();
    all.push(inbound_cluster(9080));
    all.extend(special_clusters());
    all
}

/// Serve version 1 of everything on a fresh stream (its first two requests not yet read):
/// CDS with reviews, its endpoints, LDS with `0.0.0.0_9080`, route `9080`.
async fn sync_v1(stream: &mut AdsStream) {
    assert_eq!(type_of(&stream.recv().await), ResourceType::Cluster);
    assert_eq!(type_of(&stream.recv().await), ResourceType::Listener);
    stream.send(response(
        ResourceType::Cluster,
        "1",
        "c1",
        clusters(&[REVIEWS]),
    ));
    assert_eq!(
        summary(&stream.recv().await),
        req(ResourceType::Endpoint, "", "", &[REVIEWS])
    );
    assert_eq!(
        summary(&stream.recv().await),
        req(ResourceType::Cluster, "1", "c1", &[])
    );
    stream.send(response(
        ResourceType::Endpoint,
        "1",
        "e1",
        vec![load_assignment(REVIEWS, &["10.1.0.20", "10.1.0.21"], 9080)],
    ));
    assert_eq!(
        summary(&stream.recv().await),
        req(ResourceType::Endpoint, "1", "e1", &[REVIEWS])
    );
    stream.send(response(
        ResourceType::Listener,
        "1",
        "l1",
        vec![virtual_outbound(), http_listener(9080)],
    ));
    assert_eq!(
        summary(&stream.recv().await),
        req(ResourceType::Route, "", "", &["9080"])
    );
    assert_eq!(
        summary(&stream.recv().await),
        req(ResourceType::Listener, "1", "l1", &[])
    );
    stream.send(response(
        ResourceType::Route,
        "1",
        "r1",
        vec![route_config(
            9080,
            &[("reviews.default.svc.cluster.local", REVIEWS)],
        )],
    ));
    assert_eq!(
        summary(&stream.recv().await),
        req(ResourceType::Route, "1", "r1", &["9080"])
    );
}

#[tokio::test]
async fn initial_subscription_node_and_first_ack() {
    let mut server = FakeAds::start("127.0.0.1:0".parse().unwrap()).await;
    let client = start_client(format!("http://{}", server.addr));
    let mut stream = server.next_stream().await;

    let cds = stream.recv().await;
    assert_eq!(summary(&cds), req(ResourceType::Cluster, "", "", &[]));
    let node = cds.node.expect("the first request carries the node");
    assert_eq!(
        node.id,
        "sidecar~10.1.0.9~productpage-v1-7d4b9.default~default.svc.cluster.local"
    );
    let metadata = node.metadata.expect("node metadata").fields;
    let string = |key: &str| match metadata.get(key).and_then(|v| v.kind.as_ref()) {
        Some(Kind::StringValue(s)) => s.clone(),
        other => panic!("{key}: {other:?}"),
    };
    assert_eq!(string("NAME"), "productpage-v1-7d4b9");
    assert_eq!(string("NAMESPACE"), "default");
    assert_eq!(string("INSTANCE_IPS"), "10.1.0.9");
    assert_eq!(string("SERVICE_ACCOUNT"), "bookinfo-productpage");
    assert_eq!(string("CLUSTER_ID"), "Kubernetes");
    assert!(!string("ISTIO_VERSION").is_empty());
    let Some(Kind::StructValue(labels)) = metadata.get("LABELS").and_then(|v| v.kind.clone())
    else {
        panic!("LABELS must be a struct");
    };
    let label = |k: &str| labels.fields.get(k).and_then(|v| v.kind.clone());
    assert_eq!(label("app"), Some(Kind::StringValue("productpage".into())));
    assert_eq!(label("version"), Some(Kind::StringValue("v1".into())));

    let lds = stream.recv().await;
    assert_eq!(summary(&lds), req(ResourceType::Listener, "", "", &[]));
    assert!(lds.node.is_none(), "the node is sent once per stream");
    stream.expect_silence(Duration::from_millis(200)).await;

    stream.send(response(
        ResourceType::Cluster,
        "1",
        "c1",
        clusters(&[REVIEWS]),
    ));
    assert_eq!(
        summary(&stream.recv().await),
        req(ResourceType::Endpoint, "", "", &[REVIEWS])
    );
    assert_eq!(
        summary(&stream.recv().await),
        req(ResourceType::Cluster, "1", "c1", &[])
    );
    let config = client
        .wait_config("the clusters", |c| c.clusters.len() == 4)
        .await;
    assert_eq!(config.versions[&ResourceType::Cluster], "1");
    assert!(!config.synced);
    let reviews = &config.clusters[REVIEWS];
    assert_eq!(
        reviews.discovery,
        Discovery::Eds {
            service_name: REVIEWS.into()
        }
    );
    assert_eq!(reviews.upstream_protocol, UpstreamProtocol::Http2);
    assert_eq!(
        config.clusters["inbound|9080||"].bind_address,
        Some("127.0.0.6".parse().unwrap())
    );
    let status = client.wait_status("the ACK", |s| s.acks == 1).await;
    assert!(status.connected);
    assert_eq!((status.connects, status.nacks), (1, 0));
}

#[tokio::test]
async fn subscriptions_follow_clusters_and_listeners_and_synced() {
    let mut server = FakeAds::start("127.0.0.1:0".parse().unwrap()).await;
    let client = start_client(server.addr.to_string());
    let mut stream = server.next_stream().await;
    sync_v1(&mut stream).await;
    let config = client.wait_config("synced", |c| c.synced).await;
    assert_eq!(config.endpoints[REVIEWS].endpoints.len(), 2);
    assert_eq!(config.routes["9080"].virtual_hosts.len(), 2);
    for t in ResourceType::ALL {
        assert_eq!(config.versions[&t], "1", "{t:?}");
    }

    // A new service: EDS asks for both names; not synced until ratings' endpoints arrive.
    stream.send(response(
        ResourceType::Cluster,
        "2",
        "c2",
        clusters(&[REVIEWS, RATINGS]),
    ));
    assert_eq!(
        summary(&stream.recv().await),
        req(ResourceType::Endpoint, "1", "e1", &[RATINGS, REVIEWS])
    );
    assert_eq!(
        summary(&stream.recv().await),
        req(ResourceType::Cluster, "2", "c2", &[])
    );
    let config = client
        .wait_config("ratings cluster", |c| c.clusters.contains_key(RATINGS))
        .await;
    assert!(!config.synced);
    assert!(
        config.endpoints.contains_key(REVIEWS),
        "reviews' endpoints are kept"
    );
    stream.send(response(
        ResourceType::Endpoint,
        "2",
        "e2",
        vec![load_assignment(RATINGS, &["10.1.0.30"], 9080)],
    ));
    assert_eq!(
        summary(&stream.recv().await),
        req(ResourceType::Endpoint, "2", "e2", &[RATINGS, REVIEWS])
    );
    let config = client.wait_config("synced again", |c| c.synced).await;
    assert_eq!(config.endpoints[REVIEWS].endpoints.len(), 2);

    // The HTTP listener goes away: RDS unsubscribes (an empty list) and its route is dropped.
    stream.send(response(
        ResourceType::Listener,
        "2",
        "l2",
        vec![virtual_outbound()],
    ));
    assert_eq!(
        summary(&stream.recv().await),
        req(ResourceType::Route, "1", "r1", &[])
    );
    assert_eq!(
        summary(&stream.recv().await),
        req(ResourceType::Listener, "2", "l2", &[])
    );
    let config = client
        .wait_config("listener removed", |c| c.listeners.len() == 1)
        .await;
    assert!(config.routes.is_empty());
    assert!(config.synced);
}

#[tokio::test]
async fn invalid_resources_are_nacked_and_the_previous_config_kept() {
    let mut server = FakeAds::start("127.0.0.1:0".parse().unwrap()).await;
    let client = start_client(server.addr.to_string());
    let mut stream = server.next_stream().await;
    sync_v1(&mut stream).await;
    let before = client.wait_config("synced", |c| c.synced).await;

    let mut bad = clusters(&[REVIEWS]);
    bad.push(dns_cluster("outbound|80||example.com"));
    stream.send(response(ResourceType::Cluster, "2", "c2", bad));
    let nack = stream.recv().await;
    let expected =
        "cluster \"outbound|80||example.com\": load_assignment: required field is missing or empty";
    assert_eq!(
        summary(&nack),
        (
            ResourceType::Cluster,
            "1".into(),
            "c2".into(),
            vec![],
            Some(expected.into())
        )
    );
    assert_eq!(nack.error_detail.unwrap().code, 3);
    let status = client.wait_status("the NACK", |s| s.nacks == 1).await;
    assert_eq!(status.last_nack.as_deref(), Some(expected));

    let redis = Any {
        type_url: "type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProxy"
            .into(),
        value: vec![],
    };
    stream.send(response(
        ResourceType::Listener,
        "2",
        "l2",
        vec![
            virtual_outbound(),
            http_listener_with_filter(9080, "envoy.filters.network.redis_proxy", Some(redis)),
        ],
    ));
    let nack = stream.recv().await;
    let expected = "listener \"0.0.0.0_9080\": filter_chains[0].filters[0]: \
                    unsupported filter \"envoy.filters.network.redis_proxy\"";
    assert_eq!(
        summary(&nack),
        (
            ResourceType::Listener,
            "1".into(),
            "l2".into(),
            vec![],
            Some(expected.into())
        )
    );
    client.wait_status("two NACKs", |s| s.nacks == 2).await;
    assert_eq!(
        *client.handle.current(),
        *before,
        "the previous snapshot stays"
    );

    // The control plane fixes it: the next version is applied.
    stream.send(response(
        ResourceType::Listener,
        "3",
        "l3",
        vec![virtual_outbound(), http_listener(9080)],
    ));
    assert_eq!(
        summary(&stream.recv().await),
        req(ResourceType::Listener, "3", "l3", &[])
    );
    client
        .wait_config("version 3", |c| c.versions[&ResourceType::Listener] == "3")
        .await;
}

/// After a reconnect the client must resend its last versions, with empty nonces and the
/// same subscriptions, node first.
async fn expect_resubscription(stream: &mut AdsStream) {
    let first = stream.recv().await;
    assert!(first.node.is_some());
    assert_eq!(summary(&first), req(ResourceType::Cluster, "1", "", &[]));
    assert_eq!(
        summary(&stream.recv().await),
        req(ResourceType::Endpoint, "1", "", &[REVIEWS])
    );
    assert_eq!(
        summary(&stream.recv().await),
        req(ResourceType::Listener, "1", "", &[])
    );
    assert_eq!(
        summary(&stream.recv().await),
        req(ResourceType::Route, "1", "", &["9080"])
    );
}

#[tokio::test]
async fn reconnects_after_the_stream_drops_and_keeps_the_config() {
    let mut server = FakeAds::start("127.0.0.1:0".parse().unwrap()).await;
    let client = start_client(server.addr.to_string());
    let mut stream = server.next_stream().await;
    sync_v1(&mut stream).await;
    let before = client.wait_config("synced", |c| c.synced).await;

    stream.fail(Status::unavailable("control plane restarting"));
    let mut stream = server.next_stream().await;
    expect_resubscription(&mut stream).await;
    let status = client
        .wait_status("second connect", |s| s.connects == 2)
        .await;
    assert!(status.connected);
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("control plane restarting")),
        "{status:?}"
    );
    assert_eq!(*client.handle.current(), *before);

    // A stream the server simply ends is a disconnect too.
    drop(stream);
    let mut stream = server.next_stream().await;
    expect_resubscription(&mut stream).await;
    client
        .wait_status("third connect", |s| s.connects == 3)
        .await;

    // The new stream works: a response is ACKed with its own nonce.
    stream.send(response(
        ResourceType::Cluster,
        "2",
        "c9",
        clusters(&[REVIEWS]),
    ));
    assert_eq!(
        summary(&stream.recv().await),
        req(ResourceType::Cluster, "2", "c9", &[])
    );
}

#[tokio::test]
async fn reconnects_after_the_server_restarts_on_the_same_port() {
    let mut server = FakeAds::start("127.0.0.1:0".parse().unwrap()).await;
    let addr = server.addr;
    let client = start_client(addr.to_string());
    let mut stream = server.next_stream().await;
    sync_v1(&mut stream).await;
    let before = client.wait_config("synced", |c| c.synced).await;

    drop(stream);
    server.stop().await;
    let status = client
        .wait_status("disconnected", |s| !s.connected && s.last_error.is_some())
        .await;
    assert_eq!(status.connects, 1);
    assert_eq!(
        status.failed_attempts, 0,
        "a dropped stream is not a failed attempt"
    );
    // While the control plane is away, connection attempts fail (and are counted) and the
    // config stays.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = client.handle.status();
    assert!(!status.connected);
    assert!(status.failed_attempts >= 2, "keeps retrying: {status:?}");
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("cannot connect")),
        "{status:?}"
    );
    assert_eq!(*client.handle.current(), *before);
    assert!(client.handle.current().synced);

    let mut server = FakeAds::start(addr).await;
    let mut stream = server.next_stream().await;
    expect_resubscription(&mut stream).await;
    let status = client.wait_status("reconnected", |s| s.connected).await;
    assert_eq!(status.connects, 2);
    let failed = status.failed_attempts;
    assert_eq!(*client.handle.current(), *before);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        client.handle.status().failed_attempts,
        failed,
        "connected: no more attempts"
    );
}
