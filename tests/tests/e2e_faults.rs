//! The mesh around its control plane: proxies started before it, a control plane killed and
//! restarted under traffic, config changes pushed while everything runs, a config the proxies
//! reject (NACKed, reported, the previous config kept), a proxy whose control plane is
//! unreachable for a while, and a flood of file changes coalesced into few pushes.

mod common;

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use common::{config_dump, curl, readiness, s, wait_for, Mesh, Traffic, HTTP_PORT, REVIEWS_HOST};
use mesh_tests::harness::{bin, Pod, ServiceSpec};
use serde_json::Value;

/// The proxies `/debug/syncz` lists with every type acked at the version last sent, each
/// with its connection's start time.
fn synced_proxies(syncz: &str) -> Result<Vec<(String, String)>> {
    let all: Vec<Value> = serde_json::from_str(syncz).context("syncz is not JSON")?;
    Ok(all
        .iter()
        .filter(|p| {
            ["cds", "eds", "lds", "rds"].iter().all(|t| {
                let t = &p["types"][*t];
                !t["sent_version"].is_null() && t["acked_version"] == t["sent_version"]
            })
        })
        .map(|p| (s(p, "pod").to_owned(), s(p, "connected_at").to_owned()))
        .collect())
}

/// The `xds_status` of a sidecar's `/config_dump`.
fn xds_status(pod: &Pod) -> Result<Value> {
    Ok(config_dump(pod)?["xds_status"].clone())
}

#[test]
fn proxies_started_before_the_control_plane_wait_then_serve() -> Result<()> {
    mesh_tests::skip_unless_netns!();
    let mesh = Mesh::new("proxies_started_before_the_control_plane_wait_then_serve")?;
    let server = mesh.reviews_pod("v1")?;
    let client = mesh.client_pod()?;
    mesh.check(|| {
        // Up, answering, and not ready: no config yet.
        for pod in [&client, &server] {
            wait_for("the readiness port", Duration::from_secs(10), || {
                Ok(readiness(pod).is_ok())
            })?;
        }
        let deadline = Instant::now() + Duration::from_millis(800);
        while Instant::now() < deadline {
            for pod in [&client, &server] {
                ensure!(
                    readiness(pod)? == 503,
                    "{} ready without config",
                    pod.name()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let admin = client.curl(&["http://127.0.0.1:15000/ready"])?;
        ensure!(admin.stdout.trim() == "PRE_INITIALIZING", "{admin:?}");
        // Without config the sidecar fails closed: the app's connection is refused service.
        let early = client.curl(&["--max-time", "3", &format!("http://reviews:{HTTP_PORT}/")])?;
        ensure!(!early.success(), "served without config: {early:?}");

        mesh.topo.start_control_plane()?;
        let started = Instant::now();
        mesh.wait_converged(&client, std::slice::from_ref(&server))?;
        let took = started.elapsed();
        ensure!(
            took < Duration::from_secs(10),
            "ready {took:?} after the control plane"
        );
        for pod in [&client, &server] {
            ensure!(readiness(pod)? == 200, "{}", pod.name());
        }
        let reply = curl(&client, &[&format!("http://reviews:{HTTP_PORT}/late")])?;
        ensure!(
            reply.status == 200 && reply.json()?["name"] == "reviews",
            "{reply:?}"
        );
        Ok(())
    })
}

#[test]
fn control_plane_killed_and_restarted_under_traffic() -> Result<()> {
    mesh_tests::skip_unless_netns!();
    let test = "control_plane_killed_and_restarted_under_traffic";
    let (mesh, client, servers) = Mesh::standard(test, &["v1"])?;
    mesh.check(|| {
        let pods = [client.name().to_owned(), servers[0].name().to_owned()];
        let before = synced_proxies(&mesh.cp.syncz()?)?;
        ensure!(before.len() == 2, "{before:?}");
        let traffic = Traffic::start(&client, &format!("http://reviews:{HTTP_PORT}/loop"), 5);
        std::thread::sleep(Duration::from_millis(500));

        // A crash: the proxies lose their stream and keep serving their last config.
        mesh.cp.kill();
        let killed = Instant::now();
        for pod in [&client, &servers[0]] {
            wait_for(
                "the sidecar to see the control plane gone",
                Duration::from_secs(5),
                || Ok(xds_status(pod)?["connected"] == false),
            )?;
            ensure!(
                readiness(pod)? == 200,
                "{} stays ready without its control plane",
                pod.name()
            );
        }
        std::thread::sleep(Duration::from_millis(700));
        mesh.cp.start_again()?;
        let restarted = Instant::now();
        let reconnected = |what: &str| -> Result<()> {
            wait_for(what, Duration::from_secs(15), || {
                let synced = synced_proxies(&mesh.cp.syncz()?)?;
                Ok(pods.iter().all(|p| synced.iter().any(|(pod, _)| pod == p)))
            })
        };
        reconnected("both proxies to reconnect and ack everything")?;

        // A graceful restart too.
        mesh.cp.restart()?;
        reconnected("both proxies to reconnect after a graceful restart")?;
        // The new control plane counts them.
        wait_for(
            "pilot_xds to count both proxies",
            Duration::from_secs(5),
            || Ok(metric(&mesh.cp.metrics()?, "pilot_xds", &[]) == 2.0),
        )?;
        std::thread::sleep(Duration::from_millis(500));
        let report = traffic.stop()?;

        ensure!(
            report.failures.is_empty(),
            "failed requests: {:#?}",
            report.failures
        );
        let during = report
            .ok_times
            .iter()
            .filter(|t| **t > killed && **t < restarted)
            .count();
        ensure!(
            during > 0,
            "no request completed while the control plane was down"
        );
        ensure!(report.ok >= 20, "only {} requests", report.ok);
        for pod in [&client, &servers[0]] {
            let status = xds_status(pod)?;
            ensure!(
                status["connected"] == true && status["connects"].as_u64() >= Some(3),
                "{}: {status}",
                pod.name()
            );
        }
        eprintln!(
            "e2e: {} requests, {during} while the control plane was down, none failed",
            report.ok
        );
        Ok(())
    })
}

#[test]
fn config_changes_are_pushed_without_restarts() -> Result<()> {
    mesh_tests::skip_unless_netns!();
    let (mesh, client, servers) =
        Mesh::standard("config_changes_are_pushed_without_restarts", &["v1"])?;
    mesh.check(|| {
        let pids: Vec<Option<u32>> = [&client, &servers[0]]
            .iter()
            .map(|p| p.proxy().and_then(|p| p.pid()))
            .collect();
        // A new Service, written while everything runs.
        let ratings = ServiceSpec::new("ratings", common::NS)
            .port("http", 9081, HTTP_PORT)
            .selector("app", "reviews");
        let ip = mesh.topo.add_service(&ratings)?;
        let url = "http://ratings:9081/rated";
        let added = Instant::now();
        wait_for("ratings to route", Duration::from_secs(10), || {
            Ok(client.curl(&["--max-time", "1", "-f", url])?.success())
        })?;
        let took = added.elapsed();
        ensure!(
            took < Duration::from_secs(5),
            "ratings routed after {took:?}"
        );
        let reply = curl(&client, &[url])?;
        let echo = reply.json()?;
        ensure!(
            reply.status == 200 && echo["name"] == "reviews" && s(&echo, "host") == "ratings:9081",
            "{reply:?}"
        );
        ensure!(reply.remote.ip() == std::net::IpAddr::V4(ip), "{reply:?}");

        // Removing its file removes it from every proxy; the name no longer routes.
        mesh.topo.remove_config("service-default-ratings.yaml")?;
        let cluster = "outbound|9081||ratings.default.svc.cluster.local";
        wait_for(
            "ratings to leave the client's config",
            Duration::from_secs(10),
            || {
                let dump = config_dump(&client)?;
                Ok(dump["config"]["clusters"].get(cluster).is_none()
                    && dump["config"]["routes"].get("9081").is_none())
            },
        )?;
        let gone = client.curl(&["--max-time", "5", url])?;
        ensure!(!gone.success(), "ratings still answers: {gone:?}");
        let entry = common::wait_log(&client, "the request to the removed ratings", |e| {
            s(e, "downstream_local_address") == format!("{ip}:9081") && e["request_id"].is_null()
        })?;
        ensure!(
            s(&entry, "upstream_cluster") == "PassthroughCluster",
            "{entry}"
        );
        // reviews is untouched, and no proxy restarted.
        let still = curl(&client, &[&format!("http://reviews:{HTTP_PORT}/")])?;
        ensure!(still.status == 200, "{still:?}");
        let now: Vec<Option<u32>> = [&client, &servers[0]]
            .iter()
            .map(|p| p.proxy().and_then(|p| p.pid()))
            .collect();
        ensure!(
            now == pids && pids.iter().all(Option::is_some),
            "{pids:?} -> {now:?}"
        );
        Ok(())
    })
}

#[test]
fn a_proxy_retries_an_unreachable_control_plane_until_one_appears() -> Result<()> {
    mesh_tests::skip_unless_netns!();
    let mesh = Mesh::new("a_proxy_retries_an_unreachable_control_plane_until_one_appears")?;
    let client = mesh.client_pod()?;
    mesh.check(|| {
        let proxy = client.proxy().context("sidecar")?;
        wait_for("the readiness port", Duration::from_secs(10), || {
            Ok(readiness(&client).is_ok())
        })?;
        let attempts = |status: &Value| status["failed_attempts"].as_u64().unwrap_or(0);
        wait_for("three failed attempts", Duration::from_secs(10), || {
            Ok(attempts(&xds_status(&client)?) >= 3)
        })?;
        let first = xds_status(&client)?;
        ensure!(first["connected"] == false, "{first}");
        ensure!(
            s(&first, "last_error").contains("Connection refused"),
            "names the cause: {first}"
        );
        ensure!(readiness(&client)? == 503, "ready without a control plane");
        let stats = client.admin("/stats")?;
        ensure!(stats.contains("xds.failed_attempts: "), "{stats}");
        // Still retrying a moment later, and the log says so.
        wait_for("more attempts", Duration::from_secs(10), || {
            Ok(attempts(&xds_status(&client)?) > attempts(&first))
        })?;
        ensure!(proxy
            .stderr()
            .contains("cannot reach the control plane; retrying"));
        ensure!(proxy.is_running(), "the proxy gave up");

        // A control plane at that address: the proxy connects on its next attempt.
        mesh.topo.start_control_plane()?;
        let started = Instant::now();
        client.wait_proxy_ready(Duration::from_secs(20))?;
        eprintln!(
            "e2e: ready {:?} after the control plane, after {} failed attempts",
            started.elapsed(),
            attempts(&xds_status(&client)?)
        );
        let status = xds_status(&client)?;
        ensure!(
            status["connected"] == true && status["connects"] == 1,
            "{status}"
        );
        Ok(())
    })
}

/// The sum of the series `name` whose labels include `labels`, in Prometheus text.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|(_, v)| v.parse::<f64>().ok())
        .sum()
}

/// A DestinationRule Istio accepts whose translation `mesh-proxy` (like Envoy) cannot apply: a
/// ring-hash load balancer whose minimum ring size is above the 8M entries a proxy allows
/// (Istio's validation sets no upper bound). The control plane puts it on the cluster
/// `outbound|9080||reviews...`; the proxy NACKs the whole CDS response with a message naming
/// that cluster and field. (If the proxy learns to apply this, the test fails on the missing
/// NACK: pick another field it still rejects.)
const UNAPPLICABLE_RULE: &str = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews.default.svc.cluster.local
  trafficPolicy:
    loadBalancer:
      consistentHash:
        httpHeaderName: x-user
        ringHash: {minimumRingSize: 10000000}
";

#[test]
fn a_config_the_proxies_cannot_apply_is_nacked_reported_and_the_old_one_kept() -> Result<()> {
    mesh_tests::skip_unless_netns!();
    let test = "a_config_the_proxies_cannot_apply_is_nacked_reported_and_the_old_one_kept";
    let (mesh, client, servers) = Mesh::standard(test, &["v1"])?;
    mesh.check(|| {
        let cluster = format!("outbound|{HTTP_PORT}||{REVIEWS_HOST}");
        let before = mesh.cp.metrics()?;
        let versions_before = config_dump(&client)?["config"]["versions"].clone();
        let traffic = Traffic::start(&client, &format!("http://reviews:{HTTP_PORT}/nack"), 5);
        std::thread::sleep(Duration::from_millis(300));

        mesh.topo
            .write_config("dr-reviews.yaml", UNAPPLICABLE_RULE)?;
        // Both sidecars reject the new CDS: syncz shows the NACK with the proxy's message.
        let nacked = |pod: &Pod| -> Result<Option<String>> {
            let all: Vec<Value> = serde_json::from_str(&mesh.cp.syncz()?)?;
            Ok(all
                .iter()
                .find(|p| p["pod"] == pod.name())
                .and_then(|p| p["types"]["cds"]["last_nack"].as_str())
                .map(str::to_owned))
        };
        for pod in [&client, &servers[0]] {
            wait_for("the CDS NACK in syncz", Duration::from_secs(10), || {
                Ok(nacked(pod)?.is_some())
            })?;
            let message = nacked(pod)?.unwrap_or_default();
            ensure!(
                message.contains(&format!("cluster \"{cluster}\""))
                    && message.contains("ring_hash_lb_config"),
                "{}: {message}",
                pod.name()
            );
        }
        // The metrics count it, per type and per proxy.
        let after = mesh.cp.metrics()?;
        let rejects = metric(&after, "pilot_total_xds_rejects", &[("type", "cds")])
            - metric(&before, "pilot_total_xds_rejects", &[("type", "cds")]);
        ensure!(
            rejects >= 2.0,
            "pilot_total_xds_rejects{{type=cds}} grew by {rejects}"
        );
        let all: Vec<Value> = serde_json::from_str(&mesh.cp.syncz()?)?;
        let node = all
            .iter()
            .find(|p| p["pod"] == client.name())
            .map(|p| s(p, "node_id").to_owned())
            .context("the client in syncz")?;
        ensure!(
            metric(&after, "pilot_xds_cds_reject", &[("node", &node)]) >= 1.0,
            "no pilot_xds_cds_reject for {node}"
        );
        // meshctl proxy-status, as an operator runs it, names it.
        let out = std::process::Command::new(bin("meshctl"))
            .args([
                "proxy-status",
                "--cp-addr",
                &mesh.cp.debug_address().to_string(),
            ])
            .output()?;
        let table = String::from_utf8_lossy(&out.stdout).into_owned();
        let row = table
            .lines()
            .find(|l| l.starts_with(&format!("{}.default ", client.name())))
            .with_context(|| format!("no row for the client:\n{table}"))?;
        ensure!(
            out.status.success() && row.contains("STALE (NACK: cluster"),
            "{table}"
        );
        ensure!(
            table.contains(&format!("{}.default CDS: ", client.name())),
            "{table}"
        );

        // The proxy keeps its previous clusters and serves with them.
        let status = xds_status(&client)?;
        ensure!(status["nacks"].as_u64() >= Some(1), "{status}");
        let dump = config_dump(&client)?;
        ensure!(
            dump["config"]["versions"]["Cluster"] == versions_before["Cluster"],
            "{} -> {}",
            versions_before,
            dump["config"]["versions"]
        );
        ensure!(
            dump["config"]["clusters"].get(&cluster).is_some(),
            "cluster gone"
        );
        std::thread::sleep(Duration::from_millis(500));
        let report = traffic.stop()?;
        ensure!(
            report.failures.is_empty(),
            "failed requests: {:#?}",
            report.failures
        );
        ensure!(report.ok >= 5, "only {} requests", report.ok);

        // Removing the rule: the proxies ACK again and syncz clears the NACK.
        mesh.topo.remove_config("dr-reviews.yaml")?;
        for pod in [&client, &servers[0]] {
            wait_for("the NACK to clear", Duration::from_secs(10), || {
                Ok(nacked(pod)?.is_none())
            })?;
        }
        let reply = curl(&client, &[&format!("http://reviews:{HTTP_PORT}/after")])?;
        ensure!(reply.status == 200, "{reply:?}");
        eprintln!(
            "e2e: {} requests while the rule was rejected, none failed",
            report.ok
        );
        Ok(())
    })
}

/// The `x-flood` VirtualService of version `n`: every response of reviews carries
/// `x-flood: n`.
fn flood_rule(n: usize) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [reviews]
  http:
  - headers:
      response:
        set: {{x-flood: \"{n}\"}}
    route:
    - destination: {{host: reviews}}
"
    )
}

/// A flood of file changes (50 writes in well under a second, each a new version of one
/// VirtualService, as an editor or a sync tool produces them) coalesces into few pushes
/// (istiod's debounce: 100 ms quiet, 10 s at most), counted on the control plane's
/// monitoring port, and the proxies end on the last version.
#[test]
fn a_flood_of_file_changes_coalesces_into_few_pushes() -> Result<()> {
    mesh_tests::skip_unless_netns!();
    let test = "a_flood_of_file_changes_coalesces_into_few_pushes";
    let (mesh, client, servers) = Mesh::standard(test, &["v1"])?;
    mesh.check(|| {
        const WRITES: usize = 50;
        let proxies = 1 + servers.len();
        let before = mesh.cp.metrics()?;
        let started = Instant::now();
        // A pause of 100 ms or more between two writes (a loaded machine can stall this
        // thread) lets the debounce fire in between: each such pause allows one more push.
        let mut pauses = 0.0;
        let mut last = Instant::now();
        for n in 1..=WRITES {
            mesh.topo.write_config("vs-reviews.yaml", &flood_rule(n))?;
            if last.elapsed() >= Duration::from_millis(90) {
                pauses += 1.0;
            }
            last = Instant::now();
            std::thread::sleep(Duration::from_millis(8));
        }
        let writing = started.elapsed();
        let url = format!("http://reviews:{HTTP_PORT}/flood");
        wait_for(
            "the last version at the client",
            Duration::from_secs(15),
            || Ok(curl(&client, &[&url])?.header("x-flood") == Some(&WRITES.to_string())),
        )?;
        // Every proxy ACKed the last push, and nothing more is on its way.
        wait_for("every proxy synced", Duration::from_secs(10), || {
            Ok(synced_proxies(&mesh.cp.syncz()?)?.len() == proxies)
        })?;
        std::thread::sleep(Duration::from_millis(500));
        let after = mesh.cp.metrics()?;
        let delta = |name: &str, labels: &[(&str, &str)]| {
            metric(&after, name, labels) - metric(&before, name, labels)
        };
        let reloads = delta("pilot_debounce_time_count", &[]);
        let rds = delta("pilot_xds_pushes", &[("type", "rds")]);
        let triggers = delta("pilot_push_triggers", &[("type", "config")]);
        eprintln!(
            "e2e: {WRITES} writes in {writing:?} ({pauses} pauses of 90 ms or more): \
             {reloads} debounced pushes, {rds} RDS responses to {proxies} proxies, \
             {triggers} config triggers"
        );
        ensure!(
            (1.0..=3.0 + pauses).contains(&reloads),
            "{WRITES} writes with {pauses} long pauses gave {reloads} debounced pushes"
        );
        ensure!(
            (1.0..=(3.0 + pauses) * proxies as f64).contains(&rds),
            "{WRITES} writes gave {rds} RDS responses to {proxies} proxies"
        );
        Ok(())
    })
}
