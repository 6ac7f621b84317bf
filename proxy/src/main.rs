//! `mesh-proxy`: `init` writes the capture rules, `run` starts the sidecar.

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "mesh-proxy", version, about = "Service mesh sidecar built on Pingora")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write the traffic capture rules (Istio's istio-iptables).
    Init(proxy::capture::InitArgs),
    /// Run the sidecar.
    Run(proxy::app::RunArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Init(args) => proxy::capture::run_init(&args)?,
        Command::Run(args) => proxy::app::run(args)?,
    }
    Ok(())
}
