//! `mesh-proxy init` for real: in a fresh network namespace, apply the default rules, check
//! them with `iptables-save`, remove them with `--cleanup`, and check that invalid flags apply
//! nothing. Needs root and iproute2/iptables; prints SKIPPED otherwise.

use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

const BIN: &str = env!("CARGO_BIN_EXE_mesh-proxy");

/// A network namespace with a unique name, deleted on drop (also when the test fails).
struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates the namespace, or explains why it cannot (then the test is skipped).
    fn create() -> Result<NetNs, String> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "mpcap-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .map_err(|e| format!("cannot run ip: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "ip netns add failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(NetNs { name })
    }

    /// Runs `program args` inside the namespace.
    fn exec(&self, program: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap_or_else(|e| panic!("ip netns exec {} {program}: {e}", self.name))
    }

    /// Runs `mesh-proxy init args` inside the namespace.
    fn init(&self, args: &[&str]) -> Output {
        let mut all = vec!["init"];
        all.extend_from_slice(args);
        self.exec(BIN, &all)
    }

    /// `iptables-save` (the machine's default backend, which `init` also picks in a fresh
    /// namespace) inside the namespace.
    fn iptables_save(&self) -> String {
        let out = self.exec("iptables-save", &[]);
        assert!(
            out.status.success(),
            "iptables-save: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// The namespace, or `None` (after printing SKIPPED) when this machine cannot run the test.
fn namespace(test: &str) -> Option<NetNs> {
    let root = std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
    });
    if !root {
        println!("SKIPPED {test}: needs root");
        return None;
    }
    let iptables = Command::new("iptables-save").arg("--version").output();
    if !iptables.is_ok_and(|o| o.status.success()) {
        println!("SKIPPED {test}: iptables-save not installed");
        return None;
    }
    match NetNs::create() {
        Ok(ns) => Some(ns),
        Err(why) => {
            println!("SKIPPED {test}: {why}");
            None
        }
    }
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Lines every default `init` must leave in the nat table, in iptables-save's spelling.
const DEFAULT_NAT: &[&str] = &[
    ":ISTIO_INBOUND - ",
    ":ISTIO_IN_REDIRECT - ",
    ":ISTIO_OUTPUT - ",
    ":ISTIO_REDIRECT - ",
    "-A OUTPUT -j ISTIO_OUTPUT",
    "-A ISTIO_INBOUND -p tcp -m tcp --dport 15008 -j RETURN",
    "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
    "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
    "-A ISTIO_OUTPUT -s 127.0.0.6/32 -o lo -j RETURN",
    "-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN",
    "-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN",
    "-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN",
];

#[test]
fn capture_netns_init_then_cleanup() {
    let Some(ns) = namespace("capture_netns_init_then_cleanup") else {
        return;
    };
    assert!(
        !ns.iptables_save().contains("ISTIO_"),
        "fresh namespace has ISTIO_ chains"
    );

    let out = ns.init(&[]);
    assert!(out.status.success(), "init failed: {}", text(&out));
    let saved = ns.iptables_save();
    for line in DEFAULT_NAT {
        assert!(saved.contains(line), "missing {line:?} in:\n{saved}");
    }
    let istio_rules = saved.lines().filter(|l| l.starts_with("-A ISTIO_")).count();
    assert_eq!(istio_rules, 11, "{saved}");

    // Running it again with the same flags changes nothing.
    let out = ns.init(&[]);
    assert!(out.status.success(), "second init failed: {}", text(&out));
    assert_eq!(
        ns.iptables_save()
            .lines()
            .filter(|l| l.starts_with("-A"))
            .count(),
        12
    );

    // Different flags over existing rules: refused without --reconcile, applied with it.
    let out = ns.init(&["-i", "*", "-b", "*"]);
    assert!(
        !out.status.success(),
        "drifting init succeeded: {}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--reconcile"),
        "{}",
        text(&out)
    );
    let out = ns.init(&["-i", "*", "-b", "*", "--reconcile"]);
    assert!(out.status.success(), "reconcile failed: {}", text(&out));
    let saved = ns.iptables_save();
    assert!(
        saved.contains("-A PREROUTING -p tcp -j ISTIO_INBOUND"),
        "{saved}"
    );
    assert!(
        saved.contains("-A ISTIO_OUTPUT -j ISTIO_REDIRECT"),
        "{saved}"
    );

    let out = ns.init(&["--cleanup"]);
    assert!(out.status.success(), "cleanup failed: {}", text(&out));
    let saved = ns.iptables_save();
    assert!(!saved.contains("ISTIO"), "left after cleanup:\n{saved}");
    assert!(
        !saved.lines().any(|l| l.starts_with("-A")),
        "rules left after cleanup:\n{saved}"
    );

    // Cleanup is idempotent.
    let out = ns.init(&["--cleanup"]);
    assert!(
        out.status.success(),
        "second cleanup failed: {}",
        text(&out)
    );
}

#[test]
fn capture_netns_invalid_flags_apply_nothing() {
    let Some(ns) = namespace("capture_netns_invalid_flags_apply_nothing") else {
        return;
    };
    let cases: &[(&[&str], &str)] = &[
        (&["-p", "http"], "--envoy-port"),
        (&["-i", "10.0.0.0/40"], "--istio-service-cidr"),
        (&["-m", "MASQUERADE"], "--istio-inbound-interception-mode"),
        (&["-u", "istio-proxy"], "--proxy-uid"),
        (
            &["-b", "*", "-d", "80,99999"],
            "--istio-local-exclude-ports",
        ),
    ];
    for (args, flag) in cases {
        let out = ns.init(args);
        assert!(!out.status.success(), "{args:?} accepted: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(flag),
            "{args:?}: message does not name {flag}: {stderr}"
        );
        let saved = ns.iptables_save();
        assert!(!saved.contains("ISTIO"), "{args:?} applied rules:\n{saved}");
    }
}

#[test]
fn capture_netns_dry_run_applies_nothing() {
    let Some(ns) = namespace("capture_netns_dry_run_applies_nothing") else {
        return;
    };
    let out = ns.init(&["--dry-run", "-i", "*", "-b", "*", "--enable-ipv6"]);
    assert!(out.status.success(), "dry run failed: {}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("*nat\n-N ISTIO_INBOUND\n"), "{stdout}");
    assert!(
        stdout.contains("-A ISTIO_OUTPUT -o lo -s ::6/128 -j RETURN"),
        "{stdout}"
    );
    assert!(
        !ns.iptables_save().contains("ISTIO"),
        "dry run applied rules"
    );

    // The printed IPv4 part is valid iptables-restore input as is.
    let v4 = stdout.split("# IPv6").next().unwrap_or_default();
    let restore = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            "iptables-restore",
            "--test",
            "--noflush",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            if let Some(mut stdin) = child.stdin.take() {
                stdin.write_all(v4.as_bytes())?;
            }
            child.wait_with_output()
        });
    match restore {
        Ok(out) => assert!(
            out.status.success(),
            "iptables-restore --test: {}",
            text(&out)
        ),
        Err(e) => panic!("iptables-restore --test: {e}"),
    }
}

/// Runs `f` on a thread that has joined the namespace's network stack.
fn in_namespace<T: Send + 'static>(ns: &NetNs, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{}", ns.name);
    let handle = std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
            .unwrap_or_else(|e| panic!("setns {path}: {e}"));
        f()
    });
    handle
        .join()
        .unwrap_or_else(|_| panic!("thread in namespace panicked"))
}

/// The rules really capture: an outbound connection to a captured range reaches the listener
/// on the outbound capture port, which reads the original destination; an excluded port is
/// not captured.
#[test]
fn capture_netns_outbound_connection_is_redirected() {
    let Some(ns) = namespace("capture_netns_outbound_connection_is_redirected") else {
        return;
    };
    for cmd in [
        "link set lo up",
        "link add v0 type veth peer name v1",
        "addr add 10.199.0.1/24 dev v0",
        "link set v1 up",
        "link set v0 up",
    ] {
        let args: Vec<&str> = cmd.split(' ').collect();
        let out = ns.exec("ip", &args);
        assert!(out.status.success(), "ip {cmd}: {}", text(&out));
    }
    let out = ns.init(&["-p", "15101", "-i", "10.199.0.0/16", "-o", "8081"]);
    assert!(out.status.success(), "init failed: {}", text(&out));

    let (original_dst, excluded) = in_namespace(&ns, || {
        use std::net::{SocketAddr, TcpListener, TcpStream};
        use std::time::Duration;
        let listener = TcpListener::bind("0.0.0.0:15101").unwrap_or_else(|e| panic!("bind: {e}"));
        let target: SocketAddr = "10.199.0.77:80".parse().unwrap_or_else(|e| panic!("{e}"));
        let client = TcpStream::connect_timeout(&target, Duration::from_secs(3));
        assert!(client.is_ok(), "captured connect failed: {client:?}");
        let (accepted, _) = listener.accept().unwrap_or_else(|e| panic!("accept: {e}"));
        let dst = nix::sys::socket::getsockopt(&accepted, nix::sys::socket::sockopt::OriginalDst)
            .unwrap_or_else(|e| panic!("SO_ORIGINAL_DST: {e}"));
        let original = SocketAddr::from((
            std::net::Ipv4Addr::from(u32::from_be(dst.sin_addr.s_addr)),
            u16::from_be(dst.sin_port),
        ));
        // Port 8081 is excluded (-o): the SYN goes out v0, where nobody answers.
        let excluded: SocketAddr = "10.199.0.77:8081".parse().unwrap_or_else(|e| panic!("{e}"));
        let direct = TcpStream::connect_timeout(&excluded, Duration::from_millis(500));
        (original, direct.is_ok())
    });
    assert_eq!(original_dst.to_string(), "10.199.0.77:80");
    assert!(!excluded, "a connection to an excluded port was captured");
}

/// Accepts one connection on `listener` within `wait`, returning its original destination.
fn accept_original_dst(
    listener: &std::net::TcpListener,
    wait: std::time::Duration,
) -> Option<std::net::SocketAddr> {
    let deadline = std::time::Instant::now() + wait;
    listener.set_nonblocking(true).ok()?;
    while std::time::Instant::now() < deadline {
        match listener.accept() {
            Ok((stream, _)) => {
                let dst =
                    nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::OriginalDst)
                        .ok()?;
                return Some(std::net::SocketAddr::from((
                    std::net::Ipv4Addr::from(u32::from_be(dst.sin_addr.s_addr)),
                    u16::from_be(dst.sin_port),
                )));
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
        }
    }
    None
}

/// Inbound capture: a connection from another pod to a captured port (`-b`) reaches the
/// inbound capture port with its original destination; another port is left alone.
#[test]
fn capture_netns_inbound_connection_is_redirected() {
    let Some(pod) = namespace("capture_netns_inbound_connection_is_redirected") else {
        return;
    };
    let peer = match NetNs::create() {
        Ok(peer) => peer,
        Err(why) => panic!("second namespace: {why}"),
    };
    let steps: [(&NetNs, &str); 7] = [
        (&pod, "link add v0 type veth peer name v1"),
        (&pod, &format!("link set v1 netns {}", peer.name)),
        (&pod, "addr add 10.199.1.1/24 dev v0"),
        (&pod, "link set v0 up"),
        (&pod, "link set lo up"),
        (&peer, "addr add 10.199.1.2/24 dev v1"),
        (&peer, "link set v1 up"),
    ];
    for (ns, cmd) in steps {
        let args: Vec<&str> = cmd.split(' ').collect();
        let out = ns.exec("ip", &args);
        assert!(out.status.success(), "ip {cmd}: {}", text(&out));
    }
    let out = pod.init(&["-z", "15106", "-b", "9080"]);
    assert!(out.status.success(), "init failed: {}", text(&out));

    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let pod_path = format!("/run/netns/{}", pod.name);
    let server = std::thread::spawn(move || {
        let file = std::fs::File::open(&pod_path).unwrap_or_else(|e| panic!("{pod_path}: {e}"));
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
            .unwrap_or_else(|e| panic!("setns: {e}"));
        let listener =
            std::net::TcpListener::bind("0.0.0.0:15106").unwrap_or_else(|e| panic!("bind: {e}"));
        let _ = ready_tx.send(());
        accept_original_dst(&listener, std::time::Duration::from_secs(5))
    });
    ready_rx
        .recv_timeout(std::time::Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("listener not ready: {e}"));
    let (captured, other) = in_namespace(&peer, || {
        use std::net::TcpStream;
        use std::time::Duration;
        let to = |addr: &str| addr.parse().unwrap_or_else(|e| panic!("{addr}: {e}"));
        let captured = TcpStream::connect_timeout(&to("10.199.1.1:9080"), Duration::from_secs(3));
        // Nothing listens on 9081 and it is not captured: refused.
        let other = TcpStream::connect_timeout(&to("10.199.1.1:9081"), Duration::from_secs(3));
        (
            captured.map(|_| ()).map_err(|e| e.to_string()),
            other.is_ok(),
        )
    });
    assert_eq!(captured, Ok(()), "connection to the captured port failed");
    assert!(!other, "a connection to an uncaptured port was accepted");
    let original = server
        .join()
        .unwrap_or_else(|_| panic!("listener thread panicked"));
    assert_eq!(
        original.map(|a| a.to_string()),
        Some("10.199.1.1:9080".to_owned())
    );
}
