//! `meshctl`: the mesh's command-line tool. For now: `analyze DIR`.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use controlplane::analyze::{self, Level};
use controlplane::config::ConfigStore;

/// Command-line tool of the mesh.
#[derive(Debug, Parser)]
#[command(name = "meshctl", version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validates a config directory as the control plane loads it and analyzes the objects
    /// together (references, conflicts, selectors), printing every finding with Istio's
    /// message codes; exits 1 if there is any error (warnings are printed, exit 0).
    Analyze {
        /// The config directory.
        dir: PathBuf,
        /// Cluster domain of Service host names.
        #[arg(long, default_value = "cluster.local")]
        cluster_domain: String,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    match args.command {
        Command::Analyze {
            dir,
            cluster_domain,
        } => run_analyze(dir, &cluster_domain),
    }
}

fn run_analyze(dir: PathBuf, cluster_domain: &str) -> ExitCode {
    if !dir.is_dir() {
        eprintln!("Error: {}: not a directory", dir.display());
        return ExitCode::FAILURE;
    }
    let snapshot = ConfigStore::load(&dir).current();
    let report = analyze::analyze(&snapshot, cluster_domain);
    for e in &report.store_errors {
        println!("Error: {e}");
    }
    for m in &report.messages {
        println!("{m}");
    }
    let (errors, warnings, infos) = (
        report.count(Level::Error),
        report.count(Level::Warning),
        report.count(Level::Info),
    );
    if errors + warnings + infos == 0 {
        println!(
            "No validation issues found when analyzing {} ({} objects).",
            dir.display(),
            snapshot.objects.len()
        );
    } else {
        eprintln!(
            "{errors} error(s), {warnings} warning(s), {infos} info(s) in {} ({} valid objects).",
            dir.display(),
            snapshot.objects.len()
        );
    }
    if report.has_errors() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
