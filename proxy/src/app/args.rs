//! The flags of `mesh-proxy run` and their validation.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use xds_client::model::{EscapedSlashes, PathNormalization};

use super::Error;

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
    /// Bootstrap token proving the proxy's identity to the CA. Kept for the identity work;
    /// nothing reads it yet.
    #[arg(long, env = "MESH_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
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

/// Parse a duration such as `100ms`, `5s` or `1m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("`{s}`: {e} (examples: 100ms, 5s, 1m)"))
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
        ];
        for (i, (flag, addr)) in addrs.iter().enumerate() {
            if addr.port() == 0 {
                return invalid(flag, "needs an explicit port".into());
            }
            if let Some((other, _)) = addrs[..i].iter().find(|(_, a)| a.port() == addr.port()) {
                return invalid(flag, format!("uses port {} like {other}", addr.port()));
            }
        }
        let drain_secs =
            self.drain_duration.as_secs() + u64::from(self.drain_duration.subsec_nanos() > 0);
        Ok(Settings {
            threads,
            grace_period_secs: drain_secs.saturating_sub(1),
            shutdown_timeout_secs: drain_secs.min(1),
            args: self,
        })
    }
}
