//! Envoy as a pod's sidecar instead of `mesh-proxy`: the same capture (`mesh-proxy init`),
//! then `envoy -c bootstrap` as UID 1337 with Istio's node identity, ADS to the topology's
//! control plane, admin on 127.0.0.1:15000 and Istio's readiness port 15021.
//!
//! The bootstrap is what istio-agent would write, cut to what a sidecar needs: the node (id
//! `sidecar~IP~POD.NS~NS.svc.DOMAIN`, metadata `NAME`, `NAMESPACE`, `INSTANCE_IPS`, `LABELS`,
//! `SERVICE_ACCOUNT`, `CLUSTER_ID`, `ISTIO_VERSION`, `INTERCEPTION_MODE`), a static `xds-grpc`
//! cluster (HTTP/2) to the control plane's plaintext xDS port, CDS and LDS over ADS, and a
//! static listener on 0.0.0.0:15021 whose `/healthz/ready` is admin's `/ready` (200 once Envoy
//! is LIVE: its first clusters, endpoints, listeners and routes are applied), as Istio's
//! bootstrap forwards 15021 to the agent.
//!
//! With an identity (the default, as Istio injects every sidecar with one), the pod also runs
//! `mesh-proxy agent` as UID 1337 (istio-agent's part): it gets the workload certificate from
//! the control plane's CA with the pod's bootstrap token and serves it over SDS on
//! `<work dir>/sds/socket`, which the bootstrap's `sds-grpc` cluster (a `pipe` address) points
//! at; the node's `LABELS` carry `security.istio.io/tlsMode: istio`, as the injector labels
//! the pod, so the control plane sends it Istio's mutual-TLS resources.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde_json::{json, Value};

use super::error::{HarnessError, Result};
use super::paths::bin;
use super::peers;
use super::pod::{Pod, ADMIN_PORT, ISTIO_INIT_ARGS, READINESS_PORT};
use super::process::Process;
use super::topology::{Topology, CLUSTER_DOMAIN};

/// The `ISTIO_VERSION` an Envoy sidecar presents (the same as `mesh-proxy`'s).
pub const ENVOY_ISTIO_VERSION: &str = "1.27.0";
/// The bootstrap file's name in the pod's work directory.
pub const ENVOY_BOOTSTRAP_FILE: &str = "envoy-bootstrap.json";
/// The SDS socket of `mesh-proxy agent`, relative to the pod's work directory.
pub const SDS_SOCKET: &str = "sds/socket";
/// The label Istio's injector sets on a pod whose sidecar does mutual TLS.
pub const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";

/// How a pod's Envoy sidecar is started by [`Pod::inject_envoy`].
#[derive(Debug, Clone)]
pub struct EnvoyOptions {
    /// `SERVICE_ACCOUNT` (default `default`).
    pub service_account: String,
    /// Run `mesh-proxy init` with [`EnvoyOptions::init_args`] first (default true).
    pub capture: bool,
    /// Arguments of `mesh-proxy init` (default [`ISTIO_INIT_ARGS`]).
    pub init_args: Vec<String>,
    /// `--log-level` (default `warning`, as Istio's sidecars).
    pub log_level: String,
    /// More arguments of `envoy`.
    pub extra_args: Vec<String>,
    /// The control plane's xDS address; default the topology's, `10.211.N.1:15010`.
    pub xds_address: Option<SocketAddr>,
    /// Give the sidecar a workload identity: `mesh-proxy agent` serving its certificate over
    /// SDS, hence mutual TLS (default true).
    pub identity: bool,
}

impl Default for EnvoyOptions {
    fn default() -> Self {
        EnvoyOptions {
            service_account: "default".to_owned(),
            capture: true,
            init_args: ISTIO_INIT_ARGS.iter().map(|s| (*s).to_owned()).collect(),
            log_level: "warning".to_owned(),
            extra_args: Vec::new(),
            xds_address: None,
            identity: true,
        }
    }
}

/// Istio's node id of a sidecar: `sidecar~IP~POD.NS~NS.svc.DOMAIN`.
pub fn sidecar_node_id(pod: &Pod) -> String {
    format!(
        "sidecar~{}~{}.{}~{}.svc.{CLUSTER_DOMAIN}",
        pod.ip(),
        pod.name(),
        pod.namespace(),
        pod.namespace()
    )
}

/// Istio's node metadata of a pod's proxy: `NAME`, `NAMESPACE`, `INSTANCE_IPS`, `LABELS`,
/// `SERVICE_ACCOUNT`, `CLUSTER_ID` and `ISTIO_VERSION`.
pub fn node_metadata(pod: &Pod, service_account: &str) -> serde_json::Map<String, Value> {
    let mut meta = serde_json::Map::new();
    meta.insert("NAME".into(), pod.name().into());
    meta.insert("NAMESPACE".into(), pod.namespace().into());
    meta.insert("INSTANCE_IPS".into(), pod.ip().to_string().into());
    meta.insert("LABELS".into(), json!(pod.labels()));
    meta.insert("SERVICE_ACCOUNT".into(), service_account.into());
    meta.insert("CLUSTER_ID".into(), "Kubernetes".into());
    meta.insert("ISTIO_VERSION".into(), ENVOY_ISTIO_VERSION.into());
    meta
}

fn socket_address(ip: &str, port: u16) -> Value {
    json!({"socket_address": {"address": ip, "port_value": port}})
}

/// The Envoy bootstrap (JSON) of `pod`'s sidecar, reaching xDS at `xds` and, with an
/// identity, SDS at `<work dir>/`[`SDS_SOCKET`].
pub fn envoy_bootstrap(pod: &Pod, opts: &EnvoyOptions, xds: SocketAddr) -> Value {
    let mut meta = node_metadata(pod, &opts.service_account);
    if opts.capture {
        meta.insert("INTERCEPTION_MODE".into(), "REDIRECT".into());
    }
    let mut clusters = Vec::new();
    if opts.identity {
        if let Some(Value::Object(labels)) = meta.get_mut("LABELS") {
            labels.insert(TLS_MODE_LABEL.into(), "istio".into());
        }
        clusters.push(sds_cluster(&pod.work_dir().join(SDS_SOCKET)));
    }
    let app = pod
        .labels()
        .get("app")
        .cloned()
        .unwrap_or_else(|| pod.name().to_owned());
    let ads = json!({"ads": {}, "resource_api_version": "V3"});
    let router = json!({
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
    });
    let readiness = json!({
        "name": "readiness",
        "address": socket_address("0.0.0.0", READINESS_PORT),
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": "readiness",
                "route_config": {"name": "readiness", "virtual_hosts": [{
                    "name": "readiness",
                    "domains": ["*"],
                    "routes": [{
                        "match": {"path": "/healthz/ready"},
                        "route": {"cluster": "admin", "prefix_rewrite": "/ready"}
                    }]
                }]},
                "http_filters": [router]
            }
        }]}]
    });
    let xds_cluster = json!({
        "name": "xds-grpc",
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}
            }
        },
        "load_assignment": {"cluster_name": "xds-grpc", "endpoints": [{"lb_endpoints": [{
            "endpoint": {"address": socket_address(&xds.ip().to_string(), xds.port())}
        }]}]}
    });
    let admin_cluster = json!({
        "name": "admin",
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": "admin", "endpoints": [{"lb_endpoints": [{
            "endpoint": {"address": socket_address("127.0.0.1", ADMIN_PORT)}
        }]}]}
    });
    json!({
        "node": {
            "id": sidecar_node_id(pod),
            "cluster": format!("{app}.{}", pod.namespace()),
            "metadata": meta,
        },
        "admin": {"address": socket_address("127.0.0.1", ADMIN_PORT)},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "set_node_on_first_message_only": true,
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}]
            },
            "cds_config": ads,
            "lds_config": ads
        },
        "static_resources": {
            "listeners": [readiness],
            "clusters": clusters.into_iter().chain([xds_cluster, admin_cluster]).collect::<Vec<_>>()
        }
    })
}

/// Istio's `sds-grpc` bootstrap cluster: HTTP/2 to the agent's Unix socket.
fn sds_cluster(socket: &std::path::Path) -> Value {
    json!({
        "name": "sds-grpc",
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}
            }
        },
        "load_assignment": {"cluster_name": "sds-grpc", "endpoints": [{"lb_endpoints": [{
            "endpoint": {"address": {"pipe": {"path": socket.display().to_string()}}}
        }]}]}
    })
}

impl Pod {
    /// Injects Envoy as the sidecar: `mesh-proxy init` (unless `capture` is off; it must
    /// succeed), the bootstrap ([`envoy_bootstrap`]) written to
    /// `<work dir>/envoy-bootstrap.json`, then `envoy -c BOOTSTRAP --concurrency 1
    /// --disable-hot-restart` as UID 1337 in the background as process `proxy` (logs
    /// `<pod>-proxy.{out,err}.log`). It becomes the pod's [`Pod::proxy`], so
    /// [`Pod::wait_proxy_ready`], [`Pod::admin`] and [`Topology::wait_ready`] work as with
    /// `mesh-proxy`. Start the app after it. Fails when Envoy is not installed (see
    /// [`peers::envoy`]).
    pub fn inject_envoy(&self, opts: &EnvoyOptions) -> Result<Process> {
        let (envoy, _version) = peers::envoy().map_err(|why| HarnessError::Spawn {
            command: "envoy".to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, why.to_owned()),
        })?;
        if opts.capture {
            self.command([bin("mesh-proxy")])
                .arg("init")
                .args(&opts.init_args)
                .exec()?
                .ok()?;
        }
        let xds = opts
            .xds_address
            .unwrap_or_else(|| self.topo.host_addr(super::controlplane::XDS_PORT));
        if opts.identity {
            self.spawn_agent(&opts.service_account, xds)?;
        }
        let bootstrap: PathBuf = self.work_dir().join(ENVOY_BOOTSTRAP_FILE);
        let text =
            serde_json::to_string_pretty(&envoy_bootstrap(self, opts, xds)).unwrap_or_default();
        std::fs::write(&bootstrap, text).map_err(HarnessError::io("write", &bootstrap))?;
        let proxy = self
            .command([envoy.as_os_str()])
            .arg("-c")
            .arg(&bootstrap)
            .args(["--concurrency", "1", "--disable-hot-restart"])
            .args(["--log-level", opts.log_level.as_str()])
            .args(["--drain-time-s", "1"])
            .args(&opts.extra_args)
            .as_proxy_user()
            .spawn("proxy")?;
        *self.data.proxy.lock().unwrap_or_else(|e| e.into_inner()) = Some(proxy.clone());
        Ok(proxy)
    }
}

impl Pod {
    /// Starts `mesh-proxy agent` as UID 1337 (process `agent`): the pod's identity from its
    /// bootstrap token (written now if the CA exists, else once the control plane is ready),
    /// served over SDS on `<work dir>/`[`SDS_SOCKET`]. [`Pod::inject_envoy`] calls it; a bench
    /// that starts Envoy itself calls it first.
    pub fn spawn_agent(&self, service_account: &str, xds: SocketAddr) -> Result<Process> {
        *self
            .data
            .service_account
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(service_account.to_owned());
        self.topo.write_token(&self.data)?;
        self.command([bin("mesh-proxy")])
            .arg("agent")
            .arg("--sds-socket")
            .arg(self.work_dir().join(SDS_SOCKET))
            .args(["--xds-address".to_owned(), xds.to_string()])
            .args(["--namespace", self.namespace()])
            .args(["--service-account", service_account])
            .arg("--token-file")
            .arg(self.token_file())
            .env("RUST_LOG", "info")
            .as_proxy_user()
            .spawn("agent")
    }
}

impl Topology {
    /// A pod whose sidecar is Envoy with default [`EnvoyOptions`]: [`Topology::pod`] then
    /// [`Pod::inject_envoy`]. Envoy is not awaited: call [`Pod::wait_proxy_ready`] or
    /// [`Topology::wait_ready`] once the control plane runs.
    pub fn envoy_pod(&self, name: &str, namespace: &str, labels: &[(&str, &str)]) -> Result<Pod> {
        self.envoy_pod_with(name, namespace, labels, &EnvoyOptions::default())
    }

    /// [`Topology::envoy_pod`] with explicit options.
    pub fn envoy_pod_with(
        &self,
        name: &str,
        namespace: &str,
        labels: &[(&str, &str)],
        opts: &EnvoyOptions,
    ) -> Result<Pod> {
        let pod = self.pod(name, namespace, labels)?;
        pod.inject_envoy(opts)?;
        Ok(pod)
    }
}
