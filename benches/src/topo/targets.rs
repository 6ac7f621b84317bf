//! The targets each started peer contributes: where the load of a (path, peer) enters, which
//! proxies it crosses and which app answers. Also starts the plain peers (nginx, HAProxy, the
//! Pingora forwarder), whose placement decides their targets.

use std::net::{Ipv4Addr, SocketAddr};

use mesh_tests::harness::{Pod, Process};

use super::spawn::{self, Cpus};
use super::{Error, Selection, Target};
use crate::paths::{app_port, PathId, GRPC_PORT, H2_PORT, HTTP_PORT};
use crate::peers::{Certs, Mtls, Peer, Role, SIDECAR_MTLS};

/// How clients reach nginx, HAProxy and Pingora.
const EXPLICIT: &str = "explicit proxy on 127.0.0.1 (no capture)";
/// How clients reach the sidecars.
const CAPTURED: &str = "capture (iptables REDIRECT) to a ClusterIP";
/// The server half's TLS port.
const PAIR_PORT: u16 = 18443;

/// One way through the topology.
pub struct Leg {
    /// The generator's pod.
    pub client: Pod,
    /// Where it connects.
    pub addr: SocketAddr,
    /// The proxies crossed.
    pub proxies: Vec<Process>,
    /// The app answering.
    pub upstream: Process,
    /// mTLS between the proxies.
    pub mtls: Mtls,
    /// How the client reaches the first proxy.
    pub entry: &'static str,
}

/// Collects the targets as peers start.
pub struct Builder<'a> {
    /// Targets so far.
    pub targets: Vec<Target>,
    /// What was asked for.
    pub sel: &'a Selection,
    /// The plain client pod.
    pub cli: Pod,
    /// The upstream pod's app.
    pub up_app: Process,
    /// The upstream pod's address.
    pub up_ip: Ipv4Addr,
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

impl Builder<'_> {
    fn add(&mut self, path: PathId, peer: Peer, leg: Leg) {
        let wanted = self.sel.paths.contains(&path)
            && (peer == Peer::Direct || self.sel.peers.contains(&peer));
        let Some(mode) = path.mode().filter(|_| wanted) else {
            return;
        };
        self.targets.push(Target {
            path,
            peer,
            client: leg.client,
            addr: leg.addr,
            mode,
            proxies: leg.proxies,
            upstream: leg.upstream,
            mtls: leg.mtls,
            entry: leg.entry,
        });
    }

    fn up_addr(&self, port: u16) -> SocketAddr {
        SocketAddr::from((self.up_ip, port))
    }

    /// The baselines: the client straight to the upstream pod, in each path's protocol.
    pub fn direct(&mut self) {
        for path in self.sel.paths.clone() {
            if let Some(mode) = path.mode() {
                let leg = Leg {
                    client: self.cli.clone(),
                    addr: self.up_addr(app_port(mode)),
                    proxies: Vec::new(),
                    upstream: self.up_app.clone(),
                    mtls: Mtls::Off,
                    entry: "direct",
                };
                self.add(path, Peer::Direct, leg);
            }
        }
    }

    /// A sidecar peer: S1 to the plain upstream Service, pair paths to the peer's Service
    /// (`server` is its server pod's sidecar processes and app). A sidecar's processes are
    /// the proxy and, for Envoy, its agent.
    pub fn sidecar(
        &mut self,
        peer: Peer,
        client: &Pod,
        client_procs: Vec<Process>,
        server: Option<(Vec<Process>, Process)>,
        service_ips: (Ipv4Addr, Ipv4Addr),
    ) {
        let (plain_ip, pair_ip) = service_ips;
        let leg = Leg {
            client: client.clone(),
            addr: SocketAddr::from((plain_ip, HTTP_PORT)),
            proxies: client_procs.clone(),
            upstream: self.up_app.clone(),
            mtls: Mtls::Off,
            entry: CAPTURED,
        };
        self.add(PathId::S1, peer, leg);
        let Some((server_procs, app)) = server else {
            return;
        };
        for path in [PathId::S2, PathId::S3, PathId::S4, PathId::S6] {
            let Some(mode) = path.mode() else { continue };
            let leg = Leg {
                client: client.clone(),
                addr: SocketAddr::from((pair_ip, app_port(mode))),
                proxies: client_procs.iter().chain(&server_procs).cloned().collect(),
                upstream: app.clone(),
                mtls: SIDECAR_MTLS,
                entry: CAPTURED,
            };
            self.add(path, peer, leg);
        }
    }
}

/// Listening ports of the plain peers in the client pod: S1, then the client half of the pair.
fn ports(peer: Peer) -> (u16, u16) {
    match peer {
        Peer::Nginx => (18081, 18181),
        Peer::Haproxy => (18082, 18182),
        _ => (18083, 18183),
    }
}

/// Starts nginx, HAProxy and the Pingora forwarder as plain proxies.
pub struct PlainPeers<'a> {
    /// The cores.
    pub cpus: Cpus,
    /// Certificates of the TLS pairs, if made.
    pub certs: Option<&'a Certs>,
}

impl PlainPeers<'_> {
    /// Starts nginx or HAProxy (`spawn_one` starts one instance for a role): a reverse proxy
    /// in the client pod for S1; for S2 and S6 a TLS pair, client half in the client pod and
    /// server half beside its own app in `server_pod`.
    pub fn start<F>(
        &self,
        b: &mut Builder<'_>,
        procs: &mut Vec<Process>,
        peer: Peer,
        server_pod: Option<&Pod>,
        spawn_one: F,
    ) -> Result<(), Error>
    where
        F: Fn(&Pod, &str, &Role) -> Result<Process, Error>,
    {
        let cli = b.cli.clone();
        let (s1_port, pair_port) = ports(peer);
        if b.sel.paths.contains(&PathId::S1) {
            let role = Role::Plain {
                listen: local(s1_port),
                upstream: b.up_addr(HTTP_PORT),
            };
            let p = spawn_one(&cli, &format!("{}-s1", peer.name()), &role)?;
            procs.push(p.clone());
            let leg = Leg {
                client: cli.clone(),
                addr: local(s1_port),
                proxies: vec![p],
                upstream: b.up_app.clone(),
                mtls: Mtls::Off,
                entry: EXPLICIT,
            };
            b.add(PathId::S1, peer, leg);
        }
        let (Some(server_pod), Some(_)) = (server_pod, self.certs) else {
            return Ok(());
        };
        let app = spawn::upstream(server_pod, self.cpus)?;
        let server_role = Role::TlsServer {
            listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, PAIR_PORT)),
            upstream: local(HTTP_PORT),
        };
        let server = spawn_one(server_pod, peer.name(), &server_role)?;
        let client_role = Role::TlsClient {
            listen: local(pair_port),
            upstream: SocketAddr::from((server_pod.ip(), PAIR_PORT)),
        };
        let client = spawn_one(&cli, &format!("{}-pair", peer.name()), &client_role)?;
        procs.extend([app.clone(), server.clone(), client.clone()]);
        for path in [PathId::S2, PathId::S6] {
            let leg = Leg {
                client: cli.clone(),
                addr: local(pair_port),
                proxies: vec![client.clone(), server.clone()],
                upstream: app.clone(),
                mtls: Mtls::On,
                entry: EXPLICIT,
            };
            b.add(path, peer, leg);
        }
        Ok(())
    }

    /// Starts the bare Pingora forwarder: in the client pod for S1, and as a plaintext pair
    /// (HTTP/1.1, and h2c for S3 and S4) with its server half in `server_pod`.
    pub fn start_pingora(
        &self,
        b: &mut Builder<'_>,
        procs: &mut Vec<Process>,
        server_pod: Option<&Pod>,
    ) -> Result<(), Error> {
        let cli = b.cli.clone();
        let (s1_port, pair_port) = ports(Peer::Pingora);
        if b.sel.paths.contains(&PathId::S1) {
            let routes = [(s1_port, b.up_addr(HTTP_PORT), false)];
            let p = spawn::pingora(&cli, "pingora-s1", &routes, self.cpus)?;
            procs.push(p.clone());
            let leg = Leg {
                client: cli.clone(),
                addr: local(s1_port),
                proxies: vec![p],
                upstream: b.up_app.clone(),
                mtls: Mtls::Off,
                entry: EXPLICIT,
            };
            b.add(PathId::S1, Peer::Pingora, leg);
        }
        let Some(server_pod) = server_pod else {
            return Ok(());
        };
        // Per protocol: (client-side port, server-side port, app port, h2 between them).
        let legs = [
            (pair_port, 18480, HTTP_PORT, false),
            (18283, 18482, H2_PORT, true),
            (18383, 18490, GRPC_PORT, true),
        ];
        let app = spawn::upstream(server_pod, self.cpus)?;
        let server_routes: Vec<_> = legs
            .iter()
            .map(|(_, s, a, h2)| (*s, local(*a), *h2))
            .collect();
        let server = spawn::pingora(server_pod, "pingora", &server_routes, self.cpus)?;
        let client_routes: Vec<_> = legs
            .iter()
            .map(|(c, s, _, h2)| (*c, SocketAddr::from((server_pod.ip(), *s)), *h2))
            .collect();
        let client = spawn::pingora(&cli, "pingora-pair", &client_routes, self.cpus)?;
        procs.extend([app.clone(), server.clone(), client.clone()]);
        for path in [PathId::S2, PathId::S3, PathId::S4, PathId::S6] {
            let Some(mode) = path.mode() else { continue };
            let port = legs
                .iter()
                .find(|(_, _, a, _)| *a == app_port(mode))
                .map_or(pair_port, |l| l.0);
            let leg = Leg {
                client: cli.clone(),
                addr: local(port),
                proxies: vec![client.clone(), server.clone()],
                upstream: app.clone(),
                mtls: Mtls::Off,
                entry: EXPLICIT,
            };
            b.add(path, Peer::Pingora, leg);
        }
        Ok(())
    }
}
