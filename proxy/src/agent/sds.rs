//! The SDS server of `mesh-proxy agent` (`envoy.service.secret.v3.SecretDiscoveryService`,
//! state of the world), as istio-agent serves Envoy:
//!
//! - `default`: the workload certificate chain and its key (`tls_certificate`);
//! - `ROOTCA`: the trust bundle the CA sent (`validation_context.trusted_ca`);
//! - `file-cert:CERT~KEY` and `file-root:PATH`: PEM files on the pod's disk (DestinationRule
//!   `SIMPLE`/`MUTUAL` with file paths), read at each response.
//!
//! Each stream answers its subscribed names once every one of them can be served (the
//! workload ones wait for the first certificate, so Envoy's listeners and clusters warm until
//! then: istiod sets no initial fetch timeout), then again whenever a new certificate is
//! installed (rotation). ACKs are absorbed; a NACK is logged and nothing is resent until the
//! next certificate. Names the agent cannot serve (`kubernetes://...`) are logged and never
//! answered, so the resource that needs them never warms: the sidecar fails closed.

use std::pin::Pin;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::{data_source, DataSource};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    secret, CertificateValidationContext, Secret, TlsCertificate,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::{
    SecretDiscoveryService, SecretDiscoveryServiceServer,
};
use envoy_types::pb::google::protobuf::Any;
use envoy_types::util::pack_any;
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use xds_client::model::tls::SecretName;

use crate::identity::{Identity, WorkloadCert};

/// `type_url` of a secret.
pub const SECRET_TYPE: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// Why a secret cannot be served now.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// No valid workload certificate yet (or it expired).
    #[error("no valid workload certificate yet")]
    NoCertificate,
    /// A name this agent does not serve.
    #[error(
        "secret {0:?}: this agent serves default, ROOTCA, file-cert:CERT~KEY and file-root:PATH"
    )]
    Unknown(String),
    /// A file of a `file-` secret cannot be read.
    #[error("secret {name:?}: {path}: {source}")]
    File {
        /// The secret.
        name: String,
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The key or a certificate cannot be encoded.
    #[error("secret {name:?}: cannot encode PEM: {source}")]
    Pem {
        /// The secret.
        name: String,
        /// Why.
        #[source]
        source: boring::error::ErrorStack,
    },
}

/// The gRPC service over `identity`.
pub fn server(identity: Arc<Identity>) -> SecretDiscoveryServiceServer<Sds> {
    SecretDiscoveryServiceServer::new(Sds { identity })
}

/// The SDS service: one task per stream.
#[derive(Debug)]
pub struct Sds {
    identity: Arc<Identity>,
}

fn inline(bytes: Vec<u8>) -> Option<DataSource> {
    Some(DataSource {
        specifier: Some(data_source::Specifier::InlineBytes(bytes)),
        ..Default::default()
    })
}

fn tls_certificate(name: &str, chain: Vec<u8>, key: Vec<u8>) -> Secret {
    Secret {
        name: name.to_string(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: inline(chain),
            private_key: inline(key),
            ..Default::default()
        })),
    }
}

fn trusted_ca(name: &str, pem: Vec<u8>) -> Secret {
    Secret {
        name: name.to_string(),
        r#type: Some(secret::Type::ValidationContext(
            CertificateValidationContext {
                trusted_ca: inline(pem),
                ..Default::default()
            },
        )),
    }
}

fn pems<'a>(
    name: &str,
    certs: impl IntoIterator<Item = &'a boring::x509::X509>,
) -> Result<Vec<u8>, SecretError> {
    let mut out = Vec::new();
    for c in certs {
        out.extend(c.to_pem().map_err(|source| SecretError::Pem {
            name: name.to_string(),
            source,
        })?);
    }
    Ok(out)
}

/// The secret `name` now, from `cert` (the current workload certificate, if any) or files.
pub fn secret(name: &str, cert: Option<&WorkloadCert>) -> Result<Secret, SecretError> {
    let read = |path: &str| {
        std::fs::read(path).map_err(|source| SecretError::File {
            name: name.to_string(),
            path: path.to_string(),
            source,
        })
    };
    match SecretName::parse(name) {
        Some(SecretName::Workload) => {
            let cert = cert.ok_or(SecretError::NoCertificate)?;
            let key = cert
                .key
                .private_key_to_pem_pkcs8()
                .map_err(|source| SecretError::Pem {
                    name: name.to_string(),
                    source,
                })?;
            Ok(tls_certificate(name, pems(name, &cert.chain)?, key))
        }
        Some(SecretName::Root) => {
            let cert = cert.ok_or(SecretError::NoCertificate)?;
            Ok(trusted_ca(name, pems(name, &cert.roots)?))
        }
        Some(SecretName::FileCert { cert, key }) => {
            Ok(tls_certificate(name, read(&cert)?, read(&key)?))
        }
        Some(SecretName::FileRoot(path)) => Ok(trusted_ca(name, read(&path)?)),
        // No Kubernetes API here: a credentialName secret is never served (fails closed).
        Some(SecretName::Kubernetes(_)) | None => Err(SecretError::Unknown(name.to_string())),
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<DiscoveryResponse, Status>> + Send>>;

#[tonic::async_trait]
impl SecretDiscoveryService for Sds {
    type DeltaSecretsStream =
        Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;
    type StreamSecretsStream = ResponseStream;

    async fn delta_secrets(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaSecretsStream>, Status> {
        Err(Status::unimplemented(
            "incremental SDS is not served: use the state-of-the-world StreamSecrets",
        ))
    }

    async fn stream_secrets(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamSecretsStream>, Status> {
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(serve_stream(
            self.identity.clone(),
            request.into_inner(),
            tx,
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn fetch_secrets(
        &self,
        request: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        let req = request.into_inner();
        let cert = self.identity.current();
        let resources = answer(&req.resource_names, cert.as_deref())
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(response(
            &version(cert.as_deref()),
            "fetch",
            resources,
        )))
    }
}

fn version(cert: Option<&WorkloadCert>) -> String {
    cert.map_or_else(|| "0".to_string(), |c| c.generation.to_string())
}

fn response(version: &str, nonce: &str, resources: Vec<Any>) -> DiscoveryResponse {
    DiscoveryResponse {
        version_info: version.to_string(),
        resources,
        type_url: SECRET_TYPE.to_string(),
        nonce: nonce.to_string(),
        ..Default::default()
    }
}

/// Every name's secret, or the first reason one cannot be served.
fn answer(names: &[String], cert: Option<&WorkloadCert>) -> Result<Vec<Any>, SecretError> {
    names
        .iter()
        .map(|n| secret(n, cert).map(pack_any))
        .collect()
}

/// What one stream has been sent.
#[derive(Default)]
struct StreamState {
    names: Vec<String>,
    /// The nonce of the last response, and the names it answered.
    sent: Option<(String, Vec<String>)>,
    nonces: u64,
    /// An answer is owed (new names, or a new certificate).
    owed: bool,
}

impl StreamState {
    /// Takes a request: whether it asks for an answer (new names, a first request, or a
    /// reconnect that resends old versions with a nonce this stream never sent).
    fn request(&mut self, req: &DiscoveryRequest) {
        if let Some(e) = &req.error_detail {
            tracing::warn!(
                names = ?req.resource_names,
                error = %e.message,
                "Envoy rejected the secrets sent (NACK)"
            );
        }
        let mut names = req.resource_names.clone();
        names.sort();
        names.dedup();
        let acked = self
            .sent
            .as_ref()
            .is_some_and(|(nonce, sent)| *nonce == req.response_nonce && *sent == names);
        if !acked {
            self.owed = true;
        }
        self.names = names;
    }

    /// The response owed now, if every name can be served.
    fn respond(&mut self, identity: &Identity) -> Option<DiscoveryResponse> {
        if !self.owed || self.names.is_empty() {
            return None;
        }
        let cert = identity.current();
        match answer(&self.names, cert.as_deref()) {
            Ok(resources) => {
                self.nonces += 1;
                let nonce = self.nonces.to_string();
                self.sent = Some((nonce.clone(), self.names.clone()));
                self.owed = false;
                Some(response(&version(cert.as_deref()), &nonce, resources))
            }
            Err(SecretError::NoCertificate) => None,
            Err(e) => {
                tracing::warn!(error = %e, "secret not served");
                None
            }
        }
    }
}

async fn serve_stream(
    identity: Arc<Identity>,
    mut requests: Streaming<DiscoveryRequest>,
    tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
) {
    let mut installed = identity.subscribe();
    let mut state = StreamState::default();
    loop {
        tokio::select! {
            req = requests.message() => match req {
                Ok(Some(req)) => state.request(&req),
                Ok(None) => return,
                Err(status) => {
                    tracing::debug!(%status, "SDS stream ended");
                    return;
                }
            },
            changed = installed.changed() => {
                if changed.is_err() {
                    return;
                }
                state.owed = true;
            }
        }
        if let Some(resp) = state.respond(&identity) {
            if tx.send(Ok(resp)).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests;
