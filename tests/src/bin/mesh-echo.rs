//! `mesh-echo`: the mesh's test app (server by default, `mesh-echo client ...` for the
//! clients). The flags, reply format and behaviour controls are documented in
//! `mesh_tests::echo`.

#![forbid(unsafe_code)]

use std::io::IsTerminal as _;

use anyhow::Context as _;
use clap::Parser;
use mesh_tests::echo::client::{self, ClientCommand};
use mesh_tests::echo::{BoundServer, ServerArgs};
use tokio::signal::unix::{signal, SignalKind};

/// Echo server answering HTTP/1.1, h2c, WebSocket, gRPC and TCP with what it saw.
#[derive(Debug, Parser)]
#[command(name = "mesh-echo", args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Run a client against an echo server and print JSON lines.
    Client {
        #[command(subcommand)]
        mode: ClientCommand,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let default_level = if cli.command.is_some() {
        "warn"
    } else {
        "info"
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .init();
    let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    let code = runtime.block_on(async {
        match cli.command {
            Some(Command::Client { mode }) => {
                let ok = client::run(&mode).await?;
                anyhow::Ok(i32::from(!ok))
            }
            None => serve(&cli.server).await.map(|()| 0),
        }
    })?;
    // Tasks still running (open connections, a client's connection driver) are not waited for.
    runtime.shutdown_background();
    std::process::exit(code);
}

async fn serve(args: &ServerArgs) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let server = BoundServer::bind(args).await?;
    server.announce()?;
    tracing::info!(
        "mesh-echo {} {} serving {:?}",
        args.name,
        args.version,
        server.ports()
    );
    tokio::select! {
        () = server.run() => {}
        _ = term.recv() => tracing::info!("SIGTERM: exiting"),
        _ = int.recv() => tracing::info!("SIGINT: exiting"),
    }
    Ok(())
}
