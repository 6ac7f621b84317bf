//! Starting each kind of process in a pod, pinned to its core: the upstream app, the
//! sidecars (`mesh-proxy` through the harness's injection, Envoy with the same capture rules),
//! nginx, HAProxy and the bare Pingora forwarder.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mesh_tests::harness::{
    self, ControlPlane, Pod, Process, ProxyOptions, Topology, ISTIO_INIT_ARGS,
};

use super::Error;
use crate::paths::{GRPC_PORT, H2_PORT, HTTP_PORT};
use crate::peers::{self, Certs, Role};

/// The cores: proxies on one, load generator and upstream apps on the other.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct Cpus {
    /// Where every proxy runs.
    pub proxy: usize,
    /// Where the load generator, the upstream apps and the control plane run.
    pub load: usize,
}

impl Cpus {
    /// Core 0 for proxies and core 1 for the rest; everything on core 0 on a single-CPU machine.
    pub fn detect() -> Cpus {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        Cpus {
            proxy: 0,
            load: usize::from(n > 1),
        }
    }
}

/// `taskset -c CPU` as the head of a command line.
pub fn taskset(cpu: usize) -> Vec<OsString> {
    vec!["taskset".into(), "-c".into(), cpu.to_string().into()]
}

/// This program, which also serves as the upstream app, the forwarder and the generator.
pub fn self_exe() -> Result<PathBuf, Error> {
    std::env::current_exe().map_err(|source| Error::Io {
        path: PathBuf::from("/proc/self/exe"),
        source,
    })
}

/// Pins every thread of `pid` (and of its descendants) to `cpu`.
pub fn pin(pid: u32, cpu: usize) {
    use nix::sched::{sched_setaffinity, CpuSet};
    use nix::unistd::Pid;
    let mut set = CpuSet::new();
    if set.set(cpu).is_err() {
        return;
    }
    for p in crate::procfs::with_descendants(&[pid]) {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            if let Some(tid) = t.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) {
                // A thread that exited meanwhile needs no pinning.
                let _ = sched_setaffinity(Pid::from_raw(tid), &set);
            }
        }
    }
}

/// Starts the upstream app in `pod`, answering on the HTTP, HTTP/2 and gRPC ports.
pub fn upstream(pod: &Pod, cpus: Cpus) -> Result<Process, Error> {
    let mut argv = taskset(cpus.load);
    argv.push(self_exe()?.into());
    argv.push("upstream".into());
    for port in [HTTP_PORT, H2_PORT, GRPC_PORT] {
        argv.push("--listen".into());
        argv.push(format!("0.0.0.0:{port}").into());
    }
    Ok(pod.command(argv).spawn("upstream")?)
}

/// Injects `mesh-proxy` into `pod` (capture rules unless `capture` is false) with one worker.
pub fn mesh_sidecar(pod: &Pod, capture: bool) -> Result<Process, Error> {
    let opts = ProxyOptions {
        capture,
        extra_run_args: vec!["--concurrency".into(), "1".into()],
        ..ProxyOptions::default()
    };
    Ok(pod.inject(&opts)?)
}

/// Starts Envoy as the sidecar of `pod`: the same capture rules as `mesh-proxy init` writes
/// (unless `capture` is false), UID 1337, one worker, a bootstrap pointing at the topology's
/// control plane. With `identity`, `mesh-proxy agent` first (istio-agent's part: the workload
/// certificate over SDS), pinned with the proxies; it is returned beside Envoy, since the
/// sidecar's footprint is both (as Istio's `istio-proxy` container holds both).
pub fn envoy_sidecar(
    topo: &Topology,
    pod: &Pod,
    envoy: &Path,
    cpus: Cpus,
    capture: bool,
    identity: bool,
) -> Result<(Process, Option<Process>), Error> {
    if capture {
        pod.command([harness::bin("mesh-proxy").into_os_string()])
            .arg("init")
            .args(ISTIO_INIT_ARGS.iter().copied())
            .exec()?
            .ok()?;
    }
    let labels: Vec<(&str, &str)> = pod
        .labels()
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let sds_socket = pod.work_dir().join(harness::SDS_SOCKET);
    let agent = if identity {
        let agent = pod.spawn_agent("default", topo.xds_address())?;
        if let Some(pid) = agent.pid() {
            pin(pid, cpus.proxy);
        }
        Some(agent)
    } else {
        None
    };
    let bootstrap = peers::envoy_bootstrap(
        pod.name(),
        pod.namespace(),
        pod.ip(),
        &labels,
        topo.xds_address(),
        identity.then_some(sds_socket.as_path()),
    );
    let path = pod.work_dir().join("envoy.yaml");
    std::fs::write(&path, bootstrap).map_err(|source| Error::Io {
        path: path.clone(),
        source,
    })?;
    let mut argv = taskset(cpus.proxy);
    argv.extend([
        envoy.as_os_str().to_owned(),
        "-c".into(),
        path.into_os_string(),
        "--concurrency".into(),
        "1".into(),
        "--disable-hot-restart".into(),
        "--log-level".into(),
        "warning".into(),
    ]);
    Ok((pod.command(argv).as_proxy_user().spawn("envoy")?, agent))
}

/// Starts nginx in `pod` as `name` for `role`, its files in the pod's `name` directory.
pub fn nginx(
    pod: &Pod,
    name: &str,
    bin: &Path,
    role: &Role,
    certs: Option<&Certs>,
    cpus: Cpus,
) -> Result<Process, Error> {
    let dir = pod.work_dir().join(name);
    std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
        path: dir.clone(),
        source,
    })?;
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, peers::nginx_conf(role, &dir, certs)).map_err(|source| Error::Io {
        path: conf.clone(),
        source,
    })?;
    let mut argv = taskset(cpus.proxy);
    argv.extend([
        bin.as_os_str().to_owned(),
        "-p".into(),
        dir.clone().into_os_string(),
        "-e".into(),
        "stderr".into(),
        "-c".into(),
        conf.into_os_string(),
    ]);
    Ok(pod.command(argv).spawn(name)?)
}

/// Starts HAProxy in `pod` as `name` for `role`, in the foreground.
pub fn haproxy(
    pod: &Pod,
    name: &str,
    bin: &Path,
    role: &Role,
    certs: Option<&Certs>,
    cpus: Cpus,
) -> Result<Process, Error> {
    let conf = pod.work_dir().join(format!("{name}.cfg"));
    std::fs::write(&conf, peers::haproxy_conf(role, certs)).map_err(|source| Error::Io {
        path: conf.clone(),
        source,
    })?;
    let mut argv = taskset(cpus.proxy);
    argv.extend([
        bin.as_os_str().to_owned(),
        "-db".into(),
        "-f".into(),
        conf.into_os_string(),
    ]);
    Ok(pod.command(argv).spawn(name)?)
}

/// Starts the bare Pingora forwarder in `pod` as `name`: `(port, upstream, h2)` routes.
pub fn pingora(
    pod: &Pod,
    name: &str,
    routes: &[(u16, SocketAddr, bool)],
    cpus: Cpus,
) -> Result<Process, Error> {
    let mut argv = taskset(cpus.proxy);
    argv.push(self_exe()?.into());
    argv.push("forwarder".into());
    for (port, up, h2) in routes {
        argv.push("--route".into());
        argv.push(format!("{port}={up}{}", if *h2 { ",h2" } else { "" }).into());
    }
    Ok(pod.command(argv).spawn(name)?)
}

/// Whether the control plane reports `node_id` connected with CDS, EDS, LDS and RDS all
/// ACKed at the version last sent, and with at least `min_clusters` clusters sent.
pub fn node_synced(cp: &ControlPlane, node_id: &str, min_clusters: usize) -> bool {
    let Ok(text) = cp.syncz() else { return false };
    let Ok(serde_json::Value::Array(entries)) = serde_json::from_str::<serde_json::Value>(&text)
    else {
        return false;
    };
    entries.iter().filter(|e| e["node_id"] == node_id).any(|e| {
        let types = &e["types"];
        ["cds", "eds", "lds", "rds"].iter().all(|t| {
            let v = &types[*t];
            !v["sent_version"].is_null()
                && v["sent_version"] == v["acked_version"]
                && v["last_nack"].is_null()
        }) && types["cds"]["sent_resources"].as_u64().unwrap_or(0) as usize >= min_clusters
    })
}

/// The number of clusters last sent to `node_id`, if connected.
pub fn clusters_sent(cp: &ControlPlane, node_id: &str) -> Option<u64> {
    let text = cp.syncz().ok()?;
    let entries: serde_json::Value = serde_json::from_str(&text).ok()?;
    entries
        .as_array()?
        .iter()
        .find(|e| e["node_id"] == node_id)
        .and_then(|e| e["types"]["cds"]["sent_resources"].as_u64())
}

/// Waits until [`node_synced`]; returns how long it took from `since`.
pub fn wait_synced(
    cp: &ControlPlane,
    node_id: &str,
    min_clusters: usize,
    proc: &Process,
    since: Instant,
    timeout: Duration,
) -> Result<Duration, Error> {
    loop {
        if node_synced(cp, node_id, min_clusters) {
            return Ok(since.elapsed());
        }
        proc.check_running()?;
        if since.elapsed() > timeout {
            return Err(Error::NotSynced {
                node: node_id.to_owned(),
                waited: timeout,
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The xDS node id of a sidecar in `pod`.
pub fn node_id(pod: &Pod) -> String {
    format!(
        "sidecar~{}~{}.{}~{}.svc.cluster.local",
        pod.ip(),
        pod.name(),
        pod.namespace(),
        pod.namespace()
    )
}
