//! The ADS client: one aggregated stream to the control plane, state of the world.
//!
//! Contract used by the proxy:
//! - [`XdsClient::new`] returns the client and an [`XdsHandle`]; the proxy keeps the handle and
//!   spawns [`XdsClient::run`], which never returns: it connects, subscribes, applies, ACKs or
//!   NACKs, and reconnects with backoff when the stream ends.
//! - Every applied response publishes a new [`ProxyConfig`] snapshot; an invalid response is
//!   NACKed and the previous snapshot stays in force.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use rand::Rng;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::Endpoint;
use tracing::{debug, info, warn};

use crate::ads::{AdsState, Outcome};
use crate::model::ProxyConfig;
use crate::node::build_node;

/// Who this proxy is, as sent to the control plane in the xDS `Node`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeInfo {
    /// Pod name (`POD_NAME`).
    pub pod_name: String,
    /// Pod namespace (`POD_NAMESPACE`).
    pub namespace: String,
    /// The pod's IP address (`INSTANCE_IP`).
    pub ip: IpAddr,
    /// Workload labels (`MESH_LABELS`).
    pub labels: BTreeMap<String, String>,
    /// Service account (`SERVICE_ACCOUNT`).
    pub service_account: String,
    /// Cluster DNS domain, `cluster.local` by default.
    pub cluster_domain: String,
}

/// How to reach the control plane.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Control plane address, `host:port` or `http://host:port`.
    pub address: String,
    /// This proxy's identity and placement.
    pub node: NodeInfo,
    /// First reconnect delay; doubled (with jitter) after each failure.
    pub initial_backoff: Duration,
    /// Upper bound of the reconnect delay.
    pub max_backoff: Duration,
}

/// Connection and protocol state of the client, for readiness, admin and metrics.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct XdsStatus {
    /// True while an ADS stream is established.
    pub connected: bool,
    /// Number of streams established so far.
    pub connects: u64,
    /// Attempts that failed before a stream was established (connection refused, unreachable,
    /// stream rejected), counted over the client's life: it keeps growing while the control
    /// plane is away, which shows that the client keeps retrying.
    pub failed_attempts: u64,
    /// The last connection or stream error, if any.
    pub last_error: Option<String>,
    /// Responses ACKed so far.
    pub acks: u64,
    /// Responses NACKed so far.
    pub nacks: u64,
    /// The error detail of the last NACK.
    pub last_nack: Option<String>,
    /// Per type (`cds`, `eds`, `lds`, `rds`): responses applied and rejected.
    pub by_type: std::collections::BTreeMap<&'static str, (u64, u64)>,
}

/// The proxy's view of the client: the current config and status.
#[derive(Clone, Debug)]
pub struct XdsHandle {
    config: watch::Receiver<Arc<ProxyConfig>>,
    status: watch::Receiver<XdsStatus>,
}

impl XdsHandle {
    /// The current snapshot (cheap: an `Arc` clone).
    pub fn current(&self) -> Arc<ProxyConfig> {
        self.config.borrow().clone()
    }

    /// A receiver that is notified on every new snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ProxyConfig>> {
        self.config.clone()
    }

    /// The current status.
    pub fn status(&self) -> XdsStatus {
        self.status.borrow().clone()
    }
}

/// The ADS client. Build with [`XdsClient::new`], then spawn [`XdsClient::run`].
pub struct XdsClient {
    options: ClientOptions,
    config_tx: watch::Sender<Arc<ProxyConfig>>,
    status_tx: watch::Sender<XdsStatus>,
}

impl XdsClient {
    /// Create the client and the handle through which the proxy reads its config.
    pub fn new(options: ClientOptions) -> (XdsClient, XdsHandle) {
        let (config_tx, config) = watch::channel(Arc::new(ProxyConfig::default()));
        let (status_tx, status) = watch::channel(XdsStatus::default());
        (
            XdsClient {
                options,
                config_tx,
                status_tx,
            },
            XdsHandle { config, status },
        )
    }

    /// The options this client was built with.
    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// Run forever: connect, subscribe, apply, ACK/NACK, reconnect with backoff.
    ///
    /// Each stream starts with the last accepted versions and the current subscriptions.
    /// When a stream fails, the status turns disconnected and the client retries after an
    /// exponential, jittered delay between `initial_backoff` and `max_backoff` (reset once a
    /// stream has delivered a response). The published snapshot is never cleared: the proxy
    /// keeps serving its last good config while the control plane is away.
    pub async fn run(self) {
        let mut state = AdsState::new(build_node(&self.options.node));
        let mut backoff = Backoff::new(self.options.initial_backoff, self.options.max_backoff);
        // Failed attempts since the last stream; only the first of a series is logged at warn.
        let mut failures = 0u32;
        loop {
            let mut received = false;
            let error = self.run_stream(&mut state, &mut received).await;
            let detail = error_chain(&error);
            let was_connected = self.status_tx.borrow().connected;
            self.status_tx.send_modify(|s| {
                if !s.connected {
                    s.failed_attempts += 1;
                }
                s.connected = false;
                s.last_error = Some(detail.clone());
            });
            if was_connected {
                failures = 0;
                info!(address = %self.options.address, error = %detail, "disconnected from the control plane");
            } else if failures == 0 {
                failures += 1;
                warn!(address = %self.options.address, error = %detail, "cannot reach the control plane; retrying");
            } else {
                failures = failures.saturating_add(1);
                debug!(address = %self.options.address, error = %detail, attempt = failures, "cannot reach the control plane");
            }
            if received {
                backoff.reset();
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    /// One ADS stream, until it fails. `received` is set once a response arrives.
    async fn run_stream(&self, state: &mut AdsState, received: &mut bool) -> XdsError {
        let endpoint = match endpoint(&self.options.address) {
            Ok(endpoint) => endpoint,
            Err(e) => return e,
        };
        let channel = match endpoint.connect().await {
            Ok(channel) => channel,
            Err(source) => {
                return XdsError::Connect {
                    address: self.options.address.clone(),
                    source,
                }
            }
        };
        let mut client = AggregatedDiscoveryServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE);
        let (tx, rx) = mpsc::unbounded_channel();
        for request in state.start_stream() {
            log_request(&request);
            // The receiver lives in the request stream below; it cannot be gone yet.
            let _ = tx.send(request);
        }
        let mut inbound = match client
            .stream_aggregated_resources(UnboundedReceiverStream::new(rx))
            .await
        {
            Ok(response) => response.into_inner(),
            Err(status) => return XdsError::Stream(status),
        };
        self.status_tx.send_modify(|s| {
            s.connected = true;
            s.connects += 1;
        });
        info!(address = %self.options.address, node = %self.options.node.node_id(), "connected to the control plane");
        loop {
            let response = match inbound.message().await {
                Ok(Some(response)) => response,
                Ok(None) => return XdsError::Closed,
                Err(status) => return XdsError::Stream(status),
            };
            *received = true;
            for request in self.handle(state, response) {
                log_request(&request);
                if tx.send(request).is_err() {
                    return XdsError::Closed;
                }
            }
        }
    }

    /// Apply or reject one response; returns the requests to send.
    fn handle(&self, state: &mut AdsState, response: DiscoveryResponse) -> Vec<DiscoveryRequest> {
        let nonce = response.nonce.clone();
        match state.handle(response) {
            Outcome::Applied {
                resource_type,
                version,
                snapshot,
                requests,
            } => {
                debug!(
                    r#type = resource_type.short_name(),
                    %version,
                    %nonce,
                    synced = snapshot.synced,
                    "ACK"
                );
                self.config_tx.send_replace(Arc::new(snapshot));
                self.status_tx.send_modify(|s| {
                    s.acks += 1;
                    s.by_type.entry(resource_type.short_name()).or_default().0 += 1;
                });
                requests
            }
            Outcome::Rejected {
                resource_type,
                version,
                message,
                request,
            } => {
                warn!(
                    r#type = resource_type.short_name(),
                    %version,
                    %nonce,
                    error = %message,
                    "NACK"
                );
                self.status_tx.send_modify(|s| {
                    s.nacks += 1;
                    s.by_type.entry(resource_type.short_name()).or_default().1 += 1;
                    s.last_nack = Some(message);
                });
                vec![*request]
            }
            Outcome::Ignored { type_url } => {
                warn!(%type_url, %nonce, "ignoring a response for a type not subscribed on this stream");
                Vec::new()
            }
        }
    }
}

/// Largest xDS message accepted or sent (a large mesh's CDS response can exceed gRPC's
/// default 4 MiB).
const MAX_MESSAGE_SIZE: usize = 64 * 1024 * 1024;

/// How long a TCP connect to the control plane may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// HTTP/2 keepalive: a silent control plane is detected within interval + timeout.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a stream ended (or never started).
#[derive(Debug, thiserror::Error)]
enum XdsError {
    /// The address is not a valid URI.
    #[error("invalid control plane address {address:?}")]
    InvalidAddress {
        /// As configured.
        address: String,
        /// The parser's error.
        #[source]
        source: tonic::transport::Error,
    },
    /// `https://` addresses need TLS, which this client does not speak yet.
    #[error("control plane address {address:?}: TLS is not supported, use http://")]
    TlsUnsupported {
        /// As configured.
        address: String,
    },
    /// The connection could not be established.
    #[error("cannot connect to {address}")]
    Connect {
        /// As configured.
        address: String,
        /// The transport's error.
        #[source]
        source: tonic::transport::Error,
    },
    /// The stream failed with a gRPC status.
    #[error("stream failed: {}: {}", .0.code(), .0.message())]
    Stream(tonic::Status),
    /// The control plane ended the stream.
    #[error("the control plane closed the stream")]
    Closed,
}

/// The error and its sources, `: `-separated.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}

/// The tonic endpoint for `host:port` or `http://host:port`.
fn endpoint(address: &str) -> Result<Endpoint, XdsError> {
    let uri = if address.contains("://") {
        address.to_string()
    } else {
        format!("http://{address}")
    };
    if !uri.starts_with("http://") {
        return Err(XdsError::TlsUnsupported {
            address: address.to_string(),
        });
    }
    let endpoint = Endpoint::from_shared(uri).map_err(|source| XdsError::InvalidAddress {
        address: address.to_string(),
        source,
    })?;
    Ok(endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true))
}

fn log_request(request: &DiscoveryRequest) {
    debug!(
        type_url = %request.type_url,
        version = %request.version_info,
        nonce = %request.response_nonce,
        names = ?request.resource_names,
        nack = request.error_detail.is_some(),
        "sending discovery request"
    );
}

/// Exponential backoff with jitter: each delay is drawn from the upper half of a ceiling that
/// starts at `initial` and doubles up to `max`.
#[derive(Debug)]
struct Backoff {
    initial: Duration,
    max: Duration,
    ceiling: Duration,
}

impl Backoff {
    fn new(initial: Duration, max: Duration) -> Self {
        let max = max.max(initial);
        Backoff {
            initial,
            max,
            ceiling: initial,
        }
    }

    fn reset(&mut self) {
        self.ceiling = self.initial;
    }

    fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling;
        self.ceiling = (ceiling * 2).min(self.max);
        let high = u64::try_from(ceiling.as_micros()).unwrap_or(u64::MAX);
        Duration::from_micros(rand::rng().random_range(high / 2..=high))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
        let ceilings = [100, 200, 400, 500, 500];
        for ceiling in ceilings {
            let d = b.next_delay();
            let ceiling = Duration::from_millis(ceiling);
            assert!(
                d <= ceiling && d >= ceiling / 2,
                "{d:?} for ceiling {ceiling:?}"
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn addresses() {
        assert_eq!(
            endpoint("127.0.0.1:15010").unwrap().uri().to_string(),
            "http://127.0.0.1:15010/"
        );
        assert_eq!(
            endpoint("http://istiod.istio-system:15010")
                .unwrap()
                .uri()
                .to_string(),
            "http://istiod.istio-system:15010/"
        );
        assert!(matches!(
            endpoint("https://istiod:15012"),
            Err(XdsError::TlsUnsupported { .. })
        ));
        assert!(matches!(
            endpoint("not a uri"),
            Err(XdsError::InvalidAddress { .. })
        ));
    }
}
