//! The state-of-the-world ADS protocol state, without I/O.
//!
//! [`AdsState`] holds the last accepted resources and versions (kept across streams) and the
//! per-stream protocol state (nonces, what was requested). It turns each `DiscoveryResponse`
//! into an [`Outcome`]: the requests to send (ACK or NACK, subscription changes) and, when the
//! response was applied, the new [`ProxyConfig`] snapshot.
//!
//! Protocol rules followed (Envoy's `xds_protocol` document):
//! - CDS and LDS are wildcard subscriptions whose responses carry the full set; EDS and RDS
//!   subscribe by name, to the names the current clusters and listeners reference, and their
//!   responses carry some of those names (others keep their last value; unrequested ones are
//!   ignored).
//! - An ACK carries the response's version and nonce; a NACK the last accepted version, the
//!   nonce and an `error_detail`. A subscription change carries the type's last accepted
//!   version and latest nonce. A response for a type not requested on the stream is ignored.
//! - A new stream starts with the last accepted versions, empty nonces and the same
//!   subscriptions; the node is sent on the first request of each stream.

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::rpc::Status;

use crate::convert::{decode_resource, ConvertError, Resource};
use crate::model::{
    Cluster, ClusterLoadAssignment, Discovery, Listener, NetworkFilter, ProxyConfig, ResourceType,
    RouteConfig, RouteSource,
};

/// `google.rpc.Code.INVALID_ARGUMENT`, the code of every NACK.
const INVALID_ARGUMENT: i32 = 3;

/// What handling one response produced.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Applied: publish `snapshot`, then send `requests` (subscription changes, then the ACK).
    Applied {
        /// The response's type.
        resource_type: ResourceType,
        /// The accepted version.
        version: String,
        /// The new snapshot.
        snapshot: ProxyConfig,
        /// Requests to send, in order.
        requests: Vec<DiscoveryRequest>,
    },
    /// Rejected: send the NACK; the previous resources of that type stay.
    Rejected {
        /// The response's type.
        resource_type: ResourceType,
        /// The rejected version.
        version: String,
        /// The error detail sent.
        message: String,
        /// The NACK.
        request: Box<DiscoveryRequest>,
    },
    /// Not handled: a type this client does not know, or did not request on this stream.
    Ignored {
        /// The response's type URL.
        type_url: String,
    },
}

/// Per-stream protocol state.
#[derive(Debug, Default)]
struct StreamState {
    /// Latest nonce received per type on this stream.
    nonces: BTreeMap<ResourceType, String>,
    /// Names last requested per type on this stream (empty for wildcard types); a type is
    /// present once it has been requested.
    requested: BTreeMap<ResourceType, BTreeSet<String>>,
    /// Whether the node has been sent on this stream.
    node_sent: bool,
}

/// Accepted configuration and protocol state of an ADS client.
#[derive(Debug)]
pub(crate) struct AdsState {
    node: Node,
    listeners: BTreeMap<String, Listener>,
    routes: BTreeMap<String, RouteConfig>,
    clusters: BTreeMap<String, Cluster>,
    endpoints: BTreeMap<String, ClusterLoadAssignment>,
    versions: BTreeMap<ResourceType, String>,
    stream: StreamState,
}

impl AdsState {
    /// A client with nothing accepted yet, presenting `node`.
    pub(crate) fn new(node: Node) -> Self {
        AdsState {
            node,
            listeners: BTreeMap::new(),
            routes: BTreeMap::new(),
            clusters: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            versions: BTreeMap::new(),
            stream: StreamState::default(),
        }
    }

    /// Begin a new stream: forget the previous stream's nonces and return the initial
    /// requests (CDS, EDS, LDS, RDS), with the last accepted versions and current names.
    pub(crate) fn start_stream(&mut self) -> Vec<DiscoveryRequest> {
        self.stream = StreamState::default();
        let mut requests = vec![self.subscribe(ResourceType::Cluster, BTreeSet::new())];
        requests.extend(self.update_subscription(ResourceType::Endpoint));
        requests.push(self.subscribe(ResourceType::Listener, BTreeSet::new()));
        requests.extend(self.update_subscription(ResourceType::Route));
        requests
    }

    /// The EDS names the current clusters reference.
    pub(crate) fn eds_names(&self) -> BTreeSet<String> {
        self.clusters
            .values()
            .filter_map(|c| match &c.discovery {
                Discovery::Eds { service_name } => Some(service_name.clone()),
                _ => None,
            })
            .collect()
    }

    /// The RDS names the current listeners reference.
    pub(crate) fn rds_names(&self) -> BTreeSet<String> {
        self.listeners
            .values()
            .flat_map(|l| l.filter_chains.iter().chain(&l.default_filter_chain))
            .filter_map(|chain| match &chain.filter {
                NetworkFilter::Http(hcm) => match &hcm.routes {
                    RouteSource::Rds(name) => Some(name.clone()),
                    RouteSource::Inline(_) => None,
                },
                NetworkFilter::Tcp(_) => None,
            })
            .collect()
    }

    /// The current snapshot of everything accepted.
    pub(crate) fn snapshot(&self) -> ProxyConfig {
        let eds = self.eds_names();
        let rds = self.rds_names();
        let synced = self.versions.contains_key(&ResourceType::Cluster)
            && self.versions.contains_key(&ResourceType::Listener)
            && eds.iter().all(|n| self.endpoints.contains_key(n))
            && rds.iter().all(|n| self.routes.contains_key(n));
        ProxyConfig {
            listeners: self.listeners.clone(),
            routes: self.routes.clone(),
            clusters: self.clusters.clone(),
            endpoints: self.endpoints.clone(),
            versions: self.versions.clone(),
            synced,
        }
    }

    /// Handle one response of the stream.
    pub(crate) fn handle(&mut self, response: DiscoveryResponse) -> Outcome {
        let Some(resource_type) = ResourceType::from_type_url(&response.type_url) else {
            return Outcome::Ignored {
                type_url: response.type_url,
            };
        };
        if !self.stream.requested.contains_key(&resource_type) {
            return Outcome::Ignored {
                type_url: response.type_url,
            };
        }
        self.stream
            .nonces
            .insert(resource_type, response.nonce.clone());
        match decode_all(resource_type, &response) {
            Ok(resources) => {
                self.apply(resource_type, &response.version_info, resources);
                let mut requests = Vec::new();
                let dependent = match resource_type {
                    ResourceType::Cluster => Some(ResourceType::Endpoint),
                    ResourceType::Listener => Some(ResourceType::Route),
                    ResourceType::Endpoint | ResourceType::Route => None,
                };
                requests.extend(dependent.and_then(|t| self.update_subscription(t)));
                requests.push(self.request(resource_type, None));
                Outcome::Applied {
                    resource_type,
                    version: response.version_info,
                    snapshot: self.snapshot(),
                    requests,
                }
            }
            Err(errors) => {
                let message = errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ");
                let request = Box::new(self.request(resource_type, Some(message.clone())));
                Outcome::Rejected {
                    resource_type,
                    version: response.version_info,
                    message,
                    request,
                }
            }
        }
    }

    /// Replace (CDS, LDS) or merge (EDS, RDS) accepted resources, then drop EDS and RDS
    /// resources that nothing references any more.
    fn apply(&mut self, resource_type: ResourceType, version: &str, resources: Vec<Resource>) {
        match resource_type {
            ResourceType::Cluster => {
                self.clusters = resources
                    .into_iter()
                    .filter_map(|r| match r {
                        Resource::Cluster(c) => Some((c.name.clone(), *c)),
                        _ => None,
                    })
                    .collect();
                let names = self.eds_names();
                self.endpoints.retain(|name, _| names.contains(name));
            }
            ResourceType::Listener => {
                self.listeners = resources
                    .into_iter()
                    .filter_map(|r| match r {
                        Resource::Listener(l) => Some((l.name.clone(), *l)),
                        _ => None,
                    })
                    .collect();
                let names = self.rds_names();
                self.routes.retain(|name, _| names.contains(name));
            }
            ResourceType::Endpoint => {
                let names = self.eds_names();
                for r in resources {
                    if let Resource::Endpoints(e) = r {
                        if names.contains(&e.cluster_name) {
                            self.endpoints.insert(e.cluster_name.clone(), e);
                        }
                    }
                }
            }
            ResourceType::Route => {
                let names = self.rds_names();
                for r in resources {
                    if let Resource::Route(rc) = r {
                        if names.contains(&rc.name) {
                            self.routes.insert(rc.name.clone(), rc);
                        }
                    }
                }
            }
        }
        self.versions.insert(resource_type, version.to_string());
    }

    /// The names this client wants for a type now (empty for the wildcard types).
    fn wanted(&self, resource_type: ResourceType) -> BTreeSet<String> {
        match resource_type {
            ResourceType::Endpoint => self.eds_names(),
            ResourceType::Route => self.rds_names(),
            ResourceType::Cluster | ResourceType::Listener => BTreeSet::new(),
        }
    }

    /// A request for a by-name type if its names changed: the first request of the stream
    /// when there is something to ask for, or a change (possibly to no names) after that.
    fn update_subscription(&mut self, resource_type: ResourceType) -> Option<DiscoveryRequest> {
        let wanted = self.wanted(resource_type);
        match self.stream.requested.get(&resource_type) {
            Some(current) if *current == wanted => None,
            None if wanted.is_empty() => None,
            _ => Some(self.subscribe(resource_type, wanted)),
        }
    }

    fn subscribe(
        &mut self,
        resource_type: ResourceType,
        names: BTreeSet<String>,
    ) -> DiscoveryRequest {
        self.stream.requested.insert(resource_type, names);
        self.request(resource_type, None)
    }

    /// A request for a type with its last accepted version, latest nonce and current names;
    /// with `error` it is a NACK.
    fn request(&mut self, resource_type: ResourceType, error: Option<String>) -> DiscoveryRequest {
        let node = (!self.stream.node_sent).then(|| self.node.clone());
        self.stream.node_sent = true;
        DiscoveryRequest {
            version_info: self
                .versions
                .get(&resource_type)
                .cloned()
                .unwrap_or_default(),
            node,
            resource_names: self
                .stream
                .requested
                .get(&resource_type)
                .map(|names| names.iter().cloned().collect())
                .unwrap_or_default(),
            type_url: resource_type.type_url().to_string(),
            response_nonce: self
                .stream
                .nonces
                .get(&resource_type)
                .cloned()
                .unwrap_or_default(),
            error_detail: error.map(|message| Status {
                code: INVALID_ARGUMENT,
                message,
                details: Vec::new(),
            }),
            ..Default::default()
        }
    }
}

/// Convert every resource of a response; all errors are collected so that one NACK reports
/// them all. Names must be unique, and so must listener addresses.
fn decode_all(
    resource_type: ResourceType,
    response: &DiscoveryResponse,
) -> Result<Vec<Resource>, Vec<ConvertError>> {
    let mut errors = Vec::new();
    let mut names = BTreeSet::new();
    let mut addresses = BTreeSet::new();
    let mut resources = Vec::with_capacity(response.resources.len());
    for (i, any) in response.resources.iter().enumerate() {
        let resource = match decode_resource(resource_type, any, i) {
            Ok(resource) => resource,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let name = resource.name().to_string();
        if !names.insert(name.clone()) {
            errors.push(
                ConvertError::duplicate("resource name", name.clone())
                    .in_resource(resource_type, &name),
            );
            continue;
        }
        if let Resource::Listener(l) = &resource {
            if !addresses.insert(l.address) {
                errors.push(
                    ConvertError::duplicate("address", l.address.to_string())
                        .at("address")
                        .in_resource(resource_type, &name),
                );
                continue;
            }
        }
        resources.push(resource);
    }
    if errors.is_empty() {
        Ok(resources)
    } else {
        Err(errors)
    }
}
