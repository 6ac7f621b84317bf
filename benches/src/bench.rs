//! One run of the bench: build the topology, measure every (path, peer) interleaved within
//! each repetition, run config scale, tear down, then summarize and write the outputs.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

use crate::load::{Mode, Percentiles};
use crate::paths::PathId;
use crate::peers::{Peer, Tools, SIDECAR_MTLS};
use crate::results::{
    self, Machine, PathResult, PeerResult, Ratios, RepInfo, RunFigures, RunResults,
    HEAVY_BACKGROUND_CORES,
};
use crate::runner::{self, LoadSettings};
use crate::topo::{self, Skipped, Target};
use crate::{charts, procfs, scale};

/// Errors of a run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Network namespaces cannot be made here.
    #[error("mesh-bench builds network namespaces and cannot here: {0} (run it as root)")]
    NoNetns(String),
    /// The topology failed.
    #[error(transparent)]
    Topo(#[from] topo::Error),
    /// A measurement failed.
    #[error(transparent)]
    Runner(#[from] runner::Error),
    /// A chart failed.
    #[error(transparent)]
    Chart(#[from] charts::Error),
    /// A file could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The JSON could not be made.
    #[error("results JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Paths (S5 included when listed).
    pub paths: Vec<PathId>,
    /// Proxy peers.
    pub peers: Vec<Peer>,
    /// Load of each run.
    pub load: LoadSettings,
    /// Repetitions.
    pub repetitions: usize,
    /// S5's mesh sizes.
    pub scale_sizes: Vec<usize>,
    /// A smoke run.
    pub smoke: bool,
    /// The command line, for the record.
    pub command: String,
}

impl Settings {
    /// The smoke run: every path and peer, one repetition of a second or two each, S5 at 10
    /// services.
    pub fn smoke(command: String) -> Settings {
        Settings {
            paths: PathId::ALL.to_vec(),
            peers: Peer::PROXIES.to_vec(),
            load: LoadSettings {
                rate: 200,
                connections: 4,
                body_size: 1024,
                warmup_s: 0.3,
                duration_s: 0.5,
                max_warmup_s: 0.0,
                max_duration_s: 1,
            },
            repetitions: 1,
            scale_sizes: vec![10],
            smoke: true,
            command,
        }
    }
}

fn machine() -> Machine {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpu_model = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let mem_kb: f64 = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    Machine {
        cpu_model,
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
        memory_gib: (mem_kb / 1_048_576.0 * 10.0).round() / 10.0,
    }
}

fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(mesh_tests::harness::workspace_dir())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn sub(a: &Percentiles, b: &Percentiles) -> Percentiles {
    Percentiles {
        p50: a.p50 - b.p50,
        p90: a.p90 - b.p90,
        p99: a.p99 - b.p99,
        p999: a.p999 - b.p999,
    }
}

fn progress_bar(total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    if let Ok(style) =
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

fn tick(bar: &ProgressBar, msg: String) {
    if bar.is_hidden() {
        eprintln!("mesh-bench: {msg}");
    }
    bar.set_message(msg);
}

/// The run order of one repetition: per path, its direct baseline (once per protocol per
/// repetition), then each peer in the same order (A B C, A B C: interleaved).
fn run_order(targets: &[Target], paths: &[PathId]) -> Vec<usize> {
    let mut order = Vec::new();
    let mut modes: Vec<Mode> = Vec::new();
    for path in paths {
        for peer in std::iter::once(Peer::Direct).chain(Peer::PROXIES) {
            if let Some(i) = targets
                .iter()
                .position(|t| t.path == *path && t.peer == peer)
            {
                if peer == Peer::Direct {
                    if modes.contains(&targets[i].mode) {
                        continue;
                    }
                    modes.push(targets[i].mode);
                }
                order.push(i);
            }
        }
    }
    order
}

/// Runs the bench.
pub fn run(s: &Settings) -> Result<RunResults, Error> {
    if let Some(reason) = mesh_tests::harness::skip_reason() {
        return Err(Error::NoNetns(reason));
    }
    let started = Instant::now();
    let started_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let tools = Tools::find();
    let mut skipped = Vec::new();
    let mut notes = Vec::new();
    let work = tempdir()?;
    let traffic: Vec<PathId> = s
        .paths
        .iter()
        .copied()
        .filter(|p| p.mode().is_some())
        .collect();
    let mesh_bin = mesh_tests::harness::bin("mesh-proxy");
    let release = mesh_bin.components().any(|c| c.as_os_str() == "release");
    if !release && !s.smoke {
        notes.push("mesh-proxy is a debug build: build with --release for real numbers".to_owned());
    }
    for (tool, what) in [
        (&tools.wrk, "wrk (HTTP/1.1"),
        (&tools.h2load, "h2load (HTTP/2 and gRPC"),
    ] {
        if tool.is_none() {
            notes.push(format!(
                "{what} maximum throughput) is not installed: max rps not measured"
            ));
        }
    }
    let mut reps = Vec::new();
    let mut runs: HashMap<(PathId, Peer), Vec<RunFigures>> = HashMap::new();
    let mut meta: BTreeMap<(PathId, Peer), (crate::peers::Mtls, String, usize, f64)> =
        BTreeMap::new();
    let mut pinning = topo::Cpus::detect();
    if !traffic.is_empty() {
        let sel = topo::Selection {
            paths: traffic.clone(),
            peers: s.peers.clone(),
            name: if s.smoke {
                "mesh-bench-smoke"
            } else {
                "mesh-bench"
            },
        };
        eprintln!("mesh-bench: building the topology (pods, control plane, sidecars, peers)...");
        let bench = topo::build(&sel, &tools, work.path(), &mut skipped)?;
        pinning = bench.cpus;
        eprintln!(
            "mesh-bench: process logs in {}",
            bench.topo.artifact_dir().display()
        );
        let files = runner::tool_files(work.path(), s.load.body_size)?;
        let order = run_order(&bench.targets, &traffic);
        let bar = progress_bar((order.len() * s.repetitions) as u64);
        for t in &bench.targets {
            let pids: Vec<u32> = t.proxies.iter().filter_map(|p| p.pid()).collect();
            let idle: u64 = bench
                .idle_rss
                .iter()
                .filter(|(pid, _)| pids.contains(pid))
                .map(|(_, rss)| rss)
                .sum();
            meta.insert(
                (t.path, t.peer),
                (
                    t.mtls,
                    t.entry.to_owned(),
                    t.proxies.len(),
                    idle as f64 / 1_048_576.0,
                ),
            );
        }
        for rep in 1..=s.repetitions {
            let load_start = procfs::loadavg_1m().unwrap_or(0.0);
            let mut baseline: HashMap<Mode, Percentiles> = HashMap::new();
            let mut background: f64 = 0.0;
            for &i in &order {
                let t = &bench.targets[i];
                tick(
                    &bar,
                    format!("repetition {rep}/{}: {} {}", s.repetitions, t.path, t.peer),
                );
                match runner::measure(&bench, t, &s.load, &files, &tools) {
                    Ok(mut fig) => {
                        background = background.max(fig.background_cores);
                        if t.peer == Peer::Direct {
                            baseline.insert(t.mode, fig.latency_us);
                            // The same baseline serves every path of this protocol.
                            for path in &traffic {
                                if path.mode() == Some(t.mode) {
                                    runs.entry((*path, Peer::Direct))
                                        .or_default()
                                        .push(fig.clone());
                                }
                            }
                        } else {
                            fig.added_us = baseline.get(&t.mode).map(|b| sub(&fig.latency_us, b));
                            runs.entry((t.path, t.peer)).or_default().push(fig);
                        }
                    }
                    Err(e) => notes.push(format!(
                        "{} {} repetition {rep} failed: {e}",
                        t.path, t.peer
                    )),
                }
                bar.inc(1);
            }
            reps.push(RepInfo {
                index: rep,
                loadavg_1m_start: load_start,
                loadavg_1m_end: procfs::loadavg_1m().unwrap_or(0.0),
                max_background_cores: background,
                heavy_background_load: background > HEAVY_BACKGROUND_CORES,
            });
        }
        bar.finish_and_clear();
        eprintln!("mesh-bench: tearing the topology down...");
        drop(bench);
    }
    let scale = if s.paths.contains(&PathId::S5) {
        let peers: Vec<Peer> = PathId::S5
            .peers()
            .iter()
            .copied()
            .filter(|p| s.peers.contains(p) && tools.missing(*p).is_none())
            .collect();
        eprintln!(
            "mesh-bench: S5 config scale at {:?} services...",
            s.scale_sizes
        );
        let name = if s.smoke {
            "mesh-bench-scale-smoke"
        } else {
            "mesh-bench-scale"
        };
        let r = scale::run(name, &s.scale_sizes, &peers, &tools, |m| {
            eprintln!("mesh-bench: {m}")
        })?;
        if r.scoping_applied == Some(false) {
            notes.push("S5: Sidecar scoping did not reduce any proxy's clusters: scoped rows carry the whole mesh".to_owned());
        }
        Some(r)
    } else {
        None
    };
    let mut paths = Vec::new();
    for path in &traffic {
        let mut peers = Vec::new();
        for peer in std::iter::once(Peer::Direct).chain(Peer::PROXIES) {
            let (Some(r), Some(m)) = (runs.get(&(*path, peer)), meta.get(&(*path, peer))) else {
                continue;
            };
            peers.push(PeerResult {
                peer,
                mtls: m.0,
                entry: m.1.clone(),
                proxy_processes: m.2,
                idle_rss_mb: m.3,
                runs: r.clone(),
                summary: None,
                vs_mesh_proxy: Ratios::default(),
            });
        }
        let mut pr = PathResult {
            id: *path,
            title: path.title().to_owned(),
            protocol: match path.mode() {
                Some(Mode::Http1) => "HTTP/1.1 keep-alive",
                Some(Mode::Http1Close) => "HTTP/1.1, new connection per request",
                Some(Mode::H2) => "HTTP/2 (h2c)",
                Some(Mode::Grpc) => "gRPC unary (h2c)",
                None => "",
            }
            .to_owned(),
            peers,
        };
        results::finish_path(&mut pr);
        paths.push(pr);
    }
    if traffic.iter().any(|p| p.is_pair()) {
        notes.push(if SIDECAR_MTLS == crate::peers::Mtls::On {
            "mesh-proxy and Envoy pairs talk mutual TLS under a mesh-wide STRICT PeerAuthentication, with workload certificates from the control plane's CA (Envoy's from a mesh-proxy agent over SDS, whose process counts in Envoy's CPU and RSS); nginx and HAProxy pairs use mutual TLS with throwaway certificates; the Pingora pair is plaintext".to_owned()
        } else {
            format!("mesh-proxy and Envoy pairs run plaintext, labelled mtls {SIDECAR_MTLS}; nginx and HAProxy pairs use mutual TLS; the Pingora pair is plaintext")
        });
    }
    notes.push("mesh-proxy writes one JSON access-log line per request (to a file); the control plane configures no access log for Envoy".to_owned());
    notes.push("nginx, HAProxy and Pingora are explicit proxies on 127.0.0.1 of the client pod; mesh-proxy and Envoy are reached through iptables capture".to_owned());
    notes.push("RSS and CPU are of all the path's proxy processes (both halves of a pair); idle RSS: after readiness probes and 1 s of quiet; peak RSS: VmHWM over each run (reset before it)".to_owned());
    notes.push("maximum throughput: wrk -t1 (HTTP/1.1) or h2load -t1 -m1 (HTTP/2, gRPC) on the load core, same connections; the S0 figure is the ceiling of that core (client and upstream share it)".to_owned());
    let targets = results::targets(&paths);
    Ok(RunResults {
        started_at,
        elapsed_s: started.elapsed().as_secs_f64(),
        command: s.command.clone(),
        git_commit: git_commit(),
        machine: machine(),
        smoke: s.smoke,
        mesh_proxy_binary: mesh_bin.display().to_string(),
        release_build: release,
        settings: s.load.clone(),
        pinning,
        repetitions: reps,
        paths,
        scale,
        skipped: skipped_dedup(skipped),
        targets,
        notes,
    })
}

fn skipped_dedup(mut v: Vec<Skipped>) -> Vec<Skipped> {
    v.sort_by_key(|s| (s.peer, s.path));
    v.dedup_by(|a, b| a.peer == b.peer && a.path == b.path);
    v
}

fn tempdir() -> Result<tempfile::TempDir, Error> {
    tempfile::Builder::new()
        .prefix("mesh-bench-")
        .tempdir()
        .map_err(|source| Error::Io {
            path: std::env::temp_dir(),
            source,
        })
}

/// Writes `results.json`, `results.txt` and the charts into `dir`; returns the file names.
pub fn write_outputs(r: &RunResults, text: &str, dir: &Path) -> Result<Vec<String>, Error> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.to_owned(),
        source,
    })?;
    let write = |name: &str, data: &[u8]| {
        let path = dir.join(name);
        std::fs::write(&path, data).map_err(|source| Error::Io { path, source })
    };
    write("results.json", serde_json::to_string_pretty(r)?.as_bytes())?;
    write("results.txt", text.as_bytes())?;
    let mut files = vec![
        dir.join("results.json").display().to_string(),
        dir.join("results.txt").display().to_string(),
    ];
    for path in &r.paths {
        for f in charts::draw(path, dir)? {
            files.push(f.display().to_string());
        }
    }
    Ok(files)
}
