//! A topology: one bridge on the host with its own /24, pods (network namespaces) on it,
//! service names resolved through `/etc/netns/<pod>/hosts`, the processes started in it, and
//! its control plane. Everything is removed on drop.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use super::cmd::{allow_bridge_forwarding, ip, remove_bridge_forwarding};
use super::error::{HarnessError, Result};
use super::paths::{fresh_artifact_dir, sanitize};
use super::pod::{Pod, PodData};
use super::process::{stop_all, Launch, Process};
use super::slot::{self, Slot};

/// The ClusterIP range: pods get an on-link route for it, so a connect() to a ClusterIP
/// reaches the capture rules instead of failing with "Network is unreachable".
pub const CLUSTER_IP_RANGE: &str = "10.96.0.0/12";
/// The first two octets of the project's test subnets: topology N uses `10.211.N.0/24`.
pub const TEST_NET_PREFIX: [u8; 2] = [10, 211];
/// The cluster domain written into hosts files (`NAME.NS.svc.cluster.local`).
pub const CLUSTER_DOMAIN: &str = "cluster.local";
/// How long teardown gives processes after `SIGTERM`.
const TEARDOWN_GRACE: Duration = Duration::from_secs(2);
/// Lines of each log printed when a topology is dropped.
const TAIL_LINES: usize = 25;

/// A service name the hosts files resolve.
#[derive(Debug, Clone)]
pub(crate) struct ServiceName {
    pub(crate) name: String,
    pub(crate) namespace: String,
    pub(crate) cluster_ip: Ipv4Addr,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) torn_down: bool,
    pub(crate) pods: Vec<Arc<PodData>>,
    pub(crate) services: Vec<ServiceName>,
    pub(crate) processes: Vec<Process>,
    pub(crate) log_stems: HashSet<String>,
    pub(crate) next_cluster_ip: u32,
    pub(crate) control_plane: Option<Process>,
    /// The `--ca-dir` the control plane was started with, if any.
    pub(crate) ca_dir: Option<PathBuf>,
}

/// The shared part of a topology, referenced by its pods and control plane handles.
#[derive(Debug)]
pub(crate) struct TopologyInner {
    pub(crate) test_name: String,
    pub(crate) id: String,
    pub(crate) slot_n: u8,
    pub(crate) bridge: String,
    pub(crate) artifact_dir: PathBuf,
    pub(crate) state_dir: PathBuf,
    pub(crate) config_dir: PathBuf,
    pub(crate) state: Mutex<State>,
    slot: Mutex<Option<Slot>>,
}

/// A test's network: a bridge `mtbrN` on the host holding `10.211.N.1/24`, and pods
/// attached to it. `N` is a slot unique among live processes, so tests run in parallel.
///
/// Dropping it (also while unwinding from a panic) stops every process it started, deletes
/// its pods' namespaces, veths and `/etc/netns` entries, the bridge, its FORWARD rule and its
/// state directory, prints the tail of every log, and releases the slot. If the test process
/// dies without unwinding, the slot's guardian process removes the same things (see
/// [`sweep`](super::sweep)).
#[derive(Debug)]
pub struct Topology {
    pub(crate) inner: Arc<TopologyInner>,
}

/// Names and addresses a topology holds on the host, for checking that they are gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    /// The bridge's name.
    pub bridge: String,
    /// Network namespace names.
    pub netns: Vec<String>,
    /// Host-side veth names.
    pub host_veths: Vec<String>,
    /// `/etc/netns/<ns>` directories.
    pub etc_netns_dirs: Vec<PathBuf>,
    /// The slot's state directory (config dir, pod work dirs).
    pub state_dir: PathBuf,
    /// Pids of processes started so far (current runs).
    pub pids: Vec<u32>,
}

pub(crate) fn validate_label(name: &str, max: usize) -> Result<()> {
    let reason = if name.is_empty() || name.len() > max {
        Some("empty or too long (pod names: 40 characters, other names: 63)")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        Some("must be a DNS label: lowercase letters, digits and '-'")
    } else if name.starts_with('-') || name.ends_with('-') {
        Some("must not start or end with '-'")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(HarnessError::InvalidName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

static SWEPT: OnceLock<()> = OnceLock::new();

impl Topology {
    /// Builds an empty topology for the test `test_name` (used for the artifact directory
    /// `target/e2e-logs/<test_name>`): acquires a slot, removes leftovers of dead test
    /// processes (once per process), creates the bridge and lets traffic cross it (a FORWARD
    /// ACCEPT rule for the bridge, removed with it). Needs root; check
    /// [`skip_reason`](super::skip_reason) first.
    pub fn new(test_name: &str) -> Result<Topology> {
        if SWEPT.get().is_none() {
            super::slot::sweep()?;
            let _ = SWEPT.set(());
        }
        let test_name = sanitize(test_name);
        let artifact_dir = fresh_artifact_dir(&test_name)?;
        let slot = Slot::acquire(&test_name)?;
        let n = slot.number();
        let state_dir = slot::state_dir(n);
        let config_dir = state_dir.join("config");
        let topo = Topology {
            inner: Arc::new(TopologyInner {
                test_name: test_name.clone(),
                id: format!("mt{n}"),
                slot_n: n,
                bridge: format!("mtbr{n}"),
                artifact_dir,
                state_dir,
                config_dir,
                state: Mutex::new(State {
                    next_cluster_ip: 10,
                    ..State::default()
                }),
                slot: Mutex::new(Some(slot)),
            }),
        };
        // From here on, Drop removes whatever was made.
        let inner = &topo.inner;
        std::fs::create_dir_all(&inner.config_dir)
            .map_err(HarnessError::io("create directory", &inner.config_dir))?;
        ip(["link", "add", &inner.bridge, "type", "bridge"])?;
        ip([
            "addr",
            "add",
            &format!("{}/24", topo.host_ip()),
            "dev",
            &inner.bridge,
        ])?;
        ip(["link", "set", &inner.bridge, "up"])?;
        allow_bridge_forwarding(&inner.bridge)?;
        eprintln!(
            "mesh-tests: topology {} ({}) for {test_name}; logs in {}",
            inner.id,
            topo.subnet(),
            inner.artifact_dir.display()
        );
        Ok(topo)
    }

    /// The topology's short id, `mtN`: the prefix of all its namespace and link names.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The subnet, `10.211.N.0/24`.
    pub fn subnet(&self) -> String {
        let [a, b] = TEST_NET_PREFIX;
        format!("{a}.{b}.{}.0/24", self.inner.slot_n)
    }

    /// The host's address on the bridge, `10.211.N.1`: where host processes (the control
    /// plane) listen for pods.
    pub fn host_ip(&self) -> Ipv4Addr {
        self.inner.host_ip()
    }

    /// The bridge's name, `mtbrN`.
    pub fn bridge(&self) -> &str {
        &self.inner.bridge
    }

    /// Where logs go: `target/e2e-logs/<test>`.
    pub fn artifact_dir(&self) -> &Path {
        &self.inner.artifact_dir
    }

    /// The control plane's config directory (empty at first; write YAML with
    /// [`Topology::write_config`]).
    pub fn config_dir(&self) -> &Path {
        &self.inner.config_dir
    }

    /// Creates the pod `name` in `namespace` with `labels`: a network namespace `mtN-<name>`
    /// with `lo` up and `eth0` (a veth on the bridge) holding the next free address of the
    /// subnet; routes only to the subnet (on-link) and to [`CLUSTER_IP_RANGE`] (on-link, for
    /// capture); `/etc/netns/mtN-<name>/hosts` resolving `localhost`, the declared services and
    /// the pod's own name. Pod names are DNS labels of at most 40 characters, unique in the
    /// topology.
    pub fn pod(&self, name: &str, namespace: &str, labels: &[(&str, &str)]) -> Result<Pod> {
        validate_label(name, 40)?;
        validate_label(namespace, 63)?;
        let inner = &self.inner;
        let data = {
            let mut st = inner.lock_live()?;
            if st.pods.iter().any(|p| p.name == name) {
                return Err(HarnessError::InvalidName {
                    name: name.to_owned(),
                    reason: "a pod of that name exists",
                });
            }
            let index = u8::try_from(st.pods.len())
                .ok()
                .filter(|&i| i <= 252)
                .ok_or(HarnessError::SubnetFull)?;
            let [a, b] = TEST_NET_PREFIX;
            let netns = format!("{}-{name}", inner.id);
            let data = Arc::new(PodData {
                name: name.to_owned(),
                namespace: namespace.to_owned(),
                labels: labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect::<BTreeMap<_, _>>(),
                ip: Ipv4Addr::new(a, b, inner.slot_n, index + 2),
                host_veth: format!("{}h{index}", inner.id),
                etc_dir: PathBuf::from("/etc/netns").join(&netns),
                work_dir: inner.state_dir.join("pods").join(name),
                netns,
                proxy: Mutex::new(None),
                service_account: Mutex::new(None),
            });
            // Registered before anything is made, so that teardown removes a half-made pod.
            st.pods.push(Arc::clone(&data));
            data
        };
        inner.build_pod(&data)?;
        Ok(Pod {
            topo: Arc::clone(inner),
            data,
        })
    }

    /// Every pod made so far, in creation order.
    pub fn pods(&self) -> Vec<Pod> {
        let st = self.inner.lock();
        st.pods
            .iter()
            .map(|d| Pod {
                topo: Arc::clone(&self.inner),
                data: Arc::clone(d),
            })
            .collect()
    }

    /// Declares that `name.namespace` has the ClusterIP `cluster_ip` and rewrites every pod's
    /// hosts file (in place, so running processes see it): `NAME.NS.svc.cluster.local`,
    /// `NAME.NS.svc` and `NAME.NS` everywhere, the bare `NAME` in pods of `namespace`.
    /// Declaring the same service again replaces its address.
    pub fn service(&self, name: &str, namespace: &str, cluster_ip: Ipv4Addr) -> Result<()> {
        validate_label(name, 63)?;
        validate_label(namespace, 63)?;
        {
            let mut st = self.inner.lock_live()?;
            st.services
                .retain(|s| !(s.name == name && s.namespace == namespace));
            st.services.push(ServiceName {
                name: name.to_owned(),
                namespace: namespace.to_owned(),
                cluster_ip,
            });
        }
        self.inner.write_all_hosts()
    }

    /// A ClusterIP not handed out before by this topology: 10.96.0.10, .11, ...
    pub fn next_cluster_ip(&self) -> Ipv4Addr {
        let mut st = self.inner.lock();
        let n = st.next_cluster_ip;
        st.next_cluster_ip += 1;
        Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + n)
    }

    /// Writes `yaml` to `<config dir>/<file>` atomically (temporary file, then rename), so the
    /// control plane's watcher never reads half a file. Returns the path.
    pub fn write_config(&self, file: &str, yaml: &str) -> Result<PathBuf> {
        self.inner.write_config(file, yaml)
    }

    /// Removes `<config dir>/<file>`.
    pub fn remove_config(&self, file: &str) -> Result<()> {
        let path = self.inner.config_dir.join(file);
        std::fs::remove_file(&path).map_err(HarnessError::io("remove", &path))
    }

    /// The names this topology holds on the host right now.
    pub fn resources(&self) -> Resources {
        let st = self.inner.lock();
        Resources {
            bridge: self.inner.bridge.clone(),
            netns: st.pods.iter().map(|p| p.netns.clone()).collect(),
            host_veths: st.pods.iter().map(|p| p.host_veth.clone()).collect(),
            etc_netns_dirs: st.pods.iter().map(|p| p.etc_dir.clone()).collect(),
            state_dir: self.inner.state_dir.clone(),
            pids: st.processes.iter().filter_map(Process::pid).collect(),
        }
    }

    /// Tears the topology down now (what dropping it does).
    pub fn teardown(self) {
        drop(self);
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.inner.teardown();
    }
}

impl TopologyInner {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The state, or [`HarnessError::TornDown`].
    pub(crate) fn lock_live(&self) -> Result<MutexGuard<'_, State>> {
        let st = self.lock();
        if st.torn_down {
            return Err(HarnessError::TornDown(self.id.clone()));
        }
        Ok(st)
    }

    pub(crate) fn host_ip(&self) -> Ipv4Addr {
        let [a, b] = TEST_NET_PREFIX;
        Ipv4Addr::new(a, b, self.slot_n, 1)
    }

    /// `10.211.N.1:port`.
    pub(crate) fn host_addr(&self, port: u16) -> SocketAddr {
        SocketAddr::from((self.host_ip(), port))
    }

    fn build_pod(&self, p: &PodData) -> Result<()> {
        let ns = p.netns.as_str();
        let peer = p.host_veth.replacen('h', "p", 1);
        ip(["netns", "add", ns])?;
        ip([
            "link",
            "add",
            &p.host_veth,
            "type",
            "veth",
            "peer",
            "name",
            &peer,
        ])?;
        ip(["link", "set", &peer, "netns", ns])?;
        ip(["link", "set", &p.host_veth, "master", &self.bridge, "up"])?;
        ip(["-n", ns, "link", "set", &peer, "name", "eth0"])?;
        ip([
            "-n",
            ns,
            "addr",
            "add",
            &format!("{}/24", p.ip),
            "dev",
            "eth0",
        ])?;
        ip(["-n", ns, "link", "set", "eth0", "up"])?;
        ip(["-n", ns, "link", "set", "lo", "up"])?;
        ip(["-n", ns, "route", "add", CLUSTER_IP_RANGE, "dev", "eth0"])?;
        std::fs::create_dir_all(&p.etc_dir)
            .map_err(HarnessError::io("create directory", &p.etc_dir))?;
        std::fs::create_dir_all(&p.work_dir)
            .map_err(HarnessError::io("create directory", &p.work_dir))?;
        // The proxy user (1337) may write there too (tokens, bootstrap files).
        std::fs::set_permissions(&p.work_dir, std::fs::Permissions::from_mode(0o777))
            .map_err(HarnessError::io("chmod", &p.work_dir))?;
        let services = self.lock().services.clone();
        write_hosts(p, &services)
    }

    fn write_all_hosts(&self) -> Result<()> {
        let (pods, services) = {
            let st = self.lock();
            (st.pods.clone(), st.services.clone())
        };
        pods.iter()
            .filter(|p| p.etc_dir.exists())
            .try_for_each(|p| write_hosts(p, &services))
    }

    pub(crate) fn write_config(&self, file: &str, yaml: &str) -> Result<PathBuf> {
        let path = self.config_dir.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(HarnessError::io("create directory", parent))?;
        }
        let tmp = self.state_dir.join(format!(".{}.tmp", sanitize(file)));
        std::fs::write(&tmp, yaml).map_err(HarnessError::io("write", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(HarnessError::io("rename to", &path))?;
        Ok(path)
    }

    /// Starts a process of this topology, logging to `<prefix>-<name>[-K].{out,err}.log`.
    pub(crate) fn start_process(
        &self,
        prefix: &str,
        name: &str,
        launch: Launch,
    ) -> Result<Process> {
        let stem = {
            let mut st = self.lock_live()?;
            let base = sanitize(&format!("{prefix}-{name}"));
            let mut stem = base.clone();
            let mut k = 2;
            while !st.log_stems.insert(stem.clone()) {
                stem = format!("{base}-{k}");
                k += 1;
            }
            stem
        };
        let proc = Process::start(
            format!("{prefix}/{name}"),
            launch,
            &self.artifact_dir,
            &stem,
        )?;
        let mut st = self.lock();
        st.processes.push(proc.clone());
        if st.torn_down {
            // Teardown ran meanwhile and did not see it.
            drop(st);
            proc.kill();
        }
        Ok(proc)
    }

    fn teardown(&self) {
        let (procs, pods, services) = {
            let mut st = self.lock();
            if st.torn_down {
                return;
            }
            st.torn_down = true;
            // The control plane is one of `processes` too.
            st.control_plane = None;
            (
                std::mem::take(&mut st.processes),
                st.pods.clone(),
                st.services.clone(),
            )
        };
        stop_all(&procs, TEARDOWN_GRACE);
        let mut problems = Vec::new();
        for p in &pods {
            // Deleting one end of a veth deletes both at once; the namespace's own deletion
            // would leave the host end around for a moment.
            if Path::new("/sys/class/net").join(&p.host_veth).exists() {
                if let Err(e) = ip(["link", "del", &p.host_veth]) {
                    problems.push(e.to_string());
                }
            }
            if Path::new("/run/netns").join(&p.netns).exists() {
                if let Err(e) = ip(["netns", "del", &p.netns]) {
                    problems.push(e.to_string());
                }
            }
            if p.etc_dir.exists() {
                if let Err(e) = std::fs::remove_dir_all(&p.etc_dir) {
                    problems.push(format!("remove {}: {e}", p.etc_dir.display()));
                }
            }
        }
        remove_bridge_forwarding(&self.bridge);
        if Path::new("/sys/class/net").join(&self.bridge).exists() {
            if let Err(e) = ip(["link", "del", &self.bridge]) {
                problems.push(e.to_string());
            }
        }
        if self.state_dir.exists() {
            if let Err(e) = std::fs::remove_dir_all(&self.state_dir) {
                problems.push(format!("remove {}: {e}", self.state_dir.display()));
            }
        }
        self.write_summary(&pods, &services, &procs);
        for p in &procs {
            eprint!("{}", p.log_tail(TAIL_LINES));
        }
        for problem in &problems {
            eprintln!("mesh-tests: teardown of {}: {problem}", self.id);
        }
        eprintln!(
            "mesh-tests: topology {} of {} torn down; logs in {}",
            self.id,
            self.test_name,
            self.artifact_dir.display()
        );
        // The guardian sweeps once more, then the slot is free.
        drop(self.slot.lock().unwrap_or_else(|e| e.into_inner()).take());
    }

    /// `topology.txt` in the artifact directory: pods, services and processes.
    fn write_summary(&self, pods: &[Arc<PodData>], services: &[ServiceName], procs: &[Process]) {
        let mut s = format!(
            "topology {} subnet 10.211.{}.0/24 bridge {}\n",
            self.id, self.slot_n, self.bridge
        );
        for p in pods {
            let _ = writeln!(
                s,
                "pod {}.{} ip {} netns {} labels {:?}",
                p.name, p.namespace, p.ip, p.netns, p.labels
            );
        }
        for svc in services {
            let _ = writeln!(
                s,
                "service {}.{} clusterIP {}",
                svc.name, svc.namespace, svc.cluster_ip
            );
        }
        for proc in procs {
            let _ = writeln!(
                s,
                "process {} exit {:?}",
                proc.name(),
                proc.try_exit_status()
            );
        }
        let _ = std::fs::write(self.artifact_dir.join("topology.txt"), s);
    }
}

/// Writes `p`'s hosts file in place (the bind mount of a running process keeps the inode).
fn write_hosts(p: &PodData, services: &[ServiceName]) -> Result<()> {
    let mut s = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    for svc in services {
        let (n, ns) = (&svc.name, &svc.namespace);
        let _ = write!(
            s,
            "{}\t{n}.{ns}.svc.{CLUSTER_DOMAIN} {n}.{ns}.svc {n}.{ns}",
            svc.cluster_ip
        );
        if *ns == p.namespace {
            let _ = write!(s, " {n}");
        }
        s.push('\n');
    }
    let _ = writeln!(s, "{}\t{} {}.{}", p.ip, p.name, p.name, p.namespace);
    let path = p.etc_dir.join("hosts");
    std::fs::write(&path, s).map_err(HarnessError::io("write", &path))
}
