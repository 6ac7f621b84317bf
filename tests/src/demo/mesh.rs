//! Building the demo mesh on a harness topology, waiting until it is in sync, and tearing it
//! down.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::config::{DemoConfig, DemoService, Workload};
use super::signals::Signals;
use super::{DemoError, READY_TIMEOUT, SYNC_TIMEOUT};
use crate::harness::{
    ControlPlane, EchoSpec, HarnessError, Pod, ProxyOptions, Resources, Topology,
    CONTROL_PLANE_READY_TIMEOUT,
};

/// The name, app label and service account of the pod the demo's traffic comes from.
pub const CLIENT_POD: &str = "client";
/// How long one wait step lasts before the signals are checked again.
const STEP: Duration = Duration::from_millis(500);
/// The file in the logs directory that takes the teardown's own output.
const TEARDOWN_LOG: &str = "teardown.log";

/// The running demo: its topology, pods and control plane, and what went wrong so far.
#[derive(Debug)]
pub struct DemoMesh {
    topo: Option<Topology>,
    config: DemoConfig,
    pods: Vec<(Workload, Pod)>,
    client: Option<Pod>,
    problems: Vec<String>,
}

impl DemoMesh {
    /// Builds the mesh for `config` on a new topology named `name` (see the
    /// [module docs](super)), checking `signals` between steps. On an error the topology is
    /// removed and the tail of every log printed; after a signal it is removed quietly.
    pub fn build(name: &str, config: &DemoConfig, signals: &Signals) -> Result<Self, DemoError> {
        signals.check()?;
        let topo = Topology::new(name)?;
        let mut mesh = DemoMesh {
            topo: Some(topo),
            config: config.clone(),
            pods: Vec::new(),
            client: None,
            problems: Vec::new(),
        };
        match mesh.populate(signals) {
            Ok(()) => Ok(mesh),
            Err(e @ DemoError::Interrupted(_)) => {
                eprintln!("mesh-demo: {e}");
                mesh.teardown();
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// The topology (present until [`DemoMesh::teardown`]).
    pub fn topology(&self) -> Option<&Topology> {
        self.topo.as_ref()
    }

    /// The config the mesh was built from.
    pub fn config(&self) -> &DemoConfig {
        &self.config
    }

    /// The workload pods, in config order.
    pub fn pods(&self) -> &[(Workload, Pod)] {
        &self.pods
    }

    /// The client pod.
    pub fn client(&self) -> Option<&Pod> {
        self.client.as_ref()
    }

    /// Problems found while building (rejected config objects, sidecars out of sync).
    pub fn problems(&self) -> &[String] {
        &self.problems
    }

    fn topo(&self) -> Result<&Topology, DemoError> {
        let id = "mesh-demo".to_owned();
        self.topo
            .as_ref()
            .ok_or(DemoError::Harness(HarnessError::TornDown(id)))
    }

    fn populate(&mut self, signals: &Signals) -> Result<(), DemoError> {
        // Topology::new has said which topology it is and where its logs go.
        let topo = self.topo()?;
        for (rel, text) in &self.config.files {
            topo.write_config(&rel.to_string_lossy(), text)?;
        }
        for s in &self.config.services {
            topo.service(&s.spec.name, &s.spec.namespace, s.cluster_ip())?;
        }
        eprintln!(
            "mesh-demo: starting the control plane on {}",
            topo.config_dir().display()
        );
        let cp = topo.control_plane();
        cp.start(&[])?;
        wait_step(signals, CONTROL_PLANE_READY_TIMEOUT, |t| cp.wait_ready(t))?;
        let config_problems = rejected_objects(&cp)?;
        let mut pods = Vec::new();
        for w in self.config.workloads() {
            signals.check()?;
            eprintln!("mesh-demo: pod {} (sidecar, then mesh-echo)", w.pod);
            pods.push((w.clone(), start_workload(topo, &w)?));
        }
        signals.check()?;
        let client_ns = self.config.services[0].spec.namespace.clone();
        eprintln!("mesh-demo: pod {CLIENT_POD} (sidecar)");
        let opts = ProxyOptions {
            service_account: CLIENT_POD.to_owned(),
            ..ProxyOptions::default()
        };
        let client =
            topo.injected_pod_with(CLIENT_POD, &client_ns, &[("app", CLIENT_POD)], &opts)?;
        eprintln!("mesh-demo: waiting for every sidecar to be ready");
        wait_step(signals, READY_TIMEOUT, |t| topo.wait_ready(t))?;
        eprintln!("mesh-demo: waiting for the control plane to show every sidecar in sync");
        let all_pods: Vec<Pod> = pods
            .iter()
            .map(|(_, p): &(Workload, Pod)| p.clone())
            .chain(std::iter::once(client.clone()))
            .collect();
        let sync_problems = wait_synced(&cp, &self.config.services, &all_pods, signals)?;
        self.problems.extend(config_problems);
        self.problems.extend(sync_problems);
        self.pods = pods;
        self.client = Some(client);
        Ok(())
    }

    /// Removes everything (the harness's teardown: processes stopped, namespaces, links,
    /// `/etc/netns` entries and state removed). Its own output, the tail of every log, goes to
    /// `teardown.log` in the logs directory. Prints what it did on stderr and returns what is
    /// still there afterwards (nothing, normally).
    pub fn teardown(&mut self) -> Vec<String> {
        let Some(topo) = self.topo.take() else {
            return Vec::new();
        };
        let resources = topo.resources();
        let id = topo.id().to_owned();
        let log = topo.artifact_dir().join(TEARDOWN_LOG);
        eprintln!(
            "mesh-demo: stopping {} processes, removing {} pods and the bridge {}",
            resources.pids.len(),
            resources.netns.len(),
            resources.bridge
        );
        let mut left = drop_quietly(topo, &log);
        let teardown_text = std::fs::read_to_string(&log).unwrap_or_default();
        left.extend(
            teardown_text
                .lines()
                .filter(|l| l.starts_with(&format!("mesh-tests: teardown of {id}:")))
                .map(str::to_owned),
        );
        left.extend(leftovers(&resources));
        if left.is_empty() {
            eprintln!(
                "mesh-demo: removed everything; logs stay in {}",
                log.parent().unwrap_or(Path::new(".")).display()
            );
        } else {
            for l in &left {
                eprintln!("mesh-demo: left behind: {l}");
            }
        }
        left
    }
}

/// Runs `wait(slice)` in slices of [`STEP`] until it succeeds or `total` passes, checking
/// `signals` between slices. Only timeouts are retried; the last one is returned.
fn wait_step(
    signals: &Signals,
    total: Duration,
    mut wait: impl FnMut(Duration) -> Result<(), HarnessError>,
) -> Result<(), DemoError> {
    let deadline = Instant::now() + total;
    loop {
        signals.check()?;
        match wait(STEP) {
            Ok(()) => return Ok(()),
            Err(HarnessError::Timeout {
                what,
                waited: _,
                detail,
            }) if Instant::now() >= deadline => {
                return Err(HarnessError::Timeout {
                    what,
                    waited: total,
                    detail,
                }
                .into())
            }
            Err(HarnessError::Timeout { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Starts a workload's pod: the sidecar, then `mesh-echo` on its ports.
fn start_workload(topo: &Topology, w: &Workload) -> Result<Pod, DemoError> {
    let labels: Vec<(&str, &str)> = w
        .labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let opts = ProxyOptions {
        service_account: w.service_account.clone(),
        ..ProxyOptions::default()
    };
    let pod = topo.injected_pod_with(&w.pod, &w.namespace, &labels, &opts)?;
    let mut spec = EchoSpec::new(&w.app, &w.version);
    spec.extra_args = vec!["--namespace".to_owned(), w.namespace.clone()];
    for port in &w.ports {
        spec.extra_args.push("--http-port".to_owned());
        spec.extra_args.push(port.to_string());
    }
    pod.spawn_echo(&spec)?;
    Ok(pod)
}

/// GET a debug endpoint and parse its JSON.
fn debug_json(cp: &ControlPlane, path: &'static str) -> Result<Value, DemoError> {
    let resp = cp.debug_get(path)?;
    if resp.status != 200 {
        return Err(DemoError::Debug {
            path,
            reason: format!("answered {}: {}", resp.status, resp.body.trim()),
        });
    }
    serde_json::from_str(&resp.body).map_err(|e| DemoError::Debug {
        path,
        reason: format!("not JSON: {e}"),
    })
}

/// The errors `/debug/configz` lists: objects of the config the control plane rejected.
fn rejected_objects(cp: &ControlPlane) -> Result<Vec<String>, DemoError> {
    let configz = debug_json(cp, "/debug/configz")?;
    Ok(configz["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            format!(
                "the control plane rejected config: {}",
                e["message"].as_str().unwrap_or("(no message)")
            )
        })
        .collect())
}

/// Waits until, twice in a row, every Service port has one endpoint per pod it selects in
/// `/debug/registryz`, and every pod's sidecar shows in `/debug/syncz` with each type's sent
/// version acknowledged. Returns what is still out of sync after [`SYNC_TIMEOUT`] (empty
/// when in sync).
fn wait_synced(
    cp: &ControlPlane,
    services: &[DemoService],
    pods: &[Pod],
    signals: &Signals,
) -> Result<Vec<String>, DemoError> {
    let deadline = Instant::now() + SYNC_TIMEOUT;
    let mut in_a_row = 0;
    loop {
        signals.check()?;
        let mut missing = registry_gaps(&debug_json(cp, "/debug/registryz")?, services, pods);
        missing.extend(sync_gaps(&debug_json(cp, "/debug/syncz")?, pods));
        if missing.is_empty() {
            in_a_row += 1;
            if in_a_row == 2 {
                return Ok(Vec::new());
            }
        } else {
            in_a_row = 0;
            if Instant::now() >= deadline {
                return Ok(missing
                    .into_iter()
                    .map(|m| format!("not in sync after {SYNC_TIMEOUT:?}: {m}"))
                    .collect());
            }
        }
        std::thread::sleep(STEP);
    }
}

/// What `/debug/registryz` lacks: Service ports without one endpoint per selected pod.
pub(crate) fn registry_gaps(
    registryz: &Value,
    services: &[DemoService],
    pods: &[Pod],
) -> Vec<String> {
    let mut gaps = Vec::new();
    for s in services {
        let selected: Vec<&Pod> = pods
            .iter()
            .filter(|p| s.selects(p.namespace(), p.labels()))
            .collect();
        let entry = registryz["services"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| {
                e["namespace"] == s.spec.namespace.as_str() && e["name"] == s.spec.name.as_str()
            });
        let Some(entry) = entry else {
            gaps.push(format!("Service {} is not in the registry", s.key()));
            continue;
        };
        for port in &s.spec.ports {
            let endpoints: Vec<&str> = entry["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["port"] == port.port)
                .and_then(|p| p["endpoints"].as_array())
                .into_iter()
                .flatten()
                .filter_map(|e| e["address"].as_str())
                .collect();
            let want: Vec<String> = selected
                .iter()
                .map(|p| format!("{}:{}", p.ip(), port.target_port))
                .collect();
            let lacking: Vec<&String> = want
                .iter()
                .filter(|w| !endpoints.contains(&w.as_str()))
                .collect();
            if !lacking.is_empty() {
                gaps.push(format!(
                    "Service {}:{} has endpoints {endpoints:?}, lacks {lacking:?}",
                    s.key(),
                    port.port
                ));
            }
        }
    }
    gaps
}

/// What `/debug/syncz` lacks: pods not connected, types not acknowledged, NACKs.
pub(crate) fn sync_gaps(syncz: &Value, pods: &[Pod]) -> Vec<String> {
    let mut gaps = Vec::new();
    for pod in pods {
        let entry = syncz
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["pod"] == pod.name() && e["namespace"] == pod.namespace())
            .max_by_key(|e| e["connection"].as_u64().unwrap_or(0));
        let Some(entry) = entry else {
            gaps.push(format!("sidecar of {} is not connected", pod.name()));
            continue;
        };
        let types: BTreeMap<String, Value> = entry["types"]
            .as_object()
            .map(|m| m.clone().into_iter().collect())
            .unwrap_or_default();
        if types.is_empty() {
            gaps.push(format!(
                "sidecar of {} has subscribed to nothing",
                pod.name()
            ));
        }
        for (kind, t) in &types {
            if let Some(nack) = t["last_nack"].as_str() {
                gaps.push(format!("sidecar of {} NACKed {kind}: {nack}", pod.name()));
            } else if t["sent_version"].is_null() || t["acked_version"] != t["sent_version"] {
                gaps.push(format!(
                    "sidecar of {}: {kind} sent {} acked {}",
                    pod.name(),
                    t["sent_version"],
                    t["acked_version"]
                ));
            }
        }
    }
    gaps
}

/// Drops `topo` with stderr sent to `log` (the teardown prints the tail of every log);
/// returns why that could not be done, if so (the teardown then prints to stderr).
fn drop_quietly(topo: Topology, log: &Path) -> Vec<String> {
    let redirect = || -> std::io::Result<(std::os::fd::OwnedFd, File)> {
        let saved = std::io::stderr().as_fd().try_clone_to_owned()?;
        let file = File::create(log)?;
        nix::unistd::dup2_stderr(&file).map_err(std::io::Error::from)?;
        Ok((saved, file))
    };
    match redirect() {
        Ok((saved, _file)) => {
            drop(topo);
            match nix::unistd::dup2_stderr(&saved) {
                Ok(()) => Vec::new(),
                Err(e) => vec![format!("stderr not restored after the teardown: {e}")],
            }
        }
        Err(e) => {
            eprintln!(
                "mesh-demo: cannot send the teardown's output to {}: {e}",
                log.display()
            );
            drop(topo);
            Vec::new()
        }
    }
}

/// What of `r` is still on the host.
fn leftovers(r: &Resources) -> Vec<String> {
    let netns_list = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let mut left: Vec<String> = r
        .netns
        .iter()
        .filter(|ns| {
            netns_list
                .lines()
                .any(|l| l.split_whitespace().next() == Some(ns.as_str()))
        })
        .map(|ns| format!("network namespace {ns}"))
        .collect();
    let links = r.host_veths.iter().chain(std::iter::once(&r.bridge));
    left.extend(
        links
            .filter(|l| Path::new("/sys/class/net").join(l).exists())
            .map(|l| format!("link {l}")),
    );
    let dirs: Vec<&PathBuf> = r
        .etc_netns_dirs
        .iter()
        .chain(std::iter::once(&r.state_dir))
        .collect();
    left.extend(
        dirs.into_iter()
            .filter(|d| d.exists())
            .map(|d| format!("directory {}", d.display())),
    );
    left.extend(
        r.pids
            .iter()
            .filter(|p| alive(**p))
            .map(|p| format!("process {p}")),
    );
    left
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(") ")
                .is_some_and(|(_, rest)| !rest.starts_with('Z'))
        })
        .unwrap_or(false)
}
