//! Helpers of the proxy's integration tests: the real `mesh-proxy` binary on loopback, fed
//! by an in-process ADS server, in front of in-process upstreams.
#![allow(dead_code)]

pub mod keepalive;
pub mod upstreams;
pub mod xds;

use std::io::BufRead;
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A loopback port that no other test process can be handed while this one runs.
///
/// Ports come from below the kernel's ephemeral range (`ip_local_port_range`), so neither a
/// `bind(":0")` nor an outgoing connection of any process lands on them, and each is reserved
/// for the life of this process by an exclusive lock on `/tmp/mesh-test-ports/PORT`. (Binding
/// port 0 and releasing it, the usual trick, lets a parallel test's upstream or client socket
/// take the port before the proxy binds it.)
pub fn free_port() -> u16 {
    static HELD: Mutex<Vec<nix::fcntl::Flock<std::fs::File>>> = Mutex::new(Vec::new());
    let dir = std::path::Path::new("/tmp/mesh-test-ports");
    std::fs::create_dir_all(dir).expect("create /tmp/mesh-test-ports");
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u32, ephemeral_low.clamp(12_000, 32_768));
    let span = high - low;
    let seed = std::process::id().wrapping_mul(2_654_435_761)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
    for i in 0..span {
        let port = (low + (seed.wrapping_add(i.wrapping_mul(7919)) % span)) as u16;
        let Ok(file) = std::fs::File::create(dir.join(port.to_string())) else {
            continue;
        };
        let Ok(lock) = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        else {
            continue;
        };
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        HELD.lock().unwrap().push(lock);
        return port;
    }
    panic!("no free loopback port in {low}..{high}");
}

/// The loopback listen addresses of one proxy, chosen before its config is written.
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    pub outbound: SocketAddr,
    pub inbound: SocketAddr,
    pub admin: SocketAddr,
    pub readiness: SocketAddr,
    pub stats: SocketAddr,
    pub status: SocketAddr,
}

impl Ports {
    pub fn new() -> Ports {
        let port = |_| SocketAddr::from(([127, 0, 0, 1], free_port()));
        let [outbound, inbound, admin, readiness, stats, status]: [SocketAddr; 6] =
            [0, 1, 2, 3, 4, 5].map(port);
        Ports {
            outbound,
            inbound,
            admin,
            readiness,
            stats,
            status,
        }
    }
}

/// A running `mesh-proxy run` on loopback ports; killed on drop.
pub struct Proxy {
    child: Child,
    pub outbound: SocketAddr,
    pub inbound: SocketAddr,
    pub admin: SocketAddr,
    pub readiness: SocketAddr,
    pub stats: SocketAddr,
    pub status: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

fn collect(reader: impl std::io::Read + Send + 'static, into: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(reader).lines() {
            let Ok(line) = line else { return };
            into.lock().unwrap().push(line);
        }
    });
}

impl Proxy {
    /// Start the proxy on `ports` against the ADS server at `xds`, with extra flags.
    pub fn start(xds: SocketAddr, ports: Ports, extra: &[&str]) -> Proxy {
        Proxy::start_as(xds, ports, "test-pod", "app=test", extra)
    }

    /// [`Proxy::start`] for the pod `pod` with labels `labels` (`k=v,k=v`).
    pub fn start_as(
        xds: SocketAddr,
        ports: Ports,
        pod: &str,
        labels: &str,
        extra: &[&str],
    ) -> Proxy {
        let Ports {
            outbound,
            inbound,
            admin,
            readiness,
            stats,
            status,
        } = ports;
        let mut child = Command::new(env!("CARGO_BIN_EXE_mesh-proxy"))
            .arg("run")
            .args(["--xds-address", &format!("http://{xds}")])
            .args(["--pod-name", pod, "--namespace", "default"])
            .args(["--ip", "127.0.0.1", "--labels", labels])
            .args(["--outbound-addr", &outbound.to_string()])
            .args(["--inbound-addr", &inbound.to_string()])
            .args(["--admin-addr", &admin.to_string()])
            .args(["--readiness-addr", &readiness.to_string()])
            .args(["--stats-addr", &stats.to_string()])
            .args(["--status-addr", &status.to_string()])
            .args(["--drain-duration", "3s"])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mesh-proxy starts");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        collect(child.stdout.take().unwrap(), logs.clone());
        collect(child.stderr.take().unwrap(), stderr.clone());
        Proxy {
            child,
            outbound,
            inbound,
            admin,
            readiness,
            stats,
            status,
            logs,
            stderr,
        }
    }

    /// Wait until `/healthz/ready` answers 200.
    pub async fn wait_ready(&self) {
        let url = format!("http://{}/healthz/ready", self.readiness);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if curl(&["-s", "-o", "/dev/null", "-w", "%{http_code}", &url]).await == "200" {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("proxy not ready; stderr:\n{}", self.stderr().join("\n"));
    }

    /// The access-log lines so far, parsed.
    pub fn access_logs(&self) -> Vec<serde_json::Value> {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad log line {l}: {e}")))
            .collect()
    }

    /// Wait for an access-log line matching `pred`.
    pub async fn wait_log(&self, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(v) = self.access_logs().into_iter().find(|v| pred(v)) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "no matching access log in {:?}",
                self.access_logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The proxy's stdout lines so far, as written (any access-log format).
    pub fn stdout(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// The proxy's stderr so far.
    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// Send a signal to the proxy.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Wait (polling) for the proxy to exit, at most `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run curl; returns its stdout.
pub async fn curl(args: &[&str]) -> String {
    let out = tokio::process::Command::new("curl")
        .args(["--max-time", "10"])
        .args(args)
        .output()
        .await
        .expect("curl runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An HTTP response as curl saw it: status and body.
pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// GET `http://{addr}{path}` with `Host: host` (HTTP/1.1, or h2c prior knowledge).
pub async fn get(addr: SocketAddr, host: &str, path: &str, h2c: bool) -> Reply {
    let url = format!("http://{addr}{path}");
    let host_header = format!("Host: {host}");
    let mut args = vec!["-s", "-H", &host_header, "-w", "\n%{http_code}", &url];
    if h2c {
        args.insert(0, "--http2-prior-knowledge");
    }
    let out = curl(&args).await;
    let (body, status) = out.rsplit_once('\n').unwrap_or(("", &out));
    Reply {
        status: status.trim().parse().unwrap_or(0),
        body: body.to_string(),
    }
}
