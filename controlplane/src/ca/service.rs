//! `istio.v1.auth.IstioCertificateService/CreateCertificate`.
//!
//! Who the caller is: the workload identity of its client certificate when it connected over
//! mutual TLS (a renewal on 15012), else the namespace and service account of the bootstrap
//! token in its `authorization: Bearer TOKEN` metadata (a first certificate). The CSR must
//! name exactly that identity. Refusals are gRPC errors that say why — `UNAUTHENTICATED` (no
//! or bad credential), `INVALID_ARGUMENT` (a bad CSR or validity), `PERMISSION_DENIED` (a CSR
//! for another identity) — and are counted in [`CaMetrics`].

use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};

use super::csr::{parse_csr, CsrError};
use super::identity::SpiffeId;
use super::metrics::{CaMetrics, Refusal};
use super::tls::TlsConnectInfo;
use super::token::{self, TokenError};
use super::{cert, Authority, MIN_WORKLOAD_TTL};

/// Generated types and stubs of `proto/istioca.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("istio.v1.auth");
}

use pb::istio_certificate_service_server::{
    IstioCertificateService, IstioCertificateServiceServer,
};
use pb::{IstioCertificateRequest, IstioCertificateResponse};

/// Lifetimes of the certificates the CA signs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CertPolicy {
    /// When the request asks for none (`--workload-cert-ttl`, 24 h).
    pub default_ttl: Duration,
    /// The most a request may ask for (`--max-workload-cert-ttl`, 90 days).
    pub max_ttl: Duration,
}

impl Default for CertPolicy {
    fn default() -> Self {
        CertPolicy {
            default_ttl: super::DEFAULT_WORKLOAD_TTL,
            max_ttl: super::DEFAULT_MAX_WORKLOAD_TTL,
        }
    }
}

/// How the caller proved its identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proof {
    Certificate,
    Token,
}

/// The CA's gRPC service.
#[derive(Clone, Debug)]
pub struct CaService {
    authority: Arc<Authority>,
    policy: CertPolicy,
    metrics: CaMetrics,
}

impl CaService {
    /// The service of `authority`, with `policy`, counting in `metrics`.
    pub fn new(authority: Arc<Authority>, policy: CertPolicy, metrics: CaMetrics) -> CaService {
        CaService {
            authority,
            policy,
            metrics,
        }
    }

    /// The tonic server wrapping it.
    pub fn into_server(self) -> IstioCertificateServiceServer<CaService> {
        IstioCertificateServiceServer::new(self)
    }

    fn refuse(&self, why: Refusal, status: Status) -> Status {
        self.metrics.refuse(why);
        tracing::warn!(
            reason = why.as_str(),
            message = status.message(),
            "certificate request refused"
        );
        status
    }

    /// The identity the caller proved.
    fn caller<T>(&self, request: &Request<T>) -> Result<(SpiffeId, Proof), Status> {
        let td = self.authority.trust_domain();
        if let Some(peer) = request
            .extensions()
            .get::<TlsConnectInfo>()
            .and_then(|i| i.peer.as_ref())
        {
            return match &peer.identity {
                Some(id) if id.trust_domain == td => Ok((id.clone(), Proof::Certificate)),
                Some(id) => Err(self.refuse(
                    Refusal::Unauthenticated,
                    Status::unauthenticated(format!(
                        "client certificate identity {id} is not in trust domain {td}"
                    )),
                )),
                None => Err(self.refuse(
                    Refusal::Unauthenticated,
                    Status::unauthenticated("client certificate has no workload SPIFFE ID"),
                )),
            };
        }
        let Some(header) = request.metadata().get("authorization") else {
            return Err(self.refuse(
                Refusal::Unauthenticated,
                Status::unauthenticated(
                    "no credential: send a bootstrap token as `authorization: Bearer TOKEN` \
                     (meshctl token create), or renew over mutual TLS with the current certificate",
                ),
            ));
        };
        let value = header.to_str().unwrap_or_default();
        let Some(bearer) = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
        else {
            return Err(self.refuse(
                Refusal::BadToken,
                Status::unauthenticated("authorization metadata is not `Bearer TOKEN`"),
            ));
        };
        match token::verify(self.authority.public_key(), bearer) {
            Ok(id) => SpiffeId::new(td, &id.namespace, &id.service_account)
                .map(|s| (s, Proof::Token))
                .map_err(|e| {
                    self.refuse(
                        Refusal::BadToken,
                        Status::unauthenticated(format!(
                            "bootstrap token names no valid identity: {e}"
                        )),
                    )
                }),
            Err(e @ TokenError::Expired { .. }) => Err(self.refuse(
                Refusal::ExpiredToken,
                Status::unauthenticated(format!("bootstrap token refused: {e}")),
            )),
            Err(e) => Err(self.refuse(
                Refusal::BadToken,
                Status::unauthenticated(format!("bootstrap token refused: {e}")),
            )),
        }
    }

    /// The lifetime to give: the request's, else the default; at least
    /// [`MIN_WORKLOAD_TTL`]; more than the maximum is refused (as Istio does).
    fn ttl(&self, requested: i64) -> Result<Duration, Status> {
        if requested <= 0 {
            return Ok(self.policy.default_ttl);
        }
        let requested = Duration::from_secs(requested as u64);
        if requested > self.policy.max_ttl {
            return Err(self.refuse(
                Refusal::BadTtl,
                Status::invalid_argument(format!(
                    "requested TTL {} is greater than the max allowed TTL {}",
                    humantime::format_duration(requested),
                    humantime::format_duration(self.policy.max_ttl)
                )),
            ));
        }
        Ok(requested.max(MIN_WORKLOAD_TTL))
    }
}

#[tonic::async_trait]
impl IstioCertificateService for CaService {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        self.metrics.csr.inc();
        let (caller, proof) = self.caller(&request)?;
        let req = request.into_inner();
        let csr = parse_csr(&req.csr).map_err(|e| {
            let why = match e {
                CsrError::ExtraSans(_) => Refusal::ExtraSans,
                _ => Refusal::BadCsr,
            };
            self.refuse(why, Status::invalid_argument(format!("CSR refused: {e}")))
        })?;
        if csr.identity != caller {
            return Err(self.refuse(
                Refusal::IdentityMismatch,
                Status::permission_denied(format!(
                    "the CSR asks for {} but the caller proved {caller}",
                    csr.identity
                )),
            ));
        }
        let ttl = self.ttl(req.validity_duration)?;
        let chain = self.authority.sign_csr(&csr, ttl).map_err(|e| {
            self.metrics.sign_error.inc();
            Status::internal(format!("signing failed: {e}"))
        })?;
        self.metrics.issued.inc();
        let serial = chain
            .first()
            .and_then(|p| boring::x509::X509::from_pem(p.as_bytes()).ok())
            .map(|c| cert::serial_hex(&c))
            .unwrap_or_default();
        tracing::info!(
            identity = %caller,
            proof = ?proof,
            %serial,
            ttl = %humantime::format_duration(ttl),
            "certificate issued"
        );
        Ok(Response::new(IstioCertificateResponse {
            cert_chain: chain,
        }))
    }
}
