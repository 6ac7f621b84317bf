//! What `mesh-proxy init` reads from the machine besides its flags: environment variables,
//! DNS servers, the proxy user's UID and the pod's addresses.

use std::net::IpAddr;

/// What `init` needs from the machine besides its flags; tests substitute a fixed one.
pub trait Environment {
    /// The environment variable `name`, if set and valid UTF-8.
    fn var(&self, name: &str) -> Option<String>;
    /// The `nameserver` entries of /etc/resolv.conf, as written.
    fn nameservers(&self) -> Result<Vec<String>, std::io::Error>;
    /// The UID of the local user `name`, if it exists.
    fn user_uid(&self, name: &str) -> Option<u32>;
    /// Istio's IPv6 detection: the first non-loopback, non-link-local address is IPv6 (with
    /// `dual_stack`: any such address is). False when there is no such address.
    fn pod_uses_ipv6(&self, dual_stack: bool) -> bool;
}

/// The real machine: process environment, /etc/resolv.conf, /etc/passwd, interface addresses.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemEnvironment;

/// Where DNS servers are read from.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";

impl Environment for SystemEnvironment {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn nameservers(&self) -> Result<Vec<String>, std::io::Error> {
        let text = std::fs::read_to_string(RESOLV_CONF)?;
        Ok(parse_nameservers(&text))
    }

    fn user_uid(&self, name: &str) -> Option<u32> {
        let text = std::fs::read_to_string("/etc/passwd").ok()?;
        text.lines().find_map(|line| {
            let mut fields = line.split(':');
            if fields.next()? != name {
                return None;
            }
            fields.nth(1)?.parse().ok()
        })
    }

    fn pod_uses_ipv6(&self, dual_stack: bool) -> bool {
        let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
            return false;
        };
        let mut ips = addrs.filter_map(|ifa| {
            let addr = ifa.address?;
            if let Some(v4) = addr.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                addr.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        });
        if dual_stack {
            ips.any(|ip| is_pod_address(&ip) && ip.is_ipv6())
        } else {
            ips.find(is_pod_address).is_some_and(|ip| ip.is_ipv6())
        }
    }
}

/// An address Istio's detection considers: not loopback, not link-local.
fn is_pod_address(ip: &IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(*ip),
        IpAddr::V4(_) => *ip,
    };
    match ip {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_link_local(),
        IpAddr::V6(v6) => !v6.is_loopback() && !v6.is_unicast_link_local() && !v6.is_multicast(),
    }
}

/// The `nameserver` entries of a resolv.conf text.
pub fn parse_nameservers(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == "nameserver").then(|| words.next().map(str::to_owned))?
        })
        .collect()
}
