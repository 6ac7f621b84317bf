//! `mesh-demo`: builds the demo mesh of `conf/demo/` (one network-namespace pod per workload,
//! each with its sidecar, the control plane on the host), sends traffic through it, prints a
//! summary and keeps it running until Ctrl-C (SIGINT) or SIGTERM, then removes everything.
//! Needs root. What it does step by step: `mesh_tests::demo`.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use mesh_tests::demo::{self, DemoError, Options, Signals};
use mesh_tests::harness::{skip_reason, workspace_dir};

/// Runs the Bookinfo-like demo mesh on this machine, in network namespaces.
#[derive(Debug, Parser)]
#[command(name = "mesh-demo")]
struct Cli {
    /// The config directory: its Services become pods, it is what the control plane reads
    /// (default: conf/demo of this workspace).
    #[arg(long)]
    config_dir: Option<PathBuf>,
    /// HTTP requests sent from the client pod to each Service.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    requests: u32,
    /// Exit (removing everything) right after the summary instead of waiting for Ctrl-C.
    #[arg(long)]
    no_wait: bool,
    /// The run's name: its logs go to target/e2e-logs/NAME/.
    #[arg(long, default_value = "mesh-demo")]
    name: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mesh-demo: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line (no backtrace), skipping a cause whose text the
/// message before it already contains.
fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Some(reason) = skip_reason() {
        anyhow::bail!(
            "mesh-demo builds network namespaces and needs root ({reason}); run it as root, \
             e.g. sudo ./scripts/demo.sh"
        );
    }
    let opts = Options {
        config_dir: cli
            .config_dir
            .unwrap_or_else(|| workspace_dir().join("conf").join("demo")),
        requests: cli.requests,
        no_wait: cli.no_wait,
        name: cli.name,
    };
    let signals = Signals::install()?;
    let outcome = match demo::run(&opts, &signals) {
        Ok(outcome) => outcome,
        // Reported, and everything removed, already.
        Err(DemoError::Interrupted(_)) => return Ok(ExitCode::from(130)),
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "the demo mesh of {} did not come up",
                    opts.config_dir.display()
                )
            })
        }
    };
    if !outcome.leftovers.is_empty() {
        anyhow::bail!(
            "the teardown left {} things behind (listed above)",
            outcome.leftovers.len()
        );
    }
    if outcome.problems.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "mesh-demo: {} problems (listed in the summary)",
            outcome.problems.len()
        );
        Ok(ExitCode::FAILURE)
    }
}
