//! `mesh-proxy`: `init` writes the capture rules, `run` starts the sidecar.

fn main() -> anyhow::Result<()> {
    Ok(())
}
