//! Text forms of the rules: `iptables-restore` input (iptables-save form) and the `iptables`
//! commands that remove them.

use std::collections::{BTreeMap, HashSet};

use super::model::{is_built_in, Family, Rule, RuleSet, Table};

/// The chains `rules` need created, per table, in Istio's order: chains in order of their
/// first rule, then chains only jumped to. Built-in chains are never listed.
pub fn declared_chains(rules: &[Rule]) -> BTreeMap<Table, Vec<String>> {
    let mut seen: HashSet<(Table, &str)> = HashSet::new();
    let mut out: BTreeMap<Table, Vec<String>> = BTreeMap::new();
    let owned = rules.iter().map(|r| (r.table, r.chain.as_str()));
    let jumped = rules
        .iter()
        .filter_map(|r| r.jump_target().map(|t| (r.table, t)));
    for (table, chain) in owned.chain(jumped) {
        if seen.insert((table, chain)) && !is_built_in(chain) {
            out.entry(table).or_default().push(chain.to_owned());
        }
    }
    out
}

/// The `iptables-restore --noflush` input for `rules`: per table (by name), the `-N` lines of
/// its new chains, then its rules in order, then `COMMIT`. Tables without lines are left out.
pub fn restore_input(rules: &[Rule]) -> String {
    let mut tables: BTreeMap<Table, Vec<String>> = BTreeMap::new();
    for (table, chains) in declared_chains(rules) {
        tables
            .entry(table)
            .or_default()
            .extend(chains.into_iter().map(|c| format!("-N {c}")));
    }
    for rule in rules {
        tables
            .entry(rule.table)
            .or_default()
            .push(rule.restore_line());
    }
    let mut out = String::new();
    for (table, lines) in tables.into_iter().filter(|(_, lines)| !lines.is_empty()) {
        out.push_str(&format!("*{table}\n"));
        for line in lines {
            out.push_str(&line);
            out.push('\n');
        }
        out.push_str("COMMIT\n");
    }
    out
}

/// The name of the restore tool for `family`, for headers and messages.
pub fn restore_tool(family: Family) -> &'static str {
    match family {
        Family::V4 => "iptables-restore",
        Family::V6 => "ip6tables-restore",
    }
}

/// The name of the rule tool for `family`, for printed commands.
pub fn rule_tool(family: Family) -> &'static str {
    match family {
        Family::V4 => "iptables",
        Family::V6 => "ip6tables",
    }
}

/// `--dry-run` output: for each family written, a `#` comment naming it and its
/// `iptables-restore --noflush` input. Comments are valid restore input, so the IPv4 part
/// can be fed to `iptables-restore --noflush` as is.
pub fn dry_run(set: &RuleSet) -> String {
    let mut out = String::new();
    for family in set.families() {
        out.push_str(&format!(
            "# {family} rules: input of `{} --noflush`\n",
            restore_tool(family)
        ));
        out.push_str(&restore_input(set.family(family)));
    }
    out
}

/// The `iptables` arguments (after the binary) that remove `rules` of one family: delete each
/// rule of a built-in chain (last added first), then flush and delete each chain `rules`
/// create. Running them when the rules are absent only produces ignorable errors.
pub fn cleanup_args(rules: &[Rule]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for rule in rules.iter().rev().filter(|r| is_built_in(&r.chain)) {
        let mut args = vec![
            "-t".to_owned(),
            rule.table.name().to_owned(),
            "-D".to_owned(),
        ];
        args.push(rule.chain.clone());
        args.extend(rule.spec.iter().cloned());
        out.push(args);
    }
    let chains = declared_chains(rules);
    for op in ["-F", "-X"] {
        for (table, names) in &chains {
            for chain in names {
                out.push(vec![
                    "-t".into(),
                    table.name().into(),
                    op.into(),
                    chain.clone(),
                ]);
            }
        }
    }
    out
}

/// `--cleanup --dry-run` output: the commands `--cleanup` runs for these settings' rules
/// (it also removes any other ISTIO_* chain and jump it finds).
pub fn cleanup_commands(set: &RuleSet) -> String {
    let mut out = String::new();
    for family in set.families() {
        out.push_str(&format!("# {family}: commands run by --cleanup\n"));
        for args in cleanup_args(set.family(family)) {
            out.push_str(rule_tool(family));
            for arg in args {
                out.push(' ');
                out.push_str(&arg);
            }
            out.push('\n');
        }
    }
    out
}
