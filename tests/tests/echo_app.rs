//! End-to-end tests of the `mesh-echo` binary on loopback: curl for HTTP/1.1 and h2c, the
//! built-in clients for gRPC, WebSocket and TCP. Every test starts its own server on ports
//! chosen by the kernel (port 0), so tests run in parallel.

use std::io::{BufRead as _, BufReader, Read as _};
use std::net::TcpStream;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_mesh-echo");

/// A running `mesh-echo` server, killed on drop.
struct Echo {
    child: Child,
    http: u16,
    grpc: u16,
    tcp: u16,
    banner: u16,
}

impl Echo {
    /// Starts a server with one port of each kind, plus `extra` flags.
    fn start(extra: &[&str]) -> Echo {
        let mut args = vec![
            "--http-port",
            "0",
            "--grpc-port",
            "0",
            "--tcp-port",
            "0",
            "--tcp-banner-port",
            "0",
            "--name",
            "reviews",
            "--version",
            "v2",
        ];
        args.extend_from_slice(extra);
        let (child, ready) = spawn(&args);
        let port = |kind: &str| ready[kind][0].as_u64().unwrap() as u16;
        Echo {
            http: port("http"),
            grpc: port("grpc"),
            tcp: port("tcp"),
            banner: port("tcp_banner"),
            child,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns the server and waits for its listening line.
fn spawn(args: &[&str]) -> (Child, Value) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn mesh-echo");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("mesh-echo did not print its listening line");
    let ready: Value = serde_json::from_str(&line).expect("listening line is JSON");
    assert_eq!(ready["event"], "listening");
    (child, ready)
}

fn curl(args: &[&str]) -> (u16, Value, String) {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-D",
            "/dev/stderr",
            "-w",
            "\n%{http_code}",
        ])
        .args(args)
        .output()
        .expect("run curl");
    assert!(out.status.success(), "curl failed: {out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let (body, code) = stdout.trim_end().rsplit_once('\n').unwrap();
    let headers = String::from_utf8(out.stderr).unwrap().to_lowercase();
    (
        code.parse().unwrap(),
        serde_json::from_str(body).unwrap(),
        headers,
    )
}

fn client(args: &[&str]) -> (Output, Vec<Value>) {
    let out = Command::new(BIN)
        .arg("client")
        .args(args)
        .output()
        .expect("run mesh-echo client");
    let lines = String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("client line is JSON"))
        .collect();
    (out, lines)
}

#[test]
fn http1_reply_says_what_it_saw_and_who_answered() {
    let echo = Echo::start(&["--namespace", "default"]);
    let (status, body, headers) = curl(&[
        "-H",
        "x-multi: a",
        "-H",
        "x-multi: b",
        "-H",
        "Host: reviews.default:9080",
        &echo.url("/some/path?q=1&r=2"),
    ]);
    assert_eq!(status, 200);
    assert!(headers.contains("x-echo-name: reviews"), "{headers}");
    assert!(headers.contains("content-type: application/json"));
    assert_eq!(body["name"], "reviews");
    assert_eq!(body["version"], "v2");
    assert_eq!(body["namespace"], "default");
    assert!(!body["hostname"].as_str().unwrap().is_empty());
    assert_eq!(body["protocol"], "HTTP/1.1");
    assert_eq!(body["method"], "GET");
    assert_eq!(body["path"], "/some/path?q=1&r=2");
    assert_eq!(body["host"], "reviews.default:9080");
    assert_eq!(body["headers"]["x-multi"], serde_json::json!(["a", "b"]));
    assert_eq!(body["port"], echo.http);
    assert_eq!(body["local"], format!("127.0.0.1:{}", echo.http));
    let peer = body["peer"].as_str().unwrap();
    assert!(
        peer.starts_with("127.0.0.1:") && !peer.ends_with(":0"),
        "{peer}"
    );
    assert_eq!(body["status"], 200);
}

#[test]
fn h2c_prior_knowledge_and_request_body() {
    let echo = Echo::start(&[]);
    let (status, body, _) = curl(&[
        "--http2-prior-knowledge",
        "-X",
        "POST",
        "-d",
        "0123456789",
        &echo.url("/h2"),
    ]);
    assert_eq!(status, 200);
    assert_eq!(body["protocol"], "HTTP/2");
    assert_eq!(body["method"], "POST");
    assert_eq!(body["host"], format!("127.0.0.1:{}", echo.http));
    assert_eq!(body["body_len"], 10);
}

#[test]
fn serves_ipv6_loopback_when_available() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback here: skipped");
        return;
    }
    let echo = Echo::start(&[]);
    let (status, body, _) = curl(&[&format!("http://[::1]:{}/v6", echo.http)]);
    assert_eq!(status, 200);
    assert!(body["peer"].as_str().unwrap().starts_with("[::1]:"));
}

#[test]
fn several_ports_of_one_kind() {
    let (child, ready) = spawn(&["--http-port", "0", "--http-port", "0"]);
    let _echo = Echo {
        child,
        http: 0,
        grpc: 0,
        tcp: 0,
        banner: 0,
    };
    let ports: Vec<u64> = ready["http"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap())
        .collect();
    assert_eq!(ports.len(), 2);
    for port in ports {
        let (_, body, _) = curl(&[&format!("http://127.0.0.1:{port}/")]);
        assert_eq!(body["port"], port);
    }
}

#[test]
fn delay_by_query_and_header() {
    let echo = Echo::start(&[]);
    let start = Instant::now();
    let (status, _, _) = curl(&[&echo.url("/slow?delay=300ms")]);
    assert_eq!(status, 200);
    assert!(start.elapsed() >= Duration::from_millis(300));
    let start = Instant::now();
    curl(&["-H", "x-echo-delay: 250", &echo.url("/slow")]);
    assert!(start.elapsed() >= Duration::from_millis(250));
}

#[test]
fn status_by_query_and_header() {
    let echo = Echo::start(&[]);
    let (status, body, _) = curl(&[&echo.url("/s?status=503")]);
    assert_eq!((status, body["status"].as_u64()), (503, Some(503)));
    let (status, body, _) = curl(&["-H", "x-echo-status: 418", &echo.url("/s")]);
    assert_eq!(status, 418);
    assert_eq!(body["name"], "reviews");
}

#[test]
fn fail_first_counts_per_key_and_per_path() {
    let echo = Echo::start(&[]);
    let keyed = |key: &str| {
        let key = format!("x-echo-fail-key: {key}");
        let (status, body, _) = curl(&["-H", "x-echo-fail-first: 3", "-H", &key, &echo.url("/a")]);
        (status, body["fail_call"].as_u64().unwrap())
    };
    let calls: Vec<_> = (0..4).map(|_| keyed("k1")).collect();
    assert_eq!(calls, [(503, 1), (503, 2), (503, 3), (200, 4)]);
    assert_eq!(keyed("k2"), (503, 1));
    // Without a key, the path (not the query) is the counter.
    let by_path = |path: &str| curl(&[&echo.url(path)]).0;
    assert_eq!(by_path("/p?fail_first=1&fail_status=500"), 500);
    assert_eq!(by_path("/p?fail_first=1&fail_status=500&x=1"), 200);
    assert_eq!(by_path("/q?fail_first=1"), 503);
}

#[test]
fn response_headers_size_and_bad_controls() {
    let echo = Echo::start(&[]);
    let (_, _, headers) = curl(&[
        "-H",
        "x-echo-response-header: x-a=1",
        &echo.url("/h?response_header=x-b%3D2"),
    ]);
    assert!(
        headers.contains("x-a: 1") && headers.contains("x-b: 2"),
        "{headers}"
    );
    let (_, body, _) = curl(&[&echo.url("/big?size=5000")]);
    assert_eq!(serde_json::to_vec(&body).unwrap().len() + 1, 5000);
    let (status, body, _) = curl(&[&echo.url("/bad?delay=soon")]);
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("delay"));
}

#[test]
fn http_client_h1_h2c_and_exit_codes() {
    let echo = Echo::start(&[]);
    let url = echo.url("/c");
    let (out, lines) = client(&["http", &url, "--count", "3", "-H", "x-t: 1"]);
    assert!(out.status.success());
    assert_eq!(lines.len(), 3);
    for line in &lines {
        assert_eq!(line["status"], 200);
        assert_eq!(line["body"]["headers"]["x-t"][0], "1");
        assert_eq!(line["headers"]["x-echo-version"][0], "v2");
    }
    // One connection serves all requests.
    assert_eq!(lines[0]["body"]["peer"], lines[2]["body"]["peer"]);
    let (out, lines) = client(&["http", &url, "--h2c", "-H", "Host: ratings:9080"]);
    assert!(out.status.success());
    assert_eq!(lines[0]["body"]["protocol"], "HTTP/2");
    assert_eq!(lines[0]["body"]["host"], "ratings:9080");
    // A non-2xx status is reported, not a failure, unless another status is expected.
    let (out, lines) = client(&["http", &echo.url("/c?status=503")]);
    assert!(out.status.success());
    assert_eq!(lines[0]["status"], 503);
    let (out, _) = client(&["http", &echo.url("/c?status=503"), "--expect-status", "200"]);
    assert!(!out.status.success());
    let (out, lines) = client(&["http", &echo.url("/c?delay=2s"), "--timeout", "200ms"]);
    assert!(!out.status.success());
    assert!(lines[0]["error"].as_str().unwrap().contains("timed out"));
}

#[test]
fn grpc_unary_stream_and_chat() {
    let echo = Echo::start(&[]);
    let target = format!("127.0.0.1:{}", echo.grpc);
    let (out, lines) = client(&["grpc", &target, "-H", "x-user: alice", "--message", "hi"]);
    assert!(out.status.success(), "{out:?}");
    let reply = &lines[0]["reply"];
    assert_eq!(lines[0]["code"], 0);
    assert_eq!(reply["message"], "hi");
    assert_eq!(reply["name"], "reviews");
    assert_eq!(reply["version"], "v2");
    assert_eq!(reply["method"], "/mesh.echo.v1.EchoService/Echo");
    assert_eq!(reply["authority"], target);
    assert_eq!(reply["metadata"]["x-user"][0], "alice");
    assert_eq!(reply["port"], echo.grpc);
    assert!(reply["peer"].as_str().unwrap().starts_with("127.0.0.1:"));

    let (out, lines) = client(&[
        "grpc",
        &target,
        "--stream",
        "4",
        "--authority",
        "ratings:9090",
    ]);
    assert!(out.status.success());
    let indexes: Vec<_> = lines.iter().map(|l| l["reply"]["index"].clone()).collect();
    assert_eq!(indexes, [0, 1, 2, 3]);
    assert_eq!(lines[0]["reply"]["authority"], "ratings:9090");

    let (out, lines) = client(&["grpc", &target, "--chat", "3", "--count", "2"]);
    assert!(out.status.success());
    assert_eq!(lines.len(), 6);
    assert_eq!(lines[5]["reply"]["message"], "hello 2");
    assert_eq!(lines[5]["call"], 1);
}

#[test]
fn grpc_controls() {
    let echo = Echo::start(&[]);
    let target = format!("127.0.0.1:{}", echo.grpc);
    let (out, lines) = client(&["grpc", &target, "-H", "x-echo-grpc-status: 7"]);
    assert!(!out.status.success());
    assert_eq!(lines[0]["code"], 7);
    let (out, _) = client(&[
        "grpc",
        &target,
        "-H",
        "x-echo-grpc-status: 7",
        "--expect-code",
        "7",
    ]);
    assert!(out.status.success());

    let (out, lines) = client(&[
        "grpc",
        &target,
        "--count",
        "3",
        "--expect-code",
        "14",
        "-H",
        "x-echo-fail-first: 2",
    ]);
    let codes: Vec<_> = lines.iter().map(|l| l["code"].as_i64().unwrap()).collect();
    assert_eq!(codes, [14, 14, 0]);
    assert!(!out.status.success());

    let start = Instant::now();
    let (out, lines) = client(&[
        "grpc",
        &target,
        "-H",
        "x-echo-delay: 300ms",
        "-H",
        "x-echo-response-header: x-r=1",
        "-H",
        "x-echo-size: 100",
    ]);
    assert!(out.status.success());
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert_eq!(lines[0]["metadata"]["x-r"][0], "1");
    assert_eq!(lines[0]["reply"]["padding_len"], 100);
    let (_, lines) = client(&["grpc", &target, "-H", "x-echo-grpc-status: 99"]);
    assert_eq!(lines[0]["code"], 3);
}

#[tokio::test]
async fn grpc_health_reports_serving() {
    use mesh_tests::echo::proto::health::health_check_response::ServingStatus;
    use mesh_tests::echo::proto::health::health_client::HealthClient;
    use mesh_tests::echo::proto::health::HealthCheckRequest;
    let echo = Echo::start(&[]);
    let mut health = HealthClient::connect(format!("http://127.0.0.1:{}", echo.grpc))
        .await
        .unwrap();
    let reply = health
        .check(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.status, ServingStatus::Serving as i32);
}

#[test]
fn websocket_echo_and_handshake_controls() {
    let echo = Echo::start(&[]);
    let url = format!("ws://127.0.0.1:{}/chat/room", echo.http);
    let (out, lines) = client(&["ws", &url, "--messages", "5"]);
    assert!(out.status.success(), "{lines:?}");
    assert_eq!(lines[0]["status"], 101);
    assert_eq!(lines[0]["echoed"], 5);
    assert_eq!(lines[0]["headers"]["x-echo-name"][0], "reviews");
    let (out, lines) = client(&["ws", &format!("{url}?status=503")]);
    assert!(!out.status.success());
    assert!(lines[0]["error"].as_str().unwrap().contains("503"));
}

#[test]
fn tcp_echo_and_server_first_banner() {
    let echo = Echo::start(&[]);
    let (out, lines) = client(&["tcp", &format!("127.0.0.1:{}", echo.tcp), "--data", "ping"]);
    assert!(out.status.success());
    assert_eq!(lines[0]["received"], "ping");
    let banner_port = format!("127.0.0.1:{}", echo.banner);
    let (out, lines) = client(&["tcp", &banner_port, "--expect-banner", "--data", "x"]);
    assert!(out.status.success(), "{lines:?}");
    assert_eq!(lines[0]["banner"], "mesh-echo reviews v2");
    assert_eq!(lines[0]["received"], "x");

    // The banner comes before the client says anything.
    let mut stream = TcpStream::connect(&banner_port).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut banner = [0u8; 21];
    stream.read_exact(&mut banner).unwrap();
    assert_eq!(&banner, b"mesh-echo reviews v2\n");
}

#[test]
fn sigterm_exits_promptly() {
    let mut echo = Echo::start(&[]);
    // Hold a connection open: it must not delay the exit.
    let _open = TcpStream::connect(("127.0.0.1", echo.tcp)).unwrap();
    let pid = nix::unistd::Pid::from_raw(echo.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        if let Some(status) = echo.child.try_wait().unwrap() {
            assert!(status.success(), "{status:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "mesh-echo still running 2s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
