//! Istio's Bookinfo networking samples (`samples/bookinfo/networking/` of the conformance
//! data) applied to the demo's Bookinfo-like Services (`conf/demo`): a topology whose control
//! plane reads the demo's config plus the samples, injected pods for the versions a test
//! needs (`mesh-echo` answering with its name and version, as `mesh-demo` runs them), a
//! `client` pod with a `mesh-proxy` sidecar and, when asked for, a `client-envoy` pod with
//! Envoy as its sidecar. Plus the traffic loop and the statistics the tests check with.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use mesh_tests::demo::{DemoConfig, DemoService};
use mesh_tests::harness::{
    bin, workspace_dir, ControlPlane, EchoSpec, EnvoyOptions, Pod, ProxyOptions, Topology,
};
use serde_json::Value;

use super::{all_acked, endpoints, json_lines, sidecars, wait_for, NS, READY_TIMEOUT};

/// Where the samples are under the conformance directory.
const SAMPLES_SUBDIR: &str = "samples/bookinfo/networking";
/// Every Bookinfo Service's port (and its workloads' port).
pub const PORT: u16 = 9080;
/// How many `mesh-echo client` runs (connections) share a batch of requests.
const PARALLEL_RUNS: usize = 4;

/// The samples directory (`$MESH_CONFORMANCE_DIR/samples/bookinfo/networking`, else
/// `../shared/conformance/istio/...` beside the workspace), or `None` after printing
/// `SKIPPED: ...` when it is not there (see [`mesh_tests::conformance::missing`]).
pub fn samples_or_skip(test: &str) -> Option<PathBuf> {
    let dir = match std::env::var_os("MESH_CONFORMANCE_DIR") {
        Some(d) => PathBuf::from(d).join(SAMPLES_SUBDIR),
        None => workspace_dir()
            .join("../shared/conformance/istio")
            .join(SAMPLES_SUBDIR),
    };
    if dir.is_dir() {
        Some(dir)
    } else {
        mesh_tests::conformance::missing(&format!(
            "{test}: Istio's Bookinfo samples not found at {}",
            dir.display()
        ));
        None
    }
}

/// The FQDN of a Bookinfo Service.
pub fn fqdn(service: &str) -> String {
    format!("{service}.{NS}.svc.cluster.local")
}

/// The cluster of `service`'s subset `version` on [`PORT`], as istiod names it.
pub fn subset_cluster(service: &str, version: &str) -> String {
    format!("outbound|{PORT}|{version}|{}", fqdn(service))
}

/// A Bookinfo mesh with some samples applied.
pub struct Bookinfo {
    /// The topology.
    pub topo: Topology,
    /// Its control plane (running).
    pub cp: ControlPlane,
    /// The workload pods, `(service, version, pod)`.
    pub pods: Vec<(String, String, Pod)>,
    /// The client pod with a `mesh-proxy` sidecar.
    pub client: Pod,
    /// The client pod with an Envoy sidecar, when asked for.
    pub envoy_client: Option<Pod>,
}

impl Bookinfo {
    /// Builds the mesh: the demo's config and Services, the `samples` (files of `dir`;
    /// `destination-rule-all.yaml` too when none of them has a DestinationRule, as Istio's
    /// task pages apply it first), the control plane (which must accept every object), one
    /// injected pod per `(service, version)` of `workloads`, the `client` pod, and the
    /// `client-envoy` pod when `envoy_client`.
    pub fn new(
        test: &str,
        dir: &Path,
        samples: &[&str],
        workloads: &[(&str, &str)],
        envoy_client: bool,
    ) -> Result<Bookinfo> {
        let demo = DemoConfig::load(&workspace_dir().join("conf/demo"))?;
        let topo = Topology::new(test)?;
        for (rel, text) in &demo.files {
            topo.write_config(&rel.to_string_lossy(), text)?;
        }
        for s in &demo.services {
            topo.service(&s.spec.name, &s.spec.namespace, s.cluster_ip())?;
        }
        let mut texts = Vec::new();
        for sample in samples {
            let path = dir.join(sample);
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            texts.push(((*sample).to_owned(), text));
        }
        if !texts
            .iter()
            .any(|(_, t)| t.contains("kind: DestinationRule"))
        {
            let name = "destination-rule-all.yaml";
            texts.push((name.to_owned(), std::fs::read_to_string(dir.join(name))?));
        }
        for (name, text) in &texts {
            topo.write_config(&format!("sample-{name}"), text)?;
        }
        let cp = topo.start_control_plane()?;
        let configz: Value = serde_json::from_str(&cp.debug_get("/debug/configz")?.body)
            .context("configz is not JSON")?;
        ensure!(
            configz["errors"].as_array().is_none_or(|e| e.is_empty()),
            "the control plane rejected part of {samples:?}: {}",
            configz["errors"]
        );
        let mut pods = Vec::new();
        for (service, version) in workloads {
            let svc = demo
                .services
                .iter()
                .find(|s| s.spec.name == *service)
                .with_context(|| format!("no Service {service} in conf/demo"))?;
            pods.push((
                (*service).to_owned(),
                (*version).to_owned(),
                workload(&topo, svc, version)?,
            ));
        }
        let opts = ProxyOptions {
            service_account: "client".to_owned(),
            ..ProxyOptions::default()
        };
        let client = topo.injected_pod_with("client", NS, &[("app", "client")], &opts)?;
        let envoy_client = if envoy_client {
            let opts = EnvoyOptions {
                service_account: "client-envoy".to_owned(),
                ..EnvoyOptions::default()
            };
            Some(topo.envoy_pod_with("client-envoy", NS, &[("app", "client-envoy")], &opts)?)
        } else {
            None
        };
        Ok(Bookinfo {
            topo,
            cp,
            pods,
            client,
            envoy_client,
        })
    }

    /// Runs a test's checks, saving diagnostics when they fail.
    pub fn check<T>(&self, body: impl FnOnce() -> Result<T>) -> Result<T> {
        super::check(&self.topo, &self.cp, body)
    }

    /// The pod of `service` `version`.
    pub fn pod(&self, service: &str, version: &str) -> Result<&Pod> {
        self.pods
            .iter()
            .find(|(s, v, _)| s == service && v == version)
            .map(|(_, _, p)| p)
            .with_context(|| format!("no pod {service}-{version}"))
    }

    /// Waits until every sidecar is ready and has ACKed every type (failing on a NACK), and
    /// every client sidecar holds, for each `(service, version)` of `subsets`, exactly that
    /// pod as the endpoint of the subset's cluster.
    pub fn wait_converged(&self, subsets: &[(&str, &str)]) -> Result<()> {
        self.topo.wait_ready(READY_TIMEOUT)?;
        wait_for("every proxy to ACK every type", READY_TIMEOUT, || {
            all_acked(&self.cp, sidecars(&self.topo))
        })?;
        for (service, version) in subsets {
            let cluster = subset_cluster(service, version);
            let want = vec![format!("{}:{PORT}", self.pod(service, version)?.ip())];
            wait_for(
                &format!("client to hold {want:?} for {cluster}"),
                Duration::from_secs(10),
                || Ok(endpoints(&self.client, &cluster)? == want),
            )?;
            if let Some(envoy) = &self.envoy_client {
                wait_for(
                    &format!("client-envoy to hold {want:?} for {cluster}"),
                    Duration::from_secs(10),
                    || Ok(envoy_endpoints(envoy, &cluster)? == want),
                )?;
            }
        }
        Ok(())
    }
}

/// Starts the pod `SERVICE-VERSION` of a demo Service as `mesh-demo` does: labels of the
/// selector plus `version`, the Service's service account, `mesh-echo` on its ports.
fn workload(topo: &Topology, svc: &DemoService, version: &str) -> Result<Pod> {
    let mut labels: Vec<(&str, &str)> = svc
        .spec
        .selector
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    labels.push(("version", version));
    let opts = ProxyOptions {
        service_account: svc.service_account.clone(),
        ..ProxyOptions::default()
    };
    let name = format!("{}-{version}", svc.spec.name);
    let pod = topo.injected_pod_with(&name, NS, &labels, &opts)?;
    let mut spec = EchoSpec::new(&svc.spec.name, version).http(PORT);
    spec.extra_args = vec!["--namespace".to_owned(), NS.to_owned()];
    let echo = pod.spawn_echo(&spec)?;
    echo.wait_for_log("\"event\":\"listening\"", Duration::from_secs(10))?;
    Ok(pod)
}

/// The endpoints Envoy in `pod` holds for `cluster` (admin `/clusters`), sorted.
fn envoy_endpoints(pod: &Pod, cluster: &str) -> Result<Vec<String>> {
    let text = pod.admin("/clusters")?;
    let prefix = format!("{cluster}::");
    let mut out: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|rest| {
            let (addr, field) = rest.split_once("::")?;
            (field.starts_with("cx_active") && addr.parse::<std::net::SocketAddr>().is_ok())
                .then(|| addr.to_owned())
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Sends `n` GETs of `url` with `headers` from `pod` through its sidecar, split over
/// [`PARALLEL_RUNS`] concurrent `mesh-echo client` runs (one connection each), each request
/// limited to `timeout`. Returns one JSON line per request (`status`, `body`, `error`,
/// `elapsed_ms`).
pub fn requests(
    pod: &Pod,
    url: &str,
    headers: &[&str],
    n: usize,
    timeout: Duration,
) -> Result<Vec<Value>> {
    let runs = PARALLEL_RUNS.min(n.max(1));
    let per_run: Vec<usize> = (0..runs)
        .map(|i| n / runs + usize::from(i < n % runs))
        .collect();
    let timeout_arg = format!("{}ms", timeout.as_millis());
    let outputs: Vec<Result<String>> = std::thread::scope(|s| {
        let handles: Vec<_> = per_run
            .iter()
            .map(|count| {
                let mut cmd = pod
                    .command([bin("mesh-echo")])
                    .args(["client", "http", url, "--count", &count.to_string()])
                    .args(["--timeout", &timeout_arg]);
                for h in headers {
                    cmd = cmd.args(["-H", h]);
                }
                // The whole run's limit: every request may take its timeout.
                let cmd = cmd.timeout(
                    timeout * u32::try_from(*count).unwrap_or(u32::MAX) + Duration::from_secs(20),
                );
                s.spawn(move || -> Result<String> { Ok(cmd.exec()?.stdout) })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| bail!("a client run panicked")))
            .collect()
    });
    let mut lines = Vec::with_capacity(n);
    for out in outputs {
        lines.extend(json_lines(&out?)?);
    }
    ensure!(
        lines.len() == n,
        "{url}: {} answers to {n} requests",
        lines.len()
    );
    Ok(lines)
}

/// What a batch of requests got: how many of each status (`0`: no response) and, of the
/// 200s, how many from each version of the app.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Responses per status code; failed requests count under 0.
    pub statuses: BTreeMap<u16, usize>,
    /// 200 responses per `name version` of the app that answered.
    pub servers: BTreeMap<String, usize>,
    /// Bodies of the non-200 responses, each once.
    pub other_bodies: Vec<String>,
}

impl Tally {
    /// Counts `lines` (from [`requests`]).
    pub fn of(lines: &[Value]) -> Tally {
        let mut t = Tally::default();
        for l in lines {
            let status = l["status"]
                .as_u64()
                .and_then(|s| u16::try_from(s).ok())
                .unwrap_or(0);
            *t.statuses.entry(status).or_default() += 1;
            if status == 200 {
                let server = format!(
                    "{} {}",
                    l["body"]["name"].as_str().unwrap_or("?"),
                    l["body"]["version"].as_str().unwrap_or("?")
                );
                *t.servers.entry(server).or_default() += 1;
            } else {
                let body = match &l["body"] {
                    Value::String(s) => s.clone(),
                    Value::Null => l["error"].as_str().unwrap_or_default().to_owned(),
                    other => other.to_string(),
                };
                if !t.other_bodies.contains(&body) {
                    t.other_bodies.push(body);
                }
            }
        }
        t
    }

    /// How many 200s `server` (`name version`) gave.
    pub fn count(&self, server: &str) -> usize {
        self.servers.get(server).copied().unwrap_or(0)
    }

    /// Fails unless every request got `status`.
    pub fn all(&self, status: u16) -> Result<()> {
        let n: usize = self.statuses.values().sum();
        ensure!(
            self.statuses.get(&status) == Some(&n),
            "want {n} x {status}, got {self:?}"
        );
        Ok(())
    }
}

/// How many standard deviations of the binomial distribution a count may be off: a correct
/// split fails with probability below 1e-6, and with 1,000 requests no split 10 points away
/// passes.
pub const SIGMAS: f64 = 5.0;

/// Fails unless `k` successes of `n` trials are within [`SIGMAS`] standard deviations of a
/// binomial with probability `p`; `p` of 0 or 1 demands exactly 0 or `n`.
pub fn binomial_within(what: &str, k: usize, n: usize, p: f64) -> Result<()> {
    let (k, nf) = (k as f64, n as f64);
    let mean = nf * p;
    let sigma = (nf * p * (1.0 - p)).sqrt();
    ensure!(
        (k - mean).abs() <= SIGMAS * sigma,
        "{what}: {k} of {n}, want {mean} ± {:.1} ({SIGMAS} σ of a binomial with p = {p})",
        SIGMAS * sigma
    );
    Ok(())
}

/// Fails unless two observed proportions `k1/n1` and `k2/n2` of the same split (expected
/// probability `p`) differ by at most [`SIGMAS`] standard deviations of their difference.
pub fn same_proportion(
    what: &str,
    (k1, n1): (usize, usize),
    (k2, n2): (usize, usize),
    p: f64,
) -> Result<()> {
    let d = k1 as f64 / n1 as f64 - k2 as f64 / n2 as f64;
    let sigma = (p * (1.0 - p) * (1.0 / n1 as f64 + 1.0 / n2 as f64)).sqrt();
    ensure!(
        d.abs() <= SIGMAS * sigma,
        "{what}: {k1}/{n1} vs {k2}/{n2} differ by {d:.3}, more than {SIGMAS} σ ({:.3})",
        SIGMAS * sigma
    );
    Ok(())
}

/// Each reviews version's share of `t` within binomial tolerance of its weight.
pub fn check_split(what: &str, t: &Tally, weights: &[(&str, f64)]) -> Result<()> {
    let n: usize = t.servers.values().sum();
    for version in ["v1", "v2", "v3"] {
        let p = weights
            .iter()
            .find(|(v, _)| *v == version)
            .map_or(0.0, |(_, w)| *w);
        let k = t.count(&format!("reviews {version}"));
        binomial_within(&format!("{what}: reviews {version}"), k, n, p)?;
    }
    ensure!(
        t.servers.keys().all(|s| s.starts_with("reviews ")),
        "{what}: {t:?}"
    );
    Ok(())
}

/// `http://SERVICE:9080/`.
pub fn url(service: &str) -> String {
    format!("http://{service}:{PORT}/")
}
