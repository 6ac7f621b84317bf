//! `mesh-bench cp-scale`: the control plane at config scale. A mesh of 1,000 Services with
//! 5,000 endpoints (ten Services to a namespace) in a config directory, the real
//! `mesh-controlplane` on loopback, and 100 simulated sidecars
//! ([`mesh_tests::ads::SimProxy`]: real ADS streams that subscribe and ACK as Envoy does) in
//! this process. Needs no root and no network namespace.
//!
//! Measured, per pass (without, then with a root-namespace `Sidecar` limiting egress to the
//! proxy's own namespace):
//! - first sync: every proxy connected to every one holding CDS, EDS, LDS and RDS; the bytes
//!   and clusters each proxy received;
//! - full pushes (without scoping): a new Service written, to every proxy holding its cluster,
//!   endpoints and route. "change to all acked" is from the file write; "push" subtracts the
//!   control plane's debounce of that change (its `pilot_debounce_time`), i.e. from the end of
//!   the debounce to the last proxy done;
//! - endpoint-only changes (without scoping): one endpoint of one Service moved, to every
//!   proxy holding the new address, and whether only EDS was sent;
//! - the control plane's RSS (now and peak) at the end of the pass.
//!
//! A simulated proxy ACKs a response as soon as it has decoded it, so "acked" is the moment
//! the last response arrived at the proxy.

mod mesh;
mod report;

use std::path::PathBuf;
use std::time::Duration;

use futures::future::try_join_all;
use mesh_tests::ads::{AdsError, SimNode, SimProxy, SimState, EDS};
use mesh_tests::harness::HarnessError;
use serde::{Deserialize, Serialize};
use tokio::runtime::Runtime;
use tokio::time::Instant;

use crate::procfs;
use mesh::{cluster_of, moved_endpoint, service_host, ControlPlane, MeshSize};
pub use report::render;

/// Longest wait for one step at any scale.
const STEP_TIMEOUT: Duration = Duration::from_secs(120);

/// Errors of the benchmark.
#[derive(Debug, thiserror::Error)]
pub enum CpScaleError {
    /// A file could not be written or a process started.
    #[error("{path}: {source}")]
    Io {
        /// The file or program.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The control plane exited.
    #[error("mesh-controlplane exited ({status}); its output is in {log}")]
    ControlPlaneExited {
        /// The exit status.
        status: String,
        /// Its log.
        log: PathBuf,
    },
    /// The control plane never became ready.
    #[error("mesh-controlplane not ready after 120 s; its output is in {0}")]
    NotReady(PathBuf),
    /// Talking to the control plane's HTTP ports failed.
    #[error(transparent)]
    Harness(#[from] HarnessError),
    /// A simulated proxy failed.
    #[error(transparent)]
    Ads(#[from] AdsError),
}

/// Flags of `mesh-bench cp-scale`.
#[derive(clap::Args, Debug, Clone)]
pub struct CpScaleArgs {
    /// Services in the mesh.
    #[arg(long, default_value_t = 1000)]
    pub services: usize,
    /// Endpoints in the mesh, spread over the services.
    #[arg(long, default_value_t = 5000)]
    pub endpoints: usize,
    /// Simulated sidecars (ADS clients).
    #[arg(long, default_value_t = 100)]
    pub proxies: usize,
    /// Full pushes and endpoint-only changes measured (each).
    #[arg(long, default_value_t = 20)]
    pub rounds: usize,
    /// Skip the pass with a root-namespace Sidecar (egress to the proxy's own namespace).
    #[arg(long)]
    pub no_scoped: bool,
    /// A tiny mesh (20 services, 60 endpoints, 4 proxies, 3 rounds): the test suite's run.
    #[arg(long)]
    pub smoke: bool,
    /// Where cp-scale.json and cp-scale.txt go (default: target/mesh-bench).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// p50 and p99 (nearest rank) of a sample, in ms.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
    /// Sample size.
    pub n: usize,
}

impl Percentiles {
    /// Of `sample` (ms); zeros for an empty one.
    pub fn of(mut sample: Vec<f64>) -> Percentiles {
        sample.sort_by(f64::total_cmp);
        let rank = |q: f64| {
            let i = ((q * sample.len() as f64).ceil() as usize).clamp(1, sample.len().max(1));
            sample.get(i - 1).copied().unwrap_or(0.0)
        };
        Percentiles {
            p50: rank(0.50),
            p99: rank(0.99),
            max: sample.last().copied().unwrap_or(0.0),
            n: sample.len(),
        }
    }
}

/// Timings of one kind of change.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChangeTimes {
    /// File written to the last proxy done, per change.
    pub change_to_all_acked_ms: Percentiles,
    /// End of the control plane's debounce to the last proxy done, per change.
    pub push_ms: Percentiles,
    /// End of the debounce to each proxy done, per change and proxy.
    pub per_proxy_ms: Percentiles,
    /// The control plane's debounce, mean per change, ms.
    pub debounce_ms: f64,
    /// Bytes each proxy received per change, mean.
    pub bytes_per_proxy: f64,
    /// Whether every proxy received EDS responses only for these changes.
    pub eds_only: bool,
    /// CPU time of the control plane per change (write to all done), mean, ms.
    #[serde(default)]
    pub cp_cpu_ms: f64,
    /// CPU time of the benchmark process (the simulated proxies) per change, mean, ms.
    #[serde(default)]
    pub clients_cpu_ms: f64,
}

/// One pass (one control plane, one config).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pass {
    /// Whether the root-namespace Sidecar was in the config.
    pub scoped: bool,
    /// Clusters per proxy after the first sync (mean).
    pub clusters_per_proxy: f64,
    /// Bytes per proxy of the first sync (mean).
    pub first_sync_bytes_per_proxy: f64,
    /// Connect to every proxy synced, ms.
    pub first_sync_ms: f64,
    /// Full pushes (unscoped pass only).
    pub full_push: Option<ChangeTimes>,
    /// Endpoint-only changes (unscoped pass only).
    pub endpoint_change: Option<ChangeTimes>,
    /// The control plane's RSS at the end, MiB.
    pub cp_rss_mb: f64,
    /// Its peak RSS, MiB.
    pub cp_peak_rss_mb: f64,
}

/// The whole run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CpScaleResults {
    /// Services.
    pub services: usize,
    /// Endpoints.
    pub endpoints: usize,
    /// Simulated proxies.
    pub proxies: usize,
    /// Changes of each kind measured.
    pub rounds: usize,
    /// A smoke run.
    pub smoke: bool,
    /// The passes, unscoped first.
    pub passes: Vec<Pass>,
    /// Whether the Sidecar reduced what proxies receive (`None` without a scoped pass).
    pub scoping_applied: Option<bool>,
    /// The machine's 1-minute load average at the start.
    pub loadavg: f64,
}

impl CpScaleArgs {
    fn effective(&self) -> CpScaleArgs {
        if self.smoke {
            CpScaleArgs {
                services: 20,
                endpoints: 60,
                proxies: 4,
                rounds: 3,
                ..self.clone()
            }
        } else {
            self.clone()
        }
    }
}

/// Runs the benchmark; `progress` is told of each step.
pub fn run(args: &CpScaleArgs, progress: impl Fn(&str)) -> Result<CpScaleResults, CpScaleError> {
    let a = args.effective();
    let size = MeshSize {
        services: a.services.max(1),
        endpoints: a.endpoints,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|source| CpScaleError::Io {
            path: PathBuf::from("tokio runtime"),
            source,
        })?;
    let loadavg = procfs::loadavg_1m().unwrap_or(f64::NAN);
    let mut passes = Vec::new();
    for scoped in [false, true] {
        if scoped && a.no_scoped {
            continue;
        }
        passes.push(pass(&rt, &a, size, scoped, &progress)?);
    }
    let scoping_applied = match passes.as_slice() {
        [plain, scoped] => Some(scoped.clusters_per_proxy < plain.clusters_per_proxy),
        _ => None,
    };
    Ok(CpScaleResults {
        services: size.services,
        endpoints: size.endpoints,
        proxies: a.proxies,
        rounds: a.rounds,
        smoke: a.smoke,
        passes,
        scoping_applied,
        loadavg,
    })
}

fn io(path: &str) -> impl FnOnce(std::io::Error) -> CpScaleError + '_ {
    move |source| CpScaleError::Io {
        path: PathBuf::from(path),
        source,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn mean(v: impl IntoIterator<Item = f64>) -> f64 {
    let (sum, n) = v
        .into_iter()
        .fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 {
        0.0
    } else {
        sum / n as f64
    }
}

/// The simulated node of proxy `i`: namespaces in turn, an address of its own.
fn node(i: usize, size: MeshSize) -> SimNode {
    let ns = i % size.namespaces();
    SimNode {
        pod: format!("sim-{i}"),
        namespace: format!("cp-{ns}"),
        ip: std::net::Ipv4Addr::from(
            u32::from(std::net::Ipv4Addr::new(10, 250, 0, 0)) + 1 + i as u32,
        )
        .into(),
        labels: [("app".to_string(), format!("sim-{i}"))].into(),
    }
}

fn pass(
    rt: &Runtime,
    a: &CpScaleArgs,
    size: MeshSize,
    scoped: bool,
    progress: &impl Fn(&str),
) -> Result<Pass, CpScaleError> {
    let dir = tempfile::tempdir().map_err(io("temporary directory"))?;
    let config = dir.path().join("config");
    let state = dir.path().join("state");
    std::fs::create_dir_all(&config).map_err(io("config directory"))?;
    mesh::write_mesh(&config, size, scoped)?;
    let log = std::env::temp_dir().join(format!(
        "mesh-bench-cp-scale-{}{}.log",
        std::process::id(),
        if scoped { "-scoped" } else { "" }
    ));
    let cp = ControlPlane::start(&config, &state, &log)?;
    progress(&format!(
        "control plane ready ({} services, {} endpoints{})",
        size.services,
        size.endpoints,
        if scoped { ", scoped" } else { "" }
    ));

    let start = Instant::now();
    let proxies: Vec<SimProxy> = rt.block_on(try_join_all(
        (0..a.proxies).map(|i| SimProxy::connect(cp.xds, node(i, size))),
    ))?;
    rt.block_on(try_join_all(proxies.iter().map(|p| {
        p.wait_until("the first sync", STEP_TIMEOUT, SimState::synced)
    })))?;
    let first_sync_ms = ms(start.elapsed());
    let clusters_per_proxy = mean(
        proxies
            .iter()
            .map(|p| p.with_state(|s| s.clusters.len() as f64)),
    );
    let first_sync_bytes_per_proxy =
        mean(proxies.iter().map(|p| p.with_state(|s| s.bytes() as f64)));
    progress(&format!(
        "{} proxies synced in {first_sync_ms:.0} ms, {clusters_per_proxy:.0} clusters each",
        a.proxies
    ));

    let (full_push, endpoint_change) = if scoped {
        (None, None)
    } else {
        let full = changes(rt, &cp, &proxies, a.rounds, |round| {
            let host = mesh::write_extra_service(&config, round)?;
            let cluster = cluster_of(&host);
            Ok(Box::new(move |s: &SimState| {
                s.clusters.contains_key(&cluster)
                    && s.endpoints.contains_key(&cluster)
                    && s.routes.values().flatten().any(|v| v.starts_with(&host))
                    && s.synced()
            }))
        })?;
        progress(&format!(
            "full pushes: p50 {:.0} ms, p99 {:.0} ms",
            full.push_ms.p50, full.push_ms.p99
        ));
        let target = cluster_of(&service_host(0));
        let eds = changes(rt, &cp, &proxies, a.rounds, |round| {
            mesh::write_namespace(&config, size, 0, Some(round))?;
            let want = moved_endpoint(round);
            let target = target.clone();
            Ok(Box::new(move |s: &SimState| {
                s.endpoints.get(&target).is_some_and(|e| e.contains(&want))
            }))
        })?;
        progress(&format!(
            "endpoint-only changes: p50 {:.0} ms, p99 {:.0} ms from the write",
            eds.change_to_all_acked_ms.p50, eds.change_to_all_acked_ms.p99
        ));
        (Some(full), Some(eds))
    };
    let pids = [cp.pid()];
    let mib = |b: u64| b as f64 / 1_048_576.0;
    Ok(Pass {
        scoped,
        clusters_per_proxy,
        first_sync_bytes_per_proxy,
        first_sync_ms,
        full_push,
        endpoint_change,
        cp_rss_mb: mib(procfs::rss_bytes(&pids).unwrap_or(0)),
        cp_peak_rss_mb: mib(procfs::peak_rss_bytes(&pids).unwrap_or(0)),
    })
}

/// What a proxy holds once it has taken a change.
type Done = Box<dyn Fn(&SimState) -> bool + Send + Sync>;

/// Makes `rounds` changes one after the other (`change(round)` writes it and says when a
/// proxy has it) and times each until every proxy has it.
fn changes(
    rt: &Runtime,
    cp: &ControlPlane,
    proxies: &[SimProxy],
    rounds: usize,
    mut change: impl FnMut(usize) -> Result<Done, CpScaleError>,
) -> Result<ChangeTimes, CpScaleError> {
    let mut to_all = Vec::new();
    let mut push = Vec::new();
    let mut per_proxy = Vec::new();
    let mut debounces = Vec::new();
    let mut bytes = Vec::new();
    let mut eds_only = true;
    let (mut cp_cpu, mut clients_cpu) = (Vec::new(), Vec::new());
    let (cp_pid, own_pid) = ([cp.pid()], [std::process::id()]);
    for round in 0..rounds {
        // Let the previous change settle (late ACKs, the debounce timer).
        std::thread::sleep(Duration::from_millis(150));
        let debounce_before = cp.metric("pilot_debounce_time_sum", &[])?;
        let bytes_before: Vec<u64> = proxies
            .iter()
            .map(|p| p.with_state(SimState::bytes))
            .collect();
        let cpu_before = (procfs::cpu_ms(&cp_pid), procfs::cpu_ms(&own_pid));
        let t0 = Instant::now();
        let done = change(round)?;
        let times = rt.block_on(try_join_all(
            proxies
                .iter()
                .map(|p| p.wait_until("a change", STEP_TIMEOUT, |s| done(s))),
        ))?;
        cp_cpu.push(procfs::cpu_ms(&cp_pid) - cpu_before.0);
        clients_cpu.push(procfs::cpu_ms(&own_pid) - cpu_before.1);
        let debounce = Duration::from_secs_f64(
            (cp.metric("pilot_debounce_time_sum", &[])? - debounce_before).max(0.0),
        );
        let last = times.iter().max().copied().unwrap_or(t0);
        to_all.push(ms(last.saturating_duration_since(t0)));
        push.push(ms(last.saturating_duration_since(t0 + debounce)));
        per_proxy.extend(
            times
                .iter()
                .map(|t| ms(t.saturating_duration_since(t0 + debounce))),
        );
        debounces.push(ms(debounce));
        for (p, before) in proxies.iter().zip(&bytes_before) {
            p.with_state(|s| {
                bytes.push((s.bytes() - before) as f64);
                eds_only &= s
                    .log
                    .iter()
                    .filter(|(_, at)| *at >= t0)
                    .all(|(t, _)| *t == EDS);
            });
        }
    }
    Ok(ChangeTimes {
        change_to_all_acked_ms: Percentiles::of(to_all),
        push_ms: Percentiles::of(push),
        per_proxy_ms: Percentiles::of(per_proxy),
        debounce_ms: mean(debounces),
        bytes_per_proxy: mean(bytes),
        eds_only,
        cp_cpu_ms: mean(cp_cpu),
        clients_cpu_ms: mean(clients_cpu),
    })
}

/// Writes `cp-scale.json` and `cp-scale.txt` into `out`; returns their paths.
pub fn write_outputs(
    results: &CpScaleResults,
    text: &str,
    out: &std::path::Path,
) -> Result<Vec<String>, CpScaleError> {
    std::fs::create_dir_all(out).map_err(|source| CpScaleError::Io {
        path: out.to_owned(),
        source,
    })?;
    let json = serde_json::to_string_pretty(results).unwrap_or_default();
    let mut written = Vec::new();
    for (name, body) in [("cp-scale.json", json.as_str()), ("cp-scale.txt", text)] {
        let path = out.join(name);
        std::fs::write(&path, body).map_err(|source| CpScaleError::Io {
            path: path.clone(),
            source,
        })?;
        written.push(path.display().to_string());
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let p = Percentiles::of((1..=100).rev().map(f64::from).collect());
        assert_eq!((p.p50, p.p99, p.max, p.n), (50.0, 99.0, 100.0, 100));
        let p = Percentiles::of(vec![3.0, 1.0, 2.0]);
        assert_eq!((p.p50, p.p99), (2.0, 3.0));
        assert_eq!(Percentiles::of(vec![]).n, 0);
    }
}
