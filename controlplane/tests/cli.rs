//! The binaries as a user runs them: `meshctl analyze` output and exit codes, and
//! `mesh-controlplane` starting, serving and exiting cleanly on SIGTERM and SIGINT.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const GOOD: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: reviews}\n\
                    spec: {clusterIP: 10.96.0.20, ports: [{name: http, port: 9080}]}\n";

#[test]
fn analyze_prints_every_error_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("good.yaml"), GOOD).unwrap();
    let bad = "apiVersion: v1\nkind: Service\nmetadata: {name: ratings}\nspec:\n  ports:\n  - port: 70000\n\
               ---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: dr}\n";
    std::fs::write(dir.path().join("bad.yaml"), bad).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .arg("analyze")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let file = dir.path().join("bad.yaml").display().to_string();
    assert_eq!(
        stdout,
        format!(
            "Error [IST0106] (Service default/ratings) {file}: spec.ports[0].port: must be 1-65535 (got 70000)\n\
             Error [IST0106] (DestinationRule default/dr) {file}: spec.host: required\n"
        )
    );
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("2 error(s)"));

    std::fs::remove_file(dir.path().join("bad.yaml")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .arg("analyze")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8(out.stdout)
        .unwrap()
        .starts_with("No validation issues found"));

    let out = Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(["analyze", "/nonexistent/dir"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn analyze_warnings_exit_0_and_cross_object_errors_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("good.yaml"), GOOD).unwrap();
    let policy = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
                  metadata: {name: nobody}\nspec: {selector: {matchLabels: {app: nothing}}}\n";
    std::fs::write(dir.path().join("policy.yaml"), policy).unwrap();
    let meshctl = || {
        Command::new(env!("CARGO_BIN_EXE_meshctl"))
            .arg("analyze")
            .arg(dir.path())
            .output()
            .unwrap()
    };
    let out = meshctl();
    assert_eq!(out.status.code(), Some(0));
    let file = dir.path().join("policy.yaml").display().to_string();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!(
            "Warning [IST0127] (AuthorizationPolicy default/nobody) {file}: No matching workloads \
             for this resource with the following labels: app=nothing\n"
        )
    );
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("0 error(s), 1 warning(s)"));

    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\n\
              metadata: {name: reviews}\nspec: {hosts: [reviews], http: [{route: [{destination: {host: reviews, subset: v9}}]}]}\n";
    std::fs::write(dir.path().join("vs.yaml"), vs).unwrap();
    let out = meshctl();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("Error [IST0101] (VirtualService default/reviews) ",)
            && stdout
                .contains("Referenced host+subset in destinationrule not found: \"reviews+v9\""),
        "{stdout}"
    );
}

#[test]
fn analyze_names_the_field_of_bad_traffic_rules() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("good.yaml"), GOOD).unwrap();
    let bad = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: regex}\n\
               spec: {hosts: [reviews], http: [{match: [{uri: {regex: \"(a\"}}], route: [{destination: {host: reviews}}]}]}\n\
               ---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: weights}\n\
               spec: {hosts: [ratings], http: [{route: [{destination: {host: ratings}, weight: -10}, {destination: {host: ratings}, weight: 110}]}]}\n\
               ---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: zero}\n\
               spec: {hosts: [details], http: [{route: [{destination: {host: details}, weight: 0}, {destination: {host: details}, weight: 0}]}]}\n\
               ---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: timeout}\n\
               spec: {hosts: [productpage], http: [{route: [{destination: {host: productpage}}], retries: {attempts: 2, perTryTimeout: -1s}}]}\n\
               ---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: pool}\n\
               spec: {host: reviews, trafficPolicy: {connectionPool: {tcp: {connectTimeout: -1s}}}}\n";
    std::fs::write(dir.path().join("traffic.yaml"), bad).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .arg("analyze")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let file = dir.path().join("traffic.yaml").display().to_string();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let want = [
        "(VirtualService default/regex) FILE: spec.http[0].match[0].uri: \"uri\": error parsing regexp: unclosed group: \"(a\"",
        "(VirtualService default/weights) FILE: spec.http[0].route[0].weight: weight -10 < 0",
        "(VirtualService default/zero) FILE: spec.http[0].route: total destination weight = 0",
        "(VirtualService default/timeout) FILE: spec.http[0].retries.perTryTimeout: duration must be greater than 1ms",
        "(DestinationRule default/pool) FILE: spec.trafficPolicy.connectionPool.tcp.connectTimeout: duration must be greater than 1ms",
    ];
    for line in want {
        let line = format!("Error [IST0106] {}", line.replace("FILE", &file));
        assert!(
            stdout.lines().any(|l| l.starts_with(&line)),
            "missing {line:?} in:\n{stdout}"
        );
    }
    assert_eq!(stdout.lines().count(), want.len(), "{stdout}");
}

fn get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\n\r\n").unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    buf
}

fn run_until_signal(signal: &str) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("svc.yaml"), GOOD).unwrap();
    let state = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mesh-controlplane"))
        .arg("--config-dir")
        .arg(dir.path())
        .args(["--xds-addr", "127.0.0.1:0", "--debug-addr", "127.0.0.1:0"])
        .args(["--xds-tls-addr", "127.0.0.1:0"])
        .args(["--monitoring-addr", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        // The generated CA goes to the default state directory, here a temporary one.
        .env("XDG_STATE_HOME", state.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(10);
    let debug_addr = loop {
        assert!(Instant::now() < deadline, "never served");
        let line = lines.next().expect("stderr closed").unwrap();
        if line.contains("control plane serving") {
            let at = line.find("debug_addr=").unwrap() + "debug_addr=".len();
            break line[at..].split_whitespace().next().unwrap().to_string();
        }
    };
    assert!(get(&debug_addr, "/ready").starts_with("HTTP/1.0 200"));
    assert!(
        state.path().join("mesh/ca/ca-key.pem").is_file(),
        "the CA was not generated in the default state directory"
    );
    let configz = get(&debug_addr, "/debug/configz");
    assert!(configz.contains("Service default/reviews"), "{configz}");
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status:?} after {signal}");
            break;
        }
        assert!(Instant::now() < deadline, "still running after {signal}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn controlplane_exits_cleanly_on_sigterm() {
    run_until_signal("-TERM");
}

#[test]
fn controlplane_exits_cleanly_on_sigint() {
    run_until_signal("-INT");
}

#[test]
fn controlplane_refuses_a_missing_config_dir() {
    let out = Command::new(env!("CARGO_BIN_EXE_mesh-controlplane"))
        .args([
            "--config-dir",
            "/nonexistent/dir",
            "--xds-addr",
            "127.0.0.1:0",
            "--debug-addr",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("not a directory"));
}

#[test]
fn meshctl_token_create_signs_with_the_ca_it_finds() {
    use controlplane::ca::{store, token, Authority};
    let state = tempfile::tempdir().unwrap();
    let ca_dir = state.path().join("ca");
    store::generate(&ca_dir, "cluster.local").unwrap();
    let ca = Authority::load(&ca_dir, "cluster.local").unwrap();
    let meshctl = |args: &[&str], xdg: Option<&std::path::Path>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshctl"));
        cmd.args(["token", "create"]).args(args);
        cmd.env_remove("MESH_CA_DIR").env_remove("MESH_STATE_DIR");
        if let Some(x) = xdg {
            cmd.env("XDG_STATE_HOME", x);
        }
        cmd.output().unwrap()
    };
    let ca_arg = ca_dir.to_str().unwrap();
    let state_arg = state.path().to_str().unwrap();
    for args in [
        vec![
            "--namespace",
            "payments",
            "--service-account",
            "orders",
            "--ca-dir",
            ca_arg,
        ],
        vec![
            "--namespace",
            "payments",
            "--service-account",
            "orders",
            "--state-dir",
            state_arg,
            "--ttl",
            "5m",
        ],
    ] {
        let out = meshctl(&args, None);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let t = String::from_utf8(out.stdout).unwrap();
        let id = token::verify(ca.public_key(), t.trim()).unwrap();
        assert_eq!(
            (id.namespace.as_str(), id.service_account.as_str()),
            ("payments", "orders")
        );
    }
    // The default state directory: $XDG_STATE_HOME/mesh/ca.
    let xdg = tempfile::tempdir().unwrap();
    store::generate(&xdg.path().join("mesh/ca"), "cluster.local").unwrap();
    let out = meshctl(
        &["--namespace", "a", "--service-account", "b"],
        Some(xdg.path()),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // No CA there, a bad name, a TTL over the maximum: clear errors.
    let empty = tempfile::tempdir().unwrap();
    let out = meshctl(
        &["--namespace", "a", "--service-account", "b"],
        Some(empty.path()),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no CA in"));
    let out = meshctl(
        &[
            "--namespace",
            "A_B",
            "--service-account",
            "b",
            "--ca-dir",
            ca_arg,
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("namespace"));
    let out = meshctl(
        &[
            "--namespace",
            "a",
            "--service-account",
            "b",
            "--ca-dir",
            ca_arg,
            "--ttl",
            "48h",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("TTL"));
}
