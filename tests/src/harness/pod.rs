//! Pods: commands inside a pod's network namespace, and sidecar injection.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::cmd::{output_with_timeout, wait_until, ExecOutput};
use super::error::{HarnessError, Result};
use super::http::http_get;
use super::paths::bin;
use super::process::{Launch, Process, PROXY_UID};
use super::topology::{Topology, TopologyInner};

/// How long [`Pod::exec`] lets a command run before killing it.
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(30);
/// The proxy's readiness port (`/healthz/ready`), reachable from the host.
pub const READINESS_PORT: u16 = 15021;
/// The proxy's admin port, bound to 127.0.0.1 inside the pod.
pub const ADMIN_PORT: u16 = 15000;

/// The arguments Istio's sidecar injector gives `istio-iptables`, which `mesh-proxy init`
/// takes as they are (`-p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x '' -b '*' -d
/// 15090,15021,15020`): capture all outbound and inbound TCP, except the proxy's own traffic
/// (UID 1337) and its stats and health ports.
pub const ISTIO_INIT_ARGS: &[&str] = &[
    "-p",
    "15001",
    "-z",
    "15006",
    "-u",
    "1337",
    "-m",
    "REDIRECT",
    "-i",
    "*",
    "-x",
    "",
    "-b",
    "*",
    "-d",
    "15090,15021,15020",
];

#[derive(Debug)]
pub(crate) struct PodData {
    pub(crate) name: String,
    pub(crate) namespace: String,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) ip: Ipv4Addr,
    pub(crate) netns: String,
    pub(crate) host_veth: String,
    pub(crate) etc_dir: PathBuf,
    pub(crate) work_dir: PathBuf,
    pub(crate) proxy: Mutex<Option<Process>>,
    /// The service account of an injected sidecar with an identity.
    pub(crate) service_account: Mutex<Option<String>>,
}

impl PodData {
    /// The service account of its sidecar's identity, if it has one.
    pub(crate) fn service_account(&self) -> Option<String> {
        self.service_account
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// A pod of a [`Topology`]: a network namespace on the topology's bridge. Cheap to clone.
/// It lives as long as its topology; after the topology is dropped its methods fail.
#[derive(Debug, Clone)]
pub struct Pod {
    pub(crate) topo: Arc<TopologyInner>,
    pub(crate) data: Arc<PodData>,
}

/// How a pod's sidecar is started by [`Pod::inject`].
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// `--service-account` (default `default`).
    pub service_account: String,
    /// Run `mesh-proxy init` with [`ProxyOptions::init_args`] first (default true).
    pub capture: bool,
    /// Arguments of `mesh-proxy init` (default [`ISTIO_INIT_ARGS`]).
    pub init_args: Vec<String>,
    /// Arguments appended to `mesh-proxy run`'s.
    pub extra_run_args: Vec<String>,
    /// Environment of `mesh-proxy run` (default `RUST_LOG=info`).
    pub env: Vec<(String, String)>,
    /// `--xds-address`; default the topology's control plane, `10.211.N.1:15010`.
    pub xds_address: Option<SocketAddr>,
    /// Give the sidecar a workload identity: a bootstrap token from the control plane's CA
    /// (`--token-file`), hence a certificate and mutual TLS (default true).
    pub identity: bool,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions {
            service_account: "default".to_owned(),
            capture: true,
            init_args: ISTIO_INIT_ARGS.iter().map(|s| (*s).to_owned()).collect(),
            extra_run_args: Vec::new(),
            env: vec![("RUST_LOG".to_owned(), "info".to_owned())],
            xds_address: None,
            identity: true,
        }
    }
}

/// The `mesh-echo` server of a pod, for [`Pod::spawn_echo`].
#[derive(Debug, Clone, Default)]
pub struct EchoSpec {
    /// `--name` (who answered, e.g. `reviews`).
    pub name: String,
    /// `--version` (e.g. `v1`).
    pub version: String,
    /// `--http-port` (HTTP/1.1, h2c, WebSocket).
    pub http_port: Option<u16>,
    /// `--grpc-port`.
    pub grpc_port: Option<u16>,
    /// `--tcp-port` (raw echo).
    pub tcp_port: Option<u16>,
    /// `--tcp-banner-port` (server speaks first).
    pub tcp_banner_port: Option<u16>,
    /// More arguments.
    pub extra_args: Vec<String>,
}

impl EchoSpec {
    /// An echo server named `name`, version `version`, with no ports yet.
    pub fn new(name: &str, version: &str) -> Self {
        EchoSpec {
            name: name.to_owned(),
            version: version.to_owned(),
            ..EchoSpec::default()
        }
    }

    /// Serves HTTP on `port`.
    pub fn http(mut self, port: u16) -> Self {
        self.http_port = Some(port);
        self
    }

    /// Serves gRPC on `port`.
    pub fn grpc(mut self, port: u16) -> Self {
        self.grpc_port = Some(port);
        self
    }

    /// Serves raw TCP echo on `port`.
    pub fn tcp(mut self, port: u16) -> Self {
        self.tcp_port = Some(port);
        self
    }

    /// Serves a server-first TCP banner on `port`.
    pub fn tcp_banner(mut self, port: u16) -> Self {
        self.tcp_banner_port = Some(port);
        self
    }

    fn argv(&self) -> Vec<OsString> {
        let mut argv: Vec<OsString> = vec![bin("mesh-echo").into()];
        let mut flag = |f: &str, v: String| {
            argv.push(f.into());
            argv.push(v.into());
        };
        flag("--name", self.name.clone());
        flag("--version", self.version.clone());
        let ports = [
            ("--http-port", self.http_port),
            ("--grpc-port", self.grpc_port),
            ("--tcp-port", self.tcp_port),
            ("--tcp-banner-port", self.tcp_banner_port),
        ];
        for (f, port) in ports {
            if let Some(port) = port {
                flag(f, port.to_string());
            }
        }
        argv.extend(self.extra_args.iter().map(OsString::from));
        argv
    }
}

/// A command to run in a pod ([`Pod::command`]) or on the host ([`Topology::host_command`])
/// as part of a topology: as a background [`Process`] or to completion.
#[derive(Debug, Clone)]
pub struct Cmd {
    topo: Arc<TopologyInner>,
    pod: Option<Arc<PodData>>,
    argv: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    user: Option<(u32, u32)>,
    timeout: Duration,
}

impl Cmd {
    fn new<S: Into<OsString>>(
        topo: Arc<TopologyInner>,
        pod: Option<Arc<PodData>>,
        argv: impl IntoIterator<Item = S>,
    ) -> Self {
        Cmd {
            topo,
            pod,
            argv: argv.into_iter().map(Into::into).collect(),
            env: Vec::new(),
            user: None,
            timeout: EXEC_TIMEOUT,
        }
    }

    /// Appends an argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.argv.push(arg.into());
        self
    }

    /// Appends arguments.
    pub fn args<S: Into<OsString>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.argv.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Runs as `uid`/`gid` with no supplementary groups (`setpriv`).
    pub fn as_user(mut self, uid: u32, gid: u32) -> Self {
        self.user = Some((uid, gid));
        self
    }

    /// Runs as the proxy user, UID/GID 1337, whose traffic the capture rules let through.
    pub fn as_proxy_user(self) -> Self {
        self.as_user(PROXY_UID, PROXY_UID)
    }

    /// How long [`Cmd::exec`] waits (default [`EXEC_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn launch(&self) -> Launch {
        Launch {
            netns: self.pod.as_ref().map(|p| p.netns.clone()),
            user: self.user,
            argv: self.argv.clone(),
            env: self.env.clone(),
            cwd: Some(
                self.pod
                    .as_ref()
                    .map_or_else(|| self.topo.state_dir.clone(), |p| p.work_dir.clone()),
            ),
            slot: self.topo.slot_n,
        }
    }

    /// Starts it in the background as process `name` (logs `<pod>-<name>.out.log` /
    /// `.err.log`, `host-<name>...` on the host); it runs until stopped or the topology is
    /// dropped.
    pub fn spawn(self, name: &str) -> Result<Process> {
        let prefix = self.pod.as_ref().map_or("host", |p| p.name.as_str());
        self.topo.start_process(prefix, name, self.launch())
    }

    /// Runs it to completion (killed after the timeout, which is then an error) and returns
    /// its output; a non-zero exit is not an error here (see [`ExecOutput::ok`]).
    pub fn exec(self) -> Result<ExecOutput> {
        self.topo.lock_live().map(drop)?;
        output_with_timeout(self.launch().command(), self.timeout)
    }
}

impl Pod {
    /// The pod's name.
    pub fn name(&self) -> &str {
        &self.data.name
    }

    /// Its namespace.
    pub fn namespace(&self) -> &str {
        &self.data.namespace
    }

    /// Its labels.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.data.labels
    }

    /// Its address on the bridge (`eth0`).
    pub fn ip(&self) -> Ipv4Addr {
        self.data.ip
    }

    /// The name of its network namespace (`mtN-<pod>`), for `ip netns exec`.
    pub fn netns(&self) -> &str {
        &self.data.netns
    }

    /// A directory for the pod's files (writable by UID 1337 too), removed with the topology.
    /// Processes in the pod start there.
    pub fn work_dir(&self) -> &Path {
        &self.data.work_dir
    }

    /// A command `argv` (program first) to run in the pod, as root unless changed.
    pub fn command<S: Into<OsString>>(&self, argv: impl IntoIterator<Item = S>) -> Cmd {
        Cmd::new(Arc::clone(&self.topo), Some(Arc::clone(&self.data)), argv)
    }

    /// Starts `argv` in the pod in the background as process `name`; see [`Cmd::spawn`].
    pub fn spawn<S: Into<OsString>>(
        &self,
        name: &str,
        argv: impl IntoIterator<Item = S>,
    ) -> Result<Process> {
        self.command(argv).spawn(name)
    }

    /// Runs `argv` in the pod to completion; see [`Cmd::exec`].
    pub fn exec<S: Into<OsString>>(&self, argv: impl IntoIterator<Item = S>) -> Result<ExecOutput> {
        self.command(argv).exec()
    }

    /// `curl -sS --max-time 10 ARGS` in the pod.
    pub fn curl(&self, args: &[&str]) -> Result<ExecOutput> {
        self.command(["curl", "-sS", "--max-time", "10"])
            .args(args.iter().copied())
            .exec()
    }

    /// `mesh-echo client ARGS` in the pod (as root, so its traffic is captured).
    pub fn echo_client(&self, args: &[&str]) -> Result<ExecOutput> {
        self.command([bin("mesh-echo")])
            .arg("client")
            .args(args.iter().copied())
            .exec()
    }

    /// Starts `mesh-echo` as process `echo` of the pod.
    pub fn spawn_echo(&self, spec: &EchoSpec) -> Result<Process> {
        self.spawn("echo", spec.argv())
    }

    /// Injects the sidecar: `mesh-proxy init` (unless `capture` is off; it must succeed),
    /// then `mesh-proxy run` as UID 1337 in the background as process `proxy`, with the pod's
    /// identity and placement as flags, and (unless `identity` is off) `--token-file` with
    /// its bootstrap token. Start the app after it.
    pub fn inject(&self, opts: &ProxyOptions) -> Result<Process> {
        let proxy_bin = bin("mesh-proxy");
        if opts.capture {
            self.command([proxy_bin.as_os_str()])
                .arg("init")
                .args(&opts.init_args)
                .exec()?
                .ok()?;
        }
        let xds = opts
            .xds_address
            .unwrap_or_else(|| self.topo.host_addr(super::controlplane::XDS_PORT));
        let labels: Vec<String> = self
            .data
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let mut cmd = self
            .command([proxy_bin.as_os_str()])
            .arg("run")
            .args(["--xds-address".to_owned(), xds.to_string()])
            .args(["--pod-name", self.name()])
            .args(["--namespace", self.namespace()])
            .args(["--service-account", opts.service_account.as_str()])
            .args(["--ip".to_owned(), self.ip().to_string()]);
        if !labels.is_empty() {
            cmd = cmd.args(["--labels".to_owned(), labels.join(",")]);
        }
        if opts.identity {
            *self
                .data
                .service_account
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(opts.service_account.clone());
            cmd = cmd.arg("--token-file").arg(self.token_file());
            // Now if the CA exists, else once the control plane is ready.
            self.topo.write_token(&self.data)?;
        }
        cmd = cmd.args(&opts.extra_run_args).as_proxy_user();
        for (k, v) in &opts.env {
            cmd = cmd.env(k, v);
        }
        let proxy = cmd.spawn("proxy")?;
        *self.data.proxy.lock().unwrap_or_else(|e| e.into_inner()) = Some(proxy.clone());
        Ok(proxy)
    }

    /// The sidecar process, if [`Pod::inject`] ran.
    pub fn proxy(&self) -> Option<Process> {
        self.data
            .proxy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits until the sidecar answers 200 on `http://POD_IP:15021/healthz/ready` (asked from
    /// the host); fails at once if the proxy process exits. Without a sidecar it only waits
    /// for the port.
    pub fn wait_proxy_ready(&self, timeout: Duration) -> Result<()> {
        let addr = SocketAddr::from((self.ip(), READINESS_PORT));
        let proxy = self.proxy();
        wait_until(
            &format!("the sidecar of pod {} to be ready at {addr}", self.name()),
            timeout,
            Duration::from_millis(100),
            || {
                if let Some(p) = &proxy {
                    p.check_running()?;
                }
                expect_200(addr, "/healthz/ready")
            },
        )
    }

    /// `GET http://127.0.0.1:15000PATH` on the sidecar's admin port (from inside the pod);
    /// the body if it answered 2xx.
    pub fn admin(&self, path: &str) -> Result<String> {
        self.curl(&["-f", &format!("http://127.0.0.1:{ADMIN_PORT}{path}")])?
            .ok()
    }
}

/// `Ok(true)` when `GET http://ADDR PATH` answers 200; an error naming the status and body
/// otherwise (kept by [`wait_until`] as the last error seen).
pub(crate) fn expect_200(addr: SocketAddr, path: &str) -> Result<bool> {
    let r = http_get(addr, path, Duration::from_secs(2))?;
    if r.status == 200 {
        return Ok(true);
    }
    Err(HarnessError::Http {
        addr,
        path: path.to_owned(),
        reason: format!("answered {}: {}", r.status, r.body.trim()),
    })
}

impl Topology {
    /// A command `argv` to run on the host as part of this topology (tagged with its slot,
    /// started in its state directory, stopped with it).
    pub fn host_command<S: Into<OsString>>(&self, argv: impl IntoIterator<Item = S>) -> Cmd {
        Cmd::new(Arc::clone(&self.inner), None, argv)
    }

    /// Starts `argv` on the host in the background as process `name` (logs
    /// `host-<name>.out.log` / `.err.log`): peers and tools beside the control plane.
    pub fn spawn_host<S: Into<OsString>>(
        &self,
        name: &str,
        argv: impl IntoIterator<Item = S>,
    ) -> Result<Process> {
        self.host_command(argv).spawn(name)
    }

    /// A pod with the sidecar injected with default [`ProxyOptions`]: [`Topology::pod`] then
    /// [`Pod::inject`]. The proxy is not awaited: call [`Pod::wait_proxy_ready`] or
    /// [`Topology::wait_ready`] once the control plane runs.
    pub fn injected_pod(
        &self,
        name: &str,
        namespace: &str,
        labels: &[(&str, &str)],
    ) -> Result<Pod> {
        self.injected_pod_with(name, namespace, labels, &ProxyOptions::default())
    }

    /// [`Topology::injected_pod`] with explicit options.
    pub fn injected_pod_with(
        &self,
        name: &str,
        namespace: &str,
        labels: &[(&str, &str)],
        opts: &ProxyOptions,
    ) -> Result<Pod> {
        let pod = self.pod(name, namespace, labels)?;
        pod.inject(opts)?;
        Ok(pod)
    }
}
