//! The bench's topology, built with the end-to-end harness: pods (network namespaces) for the
//! clients, the upstream apps and each peer's proxies, one control plane, and the target each
//! (path, peer) pair sends its load to.
//!
//! ```text
//! cli      client of S0 and of the plain peers; nginx/HAProxy/Pingora of S1, client halves of pairs
//! up       upstream app (no sidecar): S0, and S1 for every peer
//! c-mesh   client pod with mesh-proxy (capture)   -> s-mesh   upstream app + mesh-proxy
//! c-envoy  client pod with Envoy (capture)        -> s-envoy  upstream app + Envoy
//! s-nginx, s-haproxy, s-pingora                       upstream app + server half of the pair
//! ```
//! Proxies are pinned to one core; the apps, the generator and the control plane to the other.

pub mod spawn;
mod targets;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mesh_tests::harness::{HarnessError, Pod, Process, ServiceSpec, Topology};

use crate::load::Mode;
use crate::paths::{PathId, GRPC_PORT, H2_PORT, HTTP_PORT};
use crate::peers::{self, Mtls, Peer, Tools, SIDECAR_MTLS};
pub use spawn::Cpus;
use targets::{Builder, PlainPeers};

/// The namespace of every bench workload.
pub const NAMESPACE: &str = "bench";
/// How long sidecars and peers get to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Errors building or using the topology.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The harness failed.
    #[error(transparent)]
    Harness(#[from] HarnessError),
    /// A file could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Preparing a peer failed.
    #[error(transparent)]
    Peer(#[from] peers::Error),
    /// A sidecar never got a full config.
    #[error("the control plane never saw {node} ACK a full config within {waited:?}")]
    NotSynced {
        /// The node id.
        node: String,
        /// How long it waited.
        waited: Duration,
    },
    /// A target never answered cleanly.
    #[error("{path}/{peer} never answered cleanly within {waited:?}: {last}")]
    NotReady {
        /// The path.
        path: PathId,
        /// The peer.
        peer: Peer,
        /// How long it waited.
        waited: Duration,
        /// The last probe's outcome.
        last: String,
    },
}

/// Where the load of one (path, peer) goes and whose resources it measures.
#[derive(Debug, Clone)]
pub struct Target {
    /// The path.
    pub path: PathId,
    /// The peer (`direct` for the baseline).
    pub peer: Peer,
    /// The pod the generator runs in.
    pub client: Pod,
    /// The address the generator connects to.
    pub addr: SocketAddr,
    /// The protocol.
    pub mode: Mode,
    /// The proxy processes on the path (their descendants count too).
    pub proxies: Vec<Process>,
    /// The upstream app answering.
    pub upstream: Process,
    /// Whether the proxies talk mTLS to each other.
    pub mtls: Mtls,
    /// How the client reaches the proxy.
    pub entry: &'static str,
}

/// A (path, peer) that does not run, and why.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Skipped {
    /// The peer.
    pub peer: Peer,
    /// The path, when only one is affected.
    pub path: Option<PathId>,
    /// Why.
    pub reason: String,
}

/// The built topology.
pub struct Bench {
    /// The harness topology (dropping it stops and removes everything).
    pub topo: Topology,
    /// Every target, in run order.
    pub targets: Vec<Target>,
    /// Every long-running process started.
    pub processes: Vec<Process>,
    /// The cores used.
    pub cpus: Cpus,
    /// Idle RSS per proxy process pid, measured once all were ready.
    pub idle_rss: Vec<(u32, u64)>,
}

/// What to build.
#[derive(Debug, Clone)]
pub struct Selection {
    /// Paths with traffic (S5 is built separately).
    pub paths: Vec<PathId>,
    /// Proxy peers wanted.
    pub peers: Vec<Peer>,
    /// The harness's name for the topology (its log directory, `target/e2e-logs/NAME`).
    pub name: &'static str,
}

fn want(sel: &Selection, peer: Peer, pair: Option<bool>) -> bool {
    sel.peers.contains(&peer)
        && sel
            .paths
            .iter()
            .any(|p| p.peers().contains(&peer) && pair.is_none_or(|pair| p.is_pair() == pair))
}

fn svc(name: &str, app: &str) -> ServiceSpec {
    ServiceSpec::new(name, NAMESPACE)
        .port("http", HTTP_PORT, HTTP_PORT)
        .port("http2", H2_PORT, H2_PORT)
        .port("grpc", GRPC_PORT, GRPC_PORT)
        .selector("app", app)
}

/// Builds the topology for `sel`, skipping peers whose program is missing (recorded in
/// `skipped`), and waits until every target answers.
pub fn build(
    sel: &Selection,
    tools: &Tools,
    work: &std::path::Path,
    skipped: &mut Vec<Skipped>,
) -> Result<Bench, Error> {
    let cpus = Cpus::detect();
    let topo = Topology::new(sel.name)?;
    let labels = |app: &'static str| [("app", app)];
    let up = topo.pod("up", NAMESPACE, &labels("upstream"))?;
    let cli = topo.pod("cli", NAMESPACE, &labels("client"))?;
    let mut available = |peer: Peer| match tools.missing(peer) {
        Some(reason) if sel.peers.contains(&peer) => {
            skipped.push(Skipped {
                peer,
                path: None,
                reason,
            });
            false
        }
        Some(_) => false,
        None => true,
    };
    let mesh = available(Peer::MeshProxy) && want(sel, Peer::MeshProxy, None);
    let envoy = available(Peer::Envoy) && want(sel, Peer::Envoy, None);
    let nginx = available(Peer::Nginx) && want(sel, Peer::Nginx, None);
    let haproxy = available(Peer::Haproxy) && want(sel, Peer::Haproxy, None);
    let pingora = want(sel, Peer::Pingora, None);
    let mut certs = None;
    let tls_pair = |peer| want(sel, peer, Some(true));
    if (nginx && tls_pair(Peer::Nginx)) || (haproxy && tls_pair(Peer::Haproxy)) {
        match &tools.openssl {
            Some(bin) => certs = Some(peers::make_certs(bin, work)?),
            None => skipped.extend([Peer::Nginx, Peer::Haproxy].map(|peer| Skipped {
                peer,
                path: Some(PathId::S2),
                reason: "openssl not installed: no certificates for the TLS pair".to_owned(),
            })),
        }
    }
    let pod = |name: &str, app: &'static str, on: bool| -> Result<Option<Pod>, Error> {
        Ok(if on {
            Some(topo.pod(name, NAMESPACE, &labels(app))?)
        } else {
            None
        })
    };
    let c_mesh = pod("c-mesh", "client-mesh", mesh)?;
    let s_mesh = pod(
        "s-mesh",
        "bench-mesh",
        mesh && want(sel, Peer::MeshProxy, Some(true)),
    )?;
    let c_envoy = pod("c-envoy", "client-envoy", envoy)?;
    let s_envoy = pod(
        "s-envoy",
        "bench-envoy",
        envoy && want(sel, Peer::Envoy, Some(true)),
    )?;
    let s_nginx = pod(
        "s-nginx",
        "bench-nginx",
        nginx && certs.is_some() && tls_pair(Peer::Nginx),
    )?;
    let s_haproxy = pod(
        "s-haproxy",
        "bench-haproxy",
        haproxy && certs.is_some() && tls_pair(Peer::Haproxy),
    )?;
    let s_pingora = pod(
        "s-pingora",
        "bench-pingora",
        pingora && tls_pair(Peer::Pingora),
    )?;

    topo.add_namespace(NAMESPACE)?;
    let plain_ip = topo
        .add_service(&ServiceSpec::new("up-plain", NAMESPACE).port("http", HTTP_PORT, HTTP_PORT))?;
    topo.add_endpoints("up-plain", NAMESPACE, &[up.ip()], &[("http", HTTP_PORT)])?;
    let mesh_ip = topo.add_service(&svc("bench-mesh", "bench-mesh"))?;
    let envoy_ip = topo.add_service(&svc("bench-envoy", "bench-envoy"))?;
    if SIDECAR_MTLS == Mtls::On {
        topo.add_namespace("istio-system")?;
        let path = topo.config_dir().join("peerauthentication-strict.yaml");
        std::fs::write(&path, peers::STRICT_MTLS_YAML).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
    }
    let cp = topo.start_control_plane()?;
    let mut processes = Vec::new();
    if let Some(p) = cp.process() {
        if let Some(pid) = p.pid() {
            spawn::pin(pid, cpus.load);
        }
        processes.push(p);
    }

    let up_app = spawn::upstream(&up, cpus)?;
    processes.push(up_app.clone());
    let mut b = Builder {
        targets: Vec::new(),
        sel,
        cli: cli.clone(),
        up_app: up_app.clone(),
        up_ip: up.ip(),
    };
    b.direct();

    // mesh-proxy: both sidecars injected; the server pod's app starts after its sidecar.
    if let Some(c) = &c_mesh {
        let client_proxy = spawn::mesh_sidecar(c, true)?;
        processes.push(client_proxy.clone());
        let server = match &s_mesh {
            Some(s) => {
                let proxy = spawn::mesh_sidecar(s, true)?;
                let app = spawn::upstream(s, cpus)?;
                processes.extend([proxy.clone(), app.clone()]);
                Some((vec![proxy], app))
            }
            None => None,
        };
        b.sidecar(
            Peer::MeshProxy,
            c,
            vec![client_proxy],
            server,
            (plain_ip, mesh_ip),
        );
    }
    // Envoy: each sidecar with its agent when the pairs do mTLS.
    let identity = SIDECAR_MTLS == Mtls::On;
    if let (Some(c), Some(bin)) = (&c_envoy, &tools.envoy) {
        let (client_proxy, agent) = spawn::envoy_sidecar(&topo, c, bin, cpus, true, identity)?;
        let client_procs: Vec<Process> = std::iter::once(client_proxy).chain(agent).collect();
        processes.extend(client_procs.iter().cloned());
        let server = match &s_envoy {
            Some(s) => {
                let (proxy, agent) = spawn::envoy_sidecar(&topo, s, bin, cpus, true, identity)?;
                let app = spawn::upstream(s, cpus)?;
                let procs: Vec<Process> = std::iter::once(proxy).chain(agent).collect();
                processes.extend(procs.iter().cloned());
                processes.push(app.clone());
                Some((procs, app))
            }
            None => None,
        };
        b.sidecar(Peer::Envoy, c, client_procs, server, (plain_ip, envoy_ip));
    }
    let plain = PlainPeers {
        cpus,
        certs: certs.as_ref(),
    };
    if nginx {
        let bin = tools.nginx.clone().unwrap_or_default();
        plain.start(
            &mut b,
            &mut processes,
            Peer::Nginx,
            s_nginx.as_ref(),
            |pod, name, role| spawn::nginx(pod, name, &bin, role, certs.as_ref(), cpus),
        )?;
    }
    if haproxy {
        let bin = tools.haproxy.clone().unwrap_or_default();
        plain.start(
            &mut b,
            &mut processes,
            Peer::Haproxy,
            s_haproxy.as_ref(),
            |pod, name, role| spawn::haproxy(pod, name, &bin, role, certs.as_ref(), cpus),
        )?;
    }
    if pingora {
        plain.start_pingora(&mut b, &mut processes, s_pingora.as_ref())?;
    }
    let targets = b.targets;

    topo.wait_ready(READY_TIMEOUT)?;
    for pod in [&c_envoy, &s_envoy].into_iter().flatten() {
        if let Some(proc) = processes
            .iter()
            .find(|p| p.name() == format!("{}/envoy", pod.name()))
        {
            spawn::wait_synced(
                &cp,
                &spawn::node_id(pod),
                1,
                proc,
                Instant::now(),
                READY_TIMEOUT,
            )?;
        }
    }
    for pod in [&c_mesh, &s_mesh].into_iter().flatten() {
        if let Some(pid) = pod.proxy().and_then(|p| p.pid()) {
            spawn::pin(pid, cpus.proxy);
        }
    }
    for t in &targets {
        probe_until_ready(t)?;
    }
    // Settle, then the idle footprint of every proxy process.
    std::thread::sleep(Duration::from_secs(1));
    let mut idle_rss = Vec::new();
    for t in &targets {
        for p in &t.proxies {
            if let Some(pid) = p
                .pid()
                .filter(|pid| !idle_rss.iter().any(|(q, _)| q == pid))
            {
                let pids = crate::procfs::with_descendants(&[pid]);
                if let Ok(rss) = crate::procfs::rss_bytes(&pids) {
                    idle_rss.push((pid, rss));
                }
            }
        }
    }
    Ok(Bench {
        topo,
        targets,
        processes,
        cpus,
        idle_rss,
    })
}

/// Sends a short burst through `t` until every request succeeds.
fn probe_until_ready(t: &Target) -> Result<(), Error> {
    let start = Instant::now();
    loop {
        let last = match crate::runner::probe(t) {
            Ok(r) if r.errors == 0 && r.requests > 0 => return Ok(()),
            Ok(r) => format!(
                "{} ok, {} errors: {:?}",
                r.requests, r.errors, r.error_kinds
            ),
            Err(e) => e.to_string(),
        };
        for p in t.proxies.iter().chain([&t.upstream]) {
            p.check_running()?;
        }
        if start.elapsed() > READY_TIMEOUT {
            return Err(Error::NotReady {
                path: t.path,
                peer: t.peer,
                waited: READY_TIMEOUT,
                last,
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
