//! The proxy's workload identity: its ECDSA P-256 key, the certificate the CA signed for its
//! SPIFFE ID, and the trust bundle.
//!
//! - [`Identity`] holds the current [`WorkloadCert`] (one writer, the renewal task; many
//!   readers, every TLS handshake). A reader never gets an expired certificate: past its
//!   `notAfter` the proxy has no identity and mutual TLS fails closed.
//! - [`client`] talks to the CA (`istio.v1.auth.IstioCertificateService`): the first
//!   certificate with the bootstrap token, renewals over mutual TLS with the current one.
//! - [`renew`] runs the renewal: at half the certificate's remaining life (or a forced
//!   interval, for tests), with backoff on failure. A new certificate is swapped in for the
//!   next handshakes; established connections keep theirs.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod client;
pub mod csr;
pub mod renew;

#[cfg(test)]
pub(crate) mod tests;

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use boring::pkey::{PKey, Private};
use boring::x509::X509;
use pingora_core::utils::tls::CertKey;
use serde::Serialize;

/// Seconds since the epoch, now.
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A certificate the CA issued to this proxy, with its key.
pub struct WorkloadCert {
    /// The SPIFFE ID it certifies.
    pub spiffe_id: String,
    /// The private key (never shown anywhere).
    pub key: PKey<Private>,
    /// The leaf, then the intermediates (the root excluded): what the proxy presents.
    pub chain: Vec<X509>,
    /// The roots the CA sent with it (the last certificate of its chain).
    pub roots: Vec<X509>,
    /// Serial number, lowercase hex.
    pub serial: String,
    /// `notBefore`, seconds since the epoch.
    pub not_before: i64,
    /// `notAfter`, seconds since the epoch.
    pub not_after: i64,
    /// When it was received, seconds since the epoch.
    pub received: i64,
    /// The leaf and intermediates with the key, as Pingora's upstream peers take them.
    pub cert_key: Arc<CertKey>,
    /// 1 for the first certificate, then one more per renewal.
    pub generation: u64,
    /// A fingerprint of `roots` (the trust bundle's version): connections verified against
    /// one bundle are never pooled with those verified against another.
    pub bundle_id: u64,
}

impl std::fmt::Debug for WorkloadCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkloadCert")
            .field("spiffe_id", &self.spiffe_id)
            .field("serial", &self.serial)
            .field("not_after", &self.not_after)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl WorkloadCert {
    /// Whether it is within its validity at `now`.
    pub fn valid_at(&self, now: i64) -> bool {
        self.not_before <= now && now < self.not_after
    }
}

/// The state of the identity, as `/config_dump` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum IdentityState {
    /// No `--token-file`: the proxy runs without identity (no mutual TLS).
    Disabled,
    /// Waiting for the first certificate.
    Pending,
    /// A valid certificate is held.
    Valid,
    /// The certificate expired and no renewal succeeded: mutual TLS fails closed.
    Expired,
}

/// What the renewal task reports besides certificates.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RenewalStatus {
    /// Successful requests (the first certificate and each renewal).
    pub issued: u64,
    /// Failed requests.
    pub failures: u64,
    /// The last failure.
    pub last_error: Option<String>,
    /// When the next renewal is due, seconds since the epoch.
    pub next_renewal: Option<i64>,
}

/// The proxy's identity: the current certificate, swapped in by the renewal task.
#[derive(Debug)]
pub struct Identity {
    spiffe_id: Option<String>,
    current: ArcSwapOption<WorkloadCert>,
    status: Mutex<RenewalStatus>,
    /// The generation of the last certificate installed (0: none yet), for those who push
    /// certificates elsewhere (`mesh-proxy agent`'s SDS streams).
    installed: tokio::sync::watch::Sender<u64>,
}

impl Identity {
    /// No identity (no `--token-file`): mutual TLS is unavailable and readiness does not
    /// wait for a certificate.
    pub fn disabled() -> Identity {
        Identity {
            spiffe_id: None,
            current: ArcSwapOption::empty(),
            status: Mutex::new(RenewalStatus::default()),
            installed: tokio::sync::watch::channel(0).0,
        }
    }

    /// An identity for `spiffe_id`, waiting for its first certificate.
    pub fn new(spiffe_id: String) -> Identity {
        Identity {
            spiffe_id: Some(spiffe_id),
            ..Identity::disabled()
        }
    }

    /// The SPIFFE ID, when identity is enabled.
    pub fn spiffe_id(&self) -> Option<&str> {
        self.spiffe_id.as_deref()
    }

    /// The current certificate, unless there is none or it has expired (fail closed).
    pub fn current(&self) -> Option<Arc<WorkloadCert>> {
        self.current
            .load_full()
            .filter(|c| now_unix() < c.not_after)
    }

    /// The last certificate installed, even if expired (for renewal decisions).
    pub fn last(&self) -> Option<Arc<WorkloadCert>> {
        self.current.load_full()
    }

    /// The state now.
    pub fn state(&self) -> IdentityState {
        if self.spiffe_id.is_none() {
            return IdentityState::Disabled;
        }
        match self.current.load_full() {
            None => IdentityState::Pending,
            Some(c) if now_unix() < c.not_after => IdentityState::Valid,
            Some(_) => IdentityState::Expired,
        }
    }

    /// Readiness: identity disabled, or a valid certificate held.
    pub fn is_ready(&self) -> bool {
        matches!(self.state(), IdentityState::Disabled | IdentityState::Valid)
    }

    /// Swaps in a new certificate (the renewal task's operation).
    pub fn install(&self, cert: WorkloadCert) {
        let generation = cert.generation;
        self.current.store(Some(Arc::new(cert)));
        self.installed.send_replace(generation);
    }

    /// Notified with the generation of each certificate installed after this call (the
    /// current one is [`Identity::current`]).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.installed.subscribe()
    }

    /// Updates the renewal status.
    pub fn report(&self, f: impl FnOnce(&mut RenewalStatus)) {
        let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut s);
    }

    /// The renewal status.
    pub fn status(&self) -> RenewalStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// What `/config_dump` shows: identity, state, the certificate chain's facts and the
    /// trust bundle (certificates only, never the key).
    pub fn dump(&self) -> IdentityDump {
        let cert = self.last();
        IdentityDump {
            spiffe_id: self.spiffe_id.clone(),
            state: self.state(),
            certificate: cert.as_ref().map(|c| CertDump {
                serial: c.serial.clone(),
                not_before: rfc3339(c.not_before),
                not_after: rfc3339(c.not_after),
                generation: c.generation,
                chain: c.chain.iter().map(describe).collect(),
            }),
            trust_bundle: cert
                .as_ref()
                .map(|c| {
                    c.roots
                        .iter()
                        .filter_map(|r| r.to_pem().ok())
                        .map(|p| String::from_utf8_lossy(&p).into_owned())
                        .collect()
                })
                .unwrap_or_default(),
            renewal: self.status(),
        }
    }
}

/// `/config_dump`'s identity section.
#[derive(Clone, Debug, Serialize)]
pub struct IdentityDump {
    /// The SPIFFE ID.
    pub spiffe_id: Option<String>,
    /// The state.
    pub state: IdentityState,
    /// The current (or last) certificate.
    pub certificate: Option<CertDump>,
    /// The trust bundle, PEM.
    pub trust_bundle: Vec<String>,
    /// Renewal counters.
    pub renewal: RenewalStatus,
}

/// A certificate's facts.
#[derive(Clone, Debug, Serialize)]
pub struct CertDump {
    /// Serial number (hex).
    pub serial: String,
    /// `notBefore`, RFC 3339.
    pub not_before: String,
    /// `notAfter`, RFC 3339.
    pub not_after: String,
    /// 1 for the first certificate, then one more per renewal.
    pub generation: u64,
    /// Each certificate of the chain presented.
    pub chain: Vec<ChainEntry>,
}

/// One certificate of a chain.
#[derive(Clone, Debug, Serialize)]
pub struct ChainEntry {
    /// Serial number (hex).
    pub serial: String,
    /// Subject, one line.
    pub subject: String,
    /// URI and DNS SANs.
    pub sans: Vec<String>,
    /// `notAfter`, RFC 3339.
    pub not_after: String,
}

/// RFC 3339 of seconds since the epoch.
pub fn rfc3339(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

fn describe(cert: &X509) -> ChainEntry {
    ChainEntry {
        serial: csr::serial_hex(cert),
        subject: cert
            .subject_name()
            .entries()
            .map(|e| {
                format!(
                    "{}={}",
                    e.object().nid().short_name().unwrap_or("?"),
                    e.data()
                        .as_utf8()
                        .map(|s| s.to_string())
                        .unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join(","),
        sans: csr::sans(cert),
        not_after: rfc3339(csr::validity(cert).map_or(0, |(_, a)| a)),
    }
}
