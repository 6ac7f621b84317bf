//! The results of a run: raw figures per repetition, medians with min and max, ratios to
//! `mesh-proxy`, the targets, and the JSON written for machines.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::load::Percentiles;
use crate::paths::PathId;
use crate::peers::{Mtls, Peer};
use crate::runner::LoadSettings;
use crate::scale::ScaleResults;
use crate::topo::{Cpus, Skipped};

/// A repetition whose background CPU use (cores busy outside the bench's own processes,
/// averaged over a latency window) exceeds this is flagged.
pub const HEAVY_BACKGROUND_CORES: f64 = 0.5;

/// Maximum-throughput figures of one run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MaxFigures {
    /// Requests per second.
    pub rps: f64,
    /// Successful requests.
    pub requests: u64,
    /// Failed requests (socket errors, non-2xx, h2load failures).
    pub errors: u64,
    /// CPU of the path's proxies per request, µs.
    pub cpu_us_per_request: f64,
}

/// What one (repetition, path, peer) measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunFigures {
    /// Latency percentiles at the fixed rate, µs.
    pub latency_us: Percentiles,
    /// Latency added over the direct path of the same protocol in the same repetition, µs.
    pub added_us: Option<Percentiles>,
    /// Largest latency, µs.
    pub max_latency_us: f64,
    /// Successful requests in the window.
    pub requests: u64,
    /// Failed requests in the window.
    pub errors: u64,
    /// Distinct error messages.
    pub error_kinds: BTreeMap<String, u64>,
    /// Rate achieved, requests per second.
    pub achieved_rps: f64,
    /// CPU ms of all the path's proxy processes per 1,000 requests, at the fixed rate.
    pub cpu_ms_per_1k: f64,
    /// CPU ms of the upstream app per 1,000 requests.
    pub upstream_cpu_ms_per_1k: Option<f64>,
    /// Peak RSS of the path's proxies during this run, MiB.
    pub peak_rss_mb: f64,
    /// Cores busy outside the bench during the latency window.
    pub background_cores: f64,
    /// 1-minute load average when the run started.
    pub loadavg_1m: f64,
    /// Maximum throughput, when the tool is installed.
    pub max: Option<MaxFigures>,
}

/// A median with the smallest and largest value over the repetitions.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Stat {
    /// The median.
    pub median: f64,
    /// The smallest value.
    pub min: f64,
    /// The largest value.
    pub max: f64,
}

impl Stat {
    /// The statistic of `values` (`None` when empty).
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Stat> {
        let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Stat {
            median,
            min: v[0],
            max: v[n - 1],
        })
    }
}

/// Medians over the repetitions of one (path, peer).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerSummary {
    /// Latency percentiles, µs: absolute for `direct`, added over direct for the others.
    pub p50: Option<Stat>,
    /// See `p50`.
    pub p90: Option<Stat>,
    /// See `p50`.
    pub p99: Option<Stat>,
    /// See `p50`.
    pub p999: Option<Stat>,
    /// Maximum requests per second.
    pub max_rps: Option<Stat>,
    /// CPU ms per 1,000 requests at the fixed rate.
    pub cpu_ms_per_1k: Option<Stat>,
    /// CPU µs per request at maximum throughput.
    pub cpu_us_per_request_at_max: Option<Stat>,
    /// Peak RSS, MiB.
    pub peak_rss_mb: Option<Stat>,
    /// All failed requests, latency and throughput runs together.
    pub errors: u64,
}

/// A peer's figures divided by `mesh-proxy`'s on the same path.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Ratios {
    /// Added p99 latency.
    pub added_p99: Option<f64>,
    /// CPU per 1,000 requests.
    pub cpu_per_1k: Option<f64>,
    /// Idle RSS.
    pub idle_rss: Option<f64>,
    /// Peak RSS.
    pub peak_rss: Option<f64>,
    /// Maximum requests per second.
    pub max_rps: Option<f64>,
}

/// One peer on one path.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerResult {
    /// The peer.
    pub peer: Peer,
    /// mTLS between the proxies: `true`, `false`, or `false (pending)`.
    pub mtls: Mtls,
    /// How the client reaches the first proxy.
    pub entry: String,
    /// Proxy processes on the path.
    pub proxy_processes: usize,
    /// RSS of the path's proxies once configured and idle, MiB.
    pub idle_rss_mb: f64,
    /// One entry per repetition.
    pub runs: Vec<RunFigures>,
    /// Medians with min and max.
    pub summary: Option<PeerSummary>,
    /// This peer ÷ `mesh-proxy`.
    pub vs_mesh_proxy: Ratios,
}

/// One path with its peers (`direct` first: the baseline).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PathResult {
    /// S0...S6.
    pub id: PathId,
    /// What it is.
    pub title: String,
    /// The client's protocol.
    pub protocol: String,
    /// Peers, `direct` first.
    pub peers: Vec<PeerResult>,
}

/// One repetition's conditions.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RepInfo {
    /// 1-based.
    pub index: usize,
    /// 1-minute load average at its start.
    pub loadavg_1m_start: f64,
    /// ... and at its end.
    pub loadavg_1m_end: f64,
    /// The largest background CPU use seen in one of its latency windows, cores.
    pub max_background_cores: f64,
    /// Whether it ran under heavy background load.
    pub heavy_background_load: bool,
}

/// The machine.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    /// `/proc/cpuinfo` model name.
    pub cpu_model: String,
    /// CPUs available.
    pub cpus: usize,
    /// Kernel release.
    pub kernel: String,
    /// Memory, GiB.
    pub memory_gib: f64,
}

/// One of the targets, as measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetCheck {
    /// What is compared.
    pub what: String,
    /// The measured ratio.
    pub ratio: Option<f64>,
    /// The target (at most).
    pub at_most: f64,
    /// Whether it is met.
    pub met: Option<bool>,
}

/// Everything a run produced: `results.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResults {
    /// When it started (RFC 3339).
    pub started_at: String,
    /// How long it took, seconds.
    pub elapsed_s: f64,
    /// The command line.
    pub command: String,
    /// `git rev-parse HEAD` of the checkout, if known.
    pub git_commit: Option<String>,
    /// The machine.
    pub machine: Machine,
    /// Whether this was a smoke run (numbers meaningless).
    pub smoke: bool,
    /// The `mesh-proxy` binary measured.
    pub mesh_proxy_binary: String,
    /// Whether it is a release build.
    pub release_build: bool,
    /// Load settings.
    pub settings: LoadSettings,
    /// Cores.
    pub pinning: Cpus,
    /// Repetitions.
    pub repetitions: Vec<RepInfo>,
    /// Paths with traffic.
    pub paths: Vec<PathResult>,
    /// Config scale (S5).
    pub scale: Option<ScaleResults>,
    /// Peers or paths that did not run.
    pub skipped: Vec<Skipped>,
    /// The targets.
    pub targets: Vec<TargetCheck>,
    /// Caveats.
    pub notes: Vec<String>,
}

fn stat_of(runs: &[RunFigures], f: impl Fn(&RunFigures) -> Option<f64>) -> Option<Stat> {
    Stat::of(runs.iter().filter_map(f))
}

/// Computes the summary of `p` (`direct` reports absolute latency, the others added).
pub fn summarize(p: &PeerResult) -> PeerSummary {
    let direct = p.peer == Peer::Direct;
    let pct = |f: fn(&Percentiles) -> f64| {
        stat_of(&p.runs, |r| {
            if direct {
                Some(f(&r.latency_us))
            } else {
                r.added_us.as_ref().map(f)
            }
        })
    };
    PeerSummary {
        p50: pct(|x| x.p50),
        p90: pct(|x| x.p90),
        p99: pct(|x| x.p99),
        p999: pct(|x| x.p999),
        max_rps: stat_of(&p.runs, |r| r.max.as_ref().map(|m| m.rps)),
        cpu_ms_per_1k: stat_of(&p.runs, |r| (!direct).then_some(r.cpu_ms_per_1k)),
        cpu_us_per_request_at_max: stat_of(&p.runs, |r| {
            r.max
                .as_ref()
                .filter(|_| !direct)
                .map(|m| m.cpu_us_per_request)
        }),
        peak_rss_mb: stat_of(&p.runs, |r| (!direct).then_some(r.peak_rss_mb)),
        errors: p
            .runs
            .iter()
            .map(|r| r.errors + r.max.as_ref().map_or(0, |m| m.errors))
            .sum(),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 && a >= 0.0 => Some(a / b),
        _ => None,
    }
}

/// Fills every peer's summary and ratios to `mesh-proxy`.
pub fn finish_path(path: &mut PathResult) {
    for p in &mut path.peers {
        p.summary = Some(summarize(p));
    }
    let Some(mesh) = path
        .peers
        .iter()
        .find(|p| p.peer == Peer::MeshProxy)
        .cloned()
    else {
        return;
    };
    let ms = mesh.summary.clone();
    let med = |s: &Option<PeerSummary>, f: fn(&PeerSummary) -> Option<Stat>| {
        s.as_ref().and_then(f).map(|x| x.median)
    };
    for p in path.peers.iter_mut().filter(|p| p.peer != Peer::Direct) {
        let s = p.summary.clone();
        p.vs_mesh_proxy = Ratios {
            added_p99: ratio(med(&s, |x| x.p99), med(&ms, |x| x.p99)),
            cpu_per_1k: ratio(med(&s, |x| x.cpu_ms_per_1k), med(&ms, |x| x.cpu_ms_per_1k)),
            idle_rss: ratio(Some(p.idle_rss_mb), Some(mesh.idle_rss_mb)),
            peak_rss: ratio(med(&s, |x| x.peak_rss_mb), med(&ms, |x| x.peak_rss_mb)),
            max_rps: ratio(med(&s, |x| x.max_rps), med(&ms, |x| x.max_rps)),
        };
    }
}

/// The targets: on S2 against Envoy (added p99 <= 0.5x, CPU per 1,000 requests <=
/// 0.5x, idle RSS <= 0.3x, peak RSS <= 0.5x) and on S1 against the bare Pingora forwarder
/// (CPU per request within 1.5x).
pub fn targets(paths: &[PathResult]) -> Vec<TargetCheck> {
    let find = |id: PathId, peer: Peer| {
        paths
            .iter()
            .find(|p| p.id == id)
            .and_then(|p| p.peers.iter().find(|x| x.peer == peer))
    };
    let inv = |r: Option<f64>| r.filter(|x| *x > 0.0).map(|x| 1.0 / x);
    let mut out = Vec::new();
    let mut check = |what: &str, r: Option<f64>, at_most: f64| {
        out.push(TargetCheck {
            what: what.to_owned(),
            ratio: r,
            at_most,
            met: r.map(|r| r <= at_most),
        });
    };
    if let Some(envoy) = find(PathId::S2, Peer::Envoy) {
        let v = &envoy.vs_mesh_proxy;
        check("S2 added p99, mesh-proxy / envoy", inv(v.added_p99), 0.5);
        check(
            "S2 CPU per 1,000 requests, mesh-proxy / envoy",
            inv(v.cpu_per_1k),
            0.5,
        );
        check("S2 idle RSS, mesh-proxy / envoy", inv(v.idle_rss), 0.3);
        check("S2 peak RSS, mesh-proxy / envoy", inv(v.peak_rss), 0.5);
    }
    if let Some(pingora) = find(PathId::S1, Peer::Pingora) {
        check(
            "S1 CPU per request, mesh-proxy / bare pingora",
            inv(pingora.vs_mesh_proxy.cpu_per_1k),
            1.5,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_is_median_min_max() {
        let s = Stat::of([3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(Stat::of([1.0, 3.0]).unwrap().median, 2.0);
        assert!(Stat::of([]).is_none());
    }

    #[test]
    fn ratio_needs_a_positive_base() {
        assert_eq!(ratio(Some(2.0), Some(4.0)), Some(0.5));
        assert_eq!(ratio(Some(2.0), Some(0.0)), None);
        assert_eq!(ratio(Some(-1.0), Some(2.0)), None);
    }
}
