//! Reading `iptables-save` output: which chains and rules each table holds.

use std::collections::BTreeMap;

/// One table of `iptables-save` output.
#[derive(Debug, Clone, Default)]
pub(super) struct SavedTable {
    /// Declared chains (`:NAME POLICY [..]`), built-in ones included.
    pub(super) chains: Vec<String>,
    /// Rules as `(chain, tokens after "-A CHAIN")`.
    pub(super) rules: Vec<(String, Vec<String>)>,
}

/// Parsed `iptables-save` output.
#[derive(Debug, Clone, Default)]
pub(super) struct Saved {
    pub(super) tables: BTreeMap<String, SavedTable>,
}

impl Saved {
    pub(super) fn parse(text: &str) -> Saved {
        let mut saved = Saved::default();
        let mut current: Option<String> = None;
        for line in text.lines().map(str::trim) {
            if let Some(name) = line.strip_prefix('*') {
                let name = name.trim().to_owned();
                saved.tables.entry(name.clone()).or_default();
                current = Some(name);
                continue;
            }
            let Some(table) = current.as_ref().and_then(|t| saved.tables.get_mut(t)) else {
                continue;
            };
            if let Some(decl) = line.strip_prefix(':') {
                if let Some(chain) = decl.split_whitespace().next() {
                    table.chains.push(chain.to_owned());
                }
            } else if let Some(rest) = line.strip_prefix("-A ") {
                let mut tokens = tokenize(rest);
                if !tokens.is_empty() {
                    let chain = tokens.remove(0);
                    table.rules.push((chain, tokens));
                }
            }
        }
        saved
    }

    /// `(table, chain)` of every ISTIO_* chain present.
    pub(super) fn istio_chains(&self) -> Vec<(String, String)> {
        self.tables
            .iter()
            .flat_map(|(t, table)| {
                table
                    .chains
                    .iter()
                    .filter(|c| c.starts_with("ISTIO_"))
                    .map(|c| (t.clone(), c.clone()))
            })
            .collect()
    }

    pub(super) fn rule_count(&self) -> usize {
        self.tables.values().map(|t| t.rules.len()).sum()
    }

    pub(super) fn chain_len(&self, table: &str, chain: &str) -> usize {
        self.tables
            .get(table)
            .map_or(0, |t| t.rules.iter().filter(|(c, _)| c == chain).count())
    }
}

/// Splits an iptables-save rule into tokens, keeping double-quoted strings whole.
fn tokenize(line: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut current = String::new();
    let (mut quoted, mut started) = (false, false);
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                started = true;
            }
            c if c.is_whitespace() && !quoted => {
                if started {
                    tokens.push(std::mem::take(&mut current));
                    started = false;
                }
            }
            c => {
                current.push(c);
                started = true;
            }
        }
    }
    if started {
        tokens.push(current);
    }
    tokens
}
