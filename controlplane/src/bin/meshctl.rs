//! `meshctl`: the mesh's command-line tool. For now: `analyze DIR`.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
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
    /// Validates a config directory as the control plane loads it: prints every error (file,
    /// object, field) and exits 1 if there is any.
    Analyze {
        /// The config directory.
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    match args.command {
        Command::Analyze { dir } => analyze(dir),
    }
}

fn analyze(dir: PathBuf) -> ExitCode {
    if !dir.is_dir() {
        eprintln!("Error: {}: not a directory", dir.display());
        return ExitCode::FAILURE;
    }
    let snapshot = ConfigStore::load(&dir).current();
    for e in &snapshot.errors {
        println!("Error: {e}");
    }
    if snapshot.errors.is_empty() {
        println!(
            "No validation issues found when analyzing {} ({} objects).",
            dir.display(),
            snapshot.objects.len()
        );
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "{} error(s) in {} ({} valid objects).",
            snapshot.errors.len(),
            dir.display(),
            snapshot.objects.len()
        );
        ExitCode::FAILURE
    }
}
