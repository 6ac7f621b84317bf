//! The CA's counters: Istio's `citadel_server_*` names, plus the refusals by reason.
//! Built once and registered in the control plane's registry (served on the monitoring
//! port); the service increments them.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Why a certificate request was refused (the `reason` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No token and no client certificate.
    Unauthenticated,
    /// A token that does not verify (forged, another CA's, malformed).
    BadToken,
    /// A token past its `exp`.
    ExpiredToken,
    /// A CSR that does not parse, has a bad signature or an unsupported key.
    BadCsr,
    /// A CSR with SANs besides the one SPIFFE ID.
    ExtraSans,
    /// A CSR for another identity than the one proven.
    IdentityMismatch,
    /// A validity beyond the CA's maximum.
    BadTtl,
}

impl Refusal {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Unauthenticated => "unauthenticated",
            Refusal::BadToken => "bad_token",
            Refusal::ExpiredToken => "expired_token",
            Refusal::BadCsr => "bad_csr",
            Refusal::ExtraSans => "extra_sans",
            Refusal::IdentityMismatch => "identity_mismatch",
            Refusal::BadTtl => "bad_ttl",
        }
    }
}

/// The CA's metrics.
#[derive(Clone, Debug)]
pub struct CaMetrics {
    /// `citadel_server_csr_count`: requests received.
    pub csr: IntCounter,
    /// `citadel_server_authentication_failure_count`.
    pub authentication_failure: IntCounter,
    /// `citadel_server_csr_parsing_err_count`.
    pub csr_parsing_error: IntCounter,
    /// `citadel_server_id_extraction_err_count`: the CSR's identity is not the caller's.
    pub id_extraction_error: IntCounter,
    /// `citadel_server_csr_sign_err_count`.
    pub sign_error: IntCounter,
    /// `citadel_server_success_cert_issuance_count`.
    pub issued: IntCounter,
    /// `citadel_server_root_cert_expiry_timestamp`.
    pub root_expiry: IntGauge,
    /// `mesh_ca_csr_refused_total{reason}`.
    pub refused: IntCounterVec,
}

impl Default for CaMetrics {
    fn default() -> Self {
        CaMetrics::new()
    }
}

fn counter(name: &str, help: &str) -> IntCounter {
    // Static, valid names: construction cannot fail.
    IntCounter::new(name, help).unwrap_or_else(|e| unreachable!("metric {name}: {e}"))
}

impl CaMetrics {
    /// Fresh, unregistered metrics.
    pub fn new() -> CaMetrics {
        CaMetrics {
            csr: counter(
                "citadel_server_csr_count",
                "The number of CSRs received by the CA.",
            ),
            authentication_failure: counter(
                "citadel_server_authentication_failure_count",
                "The number of authentication failures.",
            ),
            csr_parsing_error: counter(
                "citadel_server_csr_parsing_err_count",
                "The number of errors occurred when parsing the CSR.",
            ),
            id_extraction_error: counter(
                "citadel_server_id_extraction_err_count",
                "The number of CSRs whose identity is not the caller's.",
            ),
            sign_error: counter(
                "citadel_server_csr_sign_err_count",
                "The number of errors occurred when signing the CSR.",
            ),
            issued: counter(
                "citadel_server_success_cert_issuance_count",
                "The number of certificates issued.",
            ),
            root_expiry: IntGauge::new(
                "citadel_server_root_cert_expiry_timestamp",
                "The unix timestamp, in seconds, when the CA signing certificate expires.",
            )
            .unwrap_or_else(|e| unreachable!("root expiry gauge: {e}")),
            refused: IntCounterVec::new(
                Opts::new(
                    "mesh_ca_csr_refused_total",
                    "Certificate requests refused, by reason.",
                ),
                &["reason"],
            )
            .unwrap_or_else(|e| unreachable!("refused counter: {e}")),
        }
    }

    /// Registers every metric in `registry`.
    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        for c in [
            &self.csr,
            &self.authentication_failure,
            &self.csr_parsing_error,
            &self.id_extraction_error,
            &self.sign_error,
            &self.issued,
        ] {
            registry.register(Box::new(c.clone()))?;
        }
        registry.register(Box::new(self.root_expiry.clone()))?;
        registry.register(Box::new(self.refused.clone()))?;
        Ok(())
    }

    /// Counts a refusal (and Istio's counter for its kind).
    pub fn refuse(&self, why: Refusal) {
        self.refused.with_label_values(&[why.as_str()]).inc();
        match why {
            Refusal::Unauthenticated | Refusal::BadToken | Refusal::ExpiredToken => {
                self.authentication_failure.inc()
            }
            Refusal::BadCsr | Refusal::ExtraSans => self.csr_parsing_error.inc(),
            Refusal::IdentityMismatch => self.id_extraction_error.inc(),
            Refusal::BadTtl => {}
        }
    }

    /// The number of refusals for `why` so far.
    pub fn refused_count(&self, why: Refusal) -> u64 {
        self.refused.with_label_values(&[why.as_str()]).get()
    }
}
