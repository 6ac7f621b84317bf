//! The renewal task: get the first certificate, then renew at half of each certificate's
//! remaining life (Istio's default grace ratio), or after `--cert-renew-interval` when that
//! comes first (tests rotate within seconds). While the certificate is valid, renewals are
//! authenticated by it (mutual TLS); once it has expired — or before the first one — the
//! bootstrap token is used. Failures are retried with backoff; the certificate in use stays
//! until a new one is installed.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

use super::client::{CaClient, CaClientError};
use super::{now_unix, Identity, WorkloadCert};

/// First retry delay after a failed request.
const INITIAL_BACKOFF: Duration = Duration::from_millis(500);
/// Longest retry delay.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// When `cert` is due for renewal, seconds since the epoch.
pub fn renew_at(cert: &WorkloadCert, forced: Option<Duration>) -> i64 {
    let half = cert.received + (cert.not_after - cert.received).max(0) / 2;
    match forced {
        Some(every) => half.min(cert.received + every.as_secs().max(1) as i64),
        None => half,
    }
}

/// Runs forever on the current runtime, keeping `identity` supplied with a valid certificate.
pub async fn run(identity: Arc<Identity>, client: CaClient, forced: Option<Duration>) {
    let Some(spiffe_id) = identity.spiffe_id().map(str::to_string) else {
        return;
    };
    loop {
        if let Some(last) = identity.last() {
            let due = renew_at(&last, forced);
            identity.report(|s| s.next_renewal = Some(due));
            let wait = due - now_unix();
            if wait > 0 {
                tokio::time::sleep(Duration::from_secs(wait as u64)).await;
            }
        }
        obtain(&identity, &client, &spiffe_id).await;
    }
}

async fn attempt(
    identity: &Identity,
    client: &CaClient,
    spiffe_id: &str,
) -> Result<WorkloadCert, CaClientError> {
    match identity.current() {
        Some(current) => client.renew(&current).await,
        None => {
            let generation = identity.last().map_or(1, |c| c.generation + 1);
            client.first_certificate(spiffe_id, generation).await
        }
    }
}

/// Requests a certificate until one is installed.
async fn obtain(identity: &Identity, client: &CaClient, spiffe_id: &str) {
    let mut backoff = INITIAL_BACKOFF;
    let mut failures = 0u32;
    loop {
        match attempt(identity, client, spiffe_id).await {
            Ok(cert) => {
                tracing::info!(
                    identity = %cert.spiffe_id,
                    serial = %cert.serial,
                    not_after = %super::rfc3339(cert.not_after),
                    generation = cert.generation,
                    "workload certificate installed"
                );
                identity.install(cert);
                identity.report(|s| {
                    s.issued += 1;
                    s.last_error = None;
                });
                return;
            }
            Err(e) => {
                let message = e.to_string();
                if failures == 0 {
                    tracing::warn!(error = %message, "certificate request failed; retrying");
                } else {
                    tracing::debug!(error = %message, attempt = failures + 1, "certificate request failed");
                }
                failures = failures.saturating_add(1);
                identity.report(|s| {
                    s.failures += 1;
                    s.last_error = Some(message);
                });
                let delay = rand::rng().random_range(backoff / 2..=backoff);
                tokio::time::sleep(delay).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}
