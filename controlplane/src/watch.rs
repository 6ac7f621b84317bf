//! Watching the config directory and debouncing changes, as istiod does: a reload happens
//! [`Debounce::quiet`] after the last change, and at most [`Debounce::max`] after the first
//! change of a burst, so a steady stream of writes cannot postpone it forever.

use std::sync::Arc;
use std::time::Duration;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::{ConfigSnapshot, ConfigStore};

/// Debounce timing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Debounce {
    /// Quiet time after the last event before acting.
    pub quiet: Duration,
    /// Longest wait after the first event of a burst.
    pub max: Duration,
}

impl Default for Debounce {
    /// istiod's defaults: 100 ms quiet, 10 s at most.
    fn default() -> Self {
        Debounce {
            quiet: Duration::from_millis(100),
            max: Duration::from_secs(10),
        }
    }
}

/// When a burst of changes began and when its debounce ended: what a push is timed from
/// (istiod's `PushRequest.Start` and `pilot_debounce_time`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trigger {
    /// The first event of the burst.
    pub first_event: Instant,
    /// When the debounce let the burst through.
    pub debounced: Instant,
}

impl Trigger {
    /// A trigger that was not debounced (both times `now`).
    pub fn immediate(now: Instant) -> Trigger {
        Trigger {
            first_event: now,
            debounced: now,
        }
    }

    /// The earlier of two bursts' starts, the later of their ends.
    pub fn merge(self, other: Trigger) -> Trigger {
        Trigger {
            first_event: self.first_event.min(other.first_event),
            debounced: self.debounced.max(other.debounced),
        }
    }
}

/// Tracks one burst of events and tells when to act.
#[derive(Debug)]
pub struct Debouncer {
    timing: Debounce,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Debouncer {
    /// A debouncer with no pending event.
    pub fn new(timing: Debounce) -> Debouncer {
        Debouncer {
            timing,
            first: None,
            last: None,
        }
    }

    /// Records an event at `now`.
    pub fn event(&mut self, now: Instant) {
        self.first.get_or_insert(now);
        self.last = Some(now);
    }

    /// When to act, if an event is pending.
    pub fn deadline(&self) -> Option<Instant> {
        Some((self.last? + self.timing.quiet).min(self.first? + self.timing.max))
    }

    /// The first event of the pending burst, if any.
    pub fn first(&self) -> Option<Instant> {
        self.first
    }

    /// Clears the pending burst (call when acting) and returns its trigger (`None` when no
    /// event was pending), ending at `now`.
    pub fn take(&mut self, now: Instant) -> Option<Trigger> {
        let first = self.first?;
        self.reset();
        Some(Trigger {
            first_event: first,
            debounced: now,
        })
    }

    /// Clears the pending burst (call when acting).
    pub fn reset(&mut self) {
        self.first = None;
        self.last = None;
    }
}

/// Sleeps until `deadline`, or forever when there is none (for use in `select!`).
pub async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Errors starting the watcher.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The file-system watcher could not be created or attached to the directory.
    #[error("cannot watch {dir}: {source}")]
    Notify {
        /// The directory.
        dir: String,
        /// The watcher's error.
        source: notify::Error,
    },
}

/// A running config watcher; dropping it stops watching.
#[derive(Debug)]
pub struct ConfigWatcher {
    _watcher: RecommendedWatcher,
    task: JoinHandle<()>,
}

impl Drop for ConfigWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Watches the store's directory: every debounced burst of changes reloads the store and
/// publishes the new snapshot on the returned channel (the store's task is its only writer).
/// Must be called within a Tokio runtime.
pub fn watch_config(
    mut store: ConfigStore,
    timing: Debounce,
) -> Result<(watch::Receiver<Arc<ConfigSnapshot>>, ConfigWatcher), WatchError> {
    let (tx, rx) = watch::channel(store.current());
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let mut watcher =
        notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
            Ok(ev) if matches!(ev.kind, EventKind::Access(_)) => {}
            Ok(_) => {
                let _ = events_tx.send(());
            }
            Err(e) => tracing::warn!(error = %e, "config watcher error"),
        })
        .map_err(|source| WatchError::Notify {
            dir: store.root().display().to_string(),
            source,
        })?;
    watcher
        .watch(store.root(), RecursiveMode::Recursive)
        .map_err(|source| WatchError::Notify {
            dir: store.root().display().to_string(),
            source,
        })?;
    let task = tokio::spawn(async move {
        let mut debouncer = Debouncer::new(timing);
        loop {
            tokio::select! {
                ev = events.recv() => match ev {
                    Some(()) => debouncer.event(Instant::now()),
                    None => return,
                },
                _ = sleep_until(debouncer.deadline()) => {
                    let trigger = debouncer.take(Instant::now());
                    // File reads off the async workers; the store comes back with the result.
                    let reloaded = tokio::task::spawn_blocking(move || {
                        let snapshot = store.reload_triggered(trigger);
                        (store, snapshot)
                    })
                    .await;
                    let Ok((back, snapshot)) = reloaded else {
                        tracing::error!("config reload panicked; the config watcher stops");
                        return;
                    };
                    store = back;
                    tracing::info!(
                        generation = snapshot.generation,
                        took_ms = trigger.map_or(0.0, |t| t.debounced.elapsed().as_secs_f64() * 1e3),
                        objects = snapshot.objects.len(),
                        errors = snapshot.errors.len(),
                        "config reloaded"
                    );
                    for e in &snapshot.errors {
                        tracing::warn!("{e}");
                    }
                    if tx.send(snapshot).is_err() {
                        return;
                    }
                }
            }
        }
    });
    Ok((
        rx,
        ConfigWatcher {
            _watcher: watcher,
            task,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_is_quiet_after_last_but_never_past_max() {
        let timing = Debounce {
            quiet: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let mut d = Debouncer::new(timing);
        assert_eq!(d.deadline(), None);
        let t0 = Instant::now();
        d.event(t0);
        assert_eq!(d.deadline(), Some(t0 + Duration::from_millis(100)));
        d.event(t0 + Duration::from_millis(50));
        assert_eq!(d.deadline(), Some(t0 + Duration::from_millis(150)));
        d.event(t0 + Duration::from_millis(950));
        assert_eq!(d.deadline(), Some(t0 + Duration::from_secs(1)));
        d.reset();
        assert_eq!(d.deadline(), None);
    }

    #[test]
    fn defaults_are_istiods_debounce_after_and_max() {
        // PILOT_DEBOUNCE_AFTER=100ms, PILOT_DEBOUNCE_MAX=10s.
        let d = Debounce::default();
        assert_eq!(d.quiet, Duration::from_millis(100));
        assert_eq!(d.max, Duration::from_secs(10));
        let options = crate::app::Options::new(std::path::PathBuf::from("/config"));
        assert_eq!(options.debounce, d);
    }

    /// Acts on a flood of events `every` apart from `t0`: returns when the debouncer first
    /// lets a burst through, relative to `t0`.
    fn first_action_under_flood(timing: Debounce, every: Duration) -> Duration {
        let mut d = Debouncer::new(timing);
        let t0 = Instant::now();
        let mut now = t0;
        loop {
            if let Some(deadline) = d.deadline() {
                if deadline <= now {
                    let trigger = d.take(deadline).expect("a pending burst");
                    assert_eq!(trigger.first_event, t0);
                    assert_eq!(d.deadline(), None, "the burst is cleared");
                    return deadline - t0;
                }
            }
            d.event(now);
            now += every;
            assert!(now - t0 < Duration::from_secs(60), "never acted");
        }
    }

    #[test]
    fn the_default_max_caps_a_continuous_flood_at_ten_seconds() {
        // An event every 50 ms never leaves the 100 ms quiet time: only the cap ends it.
        let every = Duration::from_millis(50);
        assert_eq!(
            first_action_under_flood(Debounce::default(), every),
            Duration::from_secs(10)
        );
        // The same flood with a short configured max, as the socket tests use.
        let short = Debounce {
            max: Duration::from_secs(1),
            ..Debounce::default()
        };
        assert_eq!(
            first_action_under_flood(short, every),
            Duration::from_secs(1)
        );
        // Events further apart than the quiet time act 100 ms after each one.
        assert_eq!(
            first_action_under_flood(Debounce::default(), Duration::from_millis(150)),
            Duration::from_millis(100)
        );
    }
}
