//! [`SimProxy`]: an Envoy-like ADS subscriber.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::cluster;
use envoy_types::pb::envoy::config::core::v3::{address, socket_address, Node};
use envoy_types::pb::envoy::config::endpoint::v3::{lb_endpoint, ClusterLoadAssignment};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

use super::view::{ClusterView, HcmView, ListenerView, RouteConfigView};
use super::{AdsError, CDS, EDS, LDS, RDS};

/// Who the simulated proxy says it is (Istio's node id and metadata).
#[derive(Clone, Debug)]
pub struct SimNode {
    /// Pod name.
    pub pod: String,
    /// Namespace.
    pub namespace: String,
    /// The pod's IP.
    pub ip: IpAddr,
    /// Workload labels.
    pub labels: BTreeMap<String, String>,
}

impl SimNode {
    fn node(&self) -> Node {
        let s = |v: &str| Value {
            kind: Some(Kind::StringValue(v.to_string())),
        };
        let labels = Struct {
            fields: self.labels.iter().map(|(k, v)| (k.clone(), s(v))).collect(),
        };
        let fields = [
            ("NAME", s(&self.pod)),
            ("NAMESPACE", s(&self.namespace)),
            ("INSTANCE_IPS", s(&self.ip.to_string())),
            ("CLUSTER_ID", s("Kubernetes")),
            ("ISTIO_VERSION", s("1.27.0")),
            (
                "LABELS",
                Value {
                    kind: Some(Kind::StructValue(labels)),
                },
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        Node {
            id: format!(
                "sidecar~{}~{}.{}~{}.svc.cluster.local",
                self.ip, self.pod, self.namespace, self.namespace
            ),
            metadata: Some(Struct { fields }),
            ..Default::default()
        }
    }
}

/// What a simulated proxy has seen of one type.
#[derive(Clone, Debug, Default)]
pub struct TypeSeen {
    /// The last version accepted.
    pub version: String,
    /// Responses received.
    pub responses: u64,
    /// Bytes of the responses received (their encoded size).
    pub bytes: u64,
}

/// What a simulated proxy holds, as Envoy would after applying every response.
#[derive(Clone, Debug, Default)]
pub struct SimState {
    /// Clusters by name, with their EDS service name when they are EDS clusters.
    pub clusters: BTreeMap<String, Option<String>>,
    /// Listener names.
    pub listeners: BTreeSet<String>,
    /// Route configurations by name: their virtual hosts' names.
    pub routes: BTreeMap<String, Vec<String>>,
    /// Load assignments by cluster name: their endpoint addresses.
    pub endpoints: BTreeMap<String, Vec<SocketAddr>>,
    /// Per type URL.
    pub types: BTreeMap<String, TypeSeen>,
    /// When the last response was received (and ACKed).
    pub last_response: Option<Instant>,
    /// Every response's type URL and arrival, in order.
    pub log: Vec<(&'static str, Instant)>,
    /// The route configuration names the listeners reference.
    pub route_names: BTreeSet<String>,
}

impl SimState {
    /// Bytes received over every type.
    pub fn bytes(&self) -> u64 {
        self.types.values().map(|t| t.bytes).sum()
    }

    /// Whether CDS, EDS (when subscribed), LDS and RDS (when subscribed) have all been
    /// answered and every subscribed name is held.
    pub fn synced(&self) -> bool {
        let eds = self.eds_names();
        let rds = self.rds_names();
        self.types.contains_key(CDS)
            && self.types.contains_key(LDS)
            && eds.iter().all(|n| self.endpoints.contains_key(n))
            && rds.iter().all(|n| self.routes.contains_key(n))
    }

    fn eds_names(&self) -> BTreeSet<String> {
        self.clusters.values().flatten().cloned().collect()
    }

    fn rds_names(&self) -> BTreeSet<String> {
        self.route_names.clone()
    }
}

/// A simulated sidecar on one ADS stream.
#[derive(Debug)]
pub struct SimProxy {
    state: Arc<Mutex<SimState>>,
    changed: watch::Receiver<u64>,
    task: JoinHandle<Result<(), AdsError>>,
}

impl Drop for SimProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The type URLs as `'static` strings.
fn static_type(url: &str) -> &'static str {
    [CDS, EDS, LDS, RDS]
        .into_iter()
        .find(|t| *t == url)
        .unwrap_or("unknown")
}

fn decode<T: Message + Default>(resp: &DiscoveryResponse) -> Result<Vec<T>, AdsError> {
    resp.resources
        .iter()
        .map(|a| {
            T::decode(a.value.as_slice()).map_err(|source| AdsError::Decode {
                type_url: resp.type_url.clone(),
                source,
            })
        })
        .collect()
}

fn route_names(listeners: &[ListenerView]) -> Result<BTreeSet<String>, AdsError> {
    let mut out = BTreeSet::new();
    for l in listeners {
        for chain in l.filter_chains.iter().chain(&l.default_filter_chain) {
            for any in chain.filters.iter().filter_map(|f| f.typed_config.as_ref()) {
                if !any.type_url.ends_with("HttpConnectionManager") {
                    continue;
                }
                let hcm =
                    HcmView::decode(any.value.as_slice()).map_err(|source| AdsError::Decode {
                        type_url: any.type_url.clone(),
                        source,
                    })?;
                if let Some(rds) = hcm.rds {
                    out.insert(rds.route_config_name);
                }
            }
        }
    }
    Ok(out)
}

fn addresses(cla: &ClusterLoadAssignment) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for group in &cla.endpoints {
        for lb in &group.lb_endpoints {
            let Some(lb_endpoint::HostIdentifier::Endpoint(ep)) = &lb.host_identifier else {
                continue;
            };
            let Some(address::Address::SocketAddress(sa)) =
                ep.address.as_ref().and_then(|a| a.address.as_ref())
            else {
                continue;
            };
            let (Ok(ip), Some(socket_address::PortSpecifier::PortValue(port))) =
                (sa.address.parse::<IpAddr>(), &sa.port_specifier)
            else {
                continue;
            };
            if let Ok(port) = u16::try_from(*port) {
                out.push(SocketAddr::new(ip, port));
            }
        }
    }
    out
}

/// The stream's own protocol state: nonces and subscribed names per type.
#[derive(Default)]
struct Protocol {
    nonces: BTreeMap<&'static str, String>,
    requested: BTreeMap<&'static str, BTreeSet<String>>,
    node_sent: bool,
}

impl Protocol {
    fn request(&mut self, node: &Node, type_url: &'static str, version: &str) -> DiscoveryRequest {
        let first = !self.node_sent;
        self.node_sent = true;
        DiscoveryRequest {
            version_info: version.to_string(),
            node: first.then(|| node.clone()),
            resource_names: self
                .requested
                .get(type_url)
                .map(|n| n.iter().cloned().collect())
                .unwrap_or_default(),
            type_url: type_url.to_string(),
            response_nonce: self.nonces.get(type_url).cloned().unwrap_or_default(),
            ..Default::default()
        }
    }

    /// A subscription update when `names` differ from what was asked (and something was, or
    /// is now, asked).
    fn resubscribe(
        &mut self,
        node: &Node,
        type_url: &'static str,
        names: BTreeSet<String>,
        version: &str,
    ) -> Option<DiscoveryRequest> {
        match self.requested.get(type_url) {
            Some(current) if *current == names => None,
            None if names.is_empty() => None,
            _ => {
                self.requested.insert(type_url, names);
                Some(self.request(node, type_url, version))
            }
        }
    }
}

impl SimProxy {
    /// Opens an ADS stream to `addr` as `node` and starts subscribing.
    pub async fn connect(addr: SocketAddr, node: SimNode) -> Result<SimProxy, AdsError> {
        let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
            .await
            .map_err(|source| AdsError::Connect {
                addr: addr.to_string(),
                source,
            })?
            .max_decoding_message_size(usize::MAX);
        let (tx, rx) = mpsc::channel(64);
        let node = node.node();
        let mut proto = Protocol::default();
        proto.requested.insert(CDS, BTreeSet::new());
        proto.requested.insert(LDS, BTreeSet::new());
        tx.send(proto.request(&node, CDS, ""))
            .await
            .map_err(|_| AdsError::Closed)?;
        tx.send(proto.request(&node, LDS, ""))
            .await
            .map_err(|_| AdsError::Closed)?;
        let mut responses = client
            .stream_aggregated_resources(ReceiverStream::new(rx))
            .await?
            .into_inner();
        let state = Arc::new(Mutex::new(SimState::default()));
        let (changed_tx, changed) = watch::channel(0u64);
        let shared = state.clone();
        let task = tokio::spawn(async move {
            let mut generation = 0u64;
            loop {
                let resp = responses.message().await?.ok_or(AdsError::Closed)?;
                let at = Instant::now();
                let type_url = static_type(&resp.type_url);
                proto.nonces.insert(type_url, resp.nonce.clone());
                let mut requests = Vec::new();
                {
                    let mut s = shared.lock().unwrap_or_else(PoisonError::into_inner);
                    apply(&mut s, type_url, &resp)?;
                    let seen = s.types.entry(type_url.to_string()).or_default();
                    seen.version = resp.version_info.clone();
                    seen.responses += 1;
                    seen.bytes += resp.encoded_len() as u64;
                    s.last_response = Some(at);
                    s.log.push((type_url, at));
                    // Dependent subscriptions first, then the ACK (as Envoy and mesh-proxy).
                    let version = |t: &str| {
                        s.types
                            .get(t)
                            .map(|v| v.version.clone())
                            .unwrap_or_default()
                    };
                    if type_url == CDS {
                        let names = s.eds_names();
                        requests.extend(proto.resubscribe(&node, EDS, names, &version(EDS)));
                    }
                    if type_url == LDS {
                        let names = s.rds_names();
                        requests.extend(proto.resubscribe(&node, RDS, names, &version(RDS)));
                    }
                    requests.push(proto.request(&node, type_url, &resp.version_info));
                }
                for r in requests {
                    tx.send(r).await.map_err(|_| AdsError::Closed)?;
                }
                generation += 1;
                let _ = changed_tx.send(generation);
            }
        });
        Ok(SimProxy {
            state,
            changed,
            task,
        })
    }

    /// Runs `f` on the current state.
    pub fn with_state<T>(&self, f: impl FnOnce(&SimState) -> T) -> T {
        f(&self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Waits until `pred` holds; returns when the response that made it hold arrived.
    pub async fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&SimState) -> bool,
    ) -> Result<Instant, AdsError> {
        let mut changed = self.changed.clone();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(at) =
                self.with_state(|s| pred(s).then(|| s.last_response.unwrap_or_else(Instant::now)))
            {
                return Ok(at);
            }
            if self.task.is_finished() {
                return Err(AdsError::Closed);
            }
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(AdsError::Closed),
                Err(_) => return Err(AdsError::Timeout(timeout, what.to_string())),
            }
        }
    }
}

/// Applies a response to the state: CDS and LDS replace, EDS and RDS merge (and what no
/// cluster or listener names any more is dropped).
fn apply(s: &mut SimState, type_url: &str, resp: &DiscoveryResponse) -> Result<(), AdsError> {
    match type_url {
        CDS => {
            s.clusters = decode::<ClusterView>(resp)?
                .into_iter()
                .map(|c| {
                    let eds = c.discovery_type == Some(cluster::DiscoveryType::Eds as i32);
                    let service = c
                        .eds
                        .map(|e| e.service_name)
                        .filter(|n| !n.is_empty())
                        .unwrap_or_else(|| c.name.clone());
                    (c.name, eds.then_some(service))
                })
                .collect();
            let names = s.eds_names();
            s.endpoints.retain(|n, _| names.contains(n));
        }
        LDS => {
            let listeners = decode::<ListenerView>(resp)?;
            s.route_names = route_names(&listeners)?;
            s.listeners = listeners.into_iter().map(|l| l.name).collect();
            let names = s.rds_names();
            s.routes.retain(|n, _| names.contains(n));
        }
        EDS => {
            for cla in decode::<ClusterLoadAssignment>(resp)? {
                let addrs = addresses(&cla);
                s.endpoints.insert(cla.cluster_name, addrs);
            }
        }
        RDS => {
            for rc in decode::<RouteConfigView>(resp)? {
                let vhosts = rc.virtual_hosts.into_iter().map(|v| v.name).collect();
                s.routes.insert(rc.name, vhosts);
            }
        }
        _ => {}
    }
    Ok(())
}
