//! `mesh-proxy run`: assembles the Pingora server (capture listeners, admin, readiness) and
//! the xDS client.

/// Flags of `mesh-proxy run`.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {}

/// Run the sidecar until it is told to stop.
pub fn run(_args: RunArgs) -> anyhow::Result<()> {
    Ok(())
}
