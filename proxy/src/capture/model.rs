//! The rule model: tables, chains and rules per IP version, and the chain names Istio uses.

use std::fmt;

/// Chain jumped to from nat OUTPUT: decides what outbound traffic is captured.
pub const ISTIO_OUTPUT: &str = "ISTIO_OUTPUT";
/// DNS capture chain (nat and raw).
pub const ISTIO_OUTPUT_DNS: &str = "ISTIO_OUTPUT_DNS";
/// Chain jumped to from PREROUTING: decides what inbound traffic is captured.
pub const ISTIO_INBOUND: &str = "ISTIO_INBOUND";
/// TPROXY mode: marks packets of established inbound connections.
pub const ISTIO_DIVERT: &str = "ISTIO_DIVERT";
/// TPROXY mode: hands new inbound connections to the inbound capture port.
pub const ISTIO_TPROXY: &str = "ISTIO_TPROXY";
/// Redirects outbound TCP to the outbound capture port.
pub const ISTIO_REDIRECT: &str = "ISTIO_REDIRECT";
/// Redirects inbound TCP to the inbound capture port.
pub const ISTIO_IN_REDIRECT: &str = "ISTIO_IN_REDIRECT";
/// `--drop-invalid`: drops conntrack-INVALID packets.
pub const ISTIO_DROP: &str = "ISTIO_DROP";
/// Mark TPROXY mode puts on the proxy's outbound packets to its own pod.
pub const OUTBOUND_MARK: &str = "1338";
/// Port of the agent's DNS proxy, where captured DNS goes.
pub const DNS_CAPTURE_PORT: &str = "15053";

/// Names that are built-in chains or targets, never created with `-N`.
const BUILT_IN: [&str; 8] = [
    "INPUT",
    "OUTPUT",
    "FORWARD",
    "PREROUTING",
    "POSTROUTING",
    "ACCEPT",
    "RETURN",
    "DROP",
];

/// Whether `name` is a built-in chain or target (never declared, never deleted).
pub fn is_built_in(name: &str) -> bool {
    BUILT_IN.contains(&name)
}

/// IP version of a rule set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// iptables.
    V4,
    /// ip6tables.
    V6,
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// An iptables table. Ordered by name, the order `iptables-restore` input lists them in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// `filter` (unused by the capture rules, listed for completeness).
    Filter,
    /// `mangle` (TPROXY, `--drop-invalid`).
    Mangle,
    /// `nat` (REDIRECT).
    Nat,
    /// `raw` (DNS conntrack zones).
    Raw,
}

impl Table {
    /// The table's iptables name.
    pub fn name(self) -> &'static str {
        match self {
            Table::Filter => "filter",
            Table::Mangle => "mangle",
            Table::Nat => "nat",
            Table::Raw => "raw",
        }
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a rule is added to its chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// `-A`: at the end.
    Append,
    /// `-I CHAIN N`: at 1-based position N.
    Insert(u32),
}

/// One rule: where it goes and its match/target arguments (without `-A CHAIN`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Table.
    pub table: Table,
    /// Chain (built-in or ISTIO_*).
    pub chain: String,
    /// Append or insert.
    pub position: Position,
    /// Arguments, one token each, e.g. `["-p", "tcp", "-j", "ISTIO_INBOUND"]`.
    pub spec: Vec<String>,
}

impl Rule {
    /// The chain this rule jumps to with a trailing `-j CHAIN`, if any (Istio's test for
    /// chains that must exist even without rules).
    pub fn jump_target(&self) -> Option<&str> {
        match self.spec.as_slice() {
            [.., j, target] if j == "-j" => Some(target),
            _ => None,
        }
    }

    /// The rule as an `iptables-restore` line: `-A CHAIN spec` or `-I CHAIN N spec`.
    pub fn restore_line(&self) -> String {
        let head = match self.position {
            Position::Append => format!("-A {}", self.chain),
            Position::Insert(n) => format!("-I {} {n}", self.chain),
        };
        std::iter::once(head)
            .chain(self.spec.iter().cloned())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The rules of both IP versions, each in the order they are added.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleSet {
    /// iptables rules.
    pub v4: Vec<Rule>,
    /// ip6tables rules; empty unless IPv6 is enabled.
    pub v6: Vec<Rule>,
    /// Whether IPv6 rules are written at all.
    pub ipv6: bool,
}

impl RuleSet {
    /// The rules of `family`.
    pub fn family(&self, family: Family) -> &[Rule] {
        match family {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }

    /// The families written: IPv4, and IPv6 when enabled.
    pub fn families(&self) -> Vec<Family> {
        if self.ipv6 {
            vec![Family::V4, Family::V6]
        } else {
            vec![Family::V4]
        }
    }
}
