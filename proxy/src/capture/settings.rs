//! The validated settings of `mesh-proxy init` ([`Settings`]) and Istio's defaults for them;
//! [`super::config::resolve`] produces them from flags, environment and defaults.

use std::net::Ipv4Addr;

use ipnet::{Ipv4Net, Ipv6Net};

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
