//! A state-of-the-world ADS server whose resources the test replaces while the proxy runs: each
//! [`PushAds::push`] is a new version sent on every open stream for every subscribed type, and
//! every NACK the proxy sends back is recorded with its message.
// Shared by several test binaries, each using a part.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::Any;
use futures::Stream;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::common::xds::Resources;

/// A NACK: the type, the version it refused and the proxy's message.
#[derive(Clone, Debug)]
pub struct Nack {
    /// Type URL.
    pub type_url: String,
    /// The version still in force (the request's `version_info`).
    pub kept_version: String,
    /// `error_detail.message`.
    pub message: String,
}

/// The handle of a running server.
#[derive(Clone)]
pub struct PushAds {
    /// Where it listens.
    pub addr: SocketAddr,
    current: watch::Sender<(u64, Arc<Resources>)>,
    nacks: Arc<Mutex<Vec<Nack>>>,
}

impl PushAds {
    /// Serve `resources` as version 1 on a free loopback port.
    pub async fn start(resources: Resources) -> PushAds {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (current, _) = watch::channel((1, Arc::new(resources)));
        let nacks = Arc::new(Mutex::new(Vec::new()));
        let service = AggregatedDiscoveryServiceServer::new(Server {
            current: current.subscribe(),
            nacks: nacks.clone(),
        });
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        PushAds {
            addr,
            current,
            nacks,
        }
    }

    /// Replace the resources: the next version goes out on every stream.
    pub fn push(&self, resources: Resources) {
        self.current
            .send_modify(|(version, r)| (*version, *r) = (*version + 1, Arc::new(resources)));
    }

    /// The NACKs received so far.
    pub fn nacks(&self) -> Vec<Nack> {
        self.nacks.lock().unwrap().clone()
    }
}

struct Server {
    current: watch::Receiver<(u64, Arc<Resources>)>,
    nacks: Arc<Mutex<Vec<Nack>>>,
}

type Responses = Pin<Box<dyn Stream<Item = Result<DiscoveryResponse, Status>> + Send>>;
type DeltaResponses = Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;

fn response(type_url: &str, names: &[String], version: u64, r: &Resources) -> DiscoveryResponse {
    let chosen: Vec<Any> = match r.0.get(type_url) {
        None => Vec::new(),
        Some(all) if names.is_empty() => all.values().cloned().collect(),
        Some(all) => names.iter().filter_map(|n| all.get(n).cloned()).collect(),
    };
    DiscoveryResponse {
        version_info: version.to_string(),
        resources: chosen,
        type_url: type_url.to_string(),
        nonce: format!("{type_url}-{version}"),
        ..Default::default()
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for Server {
    type StreamAggregatedResourcesStream = Responses;
    type DeltaAggregatedResourcesStream = DeltaResponses;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Responses>, Status> {
        let mut requests = request.into_inner();
        let mut current = self.current.clone();
        let nacks = self.nacks.clone();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            // Subscribed names by type, and the version last sent for each type.
            let mut subscribed: HashMap<String, Vec<String>> = HashMap::new();
            loop {
                tokio::select! {
                    req = requests.message() => {
                        let Ok(Some(req)) = req else { return };
                        let mut names = req.resource_names.clone();
                        names.sort();
                        if let Some(detail) = &req.error_detail {
                            nacks.lock().unwrap().push(Nack {
                                type_url: req.type_url.clone(),
                                kept_version: req.version_info.clone(),
                                message: detail.message.clone(),
                            });
                        }
                        let answered = !req.response_nonce.is_empty();
                        if answered && subscribed.get(&req.type_url) == Some(&names) {
                            continue;
                        }
                        subscribed.insert(req.type_url.clone(), names.clone());
                        let resp = {
                            let (version, r) = &*current.borrow();
                            response(&req.type_url, &names, *version, r)
                        };
                        if tx.send(Ok(resp)).await.is_err() {
                            return;
                        }
                    }
                    changed = current.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        let out: Vec<DiscoveryResponse> = {
                            let (version, r) = &*current.borrow_and_update();
                            subscribed
                                .iter()
                                .map(|(t, names)| response(t, names, *version, r))
                                .collect()
                        };
                        for resp in out {
                            if tx.send(Ok(resp)).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn delta_aggregated_resources(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<DeltaResponses>, Status> {
        Err(Status::unimplemented("state of the world only"))
    }
}
