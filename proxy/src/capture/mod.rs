//! Traffic capture: Istio's `istio-iptables` rules (`mesh-proxy init`).
//!
//! The flags, their environment variables and defaults are Istio's (see [`InitFlags`]); the
//! rules are built in the order `istio-iptables` builds them ([`rules::build`], into the
//! [`model`]), rendered as
//! `iptables-restore` input ([`render`]) and applied with `iptables-restore --noflush`
//! ([`apply`]). `--dry-run` prints them instead; `--cleanup` removes them.

pub mod apply;
pub mod config;
pub mod env;
pub mod model;
pub mod render;
pub mod rules;
mod saved;
pub mod settings;
mod values;

#[cfg(test)]
mod golden;
#[cfg(test)]
mod tests;

use std::io::Write;

use self::apply::ApplyError;
use self::config::ConfigError;
use self::env::SystemEnvironment;

/// Arguments of `mesh-proxy init`: the [`InitFlags`], boxed so that the subcommand enum of
/// `main` stays small.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct InitArgs {
    /// The flags.
    #[command(flatten)]
    pub flags: Box<InitFlags>,
}

/// Flags of `mesh-proxy init`: Istio's `istio-iptables` flags, long and short.
///
/// Every value is optional on the command line: an unset flag falls back to Istio's
/// environment variable for it (named in each flag's help), then to Istio's default. Values
/// are validated by [`config::resolve`], which names the offending flag or variable.
/// Boolean flags take an optional `=true`/`=false`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct InitFlags {
    /// Port all outbound TCP is redirected to [env ENVOY_PORT] [default: 15001]
    #[arg(short = 'p', long = "envoy-port", value_name = "PORT")]
    pub envoy_port: Option<String>,

    /// Port all inbound TCP is redirected to [env INBOUND_CAPTURE_PORT] [default: 15006]
    #[arg(short = 'z', long = "inbound-capture-port", value_name = "PORT")]
    pub inbound_capture_port: Option<String>,

    /// Tunnel port left alone by inbound capture [env INBOUND_TUNNEL_PORT] [default: 15008]
    #[arg(short = 'e', long = "inbound-tunnel-port", value_name = "PORT")]
    pub inbound_tunnel_port: Option<String>,

    /// Comma separated UIDs whose traffic is not captured [env PROXY_UID] [default: uid of
    /// $ENVOY_USER (istio-proxy), else 1337]
    #[arg(short = 'u', long = "proxy-uid", value_name = "UIDS")]
    pub proxy_uid: Option<String>,

    /// Comma separated GIDs whose traffic is not captured [env PROXY_GID] [default: the UIDs]
    #[arg(short = 'g', long = "proxy-gid", value_name = "GIDS")]
    pub proxy_gid: Option<String>,

    /// Inbound interception mode, REDIRECT or TPROXY [env ISTIO_INBOUND_INTERCEPTION_MODE,
    /// INBOUND_INTERCEPTION_MODE] [default: REDIRECT]
    #[arg(
        short = 'm',
        long = "istio-inbound-interception-mode",
        value_name = "MODE"
    )]
    pub inbound_interception_mode: Option<String>,

    /// Packet mark used by TPROXY mode [env ISTIO_INBOUND_TPROXY_MARK, INBOUND_TPROXY_MARK]
    /// [default: 1337]
    #[arg(short = 't', long = "istio-inbound-tproxy-mark", value_name = "MARK")]
    pub inbound_tproxy_mark: Option<String>,

    /// Routing table used by TPROXY mode [env ISTIO_INBOUND_TPROXY_ROUTE_TABLE] [default: 133]
    #[arg(
        short = 'r',
        long = "istio-inbound-tproxy-route-table",
        value_name = "TABLE"
    )]
    pub inbound_tproxy_route_table: Option<String>,

    /// Inbound ports to capture: comma list, `*` for all, empty for none
    /// [env ISTIO_INBOUND_PORTS] [default: none]
    #[arg(short = 'b', long = "istio-inbound-ports", value_name = "PORTS")]
    pub inbound_ports: Option<String>,

    /// Inbound ports not captured when all are (`-b '*'`) [env ISTIO_LOCAL_EXCLUDE_PORTS]
    #[arg(short = 'd', long = "istio-local-exclude-ports", value_name = "PORTS")]
    pub local_exclude_ports: Option<String>,

    /// Interfaces whose traffic is never captured [env ISTIO_EXCLUDE_INTERFACES]
    #[arg(short = 'c', long = "istio-exclude-interfaces", value_name = "IFACES")]
    pub exclude_interfaces: Option<String>,

    /// Outbound CIDRs to capture: comma list, `*` for all, empty for none
    /// [env ISTIO_SERVICE_CIDR] [default: none]
    #[arg(short = 'i', long = "istio-service-cidr", value_name = "CIDRS")]
    pub service_cidr: Option<String>,

    /// Outbound CIDRs never captured [env ISTIO_SERVICE_EXCLUDE_CIDR]
    #[arg(short = 'x', long = "istio-service-exclude-cidr", value_name = "CIDRS")]
    pub service_exclude_cidr: Option<String>,

    /// Outbound ports always captured [env ISTIO_OUTBOUND_PORTS]
    #[arg(short = 'q', long = "istio-outbound-ports", value_name = "PORTS")]
    pub outbound_ports: Option<String>,

    /// Outbound ports never captured [env ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE]
    #[arg(
        short = 'o',
        long = "istio-local-outbound-ports-exclude",
        value_name = "PORTS"
    )]
    pub local_outbound_ports_exclude: Option<String>,

    /// Virtual interfaces whose inbound traffic is treated as outbound
    /// [env KUBE_VIRT_INTERFACES]
    #[arg(short = 'k', long = "kube-virt-interfaces", value_name = "IFACES")]
    pub kube_virt_interfaces: Option<String>,

    /// Groups (names or GIDs) whose outbound traffic is captured, `*` for all
    /// [env ISTIO_OUTBOUND_OWNER_GROUPS] [default: *]
    #[arg(long = "owner-groups-include", value_name = "GROUPS")]
    pub owner_groups_include: Option<String>,

    /// Groups whose outbound traffic is not captured, with `--owner-groups-include '*'`
    /// [env ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE]
    #[arg(long = "owner-groups-exclude", value_name = "GROUPS")]
    pub owner_groups_exclude: Option<String>,

    /// IPv4 loopback CIDR of the application's own loopback traffic
    /// [env ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR] [default: 127.0.0.1/32]
    #[arg(long = "host-ipv4-loopback-cidr", value_name = "CIDR")]
    pub host_ipv4_loopback_cidr: Option<String>,

    /// DNS servers whose port 53 traffic `--redirect-dns` captures
    /// [default: the nameservers of /etc/resolv.conf]
    #[arg(long = "dns-servers", value_name = "IPS")]
    pub dns_servers: Option<String>,

    /// Print the rules in iptables-save form and apply nothing [env DRY_RUN]
    #[arg(short = 'n', long = "dry-run", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true")]
    pub dry_run: Option<String>,

    /// Capture DNS (port 53) to the agent on 15053 [env REDIRECT_DNS, ISTIO_META_DNS_CAPTURE]
    #[arg(long = "redirect-dns", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true")]
    pub redirect_dns: Option<String>,

    /// With --redirect-dns, capture all port 53 traffic, not only to the DNS servers
    /// [env CAPTURE_ALL_DNS]
    #[arg(long = "capture-all-dns", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true")]
    pub capture_all_dns: Option<String>,

    /// Drop packets conntrack marks INVALID [env DROP_INVALID, INVALID_DROP]
    #[arg(long = "drop-invalid", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true")]
    pub drop_invalid: Option<String>,

    /// Write IPv6 rules too when the pod has any IPv6 address [env DUAL_STACK,
    /// ISTIO_DUAL_STACK]
    #[arg(long = "dual-stack", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true")]
    pub dual_stack: Option<String>,

    /// Write IPv6 rules (ip6tables) too; `=false` turns off Istio's detection from the pod's
    /// first address
    #[arg(long = "enable-ipv6", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true")]
    pub enable_ipv6: Option<String>,

    /// Remove every chain and rule `init` adds (and its TPROXY routes), then exit; running it
    /// again is harmless [env CLEANUP_ONLY]
    #[arg(long = "cleanup", alias = "cleanup-only", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true")]
    pub cleanup: Option<String>,

    /// When different ISTIO_* rules are already in place, remove them and apply these
    /// [env RECONCILE]
    #[arg(long = "reconcile", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true")]
    pub reconcile: Option<String>,

    /// Apply even when ISTIO_* rules are already in place [env FORCE_APPLY]
    #[arg(long = "force-apply", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true")]
    pub force_apply: Option<String>,
}

/// Why `mesh-proxy init` failed.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// A flag or environment variable has an invalid value; nothing was applied.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Applying or removing the rules failed.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// The dry-run output could not be written to stdout.
    #[error("writing the dry-run output: {0}")]
    Output(#[source] std::io::Error),
}

/// Run `mesh-proxy init`: validate the flags, build the rules and, depending on the flags,
/// print them (`--dry-run`), remove them (`--cleanup`) or apply them.
///
/// Validation happens before anything touches the system: an invalid value returns
/// [`InitError::Config`] and applies nothing.
pub fn run_init(args: &InitArgs) -> Result<(), InitError> {
    // A subscriber may already be installed by the caller; then that one is used.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init();

    let settings = config::resolve(&args.flags, &SystemEnvironment)?;
    let ruleset = rules::build(&settings);

    if settings.dry_run {
        let text = if settings.cleanup {
            render::cleanup_commands(&ruleset)
        } else {
            render::dry_run(&ruleset)
        };
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes()).map_err(InitError::Output)?;
        out.flush().map_err(InitError::Output)?;
        return Ok(());
    }

    let backend = apply::Backend::detect(settings.enable_ipv6)?;
    if settings.cleanup {
        apply::cleanup(&backend, &settings)?;
    } else {
        apply::apply(&backend, &ruleset, &settings)?;
    }
    Ok(())
}
