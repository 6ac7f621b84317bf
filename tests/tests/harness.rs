//! Self-tests of the end-to-end harness with plain processes: pods reach each other and
//! nothing else, topologies are isolated, names resolve, processes are managed, and
//! everything is removed after a normal end, a panic, and a SIGKILL.
//!
//! The HTTP servers and the panicking / killed tests are this test binary itself, re-run
//! through the ignored test `helper` with `MESH_HARNESS_HELPER` set.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use mesh_tests::harness::{http_get, wait_until, HarnessError, Process, ServiceSpec, Topology};

mod harness_support;

use harness_support::{decode, encode, leftovers};

const HELPER_ENV: &str = "MESH_HARNESS_HELPER";

/// Arguments that make this test binary run only the `helper` test.
fn helper_argv(kind: &str, extra: &[(&str, String)]) -> (Vec<String>, Vec<(String, String)>) {
    let exe = std::env::current_exe()
        .expect("current exe")
        .to_string_lossy()
        .into_owned();
    let argv = vec![
        exe,
        "--exact".into(),
        "helper".into(),
        "--ignored".into(),
        "--nocapture".into(),
    ];
    let mut env = vec![(HELPER_ENV.to_owned(), kind.to_owned())];
    env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    (argv, env)
}

/// Starts an HTTP server (this binary) in `pod` on `port`, answering `hello from <reply>`.
fn spawn_http_in(pod: &mesh_tests::harness::Pod, port: u16, reply: &str) -> Result<Process> {
    let (argv, env) = helper_argv(
        "http",
        &[
            ("HELPER_BIND", format!("0.0.0.0:{port}")),
            ("HELPER_REPLY", reply.into()),
        ],
    );
    let mut cmd = pod.command(argv);
    for (k, v) in env {
        cmd = cmd.env(k, v);
    }
    let p = cmd.spawn("http")?;
    p.wait_for_log("listening", Duration::from_secs(20))?;
    Ok(p)
}

/// Not a test: the helper processes of the tests below (see the module doc). Without
/// `MESH_HARNESS_HELPER` it does nothing.
#[test]
#[ignore = "helper process of the other tests, run by them"]
fn helper() {
    match std::env::var(HELPER_ENV).as_deref() {
        Ok("http") => serve_http(),
        Ok("panic") => build_and(true),
        Ok("hold") => build_and(false),
        _ => {}
    }
}

fn serve_http() {
    let bind: SocketAddr = std::env::var("HELPER_BIND")
        .expect("HELPER_BIND")
        .parse()
        .expect("bind address");
    let reply = std::env::var("HELPER_REPLY").unwrap_or_default();
    let listener = TcpListener::bind(bind).expect("bind");
    println!("listening on {bind}");
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut request_line = String::new();
        let _ = reader.read_line(&mut request_line);
        let mut line = String::new();
        while reader.read_line(&mut line).map(|n| n > 2).unwrap_or(false) {
            line.clear();
        }
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or("/")
            .to_owned();
        let body = format!("hello from {reply} path {path}\n");
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }
}

/// Builds a topology with pods and processes, writes its resources to `HELPER_OUT`, then
/// panics (`panic == true`) or waits to be killed.
fn build_and(panic: bool) {
    let out = PathBuf::from(std::env::var("HELPER_OUT").expect("HELPER_OUT"));
    let topo = Topology::new(if panic { "helper_panic" } else { "helper_hold" }).expect("topology");
    let a = topo.pod("a", "default", &[]).expect("pod a");
    let b = topo.pod("b", "other", &[]).expect("pod b");
    topo.service("reviews", "default", Ipv4Addr::new(10, 96, 0, 10))
        .expect("service");
    a.spawn("sleep", ["sleep", "1000"]).expect("sleep in a");
    b.command(["sleep", "1000"])
        .as_proxy_user()
        .spawn("sleep")
        .expect("sleep in b");
    topo.spawn_host("sleep", ["sleep", "1000"])
        .expect("host sleep");
    std::fs::write(&out, encode(&topo.resources())).expect("write resources");
    if panic {
        panic!("helper panics on purpose");
    }
    std::thread::sleep(Duration::from_secs(600));
}

#[test]
fn two_pods_reach_each_other_and_resolve_services() -> Result<()> {
    mesh_tests::skip_unless_netns!();
    let topo = Topology::new("two_pods_reach_each_other_and_resolve_services")?;
    let a = topo.pod("a", "default", &[("app", "a")])?;
    let b = topo.pod("b", "default", &[("app", "b")])?;
    let c = topo.pod("c", "other", &[])?;
    ensure!(a.ip() != b.ip(), "distinct addresses");
    ensure!(
        a.ip().octets()[..3] == topo.host_ip().octets()[..3],
        "pods are in the topology's /24"
    );
    spawn_http_in(&a, 8000, "a")?;
    spawn_http_in(&b, 8000, "b")?;

    // Pod to pod, both ways, and host to pod.
    let body = a.curl(&[&format!("http://{}:8000/x", b.ip())])?.ok()?;
    ensure!(body == "hello from b path /x\n", "a -> b: {body:?}");
    let body = b.curl(&[&format!("http://{}:8000/y", a.ip())])?.ok()?;
    ensure!(body == "hello from a path /y\n", "b -> a: {body:?}");
    let r = http_get(
        SocketAddr::from((a.ip(), 8000)),
        "/z",
        Duration::from_secs(5),
    )?;
    ensure!(
        r.status == 200 && r.body == "hello from a path /z\n",
        "host -> a: {r:?}"
    );

    // Names: full and namespaced forms everywhere, the short name in the same namespace,
    // the pod's own name; services declared after the pods are seen too.
    let ip = topo.add_service(
        &ServiceSpec::new("reviews", "default")
            .port("http", 9080, 9080)
            .selector("app", "b"),
    )?;
    let hosts = |pod: &mesh_tests::harness::Pod, name: &str| -> Result<String> {
        let out = pod.exec(["getent", "hosts", name])?;
        Ok(out
            .stdout
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_owned())
    };
    for name in [
        "reviews",
        "reviews.default",
        "reviews.default.svc",
        "reviews.default.svc.cluster.local",
    ] {
        ensure!(hosts(&a, name)? == ip.to_string(), "{name} in a");
    }
    ensure!(
        hosts(&c, "reviews.default")? == ip.to_string(),
        "reviews.default in c"
    );
    ensure!(
        hosts(&c, "reviews")?.is_empty(),
        "short name of another namespace must not resolve in c"
    );
    ensure!(hosts(&a, "a")? == a.ip().to_string(), "own name");
    let yaml = std::fs::read_to_string(topo.config_dir().join("service-default-reviews.yaml"))?;
    ensure!(
        yaml.contains(&format!("clusterIP: \"{ip}\"")),
        "service YAML: {yaml}"
    );

    // A ClusterIP is routed on-link (for capture), not reachable without it: connect fails
    // at once instead of "Network is unreachable".
    let out = a.curl(&["--connect-timeout", "2", &format!("http://{ip}:9080/")])?;
    ensure!(!out.success(), "nothing listens on a ClusterIP");
    ensure!(
        !out.stderr.contains("unreachable"),
        "ClusterIP must be routed: {}",
        out.stderr
    );

    // Commands run as the proxy user.
    let uid = a.command(["id", "-u"]).as_proxy_user().exec()?.ok()?;
    ensure!(uid.trim() == "1337", "uid {uid}");
    let gids = a.command(["id", "-G"]).as_proxy_user().exec()?.ok()?;
    ensure!(gids.trim() == "1337", "groups {gids}");
    Ok(())
}

#[test]
fn a_pod_has_no_route_outside_its_subnet_and_the_cluster_ip_range() -> Result<()> {
    mesh_tests::skip_unless_netns!();
    let topo = Topology::new("a_pod_has_no_route_outside_its_subnet_and_the_cluster_ip_range")?;
    let a = topo.pod("a", "default", &[])?;
    let routes = a
        .exec(["ip", "-4", "route", "show", "table", "all"])?
        .ok()?;
    let mut kinds: Vec<String> = routes
        .lines()
        .filter(|l| !l.starts_with("local ") && !l.starts_with("broadcast "))
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .collect();
    kinds.sort();
    let subnet = topo.subnet();
    let mut want = vec![
        "10.96.0.0/12 dev eth0".to_owned(),
        format!("{subnet} dev eth0"),
    ];
    want.sort();
    ensure!(kinds == want, "routes: {kinds:?} in {routes}");
    let v6 = a.exec(["ip", "-6", "route", "show"])?.ok()?;
    ensure!(
        v6.lines()
            .all(|l| l.starts_with("fe80::/64 ") || l.starts_with("multicast ")),
        "IPv6 routes: {v6}"
    );
    let other_topology = Ipv4Addr::new(
        10,
        211,
        topo.host_ip().octets()[2].wrapping_add(1).max(1),
        1,
    );
    for dest in [
        "8.8.8.8".to_owned(),
        "192.0.2.2".to_owned(),
        other_topology.to_string(),
        "10.112.0.1".to_owned(),
    ] {
        let out = a.exec(["ip", "route", "get", &dest])?;
        ensure!(
            !out.success() && out.stderr.contains("unreachable"),
            "{dest} must be unreachable: {out:?}"
        );
    }
    let out = a.exec(["ip", "route", "get", "10.96.0.10"])?.ok()?;
    ensure!(out.contains("dev eth0"), "ClusterIP route: {out}");
    let out = a.exec(["ip", "-o", "link", "show", "lo"])?.ok()?;
    ensure!(out.contains("UP"), "lo up: {out}");
    Ok(())
}

#[test]
fn two_topologies_at_once_do_not_interfere() -> Result<()> {
    mesh_tests::skip_unless_netns!();
    let one = Topology::new("two_topologies_at_once_do_not_interfere")?;
    let two = Topology::new("two_topologies_at_once_do_not_interfere")?;
    ensure!(one.id() != two.id() && one.subnet() != two.subnet() && one.bridge() != two.bridge());
    ensure!(one.artifact_dir() != two.artifact_dir());
    // Same pod and service names in both.
    let web1 = one.pod("web", "default", &[])?;
    let web2 = two.pod("web", "default", &[])?;
    one.service("reviews", "default", Ipv4Addr::new(10, 96, 0, 10))?;
    two.service("reviews", "default", Ipv4Addr::new(10, 96, 0, 20))?;
    spawn_http_in(&web1, 8000, "one")?;
    spawn_http_in(&web2, 8000, "two")?;
    let out = web1.exec(["getent", "hosts", "reviews"])?.ok()?;
    ensure!(out.starts_with("10.96.0.10"), "{out}");
    let out = web2.exec(["getent", "hosts", "reviews"])?.ok()?;
    ensure!(out.starts_with("10.96.0.20"), "{out}");
    // Each reaches its own neighbour, not the other topology.
    let client1 = one.pod("client", "default", &[])?;
    let body = client1
        .curl(&[&format!("http://{}:8000/", web1.ip())])?
        .ok()?;
    ensure!(body.starts_with("hello from one"), "{body}");
    let out = client1.curl(&[
        "--connect-timeout",
        "2",
        &format!("http://{}:8000/", web2.ip()),
    ])?;
    ensure!(!out.success(), "topology one reached topology two: {out:?}");
    let out = web2.exec(["ip", "route", "get", &web1.ip().to_string()])?;
    ensure!(
        !out.success(),
        "topology two has a route to topology one: {out:?}"
    );
    // Tearing one down leaves the other working.
    let r1 = one.resources();
    drop(one);
    ensure!(leftovers(&r1).is_empty(), "{:?}", leftovers(&r1));
    let r = http_get(
        SocketAddr::from((web2.ip(), 8000)),
        "/",
        Duration::from_secs(5),
    )?;
    ensure!(r.body.starts_with("hello from two"), "{r:?}");
    Ok(())
}

#[test]
fn drop_removes_everything() -> Result<()> {
    mesh_tests::skip_unless_netns!();
    let topo = Topology::new("drop_removes_everything")?;
    let a = topo.pod("a", "default", &[])?;
    let b = topo.pod("b", "default", &[])?;
    topo.service("reviews", "default", Ipv4Addr::new(10, 96, 0, 10))?;
    a.spawn("sleep", ["sleep", "1000"])?;
    // A process that ignores SIGTERM and has a child: the group is killed.
    let stubborn = b.spawn(
        "stubborn",
        ["sh", "-c", "trap '' TERM; sleep 1000 & echo armed; wait"],
    )?;
    stubborn.wait_for_log("armed", Duration::from_secs(10))?;
    topo.spawn_host("sleep", ["sleep", "1000"])?;
    let r = topo.resources();
    ensure!(r.netns.len() == 2 && r.pids.len() == 3);
    let live = leftovers(&r);
    ensure!(live.len() > 4, "resources exist while the topology lives");
    ensure!(live.iter().any(|l| l.starts_with("FORWARD")), "{live:?}");
    let started = Instant::now();
    drop(topo);
    let left = leftovers(&r);
    ensure!(left.is_empty(), "left behind: {left:?}");
    ensure!(
        started.elapsed() < Duration::from_secs(15),
        "teardown took {:?}",
        started.elapsed()
    );
    let e = a.exec(["true"]).expect_err("pod of a torn-down topology");
    ensure!(matches!(e, HarnessError::TornDown(_)), "{e}");
    Ok(())
}

fn run_helper(kind: &str, out: &Path) -> Result<std::process::Child> {
    let (argv, env) = helper_argv(kind, &[("HELPER_OUT", out.display().to_string())]);
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    Ok(cmd.spawn()?)
}

#[test]
fn a_panicking_test_leaves_nothing_behind() -> Result<()> {
    mesh_tests::skip_unless_netns!();
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("resources");
    let child = run_helper("panic", &out)?;
    let output = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        !output.status.success(),
        "the helper must fail: {stdout}{stderr}"
    );
    ensure!(
        stdout.contains("helper panics on purpose") || stderr.contains("helper panics on purpose"),
        "{stdout}{stderr}"
    );
    let r = decode(&std::fs::read_to_string(&out).context("helper wrote no resources")?);
    ensure!(r.netns.len() == 2 && r.pids.len() == 3, "{r:?}");
    let left = leftovers(&r);
    ensure!(left.is_empty(), "left behind after a panic: {left:?}");
    ensure!(stderr.contains("torn down"), "teardown report: {stderr}");
    Ok(())
}

#[test]
fn a_killed_test_is_cleaned_up_by_its_guardian() -> Result<()> {
    mesh_tests::skip_unless_netns!();
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("resources");
    let mut child = run_helper("hold", &out)?;
    let res = wait_until(
        "the helper's topology",
        Duration::from_secs(60),
        Duration::from_millis(50),
        || {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(HarnessError::TornDown(format!(
                    "helper exited early: {status}"
                )));
            }
            Ok(out.exists() && std::fs::read_to_string(&out).is_ok_and(|s| s.contains("pid ")))
        },
    );
    if res.is_err() {
        let _ = child.kill();
    }
    res?;
    // Give the writer a moment to finish the file, then kill it without unwinding.
    std::thread::sleep(Duration::from_millis(100));
    let r = decode(&std::fs::read_to_string(&out)?);
    ensure!(!leftovers(&r).is_empty(), "resources exist before the kill");
    child.kill()?;
    child.wait()?;
    wait_until(
        "the guardian's cleanup",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || Ok(leftovers(&r).is_empty()),
    )
    .with_context(|| format!("left behind: {:?}", leftovers(&r)))?;
    Ok(())
}

#[test]
fn processes_stop_restart_kill_and_time_out() -> Result<()> {
    mesh_tests::skip_unless_netns!();
    let topo = Topology::new("processes_stop_restart_kill_and_time_out")?;
    let a = topo.pod("a", "default", &[])?;
    let script = "trap 'echo got-term; exit 3' TERM; echo started $$; while :; do sleep 0.05; done";
    let p = a.spawn("loop", ["sh", "-c", script])?;
    p.wait_for_log("started", Duration::from_secs(10))?;
    ensure!(p.is_running());
    let first = p.pid();
    let status = p.stop().context("stopped")?;
    ensure!(status.code() == Some(3), "graceful exit code: {status}");
    ensure!(p.stdout().contains("got-term"), "{}", p.stdout());
    p.restart()?;
    wait_until(
        "second start",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || Ok(p.stdout().matches("started").count() == 2),
    )?;
    ensure!(p.pid() != first, "a new process");
    let status = p.kill().context("killed")?;
    ensure!(status.code().is_none(), "killed by a signal: {status}");
    let e = p.check_running().expect_err("not running");
    ensure!(matches!(e, HarnessError::ProcessExited { .. }), "{e}");
    p.start_again()?;
    p.wait_for_log("started", Duration::from_secs(10))?;
    ensure!(
        p.stderr().contains("start #3"),
        "start markers: {}",
        p.stderr()
    );
    ensure!(
        p.stdout_path().starts_with(topo.artifact_dir()),
        "logs in the artifact dir"
    );

    // exec: output, exit codes, and the deadline.
    let out = a.exec(["sh", "-c", "echo out; echo err >&2; exit 4"])?;
    ensure!(
        out.stdout == "out\n" && out.stderr == "err\n" && out.status.code() == Some(4),
        "{out:?}"
    );
    ensure!(matches!(out.ok(), Err(HarnessError::ExecFailed { .. })));
    let started = Instant::now();
    let e = a
        .command(["sleep", "30"])
        .timeout(Duration::from_millis(300))
        .exec()
        .expect_err("times out");
    ensure!(matches!(e, HarnessError::Timeout { .. }), "{e}");
    ensure!(
        started.elapsed() < Duration::from_secs(5),
        "the deadline holds"
    );

    // Readiness against a stand-in for the control plane's debug port on the host address.
    let (argv, env) = helper_argv(
        "http",
        &[
            ("HELPER_BIND", format!("{}:8080", topo.host_ip())),
            ("HELPER_REPLY", "cp".into()),
        ],
    );
    let mut cmd = topo.host_command(argv);
    for (k, v) in env {
        cmd = cmd.env(k, v);
    }
    let stand_in = cmd.spawn("debug-stand-in")?;
    let cp = topo.control_plane();
    cp.wait_ready(Duration::from_secs(20))?;
    ensure!(cp.syncz()? == "hello from cp path /debug/syncz\n");
    ensure!(stand_in.is_running());
    Ok(())
}

#[test]
fn a_missing_binary_panics_with_the_build_command() {
    let e = std::panic::catch_unwind(|| mesh_tests::harness::bin("no-such-binary"))
        .expect_err("must panic");
    let msg = e.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("cargo build --workspace"), "{msg}");
}
