//! S5, config scale: each sidecar's RSS and config-apply time with 10 to 5,000 services in the
//! mesh, with and without a `Sidecar` that scopes the proxy to its own namespace, `mesh-proxy`
//! beside Envoy on the same control plane and config.
//!
//! Services live ten to a namespace (`scale-0`, `scale-1`, ...); the measured proxy sits in
//! `scale-0`. First sync is the time from starting the proxy to the control plane seeing CDS,
//! EDS, LDS and RDS all ACKed; update is the time from writing one more Service to the new
//! versions being ACKed (the control plane's 100 ms debounce included, for both peers alike).

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use mesh_tests::harness::{
    endpoints_yaml, namespace_yaml, ControlPlane, Process, ServiceSpec, Topology,
};
use serde::{Deserialize, Serialize};

use crate::peers::{Peer, Tools};
use crate::procfs;
use crate::topo::spawn::{self, Cpus};
use crate::topo::Error;

/// Services per namespace.
const PER_NAMESPACE: usize = 10;
/// How long a proxy may take to sync the largest config.
const SYNC_TIMEOUT: Duration = Duration::from_secs(300);

/// One measurement.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScalePoint {
    /// Services in the mesh.
    pub services: usize,
    /// Whether a `Sidecar` scoped the proxy to its namespace.
    pub scoped: bool,
    /// The proxy.
    pub peer: Peer,
    /// Clusters the control plane sent it.
    pub clusters: Option<u64>,
    /// Start to full config ACKed, ms.
    pub first_sync_ms: f64,
    /// One more Service written to its ACK, ms.
    pub update_ms: Option<f64>,
    /// RSS once synced and settled, MiB.
    pub rss_mb: f64,
    /// Peak RSS, MiB.
    pub peak_rss_mb: f64,
    /// The control plane's RSS at that point, MiB.
    pub controlplane_rss_mb: f64,
}

/// All of S5.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScaleResults {
    /// Every point.
    pub points: Vec<ScalePoint>,
    /// Whether the control plane honoured the `Sidecar` (fewer clusters when scoped).
    pub scoping_applied: Option<bool>,
}

fn write(path: &Path, text: &str) -> Result<(), Error> {
    std::fs::write(path, text).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })
}

/// Writes `n` services (with one endpoint each, in the topology's own subnet) into `dir`,
/// one file per namespace, replacing what was there.
fn write_mesh(dir: &Path, n: usize, subnet_base: Ipv4Addr) -> Result<(), Error> {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with("scale-") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let base = u32::from(Ipv4Addr::new(10, 100, 0, 0));
    let sub = u32::from(subnet_base);
    for ns_index in 0..n.div_ceil(PER_NAMESPACE) {
        let ns = format!("scale-{ns_index}");
        let mut y = namespace_yaml(&ns);
        for j in 0..PER_NAMESPACE.min(n - ns_index * PER_NAMESPACE) {
            let i = ns_index * PER_NAMESPACE + j;
            let name = format!("svc-{i}");
            let spec = ServiceSpec::new(&name, &ns)
                .cluster_ip(Ipv4Addr::from(base + 1 + i as u32))
                .port("http", 8080, 8080)
                .selector("app", &name);
            let ep = Ipv4Addr::from(sub + 100 + (i % 150) as u32);
            y.push_str("---\n");
            y.push_str(&spec.to_yaml());
            y.push_str("---\n");
            y.push_str(&endpoints_yaml(&name, &ns, &[ep], &[("http", 8080)]));
        }
        write(&dir.join(format!("{ns}.yaml")), &y)?;
    }
    Ok(())
}

const SIDECAR_YAML: &str = "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata:\n  \
name: default\n  namespace: scale-0\nspec:\n  egress:\n  - hosts:\n    - \"./*\"\n";

fn cds_versions(cp: &ControlPlane, node: &str) -> Option<String> {
    let text = cp.syncz().ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.as_array()?
        .iter()
        .find(|e| e["node_id"] == node)
        .map(|e| e["types"]["cds"]["sent_version"].to_string())
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1_048_576.0
}

fn rss_of(p: &Process) -> (f64, f64) {
    let pids = p
        .pid()
        .map(|pid| procfs::with_descendants(&[pid]))
        .unwrap_or_default();
    (
        mb(procfs::rss_bytes(&pids).unwrap_or(0)),
        mb(procfs::peak_rss_bytes(&pids).unwrap_or(0)),
    )
}

/// Runs S5 for `sizes` and `peers` in a topology named `name`; `progress` is called after
/// each point.
pub fn run(
    name: &str,
    sizes: &[usize],
    peers: &[Peer],
    tools: &Tools,
    mut progress: impl FnMut(&str),
) -> Result<ScaleResults, Error> {
    let cpus = Cpus::detect();
    let topo = Topology::new(name)?;
    let cp = topo.control_plane();
    let subnet = topo.host_ip();
    let mut points = Vec::new();
    let mut extra = 0usize;
    for &n in sizes {
        write_mesh(topo.config_dir(), n, subnet)?;
        for scoped in [false, true] {
            let sidecar = topo.config_dir().join("scale-sidecar.yaml");
            if scoped {
                write(&sidecar, SIDECAR_YAML)?;
            } else {
                let _ = std::fs::remove_file(&sidecar);
            }
            cp.start(&[])?;
            cp.wait_ready(SYNC_TIMEOUT)?;
            if let Some(pid) = cp.process().and_then(|p| p.pid()) {
                spawn::pin(pid, cpus.load);
            }
            for &peer in peers {
                let name = format!(
                    "{}-{n}{}",
                    if peer == Peer::Envoy { "e" } else { "m" },
                    if scoped { "-s" } else { "" }
                );
                let pod = topo.pod(&name, "scale-0", &[("app", "scale-client")])?;
                let node = spawn::node_id(&pod);
                let start = Instant::now();
                let proc = match (peer, &tools.envoy) {
                    (Peer::Envoy, Some(bin)) => {
                        // With its agent when sidecars hold identities, so that Envoy gets
                        // the same (mutual-TLS) clusters as mesh-proxy; the agent's few MB
                        // are not in Envoy's figures here.
                        let identity = crate::peers::SIDECAR_MTLS == crate::peers::Mtls::On;
                        spawn::envoy_sidecar(&topo, &pod, bin, cpus, false, identity)?.0
                    }
                    (Peer::Envoy, None) => continue,
                    _ => {
                        let p = spawn::mesh_sidecar(&pod, false)?;
                        if let Some(pid) = p.pid() {
                            spawn::pin(pid, cpus.proxy);
                        }
                        p
                    }
                };
                let first = spawn::wait_synced(&cp, &node, 1, &proc, start, SYNC_TIMEOUT)?;
                std::thread::sleep(Duration::from_millis(500));
                let before = cds_versions(&cp, &node);
                extra += 1;
                let svc = ServiceSpec::new(&format!("extra-{extra}"), "scale-0")
                    .cluster_ip(Ipv4Addr::new(10, 101, 255, (extra % 250) as u8 + 1))
                    .port("http", 8080, 8080);
                let t = Instant::now();
                write(
                    &topo.config_dir().join(format!("scale-extra-{extra}.yaml")),
                    &svc.to_yaml(),
                )?;
                let mut update = None;
                while t.elapsed() < SYNC_TIMEOUT {
                    if cds_versions(&cp, &node) != before && spawn::node_synced(&cp, &node, 1) {
                        update = Some(t.elapsed().as_secs_f64() * 1000.0);
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                std::thread::sleep(Duration::from_millis(500));
                let (rss, peak) = rss_of(&proc);
                let cp_rss = cp.process().map_or(0.0, |p| rss_of(&p).0);
                points.push(ScalePoint {
                    services: n,
                    scoped,
                    peer,
                    clusters: spawn::clusters_sent(&cp, &node),
                    first_sync_ms: first.as_secs_f64() * 1000.0,
                    update_ms: update,
                    rss_mb: rss,
                    peak_rss_mb: peak,
                    controlplane_rss_mb: cp_rss,
                });
                proc.stop();
                progress(&format!(
                    "S5 {n} services{} {peer}",
                    if scoped { " scoped" } else { "" }
                ));
            }
        }
    }
    // Applied when any scoped point holds fewer clusters than the same mesh unscoped (with
    // one namespace's worth of services, scoping has nothing to remove).
    let reduced: Vec<bool> = points
        .iter()
        .filter(|p| p.scoped)
        .filter_map(|s| {
            points
                .iter()
                .find(|u| !u.scoped && u.services == s.services && u.peer == s.peer)
                .and_then(|u| Some(s.clusters? < u.clusters?))
        })
        .collect();
    let scoping_applied = (!reduced.is_empty()).then(|| reduced.contains(&true));
    Ok(ScaleResults {
        points,
        scoping_applied,
    })
}

/// Appends S5's table to `out`.
pub fn render(out: &mut String, s: &ScaleResults) {
    let _ = writeln!(
        out,
        "\nS5  {}\n    services ten to a namespace; scoped = a Sidecar limiting egress to the proxy's namespace",
        crate::paths::PathId::S5.title()
    );
    let _ = writeln!(
        out,
        "{:>8} {:>7} {:<11} {:>9} {:>14} {:>10} {:>8} {:>8} {:>8}",
        "services",
        "scoped",
        "peer",
        "clusters",
        "first sync ms",
        "update ms",
        "RSS MB",
        "peak MB",
        "cp MB"
    );
    for p in &s.points {
        let _ = writeln!(
            out,
            "{:>8} {:>7} {:<11} {:>9} {:>14.0} {:>10} {:>8.1} {:>8.1} {:>8.1}",
            p.services,
            if p.scoped { "yes" } else { "no" },
            p.peer.name(),
            p.clusters.map_or("-".to_owned(), |c| c.to_string()),
            p.first_sync_ms,
            p.update_ms.map_or("-".to_owned(), |u| format!("{u:.0}")),
            p.rss_mb,
            p.peak_rss_mb,
            p.controlplane_rss_mb
        );
    }
    if s.scoping_applied == Some(false) {
        let _ = writeln!(
            out,
            "    scoping NOT applied: no scoped row holds fewer clusters than the same mesh unscoped"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mesh_files_hold_ten_services_each() {
        let dir = tempfile::tempdir().unwrap();
        write_mesh(dir.path(), 25, Ipv4Addr::new(10, 211, 3, 1)).unwrap();
        let mut files: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        files.sort();
        assert_eq!(files, ["scale-0.yaml", "scale-1.yaml", "scale-2.yaml"]);
        let last = std::fs::read_to_string(dir.path().join("scale-2.yaml")).unwrap();
        assert_eq!(last.matches("kind: Service\n").count(), 5);
        assert!(last.contains("clusterIP: \"10.100.0.25\""));
    }
}
