//! The benchmark's mesh and its control plane: the config files (Services ten to a namespace,
//! their Endpoints, the optional `Sidecar`), and `mesh-controlplane` run on loopback ports.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mesh_tests::harness::{bin, endpoints_yaml, http_get, namespace_yaml, ServiceSpec};

use super::CpScaleError;

/// Services per namespace.
pub const PER_NAMESPACE: usize = 10;
/// The services' port (named `http`: HTTP routes, one RDS route configuration).
pub const PORT: u16 = 8080;
/// Where the n-th endpoint address starts.
const ENDPOINT_BASE: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 0);
/// Where the replacement endpoint addresses of endpoint-only changes start.
const MOVED_BASE: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 0);
/// Cluster IPs.
const CLUSTER_IP_BASE: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 0);

/// The size of the mesh.
#[derive(Clone, Copy, Debug)]
pub struct MeshSize {
    /// Services.
    pub services: usize,
    /// Endpoints, spread evenly over the services (at least one each).
    pub endpoints: usize,
}

impl MeshSize {
    /// Namespaces (`cp-0`, `cp-1`, ...).
    pub fn namespaces(&self) -> usize {
        self.services.div_ceil(PER_NAMESPACE).max(1)
    }

    fn endpoints_of(&self, service: usize) -> usize {
        let per = self.endpoints / self.services.max(1);
        let extra = usize::from(service < self.endpoints % self.services.max(1));
        (per + extra).max(1)
    }

    fn first_endpoint_of(&self, service: usize) -> usize {
        (0..service).map(|s| self.endpoints_of(s)).sum()
    }
}

fn offset(base: Ipv4Addr, n: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(base).wrapping_add(u32::try_from(n).unwrap_or(u32::MAX)))
}

/// The host name of service `i`.
pub fn service_host(i: usize) -> String {
    format!("svc-{i}.cp-{}.svc.cluster.local", i / PER_NAMESPACE)
}

/// The outbound cluster of a host.
pub fn cluster_of(host: &str) -> String {
    format!("outbound|{PORT}||{host}")
}

/// The address that replaces service 0's first endpoint in endpoint-only change `round`.
pub fn moved_endpoint(round: usize) -> SocketAddr {
    SocketAddr::from((offset(MOVED_BASE, round), PORT))
}

fn write(path: &Path, text: &str) -> Result<(), CpScaleError> {
    std::fs::write(path, text).map_err(|source| CpScaleError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Writes namespace `ns`'s file: the Namespace, its Services and their Endpoints. With
/// `moved` = `Some(round)`, service 0's first endpoint is [`moved_endpoint`]`(round)`.
pub fn write_namespace(
    dir: &Path,
    size: MeshSize,
    ns: usize,
    moved: Option<usize>,
) -> Result<(), CpScaleError> {
    let name = format!("cp-{ns}");
    let mut y = namespace_yaml(&name);
    let first = ns * PER_NAMESPACE;
    for i in first..(first + PER_NAMESPACE).min(size.services) {
        let svc = format!("svc-{i}");
        let spec = ServiceSpec::new(&svc, &name)
            .cluster_ip(offset(CLUSTER_IP_BASE, i + 1))
            .port("http", PORT, PORT)
            .selector("app", &svc);
        let start = size.first_endpoint_of(i);
        let mut addrs: Vec<Ipv4Addr> = (start..start + size.endpoints_of(i))
            .map(|e| offset(ENDPOINT_BASE, e + 1))
            .collect();
        if let (0, Some(round)) = (i, moved) {
            if let SocketAddr::V4(a) = moved_endpoint(round) {
                addrs[0] = *a.ip();
            }
        }
        y.push_str("---\n");
        y.push_str(&spec.to_yaml());
        y.push_str("---\n");
        y.push_str(&endpoints_yaml(&svc, &name, &addrs, &[("http", PORT)]));
    }
    write(&dir.join(format!("cp-{ns}.yaml")), &y)
}

/// Writes the whole mesh into `dir`, and, when `scoped`, a `Sidecar` in the root namespace
/// that limits every proxy's egress to its own namespace (Istio's usual first step against
/// sidecar memory growth).
pub fn write_mesh(dir: &Path, size: MeshSize, scoped: bool) -> Result<(), CpScaleError> {
    for ns in 0..size.namespaces() {
        write_namespace(dir, size, ns, None)?;
    }
    if scoped {
        write(
            &dir.join("sidecar.yaml"),
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: istio-system\n---\n\
             apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata:\n  name: default\n  \
             namespace: istio-system\nspec:\n  egress:\n  - hosts:\n    - \"./*\"\n    - \"istio-system/*\"\n",
        )?;
    }
    Ok(())
}

/// Writes the Service `extra-N` in `cp-0` (a change every proxy's CDS, EDS, LDS and RDS see):
/// what a full push is timed on. Returns its host.
pub fn write_extra_service(dir: &Path, n: usize) -> Result<String, CpScaleError> {
    let spec = ServiceSpec::new(&format!("extra-{n}"), "cp-0")
        .cluster_ip(offset(Ipv4Addr::new(10, 97, 0, 0), n + 1))
        .port("http", PORT, PORT);
    write(&dir.join(format!("extra-{n}.yaml")), &spec.to_yaml())?;
    Ok(format!("extra-{n}.cp-0.svc.cluster.local"))
}

/// A free loopback port (bound and released; the control plane binds it next).
fn free_port() -> Result<SocketAddr, CpScaleError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|source| CpScaleError::Io {
        path: PathBuf::from("127.0.0.1:0"),
        source,
    })?;
    l.local_addr().map_err(|source| CpScaleError::Io {
        path: PathBuf::from("127.0.0.1:0"),
        source,
    })
}

/// `mesh-controlplane` on loopback ports; killed on drop.
#[derive(Debug)]
pub struct ControlPlane {
    child: Child,
    /// Its ADS address.
    pub xds: SocketAddr,
    /// Its monitoring address (`/metrics`).
    pub monitoring: SocketAddr,
}

impl ControlPlane {
    /// Starts it on `config_dir` with its state in `state_dir` and its output in `log`, and
    /// waits for `/ready`.
    pub fn start(
        config_dir: &Path,
        state_dir: &Path,
        log: &Path,
    ) -> Result<ControlPlane, CpScaleError> {
        let [xds, tls, debug, monitoring, webhook] = [(); 5].map(|()| free_port());
        let (xds, tls, debug, monitoring, webhook) = (xds?, tls?, debug?, monitoring?, webhook?);
        let out = std::fs::File::create(log).map_err(|source| CpScaleError::Io {
            path: log.to_owned(),
            source,
        })?;
        let err = out.try_clone().map_err(|source| CpScaleError::Io {
            path: log.to_owned(),
            source,
        })?;
        let program = bin("mesh-controlplane");
        let child = Command::new(&program)
            .arg("--config-dir")
            .arg(config_dir)
            .arg("--state-dir")
            .arg(state_dir)
            .args(["--xds-addr", &xds.to_string()])
            .args(["--xds-tls-addr", &tls.to_string()])
            .args(["--debug-addr", &debug.to_string()])
            .args(["--monitoring-addr", &monitoring.to_string()])
            .args(["--webhook-addr", &webhook.to_string()])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|source| CpScaleError::Io {
                path: program.clone(),
                source,
            })?;
        let mut cp = ControlPlane {
            child,
            xds,
            monitoring,
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(Some(status)) = cp.child.try_wait() {
                return Err(CpScaleError::ControlPlaneExited {
                    status: status.to_string(),
                    log: log.to_owned(),
                });
            }
            if http_get(debug, "/ready", Duration::from_secs(2)).is_ok_and(|r| r.status == 200) {
                return Ok(cp);
            }
            if Instant::now() > deadline {
                return Err(CpScaleError::NotReady(log.to_owned()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The sum of the series `name` (with `labels`) on `/metrics`; 0 when absent.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Result<f64, CpScaleError> {
        let text = http_get(self.monitoring, "/metrics", Duration::from_secs(10))?.body;
        Ok(text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' '))
            .filter(|(series, _)| {
                let (n, rest) = series.split_once('{').unwrap_or((series, ""));
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
            })
            .filter_map(|(_, v)| v.parse::<f64>().ok())
            .sum())
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_spread_over_the_services() {
        let size = MeshSize {
            services: 3,
            endpoints: 10,
        };
        let counts: Vec<usize> = (0..3).map(|s| size.endpoints_of(s)).collect();
        assert_eq!(counts, [4, 3, 3]);
        assert_eq!(size.first_endpoint_of(2), 7);
        let dir = tempfile::tempdir().unwrap();
        write_mesh(dir.path(), size, true).unwrap();
        let ns = std::fs::read_to_string(dir.path().join("cp-0.yaml")).unwrap();
        assert_eq!(ns.matches("kind: Service\n").count(), 3);
        assert_eq!(ns.matches("  - ip: ").count(), 10);
        assert!(dir.path().join("sidecar.yaml").is_file());
        write_namespace(dir.path(), size, 0, Some(4)).unwrap();
        let moved = std::fs::read_to_string(dir.path().join("cp-0.yaml")).unwrap();
        assert!(moved.contains("10.201.0.4"), "{moved}");
        assert_eq!(moved.matches("  - ip: ").count(), 10);
    }
}
