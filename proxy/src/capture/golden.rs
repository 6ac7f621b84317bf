//! Test support: reading Istio's `istio-iptables` golden files (and our own dry-run output)
//! into rule sets, and comparing them.
//!
//! Two rule sets are equivalent when, per IP version and table, they declare the same chains
//! and every chain receives the same operations (`-A`, or `-I` with its position) with the
//! same arguments in the same order. Only whitespace, quoting, the `* nat`/`*nat` header
//! spelling and the interleaving of different chains' lines (and of `-N` declarations) are
//! normalised away.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Where Istio's golden files live below a conformance checkout's `istio/` directory.
const TESTDATA: &str = "tools/istio-iptables/pkg/capture/testdata";

/// The golden directory: `$MESH_CONFORMANCE_DIR` (the `istio/` directory or its parent),
/// else `../shared/conformance/istio/` beside the workspace. `None` when absent.
pub fn golden_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("MESH_CONFORMANCE_DIR") {
        let dir = PathBuf::from(dir);
        return [dir.join(TESTDATA), dir.join("istio").join(TESTDATA)]
            .into_iter()
            .find(|p| p.is_dir());
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = workspace.join("../shared/conformance/istio").join(TESTDATA);
    dir.is_dir().then_some(dir)
}

/// One table of one IP version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableRules {
    /// Chains declared with `-N`.
    pub declared: BTreeSet<String>,
    /// Per chain, its operations in order: `["-A", args..]` or `["-I", "N", args..]`.
    pub chains: BTreeMap<String, Vec<Vec<String>>>,
}

/// The tables of one IP version, in the order they appear.
pub type FamilyRules = Vec<(String, TableRules)>;

/// A parsed golden file or dry-run output.
#[derive(Debug, Clone, Default)]
pub struct Parsed {
    /// IPv4 first, then IPv6 if present.
    pub families: Vec<FamilyRules>,
    /// Whether a bare `ip6tables-save` marker follows the last `COMMIT` (Istio's golden
    /// files record the final state dump of each IP version written).
    pub trailing_ip6tables_save: bool,
}

fn tokens(line: &str) -> Vec<String> {
    line.split_whitespace()
        .map(|t| {
            let t = t
                .strip_prefix('"')
                .and_then(|t| t.strip_suffix('"'))
                .unwrap_or(t);
            let t = t
                .strip_prefix('\'')
                .and_then(|t| t.strip_suffix('\''))
                .unwrap_or(t);
            t.to_owned()
        })
        .collect()
}

/// Parses iptables-restore text: `*table` ... `COMMIT` blocks, `#` comments, and the bare
/// `iptables-save`/`ip6tables-save` markers of Istio's golden files. A new IP version starts
/// where a table name does not sort after the previous one (each version lists its tables
/// sorted). Panics on lines it does not understand, so that nothing is silently ignored.
pub fn parse(text: &str) -> Parsed {
    let mut parsed = Parsed::default();
    let mut current: Option<(String, TableRules)> = None;
    let mut last_table: Option<String> = None;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line == "iptables-save" || line == "ip6tables-save" {
            assert!(current.is_none(), "marker {line:?} inside a table");
            parsed.trailing_ip6tables_save = line == "ip6tables-save";
            continue;
        }
        if let Some(name) = line.strip_prefix('*') {
            assert!(current.is_none(), "table {name:?} opened before COMMIT");
            let name = name.trim().to_owned();
            if last_table.as_ref().is_none_or(|last| name <= *last) {
                parsed.families.push(Vec::new());
            }
            last_table = Some(name.clone());
            current = Some((name, TableRules::default()));
            parsed.trailing_ip6tables_save = false;
            continue;
        }
        let (_, table) = current
            .as_mut()
            .unwrap_or_else(|| panic!("{line:?} outside a table"));
        if line == "COMMIT" {
            let done = current.take().unwrap_or_default();
            if let Some(family) = parsed.families.last_mut() {
                family.push(done);
            }
            continue;
        }
        let t = tokens(line);
        match t.first().map(String::as_str) {
            Some("-N") if t.len() == 2 => {
                table.declared.insert(t[1].clone());
            }
            Some("-A") if t.len() >= 2 => {
                let op = std::iter::once("-A".to_owned())
                    .chain(t[2..].iter().cloned())
                    .collect();
                table.chains.entry(t[1].clone()).or_default().push(op);
            }
            Some("-I") if t.len() >= 2 => {
                let (pos, rest) = match t.get(2).filter(|p| p.parse::<u32>().is_ok()) {
                    Some(p) => (p.clone(), &t[3..]),
                    None => ("1".to_owned(), &t[2..]),
                };
                let op = ["-I".to_owned(), pos]
                    .into_iter()
                    .chain(rest.iter().cloned())
                    .collect();
                table.chains.entry(t[1].clone()).or_default().push(op);
            }
            _ => panic!("unexpected line {line:?}"),
        }
    }
    assert!(current.is_none(), "table not committed");
    parsed
}

/// The differences between an expected and an actual rule set of one IP version, as
/// readable lines; empty when they are equivalent.
pub fn diff(expected: &FamilyRules, actual: &FamilyRules) -> Vec<String> {
    let mut out = Vec::new();
    let names = |f: &FamilyRules| f.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    if names(expected) != names(actual) {
        out.push(format!(
            "tables: expected {:?}, got {:?}",
            names(expected),
            names(actual)
        ));
    }
    for (name, want) in expected {
        let Some((_, got)) = actual.iter().find(|(n, _)| n == name) else {
            continue;
        };
        if want.declared != got.declared {
            out.push(format!(
                "{name}: declared chains: expected {:?}, got {:?}",
                want.declared, got.declared
            ));
        }
        let chains: BTreeSet<&String> = want.chains.keys().chain(got.chains.keys()).collect();
        for chain in chains {
            let w = want.chains.get(chain).cloned().unwrap_or_default();
            let g = got.chains.get(chain).cloned().unwrap_or_default();
            if w != g {
                let show = |ops: &[Vec<String>]| {
                    ops.iter()
                        .map(|o| format!("    {}", o.join(" ")))
                        .collect::<Vec<_>>()
                        .join("\n")
                };
                out.push(format!(
                    "{name}/{chain}:\n  expected:\n{}\n  got:\n{}",
                    show(&w),
                    show(&g)
                ));
            }
        }
    }
    out
}
