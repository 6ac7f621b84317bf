//! The service registry end to end, through captured sidecars: ServiceEntries (STATIC
//! endpoints behind a VIP, and resolution DNS, where the client's sidecar resolves the host
//! itself), a WorkloadEntry as an endpoint of a Kubernetes Service, and a Sidecar whose
//! egress `hosts` take a service out of one proxy's config while another proxy still reaches
//! it. The "external" workloads are plain pods (no sidecar) running `mesh-echo`; the names
//! the ServiceEntries use resolve through the pods' hosts files, so no traffic leaves the
//! test's subnet. Each test builds its own topology (see `common`).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use common::{
    config_dump, curl, request_log, s, seen_header, wait_endpoints, wait_for, Mesh, HTTP_PORT, NS,
    REVIEWS_HOST, WEB_PORT,
};
use mesh_tests::harness::{EchoSpec, Pod, Topology};

/// The HTTP port of the ServiceEntries and of the plain pods behind them.
const EXT_PORT: u16 = 8080;
/// How long a config change gets to reach a sidecar.
const PUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// A plain pod `name` (no sidecar) running `mesh-echo` named `name` with HTTP on `port`.
fn plain_echo_pod(topo: &Topology, name: &str, labels: &[(&str, &str)], port: u16) -> Result<Pod> {
    let pod = topo.pod(name, NS, labels)?;
    let echo = pod.spawn_echo(&EchoSpec::new(name, "v1").http(port))?;
    echo.wait_for_log("\"event\":\"listening\"", Duration::from_secs(10))?;
    Ok(pod)
}

/// The names of the clusters `pod`'s sidecar holds.
fn cluster_names(pod: &Pod) -> Result<Vec<String>> {
    let dump = config_dump(pod)?;
    let clusters = dump["config"]["clusters"]
        .as_object()
        .context("config_dump has no config.clusters")?;
    Ok(clusters.keys().cloned().collect())
}

/// The addresses `pod`'s sidecar resolved for the DNS cluster `cluster`.
fn dns_endpoints(pod: &Pod, cluster: &str) -> Result<Vec<String>> {
    let dump = config_dump(pod)?;
    Ok(dump["dns_endpoints"][cluster]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default())
}

/// `GET http://HOST:PORT/` from `client` (curl `--resolve` pins the address the app
/// connects to when `connect_to` is given): checks the reply came from the `mesh-echo`
/// named `want` and that the client's sidecar routed it to `cluster` and `upstream`.
fn check_reached(
    client: &Pod,
    host_port: &str,
    connect_to: Option<SocketAddr>,
    want: &str,
    cluster: &str,
    upstream: SocketAddr,
) -> Result<()> {
    let url = format!("http://{host_port}/registry");
    let resolve = connect_to.map(|a| format!("{host_port}:{}", a.ip()));
    let mut args: Vec<&str> = Vec::new();
    if let Some(r) = &resolve {
        args.extend(["--resolve", r.as_str()]);
    }
    args.push(&url);
    let reply = curl(client, &args)?;
    ensure!(reply.status == 200, "{url}: {reply:?}");
    let echo = reply.json()?;
    ensure!(echo["name"] == want, "{url}: answered by {echo}");
    if let Some(a) = connect_to {
        ensure!(
            reply.remote == a,
            "{url}: the app connected to {}",
            reply.remote
        );
    }
    let id = seen_header(&echo, "x-request-id").context("the app saw no x-request-id")?;
    let log = request_log(client, id, "outbound|")?;
    ensure!(
        s(&log, "upstream_cluster") == cluster && s(&log, "upstream_host") == upstream.to_string(),
        "{url}: the client's sidecar logged {log}"
    );
    Ok(())
}

#[test]
fn service_entries_static_and_dns_reach_plain_pods_through_the_sidecar() -> Result<()> {
    mesh_tests::skip_unless_netns!();
    let mesh = Mesh::new("service_entries_static_and_dns")?;
    let topo = &mesh.topo;
    let vm = plain_echo_pod(topo, "static-vm", &[("app", "static-vm")], EXT_PORT)?;
    let db = plain_echo_pod(topo, "dns-db", &[("app", "dns-db")], EXT_PORT)?;
    // `vm.external` resolves (in every pod) to the STATIC entry's VIP, which no pod holds:
    // only the sidecar's routing can reach the endpoint behind it.
    let vip = topo.next_cluster_ip();
    topo.service("vm", "external", vip)?;
    // `db.external` resolves to the dns-db pod: the client's sidecar looks it up itself.
    topo.service("db", "external", db.ip())?;
    topo.write_config(
        "service-entries.yaml",
        &format!(
            "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: static-vm, namespace: {NS}}}
spec:
  hosts: [vm.external]
  addresses: [{vip}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {{number: {EXT_PORT}, name: http, protocol: HTTP}}
  endpoints:
  - address: {vm_ip}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: dns-db, namespace: {NS}}}
spec:
  hosts: [db.external]
  location: MESH_EXTERNAL
  resolution: DNS
  ports:
  - {{number: {EXT_PORT}, name: http, protocol: HTTP}}
",
            vm_ip = vm.ip()
        ),
    )?;
    mesh.topo.start_control_plane()?;
    let client = mesh.client_pod()?;
    mesh.check(|| {
        mesh.topo.wait_ready(common::READY_TIMEOUT)?;
        let static_cluster = format!("outbound|{EXT_PORT}||vm.external");
        let dns_cluster = format!("outbound|{EXT_PORT}||db.external");
        let vm_addr = SocketAddr::from((vm.ip(), EXT_PORT));
        let db_addr = SocketAddr::from((db.ip(), EXT_PORT));
        // STATIC: the entry's endpoint is an EDS endpoint of its cluster.
        wait_endpoints(&client, &static_cluster, &[vm_addr.to_string()])?;
        check_reached(
            &client,
            &format!("vm.external:{EXT_PORT}"),
            Some(SocketAddr::from((vip, EXT_PORT))),
            "static-vm",
            &static_cluster,
            vm_addr,
        )?;
        // DNS: the sidecar resolved the host through its hosts file.
        wait_for(
            "the client's sidecar to resolve db.external",
            PUSH_TIMEOUT,
            || Ok(dns_endpoints(&client, &dns_cluster)? == [db_addr.to_string()]),
        )?;
        // The app connects to an address nobody holds: the sidecar's own lookup decides.
        let elsewhere = SocketAddr::from((topo.next_cluster_ip(), EXT_PORT));
        check_reached(
            &client,
            &format!("db.external:{EXT_PORT}"),
            Some(elsewhere),
            "dns-db",
            &dns_cluster,
            db_addr,
        )
    })
}

#[test]
fn a_workload_entry_is_an_endpoint_of_a_service() -> Result<()> {
    mesh_tests::skip_unless_netns!();
    let mesh = Mesh::new("a_workload_entry_is_an_endpoint")?;
    let topo = &mesh.topo;
    topo.add_service(
        &mesh_tests::harness::ServiceSpec::new("ratings", NS)
            .port("http", HTTP_PORT, HTTP_PORT)
            .selector("app", "ratings"),
    )?;
    // The "VM": a plain pod no Service selects by itself (no sidecar registers it).
    let vm = plain_echo_pod(topo, "ratings-vm", &[], HTTP_PORT)?;
    let entry = "workload-entry.yaml";
    topo.write_config(
        entry,
        &format!(
            "apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: ratings-vm, namespace: {NS}}}
spec:
  address: {}
  labels: {{app: ratings, version: vm}}
",
            vm.ip()
        ),
    )?;
    topo.start_control_plane()?;
    let client = mesh.client_pod()?;
    mesh.check(|| {
        topo.wait_ready(common::READY_TIMEOUT)?;
        let cluster = format!("outbound|{HTTP_PORT}||ratings.{NS}.svc.cluster.local");
        let vm_addr = SocketAddr::from((vm.ip(), HTTP_PORT));
        wait_endpoints(&client, &cluster, &[vm_addr.to_string()])?;
        check_reached(
            &client,
            &format!("ratings:{HTTP_PORT}"),
            None,
            "ratings-vm",
            &cluster,
            vm_addr,
        )?;
        // Removing the entry removes the endpoint.
        topo.remove_config(entry)?;
        wait_endpoints(&client, &cluster, &[])
    })
}

#[test]
fn a_sidecar_egress_hosts_list_takes_a_service_out_of_one_proxy() -> Result<()> {
    mesh_tests::skip_unless_netns!();
    let (mesh, client, servers) = Mesh::standard("a_sidecar_egress_hosts_list", &["v1"])?;
    let topo = &mesh.topo;
    // Workloads labelled app=restricted see only `web` (and nothing else, REGISTRY_ONLY).
    topo.write_config(
        "sidecar-restricted.yaml",
        &format!(
            "apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: restricted, namespace: {NS}}}
spec:
  workloadSelector:
    labels: {{app: restricted}}
  egress:
  - hosts: [./web.{NS}.svc.cluster.local]
  outboundTrafficPolicy:
    mode: REGISTRY_ONLY
"
        ),
    )?;
    let restricted = topo.injected_pod("restricted", NS, &[("app", "restricted")])?;
    mesh.check(|| {
        topo.wait_ready(common::READY_TIMEOUT)?;
        let reviews = format!("outbound|{HTTP_PORT}||{REVIEWS_HOST}");
        let web = format!("outbound|{WEB_PORT}||web.{NS}.svc.cluster.local");
        let server = SocketAddr::from((servers[0].ip(), HTTP_PORT));
        wait_endpoints(&restricted, &web, &[server.to_string()])?;
        let names = cluster_names(&restricted)?;
        ensure!(
            !names.iter().any(|n| n.ends_with(REVIEWS_HOST))
                && !names.iter().any(|n| n.contains("legacy.")),
            "the restricted sidecar holds clusters outside its egress hosts: {names:?}"
        );
        // The unrestricted client still holds and reaches reviews.
        ensure!(
            cluster_names(&client)?.contains(&reviews),
            "the client's sidecar lost {reviews}"
        );
        check_reached(
            &client,
            &format!("reviews:{HTTP_PORT}"),
            None,
            "reviews",
            &reviews,
            server,
        )?;
        // The restricted workload reaches what it may see...
        let reply = curl(&restricted, &[&format!("http://web:{WEB_PORT}/")])?;
        ensure!(
            reply.status == 200 && reply.json()?["name"] == "reviews",
            "web from the restricted pod: {reply:?}"
        );
        // ...and not reviews: REGISTRY_ONLY sends it to the black hole.
        let out = restricted.curl(&["-m", "5", &format!("http://reviews:{HTTP_PORT}/")])?;
        ensure!(
            !out.success(),
            "reviews answered the restricted pod: {}",
            out.stdout
        );
        Ok(())
    })
}
