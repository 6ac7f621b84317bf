//! The push coordinator: turns each registry snapshot into a [`PushRequest`] and queues it
//! for every connected stream, merging it with what that stream has not taken yet (istiod's
//! push queue). Streams take their merged request when they are free, so a slow proxy gets
//! one push for many changes instead of falling behind.
//!
//! Debouncing happens before the registry publishes (istiod's 100 ms quiet, 10 s at most, on
//! config files and on proxy connections alike); the coordinator adds no delay of its own.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::push::{config_changes, PushRequest, ENDPOINT_KINDS};
use crate::config::{ConfigSnapshot, Kind, Object};
use crate::metrics::Metrics;
use crate::registry::{ConnectionId, MeshSnapshot, RegistryHandle};

/// A merged request waiting for a stream.
#[derive(Debug)]
pub(crate) struct Queued {
    /// What changed since the stream's last push.
    pub request: PushRequest,
    /// When the oldest part of it was queued.
    pub enqueued: Instant,
}

/// One stream's queue: at most one merged request.
#[derive(Debug, Default)]
pub(crate) struct ConnQueue {
    pending: Mutex<Option<Queued>>,
    /// Woken when a request is queued.
    pub notify: Notify,
}

impl ConnQueue {
    fn push(&self, request: PushRequest, now: Instant) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        match pending.as_mut() {
            Some(q) => q.request.merge(request),
            None => {
                *pending = Some(Queued {
                    request,
                    enqueued: now,
                });
            }
        }
        drop(pending);
        self.notify.notify_one();
    }

    /// Takes the pending request, if any.
    pub fn take(&self) -> Option<Queued> {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// The latest snapshot and every stream's queue.
#[derive(Debug)]
pub struct PushHub {
    current: Mutex<Arc<MeshSnapshot>>,
    queues: Mutex<BTreeMap<ConnectionId, Arc<ConnQueue>>>,
}

/// A stream's registration; removes its queue when dropped.
#[derive(Debug)]
pub(crate) struct QueueGuard {
    hub: Arc<PushHub>,
    conn: ConnectionId,
    /// The queue.
    pub queue: Arc<ConnQueue>,
}

impl Drop for QueueGuard {
    fn drop(&mut self) {
        self.hub
            .queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.conn);
    }
}

impl PushHub {
    /// A hub whose current snapshot is `initial`.
    pub fn new(initial: Arc<MeshSnapshot>) -> Arc<PushHub> {
        Arc::new(PushHub {
            current: Mutex::new(initial),
            queues: Mutex::new(BTreeMap::new()),
        })
    }

    /// The snapshot streams compute from.
    pub fn current(&self) -> Arc<MeshSnapshot> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Registers a stream's queue.
    pub(crate) fn register(self: &Arc<Self>, conn: ConnectionId) -> QueueGuard {
        let queue = Arc::new(ConnQueue::default());
        self.queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(conn, queue.clone());
        QueueGuard {
            hub: self.clone(),
            conn,
            queue,
        }
    }

    /// Makes `mesh` current and queues `request` for every stream. The snapshot is current
    /// before any stream is woken, so a stream always computes from a snapshot at least as
    /// new as the requests it has taken.
    pub fn publish(&self, mesh: Arc<MeshSnapshot>, request: PushRequest) {
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = mesh;
        if request.is_empty() {
            return;
        }
        let queues: Vec<Arc<ConnQueue>> = self
            .queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        let now = Instant::now();
        for q in queues {
            q.push(request.clone(), now);
        }
    }

    /// Number of registered streams.
    pub fn streams(&self) -> usize {
        self.queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// Starts the coordinator: every new registry snapshot becomes a push request, recorded in
/// the metrics and queued for every stream. Ends when the registry stops.
pub fn spawn_coordinator(
    registry: &RegistryHandle,
    hub: Arc<PushHub>,
    metrics: Metrics,
) -> JoinHandle<()> {
    let mut snapshots = registry.subscribe();
    tokio::spawn(async move {
        let mut previous = snapshots.borrow_and_update().clone();
        record_registry(&metrics, &previous);
        while snapshots.changed().await.is_ok() {
            let next = snapshots.borrow_and_update().clone();
            let started = Instant::now();
            let request = PushRequest::between(&previous, &next, started);
            if let Some(t) = next.trigger {
                metrics.debounce_time.observe(
                    t.debounced
                        .saturating_duration_since(t.first_event)
                        .as_secs_f64(),
                );
            }
            for (reason, n) in &request.reasons {
                metrics
                    .push_triggers
                    .with_label_values(&[reason.as_str()])
                    .inc_by(u64::from(*n));
            }
            record_inbound(&metrics, &previous, &next, &request);
            record_registry(&metrics, &next);
            tracing::debug!(
                version = next.version,
                full = request.full,
                configs = request.configs_updated.len(),
                endpoint_hosts = request.endpoints_updated.len(),
                streams = hub.streams(),
                took_ms = started.elapsed().as_secs_f64() * 1e3,
                "push"
            );
            hub.publish(next.clone(), request);
            previous = next;
        }
    })
}

fn record_registry(metrics: &Metrics, mesh: &MeshSnapshot) {
    metrics
        .services
        .set(i64::try_from(mesh.services.len()).unwrap_or(i64::MAX));
    let virtual_services = mesh
        .config
        .iter()
        .filter(|o| matches!(o, Object::VirtualService(_)))
        .count();
    metrics
        .virtual_services
        .set(i64::try_from(virtual_services).unwrap_or(i64::MAX));
}

/// `pilot_inbound_updates`: config changes, endpoint changes, Services changed or deleted.
fn record_inbound(
    metrics: &Metrics,
    old: &MeshSnapshot,
    new: &MeshSnapshot,
    request: &PushRequest,
) {
    let count = |label: &str, n: usize| {
        if n > 0 {
            metrics
                .inbound_updates
                .with_label_values(&[label])
                .inc_by(n as u64);
        }
    };
    let configs = request
        .configs_updated
        .iter()
        .filter(|k| k.kind != Kind::Service && !ENDPOINT_KINDS.contains(&k.kind))
        .count();
    let deleted = old
        .services
        .keys()
        .filter(|k| !new.services.contains_key(k))
        .count();
    let services = request
        .configs_updated
        .iter()
        .filter(|k| k.kind == Kind::Service)
        .count();
    count("config", configs);
    count("eds", request.endpoints_updated.len());
    count("svc", services.saturating_sub(deleted));
    count("svcdelete", deleted);
}

/// Starts recording each config load: objects added, updated and deleted
/// (`pilot_k8s_cfg_events`) and every rejected object (`pilot_total_rejected_configs`).
pub fn spawn_config_metrics(
    mut config: watch::Receiver<Arc<ConfigSnapshot>>,
    metrics: Metrics,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut previous = config.borrow_and_update().clone();
        record_rejected(&metrics, &previous);
        while config.changed().await.is_ok() {
            let next = config.borrow_and_update().clone();
            for (key, event) in config_changes(&previous, &next) {
                metrics
                    .config_events
                    .with_label_values(&[key.kind.as_str(), event.as_str()])
                    .inc();
            }
            record_rejected(&metrics, &next);
            previous = next;
        }
    })
}

fn record_rejected(metrics: &Metrics, config: &ConfigSnapshot) {
    for e in &config.errors {
        let (kind, name) = match e.object() {
            // `Kind ns/name`.
            Some(object) => match object.split_once(' ') {
                Some((kind, name)) => (kind.to_string(), name.to_string()),
                None => (object, String::new()),
            },
            None => ("file".to_string(), e.file().display().to_string()),
        };
        metrics
            .rejected_configs
            .with_label_values(&[&kind, &name])
            .inc();
    }
}
