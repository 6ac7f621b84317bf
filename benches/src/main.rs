//! `mesh-bench`: the included load tests. Runs the mesh's sidecar beside Envoy, nginx,
//! HAProxy and a bare Pingora forwarder on the same paths, in one run on one machine, and
//! prints a table (with each peer's ratio to `mesh-proxy`), writes JSON and SVG charts.
//!
//! `mesh-bench` alone runs the main comparison (S0, S1, S2); `--paths all` adds HTTP/2, gRPC,
//! connection-per-request and config scale; `--smoke` runs every path and peer for a few
//! seconds (what the test suite runs). `mesh-bench cp-scale` is the control plane's config-scale
//! benchmark (simulated ADS clients, no root). The hidden subcommands are its own parts,
//! started inside the pods: the load generator, the upstream app and the bare Pingora
//! forwarder.
#![forbid(unsafe_code)]

mod bench;
mod charts;
mod cp_scale;
mod forwarder;
mod load;
mod paths;
mod peers;
mod procfs;
mod results;
mod runner;
mod scale;
mod table;
mod topo;
mod upstream;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::paths::PathId;
use crate::peers::Peer;

#[derive(Parser, Debug)]
#[command(
    name = "mesh-bench",
    version,
    about = "Load tests of mesh-proxy beside Envoy, nginx, HAProxy and bare Pingora (needs root: it builds network namespaces)"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The open-loop fixed-rate load generator (prints a JSON report).
    #[command(hide = true)]
    Load(load::LoadArgs),
    /// The upstream app (echo over HTTP/1.1, h2c and gRPC).
    #[command(hide = true)]
    Upstream(upstream::UpstreamArgs),
    /// The bare Pingora forwarder.
    #[command(hide = true)]
    Forwarder(forwarder::ForwarderArgs),
    /// The control plane at config scale: 1,000 services, 5,000 endpoints, 100 simulated ADS
    /// clients on loopback (full-push and endpoint-change times, RSS, bytes per proxy; no root).
    CpScale(cp_scale::CpScaleArgs),
}

fn parse_paths(s: &str) -> Result<Vec<PathId>, String> {
    if s.eq_ignore_ascii_case("all") {
        return Ok(PathId::ALL.to_vec());
    }
    s.split(',')
        .map(|p| {
            <PathId as clap::ValueEnum>::from_str(p.trim(), true)
                .map_err(|_| format!("unknown path `{p}` (S0..S6 or all)"))
        })
        .collect()
}

fn parse_peers(s: &str) -> Result<Vec<Peer>, String> {
    if s.eq_ignore_ascii_case("all") {
        return Ok(Peer::PROXIES.to_vec());
    }
    s.split(',')
        .map(|p| {
            <Peer as clap::ValueEnum>::from_str(p.trim(), true)
                .ok()
                .filter(|p| *p != Peer::Direct)
                .ok_or_else(|| {
                    format!(
                        "unknown peer `{p}` (mesh-proxy, envoy, nginx, haproxy, pingora or all)"
                    )
                })
        })
        .collect()
}

fn parse_sizes(s: &str) -> Result<Vec<usize>, String> {
    s.split(',')
        .map(|n| {
            n.trim()
                .parse()
                .map_err(|_| format!("`{n}` is not a number"))
        })
        .collect()
}

/// Flags of the bench itself.
#[derive(clap::Args, Debug, Clone)]
struct RunArgs {
    /// Paths to run: S0..S6, comma separated, or `all` (S5 is config scale).
    #[arg(long, default_value = "S0,S1,S2", value_parser = parse_paths)]
    paths: std::vec::Vec<PathId>,
    /// Peers to run: mesh-proxy, envoy, nginx, haproxy, pingora (comma separated), or `all`.
    #[arg(long, default_value = "all", value_parser = parse_peers)]
    peers: std::vec::Vec<Peer>,
    /// Requests per second of the latency runs.
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// Connections of every run.
    #[arg(long, default_value_t = 16)]
    connections: u32,
    /// Measured window of each latency run.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Discarded warm-up before each latency run.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Maximum-throughput run (wrk / h2load), whole seconds.
    #[arg(long, default_value_t = 2)]
    max_duration: u64,
    /// Repetitions; peers are interleaved within each.
    #[arg(long, default_value_t = 3)]
    repetitions: usize,
    /// Request body bytes (echoed back).
    #[arg(long, default_value_t = 1024)]
    body_size: usize,
    /// Mesh sizes of S5 (services).
    #[arg(long, default_value = "10,100,1000,5000", value_parser = parse_sizes)]
    scale_sizes: std::vec::Vec<usize>,
    /// Where results.json, results.txt and the SVG charts go (default: target/mesh-bench).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Every path and peer for a few seconds, one repetition (the test suite's run).
    #[arg(long)]
    smoke: bool,
    /// Measure nothing: print the table and redraw the charts of an earlier results.json.
    #[arg(long, value_name = "RESULTS_JSON")]
    report: Option<PathBuf>,
}

/// The workspace binaries the load paths run, found beside `mesh-bench` or in
/// `target/debug`: the sidecar, the control plane, and `meshctl`, which mints the sidecars'
/// identity tokens.
const BENCH_BINARIES: [&str; 3] = ["mesh-proxy", "mesh-controlplane", "meshctl"];

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Load(args)) => {
            let report = load::run(&args)?;
            println!("{}", serde_json::to_string(&report)?);
        }
        Some(Command::Upstream(args)) => upstream::run(&args)?,
        Some(Command::Forwarder(args)) => forwarder::run(&args)?,
        Some(Command::CpScale(args)) => {
            mesh_tests::harness::find_bin("mesh-controlplane")?;
            let results = cp_scale::run(&args, |m| eprintln!("mesh-bench cp-scale: {m}"))
                .context("mesh-bench cp-scale failed")?;
            let text = cp_scale::render(&results);
            print!("{text}");
            let out = args
                .out
                .clone()
                .unwrap_or_else(|| mesh_tests::harness::target_dir().join("mesh-bench"));
            let files = cp_scale::write_outputs(&results, &text, &out)
                .with_context(|| format!("writing results to {}", out.display()))?;
            eprintln!("mesh-bench: wrote {}", files.join(", "));
        }
        None => {
            let a = cli.run;
            let command = std::env::args().collect::<Vec<_>>().join(" ");
            let settings = if a.smoke {
                bench::Settings::smoke(command)
            } else {
                bench::Settings {
                    paths: a.paths,
                    peers: a.peers,
                    load: runner::LoadSettings {
                        rate: a.rate,
                        connections: a.connections,
                        body_size: a.body_size,
                        warmup_s: a.warmup.as_secs_f64(),
                        duration_s: a.duration.as_secs_f64(),
                        max_warmup_s: 0.0,
                        max_duration_s: a.max_duration.max(1),
                    },
                    repetitions: a.repetitions.max(1),
                    scale_sizes: a.scale_sizes,
                    smoke: false,
                    command,
                }
            };
            let out = a
                .out
                .unwrap_or_else(|| mesh_tests::harness::target_dir().join("mesh-bench"));
            let results = match &a.report {
                Some(file) => {
                    let text = std::fs::read_to_string(file)
                        .with_context(|| format!("reading {}", file.display()))?;
                    serde_json::from_str(&text)
                        .with_context(|| format!("{} is not mesh-bench's JSON", file.display()))?
                }
                None => {
                    for name in BENCH_BINARIES {
                        mesh_tests::harness::find_bin(name)?;
                    }
                    bench::run(&settings).context("mesh-bench failed")?
                }
            };
            let text = table::render(&results);
            print!("{text}");
            let files = bench::write_outputs(&results, &text, &out)
                .with_context(|| format!("writing results to {}", out.display()))?;
            eprintln!("mesh-bench: wrote {}", files.join(", "));
        }
    }
    Ok(())
}
