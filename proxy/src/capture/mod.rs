//! Traffic capture: Istio's `istio-iptables` rules (`mesh-proxy init`).

/// Flags of `mesh-proxy init` (Istio's `istio-iptables` flags).
#[derive(clap::Args, Debug, Clone)]
pub struct InitArgs {}

/// Run `mesh-proxy init`.
pub fn run_init(_args: &InitArgs) -> Result<(), std::io::Error> {
    Ok(())
}
