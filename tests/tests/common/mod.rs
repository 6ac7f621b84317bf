//! Shared setup of the end-to-end tests (`e2e_*.rs`): a topology with the `reviews` services
//! in namespace `default`, sidecar-injected `reviews-VERSION` pods running `mesh-echo` and a
//! client pod, plus readers for what the tests check (curl replies, access-log lines, config
//! dumps) and a traffic loop. Every test builds its own topology, so they run in parallel.
//!
//! [`Mesh::check`] runs a test's body; when it fails (error or panic) it saves each sidecar's
//! `/config_dump` and `/stats` and the control plane's `/debug/syncz` next to the logs in
//! `target/e2e-logs/<test>/` before the topology is torn down.

// Each test binary uses a part of this module.
#![allow(dead_code)]

pub mod bookinfo;
pub mod certs;

use std::net::{Ipv4Addr, SocketAddr};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use mesh_tests::harness::{
    bin, http_get, ControlPlane, EchoSpec, Pod, ServiceSpec, Topology, READINESS_PORT,
};
use serde_json::Value;

/// The namespace of every pod and service.
pub const NS: &str = "default";
/// `reviews`' HTTP port (HTTP/1.1, h2c, WebSocket).
pub const HTTP_PORT: u16 = 9080;
/// `reviews`' gRPC port.
pub const GRPC_PORT: u16 = 7070;
/// `reviews`' raw TCP echo port (named `tcp-echo`).
pub const TCP_PORT: u16 = 9000;
/// `reviews`' server-first port (named `tcp-banner`).
pub const BANNER_PORT: u16 = 9100;
/// `legacy`'s only port: unnamed, so its protocol is sniffed; a server-first banner.
pub const LEGACY_PORT: u16 = 9101;
/// `web`'s port: named `web` (no protocol prefix, so sniffed), served by the HTTP port.
pub const WEB_PORT: u16 = 8000;
/// `reviews`' FQDN, as in cluster names.
pub const REVIEWS_HOST: &str = "reviews.default.svc.cluster.local";
/// How long a topology's control plane and sidecars get to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an access-log line gets to appear (the log is written off the request path).
const LOG_TIMEOUT: Duration = Duration::from_secs(5);

/// `reviews`: HTTP, gRPC, TCP and a server-first TCP port, selecting `app=reviews`.
pub fn reviews_service() -> ServiceSpec {
    ServiceSpec::new("reviews", NS)
        .port("http", HTTP_PORT, HTTP_PORT)
        .port("grpc", GRPC_PORT, GRPC_PORT)
        .port("tcp-echo", TCP_PORT, TCP_PORT)
        .port("tcp-banner", BANNER_PORT, BANNER_PORT)
        .selector("app", "reviews")
}

/// The `mesh-echo` of a `reviews` pod: every port of `reviews`, `legacy` and `web`.
pub fn reviews_echo(version: &str) -> EchoSpec {
    let mut spec = EchoSpec::new("reviews", version)
        .http(HTTP_PORT)
        .grpc(GRPC_PORT)
        .tcp(TCP_PORT)
        .tcp_banner(BANNER_PORT);
    spec.extra_args = vec!["--tcp-banner-port".into(), LEGACY_PORT.to_string()];
    spec
}

/// A test's mesh: the topology (namespace `default`; Services `reviews`, `legacy` with one
/// unnamed port, and `web` with a port whose name gives no protocol) and its control plane
/// handle (not started by [`Mesh::new`]).
pub struct Mesh {
    /// The topology.
    pub topo: Topology,
    /// Its control plane.
    pub cp: ControlPlane,
    /// `reviews`' ClusterIP.
    pub reviews_ip: Ipv4Addr,
    /// `legacy`'s ClusterIP.
    pub legacy_ip: Ipv4Addr,
    /// `web`'s ClusterIP.
    pub web_ip: Ipv4Addr,
}

impl Mesh {
    /// The topology and its config; no control plane, no pods yet.
    pub fn new(test: &str) -> Result<Mesh> {
        let topo = Topology::new(test)?;
        topo.add_namespace(NS)?;
        let reviews_ip = topo.add_service(&reviews_service())?;
        let legacy_ip = topo.add_service(
            &ServiceSpec::new("legacy", NS)
                .port("", LEGACY_PORT, LEGACY_PORT)
                .selector("app", "reviews"),
        )?;
        let web_ip = topo.add_service(
            &ServiceSpec::new("web", NS)
                .port("web", WEB_PORT, HTTP_PORT)
                .selector("app", "reviews"),
        )?;
        let cp = topo.control_plane();
        Ok(Mesh {
            topo,
            cp,
            reviews_ip,
            legacy_ip,
            web_ip,
        })
    }

    /// The usual mesh: the control plane, an injected `reviews-VERSION` pod per version and
    /// an injected `client` pod (app `client`), all ready, the client holding every
    /// `reviews` pod as an endpoint.
    pub fn standard(test: &str, versions: &[&str]) -> Result<(Mesh, Pod, Vec<Pod>)> {
        let mesh = Mesh::new(test)?;
        mesh.topo.start_control_plane()?;
        let servers = versions
            .iter()
            .map(|v| mesh.reviews_pod(v))
            .collect::<Result<Vec<_>>>()?;
        let client = mesh.client_pod()?;
        mesh.check(|| mesh.wait_converged(&client, &servers))?;
        Ok((mesh, client, servers))
    }

    /// Waits until the control plane and every sidecar are ready and `client` holds every
    /// pod of `servers` as an endpoint of `reviews`' HTTP port. (Readiness alone is not
    /// enough: a sidecar is ready with its first full config, which may predate another
    /// pod's registration by the control plane's debounce.)
    pub fn wait_converged(&self, client: &Pod, servers: &[Pod]) -> Result<()> {
        self.topo.wait_ready(READY_TIMEOUT)?;
        let want: Vec<String> = servers
            .iter()
            .map(|p| SocketAddr::from((p.ip(), HTTP_PORT)).to_string())
            .collect();
        wait_endpoints(
            client,
            &format!("outbound|{HTTP_PORT}||{REVIEWS_HOST}"),
            &want,
        )
    }

    /// An injected pod `reviews-VERSION` (labels `app=reviews`, `version=VERSION`) whose
    /// `mesh-echo` listens on every port of [`reviews_echo`]. Its sidecar is not awaited.
    pub fn reviews_pod(&self, version: &str) -> Result<Pod> {
        let pod = self.topo.injected_pod(
            &format!("reviews-{version}"),
            NS,
            &[("app", "reviews"), ("version", version)],
        )?;
        let echo = pod.spawn_echo(&reviews_echo(version))?;
        echo.wait_for_log("\"event\":\"listening\"", Duration::from_secs(10))?;
        Ok(pod)
    }

    /// An injected pod `client` (label `app=client`) running nothing: tests run their
    /// clients in it. Its sidecar is not awaited.
    pub fn client_pod(&self) -> Result<Pod> {
        Ok(self.topo.injected_pod("client", NS, &[("app", "client")])?)
    }

    /// Runs a test's checks; when they fail (an error or a panic), saves the diagnostics
    /// ([`Mesh::save_diagnostics`]) first.
    pub fn check<T>(&self, body: impl FnOnce() -> Result<T>) -> Result<T> {
        check(&self.topo, &self.cp, body)
    }

    /// Saves every sidecar's `/config_dump` and `/stats` and the control plane's
    /// `/debug/syncz` into the artifact directory (`<pod>.config_dump.json`,
    /// `<pod>.stats.txt`, `controlplane.syncz.json`), and says where on stderr.
    pub fn save_diagnostics(&self) {
        save_diagnostics(&self.topo, &self.cp);
    }
}

/// Runs a test's checks on any topology; when they fail (an error or a panic), saves the
/// diagnostics ([`save_diagnostics`]) first.
pub fn check<T>(topo: &Topology, cp: &ControlPlane, body: impl FnOnce() -> Result<T>) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => {
            save_diagnostics(topo, cp);
            Err(e)
        }
        Err(panic) => {
            save_diagnostics(topo, cp);
            resume_unwind(panic)
        }
    }
}

/// Saves every sidecar's `/config_dump` and `/stats` and the control plane's `/debug/syncz`
/// of any topology, as [`Mesh::save_diagnostics`] does.
pub fn save_diagnostics(topo: &Topology, cp: &ControlPlane) {
    let dir = topo.artifact_dir();
    let mut saved = Vec::new();
    let mut save = |file: String, body: String| {
        let path = dir.join(file);
        if std::fs::write(&path, body).is_ok() {
            saved.push(path.display().to_string());
        }
    };
    for pod in topo.pods() {
        if pod.proxy().is_none() {
            continue;
        }
        for (path, file) in [
            ("/config_dump", "config_dump.json"),
            ("/stats", "stats.txt"),
        ] {
            let body = pod.admin(path).unwrap_or_else(|e| format!("{path}: {e}\n"));
            save(format!("{}.{file}", pod.name()), body);
        }
    }
    if cp.process().is_some() {
        let body = cp.syncz().unwrap_or_else(|e| format!("syncz: {e}\n"));
        save("controlplane.syncz.json".to_owned(), body);
    }
    eprintln!("e2e: diagnostics saved: {}", saved.join(", "));
}

/// A reply read by [`curl`].
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The HTTP version of the status line (`HTTP/1.1`, `HTTP/2`).
    pub version: String,
    /// Response headers, names lowercased, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
    /// The address curl's connection went to (what the app connected to).
    pub remote: SocketAddr,
    /// The connection's local address in the client pod.
    pub local: SocketAddr,
}

impl Reply {
    /// The body as JSON (mesh-echo's report of what it saw).
    pub fn json(&self) -> Result<Value> {
        serde_json::from_str(&self.body).with_context(|| format!("reply body: {}", self.body))
    }

    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Separates the body from curl's `--write-out` trailer.
const WRITE_OUT_MARK: &str = "\n@@curl@@ ";

/// `curl -sS -i ARGS` in `pod`, with the connection's addresses: the status, headers and body
/// of the last response. Fails if curl fails.
pub fn curl(pod: &Pod, args: &[&str]) -> Result<Reply> {
    let write_out =
        format!("{WRITE_OUT_MARK}%{{remote_ip}} %{{remote_port}} %{{local_ip}} %{{local_port}}");
    let mut argv = vec!["-i", "-w", &write_out];
    argv.extend_from_slice(args);
    let out = pod.curl(&argv)?.ok()?;
    parse_curl(&out).with_context(|| format!("curl {args:?} printed {out:?}"))
}

fn parse_curl(out: &str) -> Result<Reply> {
    let (response, trailer) = out.rsplit_once(WRITE_OUT_MARK).context("no write-out")?;
    let addr = |ip: &str, port: &str| -> Result<SocketAddr> {
        Ok(SocketAddr::new(ip.parse()?, port.parse()?))
    };
    let t: Vec<&str> = trailer.split_whitespace().collect();
    ensure!(t.len() == 4, "write-out {trailer:?}");
    // With -i, every response (1xx, redirects) prints a head: the last one is the answer.
    let mut rest = response;
    let (head, body) = loop {
        let (head, body) = rest.split_once("\r\n\r\n").context("no end of headers")?;
        if body.starts_with("HTTP/") {
            rest = body;
        } else {
            break (head, body);
        }
    };
    let mut lines = head.split("\r\n");
    let status_line = lines.next().context("no status line")?;
    let mut parts = status_line.split_whitespace();
    let version = parts.next().context("no version")?.to_owned();
    let status = parts.next().context("no status")?.parse()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(Reply {
        status,
        version,
        headers,
        body: body.to_owned(),
        remote: addr(t[0], t[1])?,
        local: addr(t[2], t[3])?,
    })
}

/// `mesh-echo client ARGS` in `pod`: one JSON value per line of its output. Fails if the
/// client exits non-zero (a failed request, a wrong status).
pub fn echo_client(pod: &Pod, args: &[&str]) -> Result<Vec<Value>> {
    let out = pod.echo_client(args)?.ok()?;
    json_lines(&out)
}

/// Every line of `text` parsed as JSON.
pub fn json_lines(text: &str) -> Result<Vec<Value>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("not JSON: {l}")))
        .collect()
}

/// The access-log lines the pod's sidecar has written so far (its stdout).
pub fn access_log(pod: &Pod) -> Vec<Value> {
    let Some(proxy) = pod.proxy() else {
        return Vec::new();
    };
    proxy
        .stdout()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Waits for the access-log line of `pod`'s sidecar that `pred` accepts and returns it.
pub fn wait_log(pod: &Pod, what: &str, pred: impl Fn(&Value) -> bool) -> Result<Value> {
    let deadline = Instant::now() + LOG_TIMEOUT;
    loop {
        if let Some(entry) = access_log(pod).into_iter().find(|e| pred(e)) {
            return Ok(entry);
        }
        if Instant::now() >= deadline {
            bail!(
                "no access-log line of {} for {what} within {LOG_TIMEOUT:?}; it has:\n{}",
                pod.name(),
                pod.proxy().map(|p| p.stdout()).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The access-log line of `pod`'s sidecar for request `id` whose upstream cluster starts with
/// `cluster_prefix` (`outbound|` or `inbound|`: a self-call writes both on one sidecar).
pub fn request_log(pod: &Pod, id: &str, cluster_prefix: &str) -> Result<Value> {
    wait_log(pod, &format!("request {id} ({cluster_prefix}...)"), |e| {
        e["request_id"] == id
            && e["upstream_cluster"]
                .as_str()
                .is_some_and(|c| c.starts_with(cluster_prefix))
    })
}

/// The value of a JSON string field, or "" when it is not a string.
pub fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_default()
}

/// The IP of a JSON `ip:port` string field.
pub fn ip_of(v: &Value, key: &str) -> Option<std::net::IpAddr> {
    s(v, key).parse::<SocketAddr>().ok().map(|a| a.ip())
}

/// The header `name` the echo server saw (its first value).
pub fn seen_header<'a>(echo: &'a Value, name: &str) -> Option<&'a str> {
    echo["headers"][name][0].as_str()
}

/// The sidecar's `/config_dump` as JSON.
pub fn config_dump(pod: &Pod) -> Result<Value> {
    let body = pod.admin("/config_dump")?;
    serde_json::from_str(&body).context("config_dump is not JSON")
}

/// The endpoint addresses the sidecar of `pod` holds for `cluster`, sorted.
pub fn endpoints(pod: &Pod, cluster: &str) -> Result<Vec<String>> {
    let dump = config_dump(pod)?;
    let mut out: Vec<String> = dump["config"]["endpoints"][cluster]["endpoints"]
        .as_array()
        .map(|eps| {
            eps.iter()
                .filter_map(|e| e["address"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    Ok(out)
}

/// Calls `check` every 50 ms until it returns `Ok(true)`; fails after `timeout`, naming
/// `what` and the last error `check` returned.
pub fn wait_for(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        match check() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last = format!(": last error: {e:#}"),
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}{last}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `pod`'s sidecar holds exactly `want` as `cluster`'s endpoints.
pub fn wait_endpoints(pod: &Pod, cluster: &str, want: &[String]) -> Result<()> {
    let mut want = want.to_vec();
    want.sort();
    let what = format!("{} to hold endpoints {want:?} for {cluster}", pod.name());
    wait_for(&what, Duration::from_secs(10), || {
        Ok(endpoints(pod, cluster)? == want)
    })
}

/// A counter of a sidecar's `/stats` (0 when not counted yet).
pub fn stat(pod: &Pod, name: &str) -> Result<u64> {
    let stats = pod.admin("/stats")?;
    Ok(stats
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .map(|v| v.trim().parse())
        .transpose()
        .context(name.to_owned())?
        .unwrap_or(0))
}

/// `GET /healthz/ready` on the pod's readiness port, from the host: the status code.
pub fn readiness(pod: &Pod) -> Result<u16> {
    let addr = SocketAddr::from((pod.ip(), READINESS_PORT));
    Ok(http_get(addr, "/healthz/ready", Duration::from_secs(2))?.status)
}

/// What a [`Traffic`] loop saw.
#[derive(Debug, Default)]
pub struct TrafficReport {
    /// Requests answered 200 without error.
    pub ok: usize,
    /// Failed requests and client runs, with what they printed.
    pub failures: Vec<String>,
    /// When each successful request's client run finished.
    pub ok_times: Vec<Instant>,
}

/// A loop of `mesh-echo client http URL --count N` runs in a pod (a new connection per run)
/// until [`Traffic::stop`] (or until dropped, when a test fails first).
pub struct Traffic {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<TrafficReport>>,
}

impl Traffic {
    /// Starts the loop in `pod` against `url`, `per_run` requests per connection.
    pub fn start(pod: &Pod, url: &str, per_run: u32) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let cmd = pod
            .command([bin("mesh-echo")])
            .args(["client", "http", url, "--count", &per_run.to_string()])
            .args(["--expect-status", "200"])
            .timeout(Duration::from_secs(20));
        let handle = std::thread::spawn(move || {
            let mut report = TrafficReport::default();
            while !flag.load(Ordering::Relaxed) {
                match cmd.clone().exec() {
                    Err(e) => report.failures.push(e.to_string()),
                    Ok(out) => {
                        let now = Instant::now();
                        for line in out.stdout.lines() {
                            let ok = serde_json::from_str::<Value>(line)
                                .is_ok_and(|v| v["status"] == 200 && v["error"].is_null());
                            if ok {
                                report.ok += 1;
                                report.ok_times.push(now);
                            } else {
                                report.failures.push(line.to_owned());
                            }
                        }
                        if !out.success() {
                            report.failures.push(format!(
                                "exit {}: {}",
                                out.status,
                                out.stderr.trim()
                            ));
                        }
                    }
                }
            }
            report
        });
        Traffic {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops the loop after its current run and returns what it saw.
    pub fn stop(mut self) -> Result<TrafficReport> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .context("stopped twice")?
            .join()
            .map_err(|_| anyhow!("the traffic loop panicked"))
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The pods of `topo` that run a sidecar.
pub fn sidecars(topo: &Topology) -> usize {
    topo.pods().iter().filter(|p| p.proxy().is_some()).count()
}

/// True when at least `proxies` proxies are connected and each has been sent CDS, EDS, LDS
/// and RDS and ACKed the last response of each; an error as soon as one NACKed anything.
pub fn all_acked(cp: &ControlPlane, proxies: usize) -> Result<bool> {
    let syncz: Value = serde_json::from_str(&cp.syncz()?).context("syncz is not JSON")?;
    let entries = syncz.as_array().context("syncz is a list")?;
    if entries.len() < proxies {
        return Ok(false);
    }
    for e in entries {
        for t in ["cds", "eds", "lds", "rds"] {
            let ty = &e["types"][t];
            ensure!(
                ty["last_nack"].is_null(),
                "{} NACKed {t}: {}",
                e["node_id"],
                ty["last_nack"]
            );
            if ty["sent_version"].is_null() || ty["acked_version"] != ty["sent_version"] {
                return Ok(false);
            }
        }
    }
    Ok(true)
}
