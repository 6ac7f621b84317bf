//! Resolving `mesh-proxy init`'s settings: each value comes from its flag, else from Istio's
//! environment variable for it, else from Istio's default, and is validated into the typed
//! [`Settings`] (of [`super::settings`]) or a [`ConfigError`] naming where the bad value came
//! from.

use std::fmt;

use super::env::{Environment, RESOLV_CONF};
use super::values::{
    ids, interfaces, items, lookup, lookup_bool, loopback_cidr, mode, number_or, owner_groups,
    port_list, port_or, ranges, split_dns,
};
use super::InitFlags;

use super::settings::{
    InboundPorts, Settings, DEFAULT_INBOUND_CAPTURE_PORT, DEFAULT_INBOUND_TUNNEL_PORT,
    DEFAULT_PROXY_PORT, DEFAULT_PROXY_UID, DEFAULT_TPROXY_MARK, DEFAULT_TPROXY_ROUTE_TABLE,
    MAX_OWNER_GROUPS_INCLUDE,
};

/// Where a setting's value came from, named in error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A command-line flag (long name without dashes, and its short letter if any).
    Flag {
        /// Long flag name, e.g. `envoy-port`.
        long: &'static str,
        /// Short flag letter, e.g. `p`.
        short: Option<char>,
    },
    /// An environment variable standing in for the flag `long`.
    Env {
        /// Variable name, e.g. `ENVOY_PORT`.
        var: &'static str,
        /// The flag it stands in for.
        long: &'static str,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag {
                long,
                short: Some(s),
            } => write!(f, "--{long} (-{s})"),
            Origin::Flag { long, short: None } => write!(f, "--{long}"),
            Origin::Env { var, long } => write!(f, "${var} (for --{long})"),
        }
    }
}

/// An invalid setting. Every variant names the flag or variable it came from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not a port number 1-65535.
    #[error("invalid value {value:?} for {origin}: expected a port number 1-65535")]
    Port {
        /// Where the value came from.
        origin: Origin,
        /// The offending item.
        value: String,
    },
    /// Not a numeric UID or GID.
    #[error("invalid value {value:?} for {origin}: expected comma separated numeric IDs")]
    Id {
        /// Where the value came from.
        origin: Origin,
        /// The offending item.
        value: String,
    },
    /// Neither REDIRECT nor TPROXY.
    #[error("invalid value {value:?} for {origin}: expected REDIRECT or TPROXY")]
    Mode {
        /// Where the value came from.
        origin: Origin,
        /// The offending value.
        value: String,
    },
    /// Not an unsigned 32-bit integer (marks, routing tables).
    #[error("invalid value {value:?} for {origin}: expected an unsigned integer")]
    Number {
        /// Where the value came from.
        origin: Origin,
        /// The offending value.
        value: String,
    },
    /// Not a CIDR (`ADDRESS/BITS`).
    #[error("invalid value {value:?} for {origin}: not a CIDR ({source})")]
    Cidr {
        /// Where the value came from.
        origin: Origin,
        /// The offending item.
        value: String,
        /// The parser's complaint.
        source: ipnet::AddrParseError,
    },
    /// `*` where it is not accepted (exclusion lists, or mixed into a list).
    #[error("invalid value for {origin}: `*` is not allowed here")]
    Wildcard {
        /// Where the value came from.
        origin: Origin,
    },
    /// Not a network interface name.
    #[error("invalid value {value:?} for {origin}: not an interface name")]
    Interface {
        /// Where the value came from.
        origin: Origin,
        /// The offending item.
        value: String,
    },
    /// Not a group name or numeric GID.
    #[error("invalid value {value:?} for {origin}: not a group name or GID")]
    Group {
        /// Where the value came from.
        origin: Origin,
        /// The offending item.
        value: String,
    },
    /// More owner groups than one iptables rule can hold.
    #[error(
        "invalid value for {origin}: at most {MAX_OWNER_GROUPS_INCLUDE} owner groups, got {count}"
    )]
    TooManyGroups {
        /// Where the value came from.
        origin: Origin,
        /// How many were given.
        count: usize,
    },
    /// Not an IPv4 loopback CIDR with a mask of 8 to 32 bits.
    #[error("invalid value {value:?} for {origin}: expected an IPv4 loopback CIDR, mask 8-32")]
    LoopbackCidr {
        /// Where the value came from.
        origin: Origin,
        /// The offending value.
        value: String,
    },
    /// Not an IP address.
    #[error("invalid value {value:?} for {origin}: not an IP address")]
    Ip {
        /// Where the value came from.
        origin: Origin,
        /// The offending item.
        value: String,
    },
    /// Not a boolean.
    #[error("invalid value {value:?} for {origin}: expected true or false")]
    Bool {
        /// Where the value came from.
        origin: Origin,
        /// The offending value.
        value: String,
    },
    /// `--redirect-dns` needs the DNS servers and /etc/resolv.conf could not be read.
    #[error("reading DNS servers from {path} (needed by --redirect-dns): {source}")]
    ResolvConf {
        /// The file.
        path: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Resolves and validates every setting of `args` (flag, else environment variable, else
/// Istio's default), reading the machine through `env` only where Istio does: the proxy
/// user's UID when `-u` is unset, resolv.conf when DNS capture needs servers, and the pod's
/// addresses when `--enable-ipv6` is unset.
pub fn resolve(args: &InitFlags, env: &dyn Environment) -> Result<Settings, ConfigError> {
    let e = env;
    let proxy_port = port_or(
        lookup(
            e,
            &args.envoy_port,
            "envoy-port",
            Some('p'),
            &["ENVOY_PORT"],
        ),
        DEFAULT_PROXY_PORT,
    )?;
    let inbound_capture_port = port_or(
        lookup(
            e,
            &args.inbound_capture_port,
            "inbound-capture-port",
            Some('z'),
            &["INBOUND_CAPTURE_PORT"],
        ),
        DEFAULT_INBOUND_CAPTURE_PORT,
    )?;
    let inbound_tunnel_port = port_or(
        lookup(
            e,
            &args.inbound_tunnel_port,
            "inbound-tunnel-port",
            Some('e'),
            &["INBOUND_TUNNEL_PORT"],
        ),
        DEFAULT_INBOUND_TUNNEL_PORT,
    )?;

    let uid_raw = lookup(e, &args.proxy_uid, "proxy-uid", Some('u'), &["PROXY_UID"])
        .filter(|raw| !raw.value.is_empty());
    let proxy_uids = match &uid_raw {
        Some(raw) => ids(raw)?,
        None => {
            let user = e
                .var("ENVOY_USER")
                .unwrap_or_else(|| "istio-proxy".to_owned());
            vec![e.user_uid(&user).unwrap_or(DEFAULT_PROXY_UID)]
        }
    };
    let gid_raw = lookup(e, &args.proxy_gid, "proxy-gid", Some('g'), &["PROXY_GID"])
        .filter(|raw| !raw.value.is_empty());
    let proxy_gids = match &gid_raw {
        Some(raw) => ids(raw)?,
        None => proxy_uids.clone(),
    };

    let mode = mode(lookup(
        e,
        &args.inbound_interception_mode,
        "istio-inbound-interception-mode",
        Some('m'),
        &[
            "ISTIO_INBOUND_INTERCEPTION_MODE",
            "INBOUND_INTERCEPTION_MODE",
        ],
    ))?;
    let tproxy_mark = number_or(
        lookup(
            e,
            &args.inbound_tproxy_mark,
            "istio-inbound-tproxy-mark",
            Some('t'),
            &["ISTIO_INBOUND_TPROXY_MARK", "INBOUND_TPROXY_MARK"],
        ),
        DEFAULT_TPROXY_MARK,
    )?;
    let tproxy_route_table = number_or(
        lookup(
            e,
            &args.inbound_tproxy_route_table,
            "istio-inbound-tproxy-route-table",
            Some('r'),
            &["ISTIO_INBOUND_TPROXY_ROUTE_TABLE"],
        ),
        DEFAULT_TPROXY_ROUTE_TABLE,
    )?;

    let inbound_raw = lookup(
        e,
        &args.inbound_ports,
        "istio-inbound-ports",
        Some('b'),
        &["ISTIO_INBOUND_PORTS"],
    );
    let exclude_ports = port_list(lookup(
        e,
        &args.local_exclude_ports,
        "istio-local-exclude-ports",
        Some('d'),
        &["ISTIO_LOCAL_EXCLUDE_PORTS"],
    ))?;
    let inbound_ports = match inbound_raw {
        Some(raw) if raw.value.trim() == "*" => InboundPorts::All {
            exclude: exclude_ports,
        },
        other => InboundPorts::Only(port_list(other)?),
    };

    let outbound_include = ranges(
        lookup(
            e,
            &args.service_cidr,
            "istio-service-cidr",
            Some('i'),
            &["ISTIO_SERVICE_CIDR"],
        ),
        true,
    )?;
    let outbound_exclude = ranges(
        lookup(
            e,
            &args.service_exclude_cidr,
            "istio-service-exclude-cidr",
            Some('x'),
            &["ISTIO_SERVICE_EXCLUDE_CIDR"],
        ),
        false,
    )?;
    let outbound_ports_include = port_list(lookup(
        e,
        &args.outbound_ports,
        "istio-outbound-ports",
        Some('q'),
        &["ISTIO_OUTBOUND_PORTS"],
    ))?;
    let outbound_ports_exclude = port_list(lookup(
        e,
        &args.local_outbound_ports_exclude,
        "istio-local-outbound-ports-exclude",
        Some('o'),
        &["ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE"],
    ))?;
    let kube_virt_interfaces = interfaces(lookup(
        e,
        &args.kube_virt_interfaces,
        "kube-virt-interfaces",
        Some('k'),
        &["KUBE_VIRT_INTERFACES"],
    ))?;
    let exclude_interfaces = interfaces(lookup(
        e,
        &args.exclude_interfaces,
        "istio-exclude-interfaces",
        Some('c'),
        &["ISTIO_EXCLUDE_INTERFACES"],
    ))?;
    let owner_groups = owner_groups(
        lookup(
            e,
            &args.owner_groups_include,
            "owner-groups-include",
            None,
            &["ISTIO_OUTBOUND_OWNER_GROUPS"],
        ),
        lookup(
            e,
            &args.owner_groups_exclude,
            "owner-groups-exclude",
            None,
            &["ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE"],
        ),
    )?;
    let host_ipv4_loopback_cidr = loopback_cidr(lookup(
        e,
        &args.host_ipv4_loopback_cidr,
        "host-ipv4-loopback-cidr",
        None,
        &["ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR"],
    ))?;

    let dry_run = lookup_bool(e, &args.dry_run, "dry-run", Some('n'), &["DRY_RUN"])?;
    let redirect_dns = lookup_bool(
        e,
        &args.redirect_dns,
        "redirect-dns",
        None,
        &["ISTIO_META_DNS_CAPTURE", "REDIRECT_DNS"],
    )?;
    let capture_all_dns = lookup_bool(
        e,
        &args.capture_all_dns,
        "capture-all-dns",
        None,
        &["CAPTURE_ALL_DNS"],
    )?;
    let drop_invalid = lookup_bool(
        e,
        &args.drop_invalid,
        "drop-invalid",
        None,
        &["INVALID_DROP", "DROP_INVALID"],
    )?;
    let dual_stack = lookup_bool(
        e,
        &args.dual_stack,
        "dual-stack",
        None,
        &["ISTIO_DUAL_STACK", "DUAL_STACK"],
    )?;
    let enable_ipv6 = match &args.enable_ipv6 {
        Some(_) => lookup_bool(e, &args.enable_ipv6, "enable-ipv6", None, &[])?,
        None => e.pod_uses_ipv6(dual_stack),
    };
    let cleanup = lookup_bool(e, &args.cleanup, "cleanup", None, &["CLEANUP_ONLY"])?;
    let reconcile = lookup_bool(e, &args.reconcile, "reconcile", None, &["RECONCILE"])?;
    let force_apply = lookup_bool(e, &args.force_apply, "force-apply", None, &["FORCE_APPLY"])?;

    let (dns_servers_v4, dns_servers_v6) = match &args.dns_servers {
        Some(list) => {
            let origin = Origin::Flag {
                long: "dns-servers",
                short: None,
            };
            let servers: Vec<String> = items(list).map(str::to_owned).collect();
            split_dns(&servers, Some(&origin))?
        }
        None if redirect_dns && !capture_all_dns => {
            let servers = e.nameservers().map_err(|source| ConfigError::ResolvConf {
                path: RESOLV_CONF,
                source,
            })?;
            split_dns(&servers, None)?
        }
        None => (Vec::new(), Vec::new()),
    };

    Ok(Settings {
        proxy_port,
        inbound_capture_port,
        inbound_tunnel_port,
        proxy_uids,
        proxy_gids,
        mode,
        tproxy_mark,
        tproxy_route_table,
        inbound_ports,
        outbound_include,
        outbound_exclude,
        outbound_ports_include,
        outbound_ports_exclude,
        kube_virt_interfaces,
        exclude_interfaces,
        owner_groups,
        host_ipv4_loopback_cidr,
        redirect_dns,
        capture_all_dns,
        dns_servers_v4,
        dns_servers_v6,
        drop_invalid,
        enable_ipv6,
        dry_run,
        cleanup,
        reconcile,
        force_apply,
    })
}
