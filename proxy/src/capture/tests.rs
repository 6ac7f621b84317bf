//! Golden tests against Istio's `istio-iptables` cases, and flag validation tests.

use std::collections::{BTreeSet, HashMap};

use clap::Parser;

use super::config::{self, ConfigError};
use super::env::Environment;
use super::golden;
use super::model::{self, Family, Position, Table};
use super::rules;
use super::settings::{InboundPorts, InterceptionMode, Settings};
use super::{render, InitArgs, InitFlags};

/// A machine with a fixed environment, no resolv.conf servers and IPv4 addresses only.
#[derive(Default)]
struct FakeEnv {
    vars: HashMap<&'static str, &'static str>,
    nameservers: Vec<String>,
    users: HashMap<&'static str, u32>,
    ipv6: bool,
}

impl Environment for FakeEnv {
    fn var(&self, name: &str) -> Option<String> {
        self.vars.get(name).map(|v| (*v).to_owned())
    }
    fn nameservers(&self) -> Result<Vec<String>, std::io::Error> {
        Ok(self.nameservers.clone())
    }
    fn user_uid(&self, name: &str) -> Option<u32> {
        self.users.get(name).copied()
    }
    fn pod_uses_ipv6(&self, _dual_stack: bool) -> bool {
        self.ipv6
    }
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: InitArgs,
}

fn parse_args(args: &[&str]) -> InitFlags {
    let argv = std::iter::once("init").chain(args.iter().copied());
    match Cli::try_parse_from(argv) {
        Ok(cli) => *cli.args.flags,
        Err(e) => panic!("flags {args:?} rejected by clap: {e}"),
    }
}

fn resolve(args: &[&str], env: &FakeEnv) -> Result<Settings, ConfigError> {
    config::resolve(&parse_args(args), env)
}

fn settings(args: &[&str]) -> Settings {
    match resolve(args, &FakeEnv::default()) {
        Ok(s) => s,
        Err(e) => panic!("flags {args:?} rejected: {e}"),
    }
}

/// Every case of Istio's CASES.md: its golden file and the `mesh-proxy init` flags for its
/// settings (split at spaces; `''` is an empty argument).
const CASES: &[(&str, &str)] = &[
    ("empty", ""),
    ("kube-virt-interfaces", "-k eth1,eth2 -i *"),
    ("ipnets", "-i 10.0.0.0/8"),
    (
        "ipnets-with-kube-virt-interfaces",
        "-k eth1,eth2 -i 10.0.0.0/8",
    ),
    ("inbound-ports-include", "-b 32000,31000"),
    ("inbound-ports-wildcard", "-b *"),
    ("inbound-ports-tproxy", "-b 32000,31000 -m TPROXY"),
    ("inbound-ports-wildcard-tproxy", "-b * -m TPROXY"),
    ("outbound-ports-include", "-q 32000,31000"),
    (
        "ip-range",
        "-x 1.1.0.0/16 -i 9.9.0.0/16 -n --redirect-dns -g 1,2 -u 3,4 --dns-servers 127.0.0.53",
    ),
    (
        "tproxy",
        "-m TPROXY -b * -x 1.1.0.0/16 -i 9.9.0.0/16 --dry-run --redirect-dns \
         --dns-servers 127.0.0.53 -g 1337 -u 1337 -c not-istio-nic --enable-ipv6",
    ),
    (
        "loopback-outbound-iprange",
        "-i 127.1.2.3/32 -n --redirect-dns --dns-servers 127.0.0.53 -g 1,2 -u 3,4",
    ),
    (
        "dns-uid-gid",
        "--redirect-dns --dns-servers 127.0.0.53,::127.0.0.53 -g 1,2 -u 3,4 --enable-ipv6",
    ),
    ("outbound-owner-groups", "--owner-groups-include java,202"),
    (
        "outbound-owner-groups-exclude",
        "--owner-groups-exclude 888,ftp",
    ),
    ("basic-exclude-nic", "-c not-istio-nic"),
    ("drop-invalid", "--drop-invalid"),
    (
        "host-ipv4-loopback-cidr",
        "--host-ipv4-loopback-cidr 127.0.0.1/8",
    ),
    ("ipv6-empty-inbound-ports", "-b '' --enable-ipv6"),
    ("ipv6-inbound-ports", "-b 4000,5000 --enable-ipv6"),
    (
        "ipv6-virt-interfaces",
        "-b 4000,5000 -k eth0,eth1 --enable-ipv6",
    ),
    (
        "ipv6-ipnets",
        "-b 4000,5000 -d 6000,7000, -k eth0,eth1 -x 2001:db8::/32 -i 2001:db8::/32 --enable-ipv6",
    ),
    (
        "ipv6-uid-gid",
        "-b 4000,5000 -d 6000,7000 -k eth0,eth1 -g 1,2 -u 3,4 -x 2001:db8::/32 \
         -i 2001:db8::/32 --enable-ipv6",
    ),
    ("ipv6-outbound-ports", "-b '' -q 32000,31000 --enable-ipv6"),
    (
        "ipv6-dns-uid-gid",
        "--enable-ipv6 --redirect-dns -g 1,2 -u 3,4",
    ),
    (
        "ipv6-dns-outbound-owner-groups",
        "--enable-ipv6 --redirect-dns --owner-groups-include java,202",
    ),
    (
        "ipv6-dns-outbound-owner-groups-exclude",
        "--enable-ipv6 --redirect-dns --owner-groups-exclude 888,ftp",
    ),
];

/// Splits a case's flags at whitespace; `''` stands for an empty argument.
fn case_args(flags: &str) -> Vec<&str> {
    flags
        .split_whitespace()
        .map(|a| if a == "''" { "" } else { a })
        .collect()
}

#[test]
fn capture_iptables_golden_cases() {
    let Some(dir) = golden::golden_dir() else {
        mesh_tests::conformance::missing(
            "capture_iptables_golden_cases: Istio golden files not found (../shared/conformance/istio or $MESH_CONFORMANCE_DIR)",
        );
        return;
    };
    let on_disk: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".golden").map(str::to_owned)
        })
        .collect();
    let covered: BTreeSet<String> = CASES.iter().map(|(name, _)| (*name).to_owned()).collect();
    assert_eq!(
        on_disk, covered,
        "every golden file needs a case, every case a golden file"
    );

    let mut failures = Vec::new();
    for (name, flags) in CASES {
        let args = case_args(flags);
        let path = dir.join(format!("{name}.golden"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let expected = golden::parse(&text);
        let settings = settings(&args);
        let set = rules::build(&settings);
        let actual = golden::parse(&render::dry_run(&set));

        let mut problems = Vec::new();
        if expected.trailing_ip6tables_save != settings.enable_ipv6 {
            problems.push(format!(
                "golden {} IPv6, settings have enable_ipv6={}",
                if expected.trailing_ip6tables_save {
                    "dumps"
                } else {
                    "does not dump"
                },
                settings.enable_ipv6
            ));
        }
        if expected.families.len() != actual.families.len() {
            problems.push(format!(
                "IP versions: golden has {}, we render {}",
                expected.families.len(),
                actual.families.len()
            ));
        }
        for (i, (want, got)) in expected.families.iter().zip(&actual.families).enumerate() {
            let family = if i == 0 { Family::V4 } else { Family::V6 };
            problems.extend(
                golden::diff(want, got)
                    .into_iter()
                    .map(|d| format!("{family}: {d}")),
            );
        }
        if problems.is_empty() {
            println!("ok: {name}");
        } else {
            failures.push(format!("{name} ({flags}):\n{}", problems.join("\n")));
        }
    }
    assert!(
        failures.is_empty(),
        "golden mismatches:\n{}",
        failures.join("\n\n")
    );
    println!("{} golden cases equivalent", CASES.len());
}

#[test]
fn capture_dry_run_is_restore_input_with_comments() {
    let set = rules::build(&settings(&["-i", "*", "-b", "*", "--enable-ipv6"]));
    let text = render::dry_run(&set);
    assert!(text.starts_with("# IPv4 rules: input of `iptables-restore --noflush`\n*nat\n"));
    assert!(text.contains("# IPv6 rules: input of `ip6tables-restore --noflush`\n*nat\n"));
    assert!(text.contains("-A ISTIO_OUTPUT -o lo -s ::6/128 -j RETURN\n"));
    assert_eq!(text.matches("COMMIT\n").count(), 2);
}

#[test]
fn capture_defaults_are_istios() {
    let s = settings(&[]);
    assert_eq!(s, Settings::default());
    assert_eq!(s.inbound_ports, InboundPorts::Only(vec![]));
    let env = FakeEnv {
        users: HashMap::from([("istio-proxy", 1400)]),
        ..FakeEnv::default()
    };
    let s = resolve(&[], &env).map_err(|e| e.to_string());
    assert_eq!(
        s.as_ref()
            .map(|s| (s.proxy_uids.clone(), s.proxy_gids.clone())),
        Ok((vec![1400], vec![1400]))
    );
}

#[test]
fn capture_environment_variables_fill_unset_flags() {
    let env = FakeEnv {
        vars: HashMap::from([
            ("ENVOY_PORT", "16001"),
            ("ISTIO_INBOUND_PORTS", "*"),
            ("ISTIO_LOCAL_EXCLUDE_PORTS", "15090,15021"),
            ("ISTIO_SERVICE_CIDR", "10.96.0.0/12"),
            ("INBOUND_INTERCEPTION_MODE", "TPROXY"),
            ("ISTIO_META_DNS_CAPTURE", "true"),
            ("REDIRECT_DNS", "false"),
            ("INVALID_DROP", ""),
        ]),
        nameservers: vec!["10.96.0.10".into(), "fe80::1%eth0".into()],
        ..FakeEnv::default()
    };
    let s = resolve(&["-p", "17001"], &env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.proxy_port, 17001, "the flag wins over ENVOY_PORT");
    assert_eq!(
        s.inbound_ports,
        InboundPorts::All {
            exclude: vec![15090, 15021]
        }
    );
    assert_eq!(s.outbound_include.v4.len(), 1);
    assert_eq!(s.mode, InterceptionMode::Tproxy);
    assert!(
        s.redirect_dns,
        "ISTIO_META_DNS_CAPTURE overrides REDIRECT_DNS, as in Istio"
    );
    assert!(!s.drop_invalid, "an empty boolean variable counts as unset");
    assert_eq!(s.dns_servers_v4, vec!["10.96.0.10".to_owned()]);
    assert!(
        s.dns_servers_v6.is_empty(),
        "unparsable resolv.conf entries are skipped"
    );
}

#[test]
fn capture_ipv6_detection_and_override() {
    let v6_pod = FakeEnv {
        ipv6: true,
        ..FakeEnv::default()
    };
    assert!(resolve(&[], &v6_pod).is_ok_and(|s| s.enable_ipv6));
    assert!(resolve(&["--enable-ipv6=false"], &v6_pod).is_ok_and(|s| !s.enable_ipv6));
    assert!(resolve(&["--enable-ipv6"], &FakeEnv::default()).is_ok_and(|s| s.enable_ipv6));
}

/// Each invalid value is rejected with a message naming its flag (or variable).
#[test]
fn capture_invalid_values_name_their_flag() {
    let cases: &[(&[&str], &str)] = &[
        (&["-p", "abc"], "--envoy-port (-p)"),
        (&["-p", "0"], "--envoy-port (-p)"),
        (&["-z", "70000"], "--inbound-capture-port (-z)"),
        (&["--inbound-tunnel-port=-1"], "--inbound-tunnel-port (-e)"),
        (&["-u", "istio"], "--proxy-uid (-u)"),
        (&["-u", ","], "--proxy-uid (-u)"),
        (&["-g", "1,x"], "--proxy-gid (-g)"),
        (&["-m", "NAT"], "--istio-inbound-interception-mode (-m)"),
        (&["-b", "80,http"], "--istio-inbound-ports (-b)"),
        (
            &["-b", "*", "-d", "99999"],
            "--istio-local-exclude-ports (-d)",
        ),
        (&["-i", "10.0.0.0/33"], "--istio-service-cidr (-i)"),
        (&["-i", "10.0.0.1"], "--istio-service-cidr (-i)"),
        (&["-i", "*,10.0.0.0/8"], "--istio-service-cidr (-i)"),
        (&["-x", "*"], "--istio-service-exclude-cidr (-x)"),
        (&["-x", "nonsense"], "--istio-service-exclude-cidr (-x)"),
        (&["-q", "x"], "--istio-outbound-ports (-q)"),
        (
            &["-o", "65536"],
            "--istio-local-outbound-ports-exclude (-o)",
        ),
        (&["-k", "eth 0"], "--kube-virt-interfaces (-k)"),
        (
            &["-c", "a-very-long-interface-name"],
            "--istio-exclude-interfaces (-c)",
        ),
        (&["-t", "mark"], "--istio-inbound-tproxy-mark (-t)"),
        (
            &["--istio-inbound-tproxy-route-table=-5"],
            "--istio-inbound-tproxy-route-table (-r)",
        ),
        (&["--owner-groups-include", "a b"], "--owner-groups-include"),
        (
            &["--host-ipv4-loopback-cidr", "10.0.0.1/8"],
            "--host-ipv4-loopback-cidr",
        ),
        (
            &["--host-ipv4-loopback-cidr", "127.0.0.1/7"],
            "--host-ipv4-loopback-cidr",
        ),
        (&["--dns-servers", "dns.local"], "--dns-servers"),
        (&["--redirect-dns=maybe"], "--redirect-dns"),
    ];
    for (args, flag) in cases {
        match resolve(args, &FakeEnv::default()) {
            Ok(s) => panic!("{args:?} accepted: {s:?}"),
            Err(e) => assert!(
                e.to_string().contains(flag),
                "{args:?}: {e} does not name {flag}"
            ),
        }
    }
    let env = FakeEnv {
        vars: HashMap::from([("ISTIO_SERVICE_CIDR", "bad")]),
        ..FakeEnv::default()
    };
    let err = resolve(&[], &env)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("$ISTIO_SERVICE_CIDR (for --istio-service-cidr)"),
        "{err}"
    );
    let many: Vec<String> = (0..65).map(|g| g.to_string()).collect();
    let many = many.join(",");
    let err = resolve(&["--owner-groups-include", &many], &FakeEnv::default()).err();
    assert!(matches!(
        err,
        Some(ConfigError::TooManyGroups { count: 65, .. })
    ));
}

#[test]
fn capture_restore_input_declares_chains_first() {
    let set = rules::build(&settings(&["-b", "*", "-i", "*", "--drop-invalid"]));
    let text = render::restore_input(&set.v4);
    let nat = text.split("*nat\n").nth(1).unwrap_or_default();
    let lines: Vec<&str> = nat.lines().collect();
    let first_rule = lines
        .iter()
        .position(|l| l.starts_with("-A") || l.starts_with("-I"));
    let last_decl = lines.iter().rposition(|l| l.starts_with("-N"));
    assert!(last_decl < first_rule, "{text}");
    assert!(text.starts_with("*mangle\n-N ISTIO_DROP\n"), "{text}");
    assert!(
        text.ends_with("-A ISTIO_OUTPUT -j ISTIO_REDIRECT\nCOMMIT\n"),
        "{text}"
    );
}

#[test]
fn capture_cleanup_commands_undo_in_reverse() {
    let set = rules::build(&settings(&["-k", "eth1", "-i", "*"]));
    let args = render::cleanup_args(&set.v4);
    let lines: Vec<String> = args.iter().map(|a| a.join(" ")).collect();
    assert_eq!(lines[0], "-t nat -D PREROUTING -i eth1 -j ISTIO_REDIRECT");
    assert_eq!(lines[1], "-t nat -D OUTPUT -j ISTIO_OUTPUT");
    assert_eq!(lines[2], "-t nat -D PREROUTING -i eth1 -j RETURN");
    let flush = lines
        .iter()
        .position(|l| l.contains(" -F "))
        .unwrap_or(usize::MAX);
    let delete = lines.iter().position(|l| l.contains(" -X ")).unwrap_or(0);
    assert!(flush < delete, "{lines:?}");
    assert_eq!(lines.iter().filter(|l| l.contains(" -X ")).count(), 4);
    let printed = render::cleanup_commands(&set);
    assert!(
        printed.contains("iptables -t nat -X ISTIO_OUTPUT\n"),
        "{printed}"
    );
}

#[test]
fn capture_rule_model_positions() {
    let set = rules::build(&settings(&[
        "-k",
        "eth1,eth2",
        "-i",
        "*",
        "-m",
        "TPROXY",
        "-b",
        "*",
    ]));
    let inserted: Vec<_> = set
        .v4
        .iter()
        .filter(|r| r.position != Position::Append)
        .map(|r| r.restore_line())
        .collect();
    assert_eq!(inserted[0], "-I PREROUTING 1 -i eth1 -j RETURN");
    assert!(
        inserted.contains(&"-I ISTIO_INBOUND 2 -p tcp -s 127.0.0.6/32 -i lo -j RETURN".to_owned())
    );
    assert!(set
        .v4
        .iter()
        .any(|r| r.table == Table::Mangle && r.chain == model::ISTIO_TPROXY));
    assert!(set.v6.is_empty());
}

/// The comparison catches reordering within a chain, `-I` for `-A`, and missing chains, and
/// ignores only spacing, quoting and the interleaving of different chains.
#[test]
fn capture_golden_comparison_is_strict() {
    let base = "*nat\n-N ISTIO_A\n-N ISTIO_B\n-A ISTIO_A -p tcp -j RETURN\n\
                -A ISTIO_B -j ISTIO_A\n-A ISTIO_A -p udp -j RETURN\nCOMMIT\n";
    let family = |text: &str| golden::parse(text).families.remove(0);
    let same = "* nat\n-N ISTIO_B\n-N ISTIO_A\n-A ISTIO_B  -j \"ISTIO_A\"\n\
                -A ISTIO_A -p tcp -j RETURN\n-A ISTIO_A -p udp -j RETURN\nCOMMIT\n";
    assert!(golden::diff(&family(base), &family(same)).is_empty());
    let reordered = base
        .replace("-p tcp", "-p TMP")
        .replace("-p udp", "-p tcp")
        .replace("-p TMP", "-p udp");
    let inserted = base.replace("-A ISTIO_B", "-I ISTIO_B 1");
    let undeclared = base.replace("-N ISTIO_B\n", "");
    let other_table = base.replace("*nat", "*mangle");
    for changed in [reordered, inserted, undeclared, other_table] {
        assert!(
            !golden::diff(&family(base), &family(&changed)).is_empty(),
            "{changed}"
        );
    }
    let two = golden::parse(&format!("{base}{base}"));
    assert_eq!(
        two.families.len(),
        2,
        "a repeated table starts the IPv6 rules"
    );
}
