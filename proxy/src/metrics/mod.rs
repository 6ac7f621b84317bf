//! The sidecar's Prometheus metrics: Istio's standard metrics ([`istio`]), the proxy's own
//! health under Envoy's names ([`envoy`]) and the workload metadata both need ([`peer`]).
//!
//! One [`Metrics`] owns one `prometheus::Registry` (never the global one): `mesh-proxy run`
//! creates it and hands it down through [`crate::shared::Shared`]; tests create their own.
//! Served as Prometheus text on 15090 and 15020 (`/stats/prometheus`) and on the admin port.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod envoy;
pub mod istio;
pub mod peer;

use std::sync::Arc;

use prometheus::{Encoder, Registry, TextEncoder};

pub use self::envoy::{ClusterStats, EnvoyMetrics, HealthInput};
pub use self::istio::{IstioMetrics, RegisterError, Reporter, ServiceInfo};
pub use self::peer::{LocalMetadata, PeerCache, PeerInfo};

/// Every metric of the sidecar and the registry that serves them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Istio's standard metrics.
    pub istio: IstioMetrics,
    /// Envoy-named health metrics.
    pub envoy: EnvoyMetrics,
    /// Decoded peer metadata headers.
    pub peers: PeerCache,
    /// This proxy's own metadata (labels, and the headers sent to peers).
    pub local: LocalMetadata,
    /// This proxy's SPIFFE identity (when it has one), for the principal labels.
    pub local_principal: Option<Arc<str>>,
    /// Interned destination services.
    pub services: istio::ServiceCache,
    flags: std::sync::RwLock<std::collections::HashMap<String, Arc<str>>>,
}

impl Metrics {
    /// A fresh registry with every family registered, for the workload `local`.
    pub fn new(local: LocalMetadata) -> Result<Metrics, RegisterError> {
        let registry = Registry::new();
        Ok(Metrics {
            istio: IstioMetrics::register(&registry)?,
            envoy: EnvoyMetrics::register(&registry)?,
            peers: PeerCache::default(),
            local,
            local_principal: None,
            services: istio::ServiceCache::default(),
            flags: Default::default(),
            registry,
        })
    }

    /// The shared string of a response-flags value (a handful of distinct values exist).
    pub fn flags(&self, flags: &str) -> Arc<str> {
        if let Ok(map) = self.flags.read() {
            if let Some(f) = map.get(flags) {
                return f.clone();
            }
        }
        let mut map = self
            .flags
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= 1024 {
            return Arc::from(flags);
        }
        map.entry(flags.to_string())
            .or_insert_with(|| Arc::from(flags))
            .clone()
    }

    /// Metrics of a workload `test` in namespace `default`: the default of
    /// [`crate::shared::Shared`] until `mesh-proxy run` sets the real one, and for tests.
    pub fn unlabelled() -> Arc<Metrics> {
        let node = xds_client::NodeInfo {
            pod_name: "test".into(),
            namespace: "default".into(),
            ip: std::net::IpAddr::from([127, 0, 0, 1]),
            labels: Default::default(),
            service_account: "default".into(),
            cluster_domain: "cluster.local".into(),
        };
        // Registering fresh families in a fresh registry cannot clash.
        Arc::new(
            Metrics::new(LocalMetadata::new(
                &node,
                None,
                "Kubernetes",
                "cluster.local",
            ))
            .unwrap_or_else(|e| panic!("{e}")),
        )
    }

    /// The registry (for tests that gather directly).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Every metric in Prometheus text format 0.0.4.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 * 1024);
        // Encoding into a Vec cannot fail on I/O; a family the encoder rejects is a bug that
        // would show as a missing metric, never a failed scrape.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "metrics encoding failed");
        }
        out
    }
}

/// The `Content-Type` of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
