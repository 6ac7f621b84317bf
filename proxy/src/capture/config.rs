//! `mesh-proxy init` settings: each value comes from its flag, else from Istio's environment
//! variable for it, else from Istio's default, and is validated into a typed [`Settings`].

use std::fmt;
use std::net::Ipv4Addr;

use ipnet::{Ipv4Net, Ipv6Net};

use super::env::{Environment, RESOLV_CONF};
use super::values::{
    ids, interfaces, items, lookup, lookup_bool, loopback_cidr, mode, number_or, owner_groups,
    port_list, port_or, ranges, split_dns,
};
use super::InitFlags;

/// Istio's default outbound capture port (`-p`).
pub const DEFAULT_PROXY_PORT: u16 = 15001;
/// Istio's default inbound capture port (`-z`).
pub const DEFAULT_INBOUND_CAPTURE_PORT: u16 = 15006;
/// Istio's default inbound tunnel (HBONE) port (`-e`), never captured.
pub const DEFAULT_INBOUND_TUNNEL_PORT: u16 = 15008;
/// Istio's default proxy UID when `$ENVOY_USER` does not exist.
pub const DEFAULT_PROXY_UID: u32 = 1337;
/// Istio's default TPROXY packet mark (`-t`).
pub const DEFAULT_TPROXY_MARK: u32 = 1337;
/// Istio's default TPROXY routing table (`-r`).
pub const DEFAULT_TPROXY_ROUTE_TABLE: u32 = 133;
/// Istio caps the owner groups captured by `--owner-groups-include` (one rule holds them all).
pub const MAX_OWNER_GROUPS_INCLUDE: usize = 64;

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

/// How inbound connections reach the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterceptionMode {
    /// nat-table REDIRECT (the original destination is read with `SO_ORIGINAL_DST`).
    Redirect,
    /// mangle-table TPROXY (keeps the original destination and source).
    Tproxy,
}

/// Which inbound ports are captured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundPorts {
    /// `*`: every port, except `exclude`.
    All {
        /// Ports left alone (`-d`).
        exclude: Vec<u16>,
    },
    /// These ports only; empty means no inbound capture.
    Only(Vec<u16>),
}

/// Outbound destination ranges of one list (`-i` or `-x`), split by IP version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpRanges {
    /// `*`: every destination (only allowed for `-i`).
    pub wildcard: bool,
    /// IPv4 ranges in the order given.
    pub v4: Vec<Ipv4Net>,
    /// IPv6 ranges in the order given.
    pub v6: Vec<Ipv6Net>,
}

impl IpRanges {
    /// Whether an IPv4 range starts at a loopback address (then app-to-self loopback traffic
    /// is captured, as Istio does).
    pub fn has_v4_loopback(&self) -> bool {
        self.v4.iter().any(|n| n.addr().is_loopback())
    }

    /// Whether an IPv6 range starts at `::1`.
    pub fn has_v6_loopback(&self) -> bool {
        self.v6.iter().any(|n| n.addr().is_loopback())
    }
}

/// Which groups' outbound traffic is captured (`--owner-groups-include/-exclude`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnerGroups {
    /// Every group except these (include `*`).
    AllExcept(Vec<String>),
    /// Only these groups.
    Only(Vec<String>),
}

/// Validated settings of `mesh-proxy init`, Istio's configuration fields in typed form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Outbound capture port (`-p`).
    pub proxy_port: u16,
    /// Inbound capture port (`-z`).
    pub inbound_capture_port: u16,
    /// Inbound tunnel port, never captured (`-e`).
    pub inbound_tunnel_port: u16,
    /// UIDs whose traffic is the proxy's own (`-u`), at least one.
    pub proxy_uids: Vec<u32>,
    /// GIDs whose traffic is the proxy's own (`-g`), at least one.
    pub proxy_gids: Vec<u32>,
    /// Inbound interception mode (`-m`).
    pub mode: InterceptionMode,
    /// TPROXY packet mark (`-t`).
    pub tproxy_mark: u32,
    /// TPROXY routing table (`-r`).
    pub tproxy_route_table: u32,
    /// Inbound ports captured (`-b`, `-d`).
    pub inbound_ports: InboundPorts,
    /// Outbound destinations captured (`-i`).
    pub outbound_include: IpRanges,
    /// Outbound destinations never captured (`-x`); never a wildcard.
    pub outbound_exclude: IpRanges,
    /// Outbound ports always captured (`-q`).
    pub outbound_ports_include: Vec<u16>,
    /// Outbound ports never captured (`-o`).
    pub outbound_ports_exclude: Vec<u16>,
    /// Interfaces whose inbound traffic is treated as outbound (`-k`).
    pub kube_virt_interfaces: Vec<String>,
    /// Interfaces never captured (`-c`).
    pub exclude_interfaces: Vec<String>,
    /// Groups whose outbound traffic is captured.
    pub owner_groups: OwnerGroups,
    /// The application's IPv4 loopback range.
    pub host_ipv4_loopback_cidr: Ipv4Net,
    /// Capture DNS to the agent's port 15053.
    pub redirect_dns: bool,
    /// Capture all port-53 traffic rather than that to `dns_servers_*`.
    pub capture_all_dns: bool,
    /// IPv4 DNS servers, as written.
    pub dns_servers_v4: Vec<String>,
    /// IPv6 DNS servers, as written.
    pub dns_servers_v6: Vec<String>,
    /// Drop conntrack-INVALID packets.
    pub drop_invalid: bool,
    /// Write ip6tables rules too.
    pub enable_ipv6: bool,
    /// Print, do not apply.
    pub dry_run: bool,
    /// Remove the rules instead of adding them.
    pub cleanup: bool,
    /// Replace differing ISTIO_* rules already in place.
    pub reconcile: bool,
    /// Apply even if ISTIO_* rules are already in place.
    pub force_apply: bool,
}

impl Default for Settings {
    /// Istio's defaults: the settings of `mesh-proxy init` with no flags, no environment and
    /// no `istio-proxy` user.
    fn default() -> Self {
        Settings {
            proxy_port: DEFAULT_PROXY_PORT,
            inbound_capture_port: DEFAULT_INBOUND_CAPTURE_PORT,
            inbound_tunnel_port: DEFAULT_INBOUND_TUNNEL_PORT,
            proxy_uids: vec![DEFAULT_PROXY_UID],
            proxy_gids: vec![DEFAULT_PROXY_UID],
            mode: InterceptionMode::Redirect,
            tproxy_mark: DEFAULT_TPROXY_MARK,
            tproxy_route_table: DEFAULT_TPROXY_ROUTE_TABLE,
            inbound_ports: InboundPorts::Only(Vec::new()),
            outbound_include: IpRanges::default(),
            outbound_exclude: IpRanges::default(),
            outbound_ports_include: Vec::new(),
            outbound_ports_exclude: Vec::new(),
            kube_virt_interfaces: Vec::new(),
            exclude_interfaces: Vec::new(),
            owner_groups: OwnerGroups::AllExcept(Vec::new()),
            host_ipv4_loopback_cidr: Ipv4Net::new(Ipv4Addr::LOCALHOST, 32)
                .unwrap_or_else(|_| Ipv4Net::default()),
            redirect_dns: false,
            capture_all_dns: false,
            dns_servers_v4: Vec::new(),
            dns_servers_v6: Vec::new(),
            drop_invalid: false,
            enable_ipv6: false,
            dry_run: false,
            cleanup: false,
            reconcile: false,
            force_apply: false,
        }
    }
}

impl Settings {
    /// Whether inbound traffic is captured at all (a non-empty `-b`).
    pub fn captures_inbound(&self) -> bool {
        match &self.inbound_ports {
            InboundPorts::All { .. } => true,
            InboundPorts::Only(ports) => !ports.is_empty(),
        }
    }

    /// Whether DNS capture is in effect: `--redirect-dns` with either `--capture-all-dns` or
    /// at least one DNS server (Istio turns it off otherwise, with a warning).
    pub fn dns_capture_active(&self) -> bool {
        self.redirect_dns
            && (self.capture_all_dns
                || !self.dns_servers_v4.is_empty()
                || !self.dns_servers_v6.is_empty())
    }
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
