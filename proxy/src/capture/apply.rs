//! Applying and removing the rules on this machine: picks the iptables backend (nft or
//! legacy) the way Istio does, feeds `iptables-restore --noflush`, and cleans up with
//! `iptables -D/-F/-X`. TPROXY routes and IPv6's `::6` address go through iproute2 (`ip`).

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use super::model::{is_built_in, Family, Rule, RuleSet};
use super::render::{cleanup_args, restore_input};
use super::rules;
use super::saved::Saved;
use super::settings::{InterceptionMode, Settings};

/// Seconds iptables waits for the xtables lock.
const LOCK_WAIT_SECONDS: &str = "30";
/// Deleting one rule from a built-in chain is retried this often, to remove duplicates.
const MAX_DUPLICATE_DELETES: usize = 16;

/// Why applying or removing the rules failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A required program is not installed.
    #[error("{name} not found in PATH, /usr/sbin or /sbin (apt install iptables iproute2)")]
    MissingBinary {
        /// Program name.
        name: String,
    },
    /// A program could not be started.
    #[error("running {command}: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A program exited with failure.
    #[error("{command} failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: ExitStatus,
        /// What it wrote to stderr.
        stderr: String,
    },
    /// ISTIO_* rules are already in place and differ from the ones requested.
    #[error(
        "{family} capture rules are already in place and differ from the requested ones \
         ({reason}); rerun with --reconcile to replace them, or run --cleanup first"
    )]
    Drift {
        /// The IP version.
        family: Family,
        /// The first difference found.
        reason: DriftReason,
    },
    /// ISTIO_* chains were still present after cleanup.
    #[error("{family} chains left after cleanup: {chains}")]
    CleanupIncomplete {
        /// The IP version.
        family: Family,
        /// `table/chain` list.
        chains: String,
    },
}

/// How existing ISTIO_* rules differ from the requested ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriftReason {
    /// A requested rule is missing (its restore line).
    MissingRule(String),
    /// An ISTIO_* chain holds a different number of rules.
    RuleCount {
        /// `table/chain`.
        chain: String,
        /// Rules present.
        found: usize,
        /// Rules requested.
        expected: usize,
    },
}

impl fmt::Display for DriftReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DriftReason::MissingRule(line) => write!(f, "missing rule `{line}`"),
            DriftReason::RuleCount {
                chain,
                found,
                expected,
            } => {
                write!(f, "{chain} has {found} rules, {expected} requested")
            }
        }
    }
}

/// Which iptables implementation the binaries drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// `iptables-nft*` (nf_tables kernel API).
    Nft,
    /// `iptables-legacy*` (x_tables kernel API).
    Legacy,
    /// Plain `iptables*`, whatever it points to.
    Default,
}

impl Variant {
    fn suffix(self) -> &'static str {
        match self {
            Variant::Nft => "-nft",
            Variant::Legacy => "-legacy",
            Variant::Default => "",
        }
    }
}

/// The three programs of one IP version of one variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tools {
    /// `iptables` (or `ip6tables`), for -C/-D/-F/-X.
    pub iptables: PathBuf,
    /// `iptables-save`.
    pub save: PathBuf,
    /// `iptables-restore`.
    pub restore: PathBuf,
}

impl Tools {
    /// The installed tools of `variant` for `family`, or the first one missing.
    fn find(variant: Variant, family: Family) -> Result<Tools, ApplyError> {
        let base = match family {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        };
        let sfx = variant.suffix();
        Ok(Tools {
            iptables: find_binary(&format!("{base}{sfx}"))?,
            save: find_binary(&format!("{base}{sfx}-save"))?,
            restore: find_binary(&format!("{base}{sfx}-restore"))?,
        })
    }

    fn rule_command(&self) -> Command {
        let mut cmd = Command::new(&self.iptables);
        cmd.args(["-w", LOCK_WAIT_SECONDS]);
        cmd
    }

    /// The current rules (`iptables-save`).
    fn saved(&self) -> Result<Saved, ApplyError> {
        Ok(Saved::parse(&run(Command::new(&self.save), None)?))
    }

    /// Runs `iptables -w 30 ARGS`; `true` on success.
    fn try_rule(&self, args: &[String]) -> bool {
        let mut cmd = self.rule_command();
        cmd.args(args);
        run(cmd, None).is_ok()
    }
}

/// The iptables programs chosen for this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// The variant.
    pub variant: Variant,
    /// IPv4 tools.
    pub v4: Tools,
    /// IPv6 tools of the same variant, when installed.
    pub v6: Option<Tools>,
}

impl Backend {
    /// Chooses the iptables variant as Istio does: the one already holding ISTIO_* chains,
    /// else the one holding more rules (e.g. the kubelet's), else the one `iptables` is.
    /// Fails when no variant's iptables, -save and -restore are all installed, or when
    /// `require_v6` and that variant's ip6tables tools are not.
    pub fn detect(require_v6: bool) -> Result<Backend, ApplyError> {
        let mut found: Vec<(Variant, Tools, Saved)> = Vec::new();
        for variant in [Variant::Nft, Variant::Legacy] {
            if let Ok(tools) = Tools::find(variant, Family::V4) {
                // A variant whose save fails (e.g. no kernel support) is not usable.
                if let Ok(saved) = tools.saved() {
                    found.push((variant, tools, saved));
                }
            }
        }
        let by_chains = found
            .iter()
            .position(|(_, _, s)| !s.istio_chains().is_empty());
        let most_rules = found
            .iter()
            .enumerate()
            .filter(|(_, (_, _, s))| s.rule_count() > 0)
            .max_by_key(|(i, (_, _, s))| (s.rule_count(), usize::MAX - i))
            .map(|(i, _)| i);
        let pick = by_chains.or(most_rules).or_else(|| {
            let default = default_variant();
            found.iter().position(|(v, _, _)| Some(*v) == default)
        });
        let (variant, v4) = match pick.or(if found.is_empty() { None } else { Some(0) }) {
            Some(i) => (found[i].0, found[i].1.clone()),
            None => (Variant::Default, Tools::find(Variant::Default, Family::V4)?),
        };
        let v6 = match Tools::find(variant, Family::V6) {
            Ok(tools) => Some(tools),
            Err(e) if require_v6 => return Err(e),
            Err(_) => None,
        };
        tracing::debug!(?variant, "iptables backend");
        Ok(Backend { variant, v4, v6 })
    }

    /// The tools for `family`, if installed.
    pub fn tools(&self, family: Family) -> Option<&Tools> {
        match family {
            Family::V4 => Some(&self.v4),
            Family::V6 => self.v6.as_ref(),
        }
    }
}

/// What plain `iptables` is, from `iptables --version` (`(nf_tables)` or `(legacy)`).
fn default_variant() -> Option<Variant> {
    let path = find_binary("iptables").ok()?;
    let mut cmd = Command::new(path);
    cmd.arg("--version");
    let version = run(cmd, None).ok()?;
    if version.contains("nf_tables") {
        Some(Variant::Nft)
    } else if version.contains("legacy") {
        Some(Variant::Legacy)
    } else {
        None
    }
}

/// Finds an executable named `name` in `$PATH`, then /usr/sbin, /sbin, /usr/local/sbin.
pub fn find_binary(name: &str) -> Result<PathBuf, ApplyError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let extra = ["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from);
    std::env::split_paths(&path)
        .chain(extra)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
        .ok_or_else(|| ApplyError::MissingBinary {
            name: name.to_owned(),
        })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn describe(cmd: &Command) -> String {
    let args = cmd.get_args().map(|a| a.to_string_lossy().into_owned());
    std::iter::once(cmd.get_program().to_string_lossy().into_owned())
        .chain(args)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd` (with `stdin` fed in, if any) and returns its stdout; non-zero exit is an error.
fn run(mut cmd: Command, stdin: Option<&str>) -> Result<String, ApplyError> {
    let command = describe(&cmd);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let spawn_err = |source| ApplyError::Spawn {
        command: command.clone(),
        source,
    };
    let mut child = cmd.spawn().map_err(spawn_err)?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes()).map_err(spawn_err)?;
    }
    let output = child.wait_with_output().map_err(spawn_err)?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(ApplyError::Failed {
            command,
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

/// Whether `rules` are already in place exactly: every rule present (`iptables -C`) and every
/// ISTIO_* chain holding as many rules as requested.
fn check_in_place(tools: &Tools, rules: &[Rule], saved: &Saved) -> Result<(), DriftReason> {
    for rule in rules {
        let mut args = vec![
            "-t".to_owned(),
            rule.table.name().to_owned(),
            "-C".to_owned(),
        ];
        args.push(rule.chain.clone());
        args.extend(rule.spec.iter().cloned());
        if !tools.try_rule(&args) {
            return Err(DriftReason::MissingRule(rule.restore_line()));
        }
    }
    let mut expected: BTreeMap<(String, String), usize> = BTreeMap::new();
    for rule in rules.iter().filter(|r| !is_built_in(&r.chain)) {
        *expected
            .entry((rule.table.name().to_owned(), rule.chain.clone()))
            .or_default() += 1;
    }
    for (table, chain) in saved.istio_chains() {
        let want = expected
            .get(&(table.clone(), chain.clone()))
            .copied()
            .unwrap_or(0);
        let found = saved.chain_len(&table, &chain);
        if found != want {
            let chain = format!("{table}/{chain}");
            return Err(DriftReason::RuleCount {
                chain,
                found,
                expected: want,
            });
        }
    }
    Ok(())
}

/// Applies `set` with `iptables-restore --noflush`, per IP version, then the IPv6 `::6`
/// address and TPROXY routes. Idempotent: when identical rules are in place it changes
/// nothing; when different ones are, it fails with [`ApplyError::Drift`] unless
/// `settings.reconcile` (remove, then apply) or `settings.force_apply` (apply anyway). If a
/// restore fails, what was applied so far is removed again.
pub fn apply(backend: &Backend, set: &RuleSet, settings: &Settings) -> Result<(), ApplyError> {
    let mut applied: Vec<Family> = Vec::new();
    for family in set.families() {
        let tools = backend
            .tools(family)
            .ok_or_else(|| ApplyError::MissingBinary {
                name: super::render::restore_tool(family).to_owned(),
            })?;
        let rules = set.family(family);
        let saved = tools.saved()?;
        if !saved.istio_chains().is_empty() {
            if settings.reconcile {
                tracing::info!(%family, "replacing the capture rules in place");
                cleanup_family(tools, family, rules)?;
            } else if !settings.force_apply {
                match check_in_place(tools, rules, &saved) {
                    Ok(()) => {
                        tracing::info!(%family, "capture rules already in place");
                        continue;
                    }
                    Err(reason) => return Err(ApplyError::Drift { family, reason }),
                }
            }
        }
        let mut cmd = Command::new(&tools.restore);
        cmd.args([&format!("--wait={LOCK_WAIT_SECONDS}"), "--noflush"]);
        if let Err(e) = run(cmd, Some(&restore_input(rules))) {
            applied.push(family);
            for done in applied {
                if let Some(tools) = backend.tools(done) {
                    let _ = cleanup_family(tools, done, set.family(done));
                }
            }
            return Err(e);
        }
        applied.push(family);
        tracing::info!(%family, rules = rules.len(), "capture rules applied");
    }
    configure_routes(settings)
}

/// Removes every capture rule and chain of one IP version: the rules of `rules` in built-in
/// chains (with duplicates), any other built-in-chain jump to an ISTIO_* chain, then every
/// ISTIO_* chain. Fails if ISTIO_* chains remain.
fn cleanup_family(tools: &Tools, family: Family, rules: &[Rule]) -> Result<(), ApplyError> {
    for args in cleanup_args(rules)
        .into_iter()
        .filter(|a| a.get(2).is_some_and(|op| op == "-D"))
    {
        let mut deletes = 0;
        while deletes < MAX_DUPLICATE_DELETES && tools.try_rule(&args) {
            deletes += 1;
        }
    }
    let saved = tools.saved()?;
    for (table, content) in &saved.tables {
        for (chain, tokens) in &content.rules {
            let jumps_to_istio = tokens
                .windows(2)
                .any(|w| w[0] == "-j" && w[1].starts_with("ISTIO_"));
            if is_built_in(chain) && jumps_to_istio {
                let mut args = vec![
                    "-t".to_owned(),
                    table.clone(),
                    "-D".to_owned(),
                    chain.clone(),
                ];
                args.extend(tokens.iter().cloned());
                tools.try_rule(&args);
            }
        }
    }
    let chains = tools.saved()?.istio_chains();
    for op in ["-F", "-X"] {
        for (table, chain) in &chains {
            tools.try_rule(&["-t".into(), table.clone(), op.into(), chain.clone()]);
        }
    }
    let left = tools.saved()?.istio_chains();
    if left.is_empty() {
        return Ok(());
    }
    let chains = left
        .iter()
        .map(|(t, c)| format!("{t}/{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    Err(ApplyError::CleanupIncomplete { family, chains })
}

/// Removes everything `init` adds: the rules of `settings` (built for both IP versions, so
/// IPv6 leftovers go too), any ISTIO_* chain and jump to one, the TPROXY routes, and the
/// `::6` address when IPv6 is enabled. Running it again when nothing is left succeeds.
/// IPv6 failures are ignored unless IPv6 is enabled (ip6tables may be unusable there).
pub fn cleanup(backend: &Backend, settings: &Settings) -> Result<(), ApplyError> {
    let both = rules::build(&Settings {
        enable_ipv6: true,
        ..settings.clone()
    });
    for family in [Family::V4, Family::V6] {
        let Some(tools) = backend.tools(family) else {
            continue;
        };
        match cleanup_family(tools, family, both.family(family)) {
            Ok(()) => tracing::info!(%family, "capture rules removed"),
            Err(e) if family == Family::V6 && !settings.enable_ipv6 => {
                tracing::debug!(error = %e, "IPv6 cleanup skipped");
            }
            Err(e) => return Err(e),
        }
    }
    let Ok(ip) = find_binary("ip") else {
        return Ok(());
    };
    let mark = settings.tproxy_mark.to_string();
    let table = settings.tproxy_route_table.to_string();
    for version in ["-4", "-6"] {
        let rule = [version, "rule", "del", "fwmark", &mark, "lookup", &table];
        let mut deletes = 0;
        while deletes < MAX_DUPLICATE_DELETES && ip_command(&ip, &rule).is_ok() {
            deletes += 1;
        }
        let _ = ip_command(
            &ip,
            &[
                version, "route", "del", "local", "default", "dev", "lo", "table", &table,
            ],
        );
    }
    if settings.enable_ipv6 {
        let _ = ip_command(&ip, &["-6", "addr", "del", "::6/128", "dev", "lo"]);
    }
    Ok(())
}

fn ip_command(ip: &Path, args: &[&str]) -> Result<String, ApplyError> {
    let mut cmd = Command::new(ip);
    cmd.args(args);
    run(cmd, None)
}

/// Like [`ip_command`], but a "File exists" failure (already added) counts as success.
fn ip_ensure(ip: &Path, args: &[&str]) -> Result<(), ApplyError> {
    match ip_command(ip, args) {
        Err(ApplyError::Failed { stderr, .. }) if stderr.contains("File exists") => Ok(()),
        other => other.map(|_| ()),
    }
}

/// Istio's route setup: `::6/128` on lo when IPv6 is enabled (the proxy's inbound delivery
/// source), and for TPROXY inbound capture a `fwmark MARK lookup TABLE` rule and a local
/// default route to lo in TABLE, per IP version (lo is brought up first: the kernel refuses
/// an IPv6 route through a device that is down). Each step is skipped when already done.
fn configure_routes(settings: &Settings) -> Result<(), ApplyError> {
    let tproxy = settings.mode == InterceptionMode::Tproxy && settings.captures_inbound();
    if !settings.enable_ipv6 && !tproxy {
        return Ok(());
    }
    let ip = find_binary("ip")?;
    if settings.enable_ipv6 {
        let addrs = ip_command(&ip, &["-6", "addr", "show", "dev", "lo"])?;
        if !addrs.contains("inet6 ::6/128 ") {
            ip_ensure(&ip, &["-6", "addr", "add", "::6/128", "dev", "lo"])?;
        }
    }
    if !tproxy {
        return Ok(());
    }
    ip_command(&ip, &["link", "set", "lo", "up"])?;
    let mark = settings.tproxy_mark.to_string();
    let table = settings.tproxy_route_table.to_string();
    let versions: &[&str] = if settings.enable_ipv6 {
        &["-4", "-6"]
    } else {
        &["-4"]
    };
    for version in versions {
        let rule = [*version, "rule", "show", "fwmark", &mark, "lookup", &table];
        if ip_command(&ip, &rule)?.trim().is_empty() {
            ip_command(
                &ip,
                &[version, "rule", "add", "fwmark", &mark, "lookup", &table],
            )?;
        }
        let route = [
            *version, "route", "add", "local", "default", "dev", "lo", "table", &table,
        ];
        ip_ensure(&ip, &route)?;
    }
    Ok(())
}
