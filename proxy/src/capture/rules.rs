//! The capture rules for given settings: which rule goes into which table and chain, per IP
//! version, in the order Istio's `istio-iptables` adds them.

use super::model::{
    Family, Position, Rule, RuleSet, Table, DNS_CAPTURE_PORT, ISTIO_DIVERT, ISTIO_DROP,
    ISTIO_INBOUND, ISTIO_IN_REDIRECT, ISTIO_OUTPUT, ISTIO_OUTPUT_DNS, ISTIO_REDIRECT, ISTIO_TPROXY,
    OUTBOUND_MARK,
};
use super::settings::{InboundPorts, InterceptionMode, IpRanges, OwnerGroups, Settings};

/// Collects rules for both versions, as Istio's rule builder does. Rules are written as
/// iptables argument text (values never contain whitespace: `config` validates them).
struct Builder {
    set: RuleSet,
}

impl Builder {
    fn push(&mut self, family: Family, table: Table, chain: &str, position: Position, args: &str) {
        if family == Family::V6 && !self.set.ipv6 {
            return;
        }
        let spec = args.split_whitespace().map(str::to_owned).collect();
        let rule = Rule {
            table,
            chain: chain.to_owned(),
            position,
            spec,
        };
        match family {
            Family::V4 => self.set.v4.push(rule),
            Family::V6 => self.set.v6.push(rule),
        }
    }

    /// `-A` in one family.
    fn append_to(&mut self, family: Family, table: Table, chain: &str, args: &str) {
        self.push(family, table, chain, Position::Append, args);
    }

    /// `-A` in both families.
    fn append(&mut self, table: Table, chain: &str, args: &str) {
        self.append_to(Family::V4, table, chain, args);
        self.append_to(Family::V6, table, chain, args);
    }

    /// `-I CHAIN at` in one family.
    fn insert_to(&mut self, family: Family, table: Table, chain: &str, at: u32, args: &str) {
        self.push(family, table, chain, Position::Insert(at), args);
    }

    /// `-I CHAIN at` in both families.
    fn insert(&mut self, table: Table, chain: &str, at: u32, args: &str) {
        self.insert_to(Family::V4, table, chain, at, args);
        self.insert_to(Family::V6, table, chain, at, args);
    }

    /// `-A` in both families, with the family's address filled in by `args`.
    fn append_versioned(
        &mut self,
        (v4, v6): (&str, &str),
        table: Table,
        chain: &str,
        args: impl Fn(&str) -> String,
    ) {
        self.append_to(Family::V4, table, chain, &args(v4));
        self.append_to(Family::V6, table, chain, &args(v6));
    }
}

/// IPv6 loopback, the IPv6 counterpart of `--host-ipv4-loopback-cidr`.
const V6_LOOPBACK: &str = "::1/128";
/// Source address the proxy binds for inbound delivery (IPv4).
const INBOUND_SOURCE_V4: &str = "127.0.0.6/32";
/// Source address the proxy binds for inbound delivery (IPv6, added to lo).
const INBOUND_SOURCE_V6: &str = "::6/128";

/// The `(--uid-owner, uid)` and `(--gid-owner, gid)` pairs of the proxy, UIDs first.
fn proxy_owners(s: &Settings) -> Vec<(&'static str, u32)> {
    let uids = s.proxy_uids.iter().map(|u| ("--uid-owner", *u));
    uids.chain(s.proxy_gids.iter().map(|g| ("--gid-owner", *g)))
        .collect()
}

/// Builds the rules for `settings`, rule for rule and in the order Istio's `istio-iptables`
/// adds them, so that the rendered output is the same as Istio's.
pub fn build(settings: &Settings) -> RuleSet {
    let s = settings;
    let mut b = Builder {
        set: RuleSet {
            ipv6: s.enable_ipv6,
            ..RuleSet::default()
        },
    };
    let tproxy = s.mode == InterceptionMode::Tproxy;
    let loopback = s.host_ipv4_loopback_cidr.to_string();
    let lo = (loopback.as_str(), V6_LOOPBACK);
    let tunnel = s.inbound_tunnel_port;
    let redirect_dns = s.dns_capture_active();

    // Interfaces that are never captured, then virtual interfaces kept out of inbound capture.
    for iface in &s.exclude_interfaces {
        b.append(Table::Nat, "PREROUTING", &format!("-i {iface} -j RETURN"));
        b.append(Table::Nat, "OUTPUT", &format!("-o {iface} -j RETURN"));
    }
    if tproxy {
        for iface in &s.exclude_interfaces {
            b.append(
                Table::Mangle,
                "PREROUTING",
                &format!("-i {iface} -j RETURN"),
            );
            b.append(Table::Mangle, "OUTPUT", &format!("-o {iface} -j RETURN"));
        }
    }
    for iface in &s.kube_virt_interfaces {
        b.insert(
            Table::Nat,
            "PREROUTING",
            1,
            &format!("-i {iface} -j RETURN"),
        );
    }
    if s.drop_invalid {
        let invalid = format!("-m conntrack --ctstate INVALID -j {ISTIO_DROP}");
        b.append(Table::Mangle, "PREROUTING", &invalid);
        b.append(Table::Mangle, ISTIO_DROP, "-j DROP");
    }

    b.append(
        Table::Nat,
        ISTIO_INBOUND,
        &format!("-p tcp --dport {tunnel} -j RETURN"),
    );
    let redirect = format!("-p tcp -j REDIRECT --to-ports {}", s.proxy_port);
    b.append(Table::Nat, ISTIO_REDIRECT, &redirect);
    let in_redirect = format!("-p tcp -j REDIRECT --to-ports {}", s.inbound_capture_port);
    b.append(Table::Nat, ISTIO_IN_REDIRECT, &in_redirect);

    inbound(&mut b, s, lo);

    b.append(Table::Nat, "OUTPUT", &format!("-j {ISTIO_OUTPUT}"));
    for port in &s.outbound_ports_exclude {
        b.append(
            Table::Nat,
            ISTIO_OUTPUT,
            &format!("-p tcp --dport {port} -j RETURN"),
        );
        b.append(
            Table::Nat,
            ISTIO_OUTPUT,
            &format!("-p udp --dport {port} -j RETURN"),
        );
    }
    b.append_versioned(
        (INBOUND_SOURCE_V4, INBOUND_SOURCE_V6),
        Table::Nat,
        ISTIO_OUTPUT,
        |a| format!("-o lo -s {a} -j RETURN"),
    );

    let loopback_captured =
        s.outbound_include.has_v4_loopback() || s.outbound_include.has_v6_loopback();
    for (owner, id) in proxy_owners(s) {
        // The proxy calling its own pod through a service address goes back through inbound.
        let ports = if redirect_dns && owner == "--uid-owner" {
            format!("-m multiport ! --dports 53,{tunnel}")
        } else {
            format!("! --dport {tunnel}")
        };
        b.append_versioned(lo, Table::Nat, ISTIO_OUTPUT, |a| {
            format!("-o lo ! -d {a} -p tcp {ports} -m owner {owner} {id} -j {ISTIO_IN_REDIRECT}")
        });
        // The app calling itself over loopback is left alone (unless loopback is captured).
        if !loopback_captured {
            let not_dns = if redirect_dns {
                "-p tcp ! --dport 53 "
            } else {
                ""
            };
            let app_lo = format!("-o lo {not_dns}-m owner ! {owner} {id} -j RETURN");
            b.append(Table::Nat, ISTIO_OUTPUT, &app_lo);
        }
        // The proxy's own traffic is never captured.
        b.append(
            Table::Nat,
            ISTIO_OUTPUT,
            &format!("-m owner {owner} {id} -j RETURN"),
        );
    }

    match &s.owner_groups {
        OwnerGroups::AllExcept(groups) => {
            for group in groups {
                let skip = format!("-m owner --gid-owner {group} -j RETURN");
                b.append(Table::Nat, ISTIO_OUTPUT, &skip);
            }
        }
        OwnerGroups::Only(groups) => {
            let none_of: String = groups
                .iter()
                .map(|g| format!("-m owner ! --gid-owner {g} "))
                .collect();
            b.append(Table::Nat, ISTIO_OUTPUT, &format!("{none_of}-j RETURN"));
        }
    }

    if redirect_dns {
        dns(&mut b, s);
    }

    b.append_versioned(lo, Table::Nat, ISTIO_OUTPUT, |a| {
        format!("-d {a} -j RETURN")
    });
    for net in &s.outbound_exclude.v4 {
        b.append_to(
            Family::V4,
            Table::Nat,
            ISTIO_OUTPUT,
            &format!("-d {net} -j RETURN"),
        );
    }
    for net in &s.outbound_exclude.v6 {
        b.append_to(
            Family::V6,
            Table::Nat,
            ISTIO_OUTPUT,
            &format!("-d {net} -j RETURN"),
        );
    }
    for port in &s.outbound_ports_include {
        let include = format!("-p tcp --dport {port} -j {ISTIO_REDIRECT}");
        b.append(Table::Nat, ISTIO_OUTPUT, &include);
    }
    let v4: Vec<String> = s
        .outbound_include
        .v4
        .iter()
        .map(ToString::to_string)
        .collect();
    let v6: Vec<String> = s
        .outbound_include
        .v6
        .iter()
        .map(ToString::to_string)
        .collect();
    outbound_include(&mut b, s, Family::V4, &s.outbound_include, &v4);
    outbound_include(&mut b, s, Family::V6, &s.outbound_include, &v6);

    if tproxy {
        tproxy_marks(&mut b, s, lo);
    }
    b.set
}

/// Inbound capture: PREROUTING to ISTIO_INBOUND, per port or for all ports (`-b`, `-d`).
fn inbound(b: &mut Builder, s: &Settings, lo: (&str, &str)) {
    if !s.captures_inbound() {
        return;
    }
    let tproxy = s.mode == InterceptionMode::Tproxy;
    let mark = s.tproxy_mark;
    let table = if tproxy {
        b.append(
            Table::Mangle,
            ISTIO_DIVERT,
            &format!("-j MARK --set-mark {mark}"),
        );
        b.append(Table::Mangle, ISTIO_DIVERT, "-j ACCEPT");
        let port = s.inbound_capture_port;
        b.append_versioned(lo, Table::Mangle, ISTIO_TPROXY, |a| {
            format!("! -d {a} -p tcp -j TPROXY --tproxy-mark {mark}/0xffffffff --on-port {port}")
        });
        Table::Mangle
    } else {
        Table::Nat
    };
    b.append(table, "PREROUTING", &format!("-p tcp -j {ISTIO_INBOUND}"));
    let established = format!("-m conntrack --ctstate RELATED,ESTABLISHED -j {ISTIO_DIVERT}");
    match &s.inbound_ports {
        InboundPorts::All { exclude } => {
            for port in exclude {
                b.append(
                    table,
                    ISTIO_INBOUND,
                    &format!("-p tcp --dport {port} -j RETURN"),
                );
            }
            if tproxy {
                b.append(
                    Table::Mangle,
                    ISTIO_INBOUND,
                    &format!("-p tcp {established}"),
                );
                b.append(
                    Table::Mangle,
                    ISTIO_INBOUND,
                    &format!("-p tcp -j {ISTIO_TPROXY}"),
                );
            } else {
                b.append(
                    Table::Nat,
                    ISTIO_INBOUND,
                    &format!("-p tcp -j {ISTIO_IN_REDIRECT}"),
                );
            }
        }
        InboundPorts::Only(ports) => {
            for port in ports {
                let by_port = format!("-p tcp --dport {port}");
                if tproxy {
                    b.append(
                        Table::Mangle,
                        ISTIO_INBOUND,
                        &format!("{by_port} {established}"),
                    );
                    let to_tproxy = format!("{by_port} -j {ISTIO_TPROXY}");
                    b.append(Table::Mangle, ISTIO_INBOUND, &to_tproxy);
                } else {
                    let redirect = format!("{by_port} -j {ISTIO_IN_REDIRECT}");
                    b.append(Table::Nat, ISTIO_INBOUND, &redirect);
                }
            }
        }
    }
}

/// Outbound capture by destination (`-i`) for one IP version, and virtual interfaces' traffic
/// rerouted as outbound (`-k`).
fn outbound_include(b: &mut Builder, s: &Settings, family: Family, r: &IpRanges, nets: &[String]) {
    if r.wildcard {
        b.append_to(
            family,
            Table::Nat,
            ISTIO_OUTPUT,
            &format!("-j {ISTIO_REDIRECT}"),
        );
        for iface in &s.kube_virt_interfaces {
            let reroute = format!("-i {iface} -j {ISTIO_REDIRECT}");
            b.insert_to(family, Table::Nat, "PREROUTING", 1, &reroute);
        }
        return;
    }
    for net in nets {
        for iface in &s.kube_virt_interfaces {
            let reroute = format!("-i {iface} -d {net} -j {ISTIO_REDIRECT}");
            b.insert_to(family, Table::Nat, "PREROUTING", 1, &reroute);
        }
        let include = format!("-d {net} -j {ISTIO_REDIRECT}");
        b.append_to(family, Table::Nat, ISTIO_OUTPUT, &include);
    }
}

/// DNS capture (`--redirect-dns`): redirect to the agent's 15053 and split conntrack zones.
fn dns(b: &mut Builder, s: &Settings) {
    b.append(Table::Raw, "OUTPUT", &format!("-j {ISTIO_OUTPUT_DNS}"));
    let all = s.capture_all_dns;
    let servers = |family: Family| -> Vec<String> {
        match family {
            Family::V4 => s
                .dns_servers_v4
                .iter()
                .map(|ip| format!("{ip}/32"))
                .collect(),
            Family::V6 => s
                .dns_servers_v6
                .iter()
                .map(|ip| format!("{ip}/128"))
                .collect(),
        }
    };
    for family in [Family::V4, Family::V6] {
        if all || !servers(family).is_empty() {
            b.append_to(
                family,
                Table::Nat,
                ISTIO_OUTPUT,
                &format!("-j {ISTIO_OUTPUT_DNS}"),
            );
        }
    }
    // Istio writes `--to-ports` for TCP and `--to-port` for UDP; both are accepted.
    for (proto, to_ports) in [("tcp", "--to-ports"), ("udp", "--to-port")] {
        let redirect = |dest: &str| {
            format!("-p {proto} --dport 53 {dest}-j REDIRECT {to_ports} {DNS_CAPTURE_PORT}")
        };
        if all {
            b.append(Table::Nat, ISTIO_OUTPUT_DNS, &redirect(""));
            continue;
        }
        for family in [Family::V4, Family::V6] {
            for server in servers(family) {
                let rule = redirect(&format!("-d {server} "));
                b.append_to(family, Table::Nat, ISTIO_OUTPUT_DNS, &rule);
            }
        }
    }

    // Conntrack zones: agent <-> upstream resolvers in zone 1, app <-> agent in zone 2.
    for (owner, id) in proxy_owners(s) {
        let upstream = format!("-p udp --dport 53 -m owner {owner} {id} -j CT --zone 1");
        b.append(Table::Raw, ISTIO_OUTPUT_DNS, &upstream);
        let reply =
            format!("-p udp --sport {DNS_CAPTURE_PORT} -m owner {owner} {id} -j CT --zone 2");
        b.append(Table::Raw, ISTIO_OUTPUT_DNS, &reply);
    }
    if all {
        b.append(Table::Raw, "PREROUTING", &format!("-j {ISTIO_INBOUND}"));
        b.append(
            Table::Raw,
            ISTIO_OUTPUT_DNS,
            "-p udp --dport 53 -j CT --zone 2",
        );
        b.append(
            Table::Raw,
            ISTIO_INBOUND,
            "-p udp --sport 53 -j CT --zone 1",
        );
        return;
    }
    for family in [Family::V4, Family::V6] {
        let servers = servers(family);
        if !servers.is_empty() {
            b.append_to(
                family,
                Table::Raw,
                "PREROUTING",
                &format!("-j {ISTIO_INBOUND}"),
            );
        }
        for server in &servers {
            let client = format!("-p udp --dport 53 -d {server} -j CT --zone 2");
            b.append_to(family, Table::Raw, ISTIO_OUTPUT_DNS, &client);
            let response = format!("-p udp --sport 53 -s {server} -j CT --zone 1");
            b.append_to(family, Table::Raw, ISTIO_INBOUND, &response);
        }
    }
}

/// TPROXY mode's connection marks, so replies and the proxy's own inbound delivery are
/// routed correctly and not captured again.
fn tproxy_marks(b: &mut Builder, s: &Settings, lo: (&str, &str)) {
    let mark = s.tproxy_mark;
    let save = format!("-p tcp -m mark --mark {mark} -j CONNMARK --save-mark");
    b.append(Table::Mangle, "PREROUTING", &save);
    let marked = format!("-p tcp -o lo -m mark --mark {mark} -j RETURN");
    b.append(Table::Mangle, "OUTPUT", &marked);
    for (owner, id) in proxy_owners(s) {
        b.append_versioned(lo, Table::Mangle, "OUTPUT", |a| {
            format!(
                "! -d {a} -p tcp -o lo -m owner {owner} {id} -j MARK --set-mark {OUTBOUND_MARK}"
            )
        });
    }
    let restore = format!("-p tcp -m connmark --mark {mark} -j CONNMARK --restore-mark");
    b.append(Table::Mangle, "OUTPUT", &restore);
    let own_mark = format!("-p tcp -m mark --mark {mark} -j RETURN");
    b.insert(Table::Mangle, ISTIO_INBOUND, 1, &own_mark);
    for (family, src) in [
        (Family::V4, INBOUND_SOURCE_V4),
        (Family::V6, INBOUND_SOURCE_V6),
    ] {
        let from_proxy = format!("-p tcp -s {src} -i lo -j RETURN");
        b.insert_to(family, Table::Mangle, ISTIO_INBOUND, 2, &from_proxy);
    }
    let app_to_app = format!("-p tcp -i lo -m mark ! --mark {OUTBOUND_MARK} -j RETURN");
    b.insert(Table::Mangle, ISTIO_INBOUND, 3, &app_to_app);
}
