//! The flags of `mesh-proxy run` and their validation.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use xds_client::model::{EscapedSlashes, PathNormalization};

use super::Error;
use crate::identity::client::{CaAddress, CaConfig};

/// Longest accepted drain duration.
const MAX_DRAIN: Duration = Duration::from_secs(3600);
/// Longest accepted protocol detection timeout.
const MAX_DETECTION: Duration = Duration::from_secs(60);
/// Most worker threads accepted.
const MAX_CONCURRENCY: usize = 256;

/// Flags of `mesh-proxy run`. Identity and placement fall back to the environment variables an
/// injected container receives.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Control plane address (`host:port` or `http://host:port`).
    #[arg(long, env = "MESH_XDS_ADDRESS")]
    pub xds_address: String,
    /// Pod name.
    #[arg(long, env = "POD_NAME")]
    pub pod_name: String,
    /// Pod namespace.
    #[arg(long, env = "POD_NAMESPACE")]
    pub namespace: String,
    /// Service account of the pod.
    #[arg(long, env = "SERVICE_ACCOUNT", default_value = "default")]
    pub service_account: String,
    /// The pod's IP address.
    #[arg(long, env = "INSTANCE_IP")]
    pub ip: IpAddr,
    /// Workload labels, `k=v,k=v`.
    #[arg(long, env = "MESH_LABELS", default_value = "", value_parser = parse_labels)]
    pub labels: Labels,
    /// Cluster DNS domain.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Bootstrap token proving the proxy's namespace and service account to the CA for its
    /// first certificate (`meshctl token create`); read at each attempt, so it may appear
    /// after the proxy starts. Without it the proxy has no identity: no mutual TLS, and
    /// readiness does not wait for a certificate.
    #[arg(long, env = "MESH_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// The CA (`host:port` or `http://host:port` plaintext, `https://host:port` TLS);
    /// default: the xDS address.
    #[arg(long, env = "CA_ADDR")]
    pub ca_address: Option<String>,
    /// Where certificate renewals go, over mutual TLS with the current certificate
    /// (`host:port`); default: the CA address if it is https://, else its host on 15012.
    #[arg(long)]
    pub ca_tls_address: Option<String>,
    /// PEM roots the CA's serving certificate (and the first workload certificate) must
    /// chain to, as Istio's mounted root-cert.pem; needed when --ca-address is https://.
    #[arg(long, env = "MESH_CA_ROOT_CERT")]
    pub ca_root_cert: Option<PathBuf>,
    /// Lifetime asked for the workload certificate (at least 1m); renewed at half of it.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub cert_ttl: Duration,
    /// Renew the certificate at least this often (tests: rotation within seconds).
    #[arg(long, value_parser = parse_duration)]
    pub cert_renew_interval: Option<Duration>,
    /// Outbound capture listener.
    #[arg(long, default_value = "0.0.0.0:15001")]
    pub outbound_addr: SocketAddr,
    /// Inbound capture listener.
    #[arg(long, default_value = "0.0.0.0:15006")]
    pub inbound_addr: SocketAddr,
    /// Admin listener (keep it on loopback).
    #[arg(long, default_value = "127.0.0.1:15000")]
    pub admin_addr: SocketAddr,
    /// Readiness listener (`/healthz/ready`).
    #[arg(long, default_value = "0.0.0.0:15021")]
    pub readiness_addr: SocketAddr,
    /// Prometheus listener (`/stats/prometheus`: Istio's standard metrics and the proxy's
    /// Envoy-named health metrics), Envoy's 15090.
    #[arg(long, default_value = "0.0.0.0:15090")]
    pub stats_addr: SocketAddr,
    /// Merged stats and health listener (`/stats/prometheus`, `/healthz/ready`), Istio's
    /// pilot-agent status port 15020.
    #[arg(long, default_value = "0.0.0.0:15020")]
    pub status_addr: SocketAddr,
    /// Access logging: `on` (each listener as its configuration says) or `off` (no access
    /// log at all, whatever the configuration says).
    #[arg(long, env = "MESH_ACCESS_LOG", default_value = "on", value_parser = parse_on_off, action = clap::ArgAction::Set)]
    pub access_log: bool,
    /// Access-log line format: `json` (Istio's JSON field names) or `text` (Istio's default
    /// text layout).
    #[arg(long, env = "MESH_ACCESS_LOG_FORMAT", default_value = "json")]
    pub access_log_format: crate::accesslog::Format,
    /// OTLP/gRPC collector spans are exported to (`http://HOST:4317`). Turns tracing on:
    /// trace context (W3C and B3) is continued and propagated, and a span is recorded per
    /// sampled request. Without it the proxy leaves trace headers alone.
    #[arg(long, env = "MESH_TRACING_OTLP_ENDPOINT")]
    pub tracing_otlp_endpoint: Option<String>,
    /// Percentage of requests sampled when no upstream decision came with them (0-100;
    /// Istio's default 1).
    #[arg(long, env = "MESH_TRACING_SAMPLING", default_value_t = 1.0)]
    pub tracing_sampling: f64,
    /// Workload name for metrics and peer metadata (Istio's `ISTIO_META_WORKLOAD_NAME`);
    /// default: derived from the pod name as Istio does (a Deployment's pod name without its
    /// hashes, a StatefulSet's without its ordinal).
    #[arg(long, env = "ISTIO_META_WORKLOAD_NAME")]
    pub workload_name: Option<String>,
    /// Mesh id, for the `istio.mesh_id` span tag and peer metadata (Istio's default: the
    /// trust domain, here the cluster domain).
    #[arg(long, env = "ISTIO_META_MESH_ID")]
    pub mesh_id: Option<String>,
    /// How long to wait for a client's first bytes before treating it as TCP (`100ms`, `1s`).
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    pub protocol_detection_timeout: Duration,
    /// Worker threads of the data path; 0 means one per CPU.
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// On SIGTERM or `/quitquitquit`, how long open connections may finish before the proxy
    /// exits (whole seconds, rounded up). The proxy exits earlier once none is left.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub drain_duration: Duration,
    /// Path normalization of every HTTP chain, overriding what the control plane sets
    /// (Istio's `meshConfig.pathNormalization`): `NONE`, `BASE`, `MERGE_SLASHES` or
    /// `DECODE_AND_MERGE_SLASHES`. Without it, each chain follows its connection manager's
    /// `normalize_path`, `merge_slashes` and `path_with_escaped_slashes_action`.
    #[arg(long, env = "MESH_PATH_NORMALIZATION", value_parser = parse_path_normalization)]
    pub path_normalization: Option<PathNormalization>,
}

/// Parse one of Istio's `pathNormalization` modes.
pub fn parse_path_normalization(s: &str) -> Result<PathNormalization, String> {
    let base = PathNormalization {
        normalize: true,
        ..PathNormalization::default()
    };
    match s.to_ascii_uppercase().as_str() {
        "NONE" => Ok(PathNormalization::default()),
        "BASE" | "DEFAULT" => Ok(base),
        "MERGE_SLASHES" => Ok(PathNormalization {
            merge_slashes: true,
            ..base
        }),
        "DECODE_AND_MERGE_SLASHES" => Ok(PathNormalization {
            merge_slashes: true,
            escaped_slashes: EscapedSlashes::UnescapeAndForward,
            ..base
        }),
        _ => Err(format!(
            "`{s}`: expected NONE, BASE, MERGE_SLASHES or DECODE_AND_MERGE_SLASHES"
        )),
    }
}

/// Workload labels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels(pub BTreeMap<String, String>);

/// Parse `k=v,k=v` (empty: no labels). Keys must be non-empty and unique.
pub fn parse_labels(s: &str) -> Result<Labels, String> {
    let mut labels = BTreeMap::new();
    for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("`{pair}` is not key=value"))?;
        let (k, v) = (k.trim(), v.trim());
        if k.is_empty() {
            return Err(format!("`{pair}` has an empty key"));
        }
        if !k
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
        {
            return Err(format!(
                "label key `{k}` has characters other than [A-Za-z0-9-_./]"
            ));
        }
        if labels.insert(k.to_string(), v.to_string()).is_some() {
            return Err(format!("label `{k}` is given twice"));
        }
    }
    Ok(Labels(labels))
}

/// Parse `on` or `off`.
pub fn parse_on_off(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "on" | "true" => Ok(true),
        "off" | "false" => Ok(false),
        _ => Err(format!("`{s}`: expected on or off")),
    }
}

/// Parse a duration such as `100ms`, `5s` or `1m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("`{s}`: {e} (examples: 100ms, 5s, 1m)"))
}

/// The workload identity settings (with `--token-file`).
#[derive(Debug, Clone)]
pub struct IdentitySettings {
    /// `spiffe://CLUSTER_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT`.
    pub spiffe_id: String,
    /// The CA client's settings.
    pub ca: CaConfig,
    /// `--cert-renew-interval`.
    pub forced_renewal: Option<Duration>,
}

/// Validated settings of `mesh-proxy run`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The flags as given.
    pub args: RunArgs,
    /// Data-path worker threads (resolved from `--concurrency`).
    pub threads: usize,
    /// Seconds Pingora waits after a shutdown signal before stopping its runtimes.
    pub grace_period_secs: u64,
    /// Seconds Pingora gives its runtimes to stop.
    pub shutdown_timeout_secs: u64,
    /// The identity, when `--token-file` is given.
    pub identity: Option<IdentitySettings>,
}

/// Shortest certificate lifetime accepted.
const MIN_CERT_TTL: Duration = Duration::from_secs(60);
/// Longest (Istio's MAX_WORKLOAD_CERT_TTL).
const MAX_CERT_TTL: Duration = Duration::from_secs(90 * 24 * 3600);

impl RunArgs {
    fn identity(&self) -> Result<Option<IdentitySettings>, Error> {
        let Some(token_file) = &self.token_file else {
            return Ok(None);
        };
        IdentityFlags {
            xds_address: &self.xds_address,
            namespace: &self.namespace,
            service_account: &self.service_account,
            cluster_domain: &self.cluster_domain,
            token_file,
            ca_address: self.ca_address.as_deref(),
            ca_tls_address: self.ca_tls_address.as_deref(),
            ca_root_cert: self.ca_root_cert.as_deref(),
            cert_ttl: self.cert_ttl,
            cert_renew_interval: self.cert_renew_interval,
        }
        .validate()
        .map(Some)
    }
}

/// The identity flags shared by `mesh-proxy run` and `mesh-proxy agent`, as given.
#[derive(Debug, Clone, Copy)]
pub struct IdentityFlags<'a> {
    /// `--xds-address` (the CA's default address).
    pub xds_address: &'a str,
    /// `--namespace`.
    pub namespace: &'a str,
    /// `--service-account`.
    pub service_account: &'a str,
    /// `--cluster-domain` (the trust domain).
    pub cluster_domain: &'a str,
    /// `--token-file`.
    pub token_file: &'a std::path::Path,
    /// `--ca-address`.
    pub ca_address: Option<&'a str>,
    /// `--ca-tls-address`.
    pub ca_tls_address: Option<&'a str>,
    /// `--ca-root-cert`.
    pub ca_root_cert: Option<&'a std::path::Path>,
    /// `--cert-ttl`.
    pub cert_ttl: Duration,
    /// `--cert-renew-interval`.
    pub cert_renew_interval: Option<Duration>,
}

impl IdentityFlags<'_> {
    /// Checks the flags and resolves the CA's addresses and roots.
    pub fn validate(&self) -> Result<IdentitySettings, Error> {
        let invalid = |flag: &'static str, reason: String| Error::InvalidFlag { flag, reason };
        if self.cert_ttl < MIN_CERT_TTL || self.cert_ttl > MAX_CERT_TTL {
            return Err(invalid(
                "--cert-ttl",
                format!(
                    "must be between {} and {}",
                    humantime::format_duration(MIN_CERT_TTL),
                    humantime::format_duration(MAX_CERT_TTL)
                ),
            ));
        }
        if self.cert_renew_interval.is_some_and(|d| d.is_zero()) {
            return Err(invalid(
                "--cert-renew-interval",
                "must be greater than zero".into(),
            ));
        }
        let (flag, raw) = match self.ca_address {
            Some(a) => ("--ca-address", a),
            None => ("--xds-address", self.xds_address),
        };
        let address = CaAddress::parse(raw).map_err(|r| invalid(flag, r))?;
        let tls_address = match self.ca_tls_address {
            Some(a) => match CaAddress::parse(a).map_err(|r| invalid("--ca-tls-address", r))? {
                CaAddress::Plain(a) | CaAddress::Tls(a) => a,
            },
            None => address.tls_default(),
        };
        let root_certs = match self.ca_root_cert {
            None => Vec::new(),
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| invalid("--ca-root-cert", format!("{}: {e}", path.display())))?;
                let certs = boring::x509::X509::stack_from_pem(&pem).unwrap_or_default();
                if certs.is_empty() {
                    return Err(invalid(
                        "--ca-root-cert",
                        format!("{}: no PEM certificate", path.display()),
                    ));
                }
                certs
            }
        };
        if matches!(address, CaAddress::Tls(_)) && root_certs.is_empty() {
            return Err(invalid(
                "--ca-root-cert",
                "required to verify a CA reached over https://".into(),
            ));
        }
        Ok(IdentitySettings {
            spiffe_id: format!(
                "spiffe://{}/ns/{}/sa/{}",
                self.cluster_domain, self.namespace, self.service_account
            ),
            ca: CaConfig {
                address,
                tls_address,
                root_certs,
                token_file: self.token_file.to_path_buf(),
                ttl: self.cert_ttl,
            },
            forced_renewal: self.cert_renew_interval,
        })
    }
}

impl RunArgs {
    /// Check the flags together and resolve derived values.
    pub fn validate(self) -> Result<Settings, Error> {
        let invalid = |flag: &'static str, reason: String| Err(Error::InvalidFlag { flag, reason });
        for (flag, value) in [
            ("--xds-address", &self.xds_address),
            ("--pod-name", &self.pod_name),
            ("--namespace", &self.namespace),
            ("--service-account", &self.service_account),
            ("--cluster-domain", &self.cluster_domain),
        ] {
            if value.trim().is_empty() {
                return invalid(flag, "must not be empty".into());
            }
            if value.chars().any(char::is_whitespace) {
                return invalid(flag, format!("`{value}` contains whitespace"));
            }
        }
        if self.protocol_detection_timeout.is_zero() {
            return invalid(
                "--protocol-detection-timeout",
                "must be greater than zero".into(),
            );
        }
        if self.protocol_detection_timeout > MAX_DETECTION {
            return invalid(
                "--protocol-detection-timeout",
                format!(
                    "must be at most {}",
                    humantime::format_duration(MAX_DETECTION)
                ),
            );
        }
        if self.drain_duration > MAX_DRAIN {
            return invalid(
                "--drain-duration",
                format!("must be at most {}", humantime::format_duration(MAX_DRAIN)),
            );
        }
        let threads = match self.concurrency {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n if n > MAX_CONCURRENCY => {
                return invalid(
                    "--concurrency",
                    format!("must be at most {MAX_CONCURRENCY}"),
                );
            }
            n => n,
        };
        let addrs = [
            ("--outbound-addr", self.outbound_addr),
            ("--inbound-addr", self.inbound_addr),
            ("--admin-addr", self.admin_addr),
            ("--readiness-addr", self.readiness_addr),
            ("--stats-addr", self.stats_addr),
            ("--status-addr", self.status_addr),
        ];
        for (i, (flag, addr)) in addrs.iter().enumerate() {
            if addr.port() == 0 {
                return invalid(flag, "needs an explicit port".into());
            }
            if let Some((other, _)) = addrs[..i].iter().find(|(_, a)| a.port() == addr.port()) {
                return invalid(flag, format!("uses port {} like {other}", addr.port()));
            }
        }
        if !(0.0..=100.0).contains(&self.tracing_sampling) {
            return invalid(
                "--tracing-sampling",
                format!(
                    "{} is not a percentage between 0 and 100",
                    self.tracing_sampling
                ),
            );
        }
        if let Some(endpoint) = &self.tracing_otlp_endpoint {
            let ok = endpoint.parse::<http::Uri>().is_ok_and(|u| {
                matches!(u.scheme_str(), Some("http") | Some("https")) && u.authority().is_some()
            });
            if !ok {
                return invalid(
                    "--tracing-otlp-endpoint",
                    format!("`{endpoint}` is not an http:// or https:// URL with a host"),
                );
            }
        }
        let drain_secs =
            self.drain_duration.as_secs() + u64::from(self.drain_duration.subsec_nanos() > 0);
        let identity = self.identity()?;
        Ok(Settings {
            identity,
            threads,
            grace_period_secs: drain_secs.saturating_sub(1),
            shutdown_timeout_secs: drain_secs.min(1),
            args: self,
        })
    }
}
