//! `mesh-bench load`: the open-loop, fixed-rate load generator.
//!
//! `--connections` connections share `--rate` requests per second: connection `i` of `N`
//! sends at `t0 + i/rate + k*N/rate`, whatever happened to earlier requests. A request whose
//! connection was still busy at its send time counts its latency from that intended time
//! (coordinated-omission correction, as wrk2 and oha `--latency-correction` do); one sent on an
//! idle connection counts from the moment it was written, so the generator's own timer lag is
//! not charged to the system under test. Latencies go into an HdrHistogram. The first
//! `--warmup` is discarded; at its end and at the end of the run the generator samples the CPU
//! time of the process groups given by `--cpu-group` and the machine's busy time, so CPU is
//! measured over exactly the measured window. The report is one JSON object on stdout.

mod client;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use client::Client;
pub use client::Mode;

use crate::procfs;

/// At most this many distinct error messages are kept in a report.
const MAX_ERROR_KINDS: usize = 8;

/// Errors of the load generator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An argument is out of range.
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
    /// The runtime could not be built.
    #[error("cannot start the runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// A `--cpu-group` is not `NAME=PID,PID`.
    #[error("`{0}` is not NAME=PID[,PID...]")]
    CpuGroup(String),
    /// The histogram could not be created.
    #[error("histogram: {0}")]
    Histogram(#[from] hdrhistogram::CreationError),
    /// The report could not be written.
    #[error("cannot write the report: {0}")]
    Report(#[from] serde_json::Error),
}

/// Flags of `mesh-bench load`.
#[derive(clap::Args, Debug, Clone)]
pub struct LoadArgs {
    /// Address to connect to.
    #[arg(long)]
    pub target: SocketAddr,
    /// `Host` / `:authority` to send (default: the target address).
    #[arg(long)]
    pub authority: Option<String>,
    /// Protocol and connection handling.
    #[arg(long, value_enum, default_value_t = Mode::Http1)]
    pub mode: Mode,
    /// Requests per second, over all connections.
    #[arg(long, default_value_t = 1000)]
    pub rate: u32,
    /// Connections (each sends its share of the rate, one request at a time).
    #[arg(long, default_value_t = 16)]
    pub connections: u32,
    /// Discarded warm-up before the measured window.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// The measured window.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Request body size in bytes (POST; echoed back by the upstream).
    #[arg(long, default_value_t = 1024)]
    pub body_size: usize,
    /// A group of processes whose CPU time to measure over the window: `NAME=PID,PID` (the
    /// caller lists descendants itself).
    #[arg(long = "cpu-group")]
    pub cpu_groups: Vec<String>,
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
}

/// What one run measured; printed as JSON by `mesh-bench load` and read back by the runner.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoadReport {
    /// Requests completed successfully in the window.
    pub requests: u64,
    /// Requests that failed in the window (connect or protocol error, non-200 status,
    /// non-zero gRPC status).
    pub errors: u64,
    /// Up to a few distinct error messages with their counts.
    pub error_kinds: BTreeMap<String, u64>,
    /// Length of the measured window in seconds (from the warm-up's end to the last answer).
    pub window_s: f64,
    /// Successful requests per second over the window.
    pub achieved_rps: f64,
    /// Latency percentiles (µs), coordinated-omission corrected.
    pub latency_us: Percentiles,
    /// Largest latency (µs).
    pub max_us: f64,
    /// Mean latency (µs).
    pub mean_us: f64,
    /// CPU milliseconds of each `--cpu-group` over the window.
    pub cpu_ms: BTreeMap<String, f64>,
    /// CPU milliseconds of the generator itself over the window.
    pub generator_cpu_ms: f64,
    /// Busy CPU milliseconds of the whole machine over the window.
    pub machine_busy_ms: f64,
}

/// Per-connection outcome, merged at the end.
struct Outcome {
    hist: Histogram<u64>,
    requests: u64,
    errors: u64,
    kinds: BTreeMap<String, u64>,
}

impl Outcome {
    fn new() -> Result<Outcome, Error> {
        Ok(Outcome {
            // 1 µs to 60 s at 3 significant digits.
            hist: Histogram::new_with_bounds(1, 60_000_000, 3)?,
            requests: 0,
            errors: 0,
            kinds: BTreeMap::new(),
        })
    }

    fn error(&mut self, message: String) {
        self.errors += 1;
        if self.kinds.len() < MAX_ERROR_KINDS || self.kinds.contains_key(&message) {
            *self.kinds.entry(message).or_insert(0) += 1;
        }
    }
}

fn parse_groups(groups: &[String]) -> Result<Vec<(String, Vec<u32>)>, Error> {
    groups
        .iter()
        .map(|g| {
            let (name, pids) = g
                .split_once('=')
                .ok_or_else(|| Error::CpuGroup(g.clone()))?;
            let pids = pids
                .split(',')
                .filter(|p| !p.is_empty())
                .map(|p| p.parse::<u32>().map_err(|_| Error::CpuGroup(g.clone())))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((name.to_owned(), pids))
        })
        .collect()
}

/// CPU counters at one instant.
struct CpuSample {
    groups: Vec<f64>,
    own: f64,
    busy: f64,
    at: Instant,
}

fn sample(groups: &[(String, Vec<u32>)]) -> CpuSample {
    CpuSample {
        groups: groups
            .iter()
            .map(|(_, pids)| procfs::cpu_ms(pids))
            .collect(),
        own: procfs::own_and_children_cpu_ms(),
        busy: procfs::machine_busy_ms().unwrap_or(0.0),
        at: Instant::now(),
    }
}

/// Runs the generator on a single-threaded runtime and returns its report.
pub fn run(args: &LoadArgs) -> Result<LoadReport, Error> {
    if args.rate == 0 || args.connections == 0 {
        return Err(Error::Invalid("--rate and --connections must be positive"));
    }
    if args.duration.is_zero() {
        return Err(Error::Invalid("--duration must be positive"));
    }
    let groups = parse_groups(&args.cpu_groups)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, generate(args, groups))
}

async fn generate(args: &LoadArgs, groups: Vec<(String, Vec<u32>)>) -> Result<LoadReport, Error> {
    let authority = args
        .authority
        .clone()
        .unwrap_or_else(|| args.target.to_string());
    let body = bytes::Bytes::from(vec![b'x'; args.body_size]);
    let start = Instant::now() + Duration::from_millis(20);
    let measure_from = start + args.warmup;
    let end = measure_from + args.duration;
    let n = args.connections;
    let interval = Duration::from_secs_f64(f64::from(n) / f64::from(args.rate));
    let groups = Rc::new(groups);
    let sampler = {
        let groups = Rc::clone(&groups);
        tokio::task::spawn_local(async move {
            tokio::time::sleep_until(measure_from).await;
            sample(&groups)
        })
    };
    let mut tasks = Vec::new();
    for i in 0..n {
        let first = start + Duration::from_secs_f64(f64::from(i) / f64::from(args.rate));
        let client = Client::new(args.mode, args.target, authority.clone(), body.clone());
        tasks.push(tokio::task::spawn_local(connection(
            client,
            first,
            interval,
            measure_from,
            end,
        )));
    }
    let mut total = Outcome::new()?;
    for t in tasks {
        // A panicking task would be a bug here; its requests are simply missing then.
        if let Ok(Ok(o)) = t.await {
            total.hist.add(&o.hist).ok();
            total.requests += o.requests;
            total.errors += o.errors;
            for (k, v) in o.kinds {
                *total.kinds.entry(k).or_insert(0) += v;
            }
        }
    }
    let after = sample(&groups);
    let before = sampler.await.unwrap_or_else(|_| sample(&groups));
    let window_s = after.at.duration_since(before.at).as_secs_f64().max(1e-6);
    let h = &total.hist;
    let q = |p: f64| h.value_at_quantile(p) as f64;
    Ok(LoadReport {
        requests: total.requests,
        errors: total.errors,
        error_kinds: total.kinds,
        window_s,
        achieved_rps: total.requests as f64 / window_s,
        latency_us: Percentiles {
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
        },
        max_us: h.max() as f64,
        mean_us: h.mean(),
        cpu_ms: groups
            .iter()
            .zip(after.groups.iter().zip(&before.groups))
            .map(|((name, _), (a, b))| (name.clone(), (a - b).max(0.0)))
            .collect(),
        generator_cpu_ms: (after.own - before.own).max(0.0),
        machine_busy_ms: (after.busy - before.busy).max(0.0),
    })
}

/// One connection's schedule: a request every `interval` from `first` until `end`.
async fn connection(
    mut client: Client,
    first: Instant,
    interval: Duration,
    measure_from: Instant,
    end: Instant,
) -> Result<Outcome, Error> {
    let mut out = Outcome::new()?;
    let mut intended = first;
    let mut busy_until = first;
    while intended < end {
        let now = Instant::now();
        if now < intended {
            tokio::time::sleep_until(intended).await;
        }
        let sent = Instant::now();
        // Late because the previous answer came after this request's slot: count from the
        // slot (coordinated omission). Late only because of the generator's timer: count from
        // the send.
        let from = if busy_until > intended {
            intended
        } else {
            sent
        };
        let result = client.request().await;
        let done = Instant::now();
        busy_until = done;
        if intended >= measure_from {
            match result {
                Ok(()) => {
                    out.requests += 1;
                    let us = done.duration_since(from).as_micros().max(1) as u64;
                    out.hist.saturating_record(us);
                }
                Err(e) => out.error(e.to_string()),
            }
        }
        intended += interval;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_groups_parse() {
        let g = parse_groups(&["proxy=1,2".to_owned(), "up=".to_owned()]).unwrap();
        assert_eq!(g[0], ("proxy".to_owned(), vec![1, 2]));
        assert!(g[1].1.is_empty());
        assert!(parse_groups(&["x".to_owned()]).is_err());
        assert!(parse_groups(&["x=a".to_owned()]).is_err());
    }
}
