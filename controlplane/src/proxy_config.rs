//! `meshctl proxy-config routes|clusters|listeners|endpoints|secret POD`: what one sidecar
//! applied, read from its admin port (`/config_dump`, Envoy's sections), as istioctl shows it:
//! a table by default, the section's raw JSON with `-o json`.
//!
//! The admin port listens on the pod's loopback only, so `meshctl` runs in the pod's network
//! (`ip netns exec POD meshctl ...`, as `kubectl exec` would) or is given the address. The
//! dump's node (`NAME.NAMESPACE`) must be the pod asked for: reading the wrong sidecar is an
//! error, not a table.
#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use serde_json::Value;

#[cfg(test)]
mod tests;

/// Errors of `meshctl proxy-config`.
#[derive(Debug, thiserror::Error)]
pub enum ProxyConfigError {
    /// The admin address does not resolve.
    #[error("cannot resolve the admin address {0:?} (expected HOST:PORT)")]
    Address(String),
    /// Connecting or reading failed.
    #[error("cannot read {path} from the sidecar's admin port {addr}: {source}")]
    Io {
        /// The admin address.
        addr: String,
        /// The path asked.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The admin port answered something else than 200.
    #[error("the sidecar's admin port {addr} answered {status} to {path}: {body}")]
    Status {
        /// The admin address.
        addr: String,
        /// The path asked.
        path: String,
        /// The status line.
        status: String,
        /// The start of the body.
        body: String,
    },
    /// The body is not JSON.
    #[error("{path} of the sidecar at {addr} is not JSON: {source}")]
    Json {
        /// The admin address.
        addr: String,
        /// The path asked.
        path: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The sidecar at the address belongs to another pod.
    #[error("the sidecar at {addr} is pod {found}, not {wanted}")]
    WrongPod {
        /// The admin address.
        addr: String,
        /// `NAME.NAMESPACE` of the dump's node.
        found: String,
        /// The pod asked for.
        wanted: String,
    },
}

/// What to show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Route configurations, one row per virtual host.
    Routes,
    /// Clusters.
    Clusters,
    /// Listeners, one row per filter chain.
    Listeners,
    /// Endpoints of every cluster.
    Endpoints,
    /// Certificates and trust bundle (never keys).
    Secret,
}

impl Kind {
    /// The `/config_dump?resource=` section holding this kind.
    pub fn resource(self) -> &'static str {
        match self {
            Kind::Routes => "dynamic_route_configs",
            Kind::Clusters => "dynamic_active_clusters",
            Kind::Listeners => "dynamic_listeners",
            Kind::Endpoints => "dynamic_endpoint_configs",
            Kind::Secret => "dynamic_active_secrets",
        }
    }
}

/// `GET PATH` on the admin address; the body as JSON.
pub fn get_json(addr: &str, path: &str) -> Result<Value, ProxyConfigError> {
    let hostport = addr
        .strip_prefix("http://")
        .unwrap_or(addr)
        .trim_end_matches('/');
    let target = hostport
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| ProxyConfigError::Address(addr.to_string()))?;
    let io = |source| ProxyConfigError::Io {
        addr: hostport.to_string(),
        path: path.to_string(),
        source,
    };
    let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(5)).map_err(io)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(io)?;
    // HTTP/1.0: the body ends with the connection, never chunked.
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {hostport}\r\n\r\n").map_err(io)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(io)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.lines().next().unwrap_or_default().to_string();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(ProxyConfigError::Status {
            addr: hostport.to_string(),
            path: path.to_string(),
            status,
            body: body.chars().take(200).collect(),
        });
    }
    serde_json::from_str(body).map_err(|source| ProxyConfigError::Json {
        addr: hostport.to_string(),
        path: path.to_string(),
        source,
    })
}

/// The pod (`NAME.NAMESPACE`) of a dump's bootstrap section.
pub fn dump_pod(dump: &Value) -> Option<String> {
    dump["configs"].as_array()?.iter().find_map(|c| {
        let meta = &c["bootstrap"]["node"]["metadata"];
        Some(format!(
            "{}.{}",
            meta["NAME"].as_str()?,
            meta["NAMESPACE"].as_str()?
        ))
    })
}

/// Whether `wanted` (`NAME` or `NAME.NAMESPACE`) names the pod `found` (`NAME.NAMESPACE`).
pub fn same_pod(found: &str, wanted: &str) -> bool {
    if wanted.contains('.') {
        found == wanted
    } else {
        found
            .split_once('.')
            .is_some_and(|(name, _)| name == wanted)
    }
}

/// Reads the whole dump from `addr`, checks it is `pod`'s, and returns the items of `kind`'s
/// section.
pub fn fetch(addr: &str, pod: &str, kind: Kind) -> Result<Vec<Value>, ProxyConfigError> {
    let dump = get_json(addr, "/config_dump")?;
    let found = dump_pod(&dump).unwrap_or_default();
    if !same_pod(&found, pod) {
        return Err(ProxyConfigError::WrongPod {
            addr: addr.to_string(),
            found,
            wanted: pod.to_string(),
        });
    }
    Ok(section(&dump, kind))
}

/// The items of `kind`'s section of a full dump.
pub fn section(dump: &Value, kind: Kind) -> Vec<Value> {
    dump["configs"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|c| c[kind.resource()].as_array().cloned())
        .unwrap_or_default()
}

/// The table of `kind` for the section's items.
pub fn table(kind: Kind, items: &[Value]) -> String {
    match kind {
        Kind::Clusters => clusters(items),
        Kind::Listeners => listeners(items),
        Kind::Routes => routes(items),
        Kind::Endpoints => endpoints(items),
        Kind::Secret => secrets(items),
    }
}

/// Left-aligned columns separated by two spaces, as istioctl prints them.
fn render(header: &[&str], mut rows: Vec<Vec<String>>) -> String {
    rows.sort();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                let _ = write!(l, "{cell:<w$}  ");
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

fn str_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_string(),
        other => other.to_string(),
    }
}

/// `outbound|9080|v1|reviews.default.svc.cluster.local` → (fqdn, port, subset, direction).
fn cluster_parts(name: &str) -> (String, String, String, String) {
    match name.split('|').collect::<Vec<_>>().as_slice() {
        [dir, port, subset, fqdn] => (
            if fqdn.is_empty() { "" } else { fqdn }.to_string(),
            port.to_string(),
            subset.to_string(),
            dir.to_string(),
        ),
        _ => (name.to_string(), "-".into(), "-".into(), "-".into()),
    }
}

fn discovery(cluster: &Value) -> String {
    match &cluster["discovery"] {
        Value::String(s) if s == "OriginalDst" => "ORIGINAL_DST".into(),
        Value::Object(m) if m.contains_key("Eds") => "EDS".into(),
        Value::Object(m) if m.contains_key("Static") => "STATIC".into(),
        other => str_of(other),
    }
}

fn clusters(items: &[Value]) -> String {
    let rows = items
        .iter()
        .map(|i| {
            let c = &i["cluster"];
            let name = c["name"].as_str().unwrap_or_default();
            let (fqdn, port, subset, dir) = cluster_parts(name);
            let fqdn = if fqdn.is_empty() {
                name.to_string()
            } else {
                fqdn
            };
            vec![fqdn, port, or_dash(subset), or_dash(dir), discovery(c)]
        })
        .collect();
    render(
        &["SERVICE FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE"],
        rows,
    )
}

fn or_dash(s: String) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s
    }
}

fn listeners(items: &[Value]) -> String {
    let mut rows = Vec::new();
    for i in items {
        let l = &i["active_state"]["listener"];
        let name = str_of(&l["name"]);
        let address = str_of(&l["address"]);
        let chains = l["filter_chains"].as_array().cloned().unwrap_or_default();
        let default = l["default_filter_chain"].clone();
        for chain in chains.iter().chain(std::iter::once(&default)) {
            if chain.is_null() {
                continue;
            }
            let m = &chain["filter_chain_match"];
            let matched = summarize_match(m);
            let dest = chain_destination(chain);
            rows.push(vec![name.clone(), address.clone(), matched, dest]);
        }
        if chains.is_empty() && default.is_null() {
            rows.push(vec![name, address, "-".into(), "-".into()]);
        }
    }
    render(&["NAME", "ADDRESS", "MATCH", "DESTINATION"], rows)
}

fn summarize_match(m: &Value) -> String {
    let Some(obj) = m.as_object() else {
        return "ALL".into();
    };
    let parts: Vec<String> = obj
        .iter()
        .filter(|(_, v)| !v.is_null() && v.as_array().is_none_or(|a| !a.is_empty()))
        .map(|(k, v)| format!("{k}={}", compact(v)))
        .collect();
    if parts.is_empty() {
        "ALL".into()
    } else {
        parts.join("; ")
    }
}

fn compact(v: &Value) -> String {
    match v {
        Value::Array(a) => a.iter().map(compact).collect::<Vec<_>>().join(","),
        other => str_of(other),
    }
}

/// `Route: NAME` for an HTTP chain with RDS, `Inline Route: ...`, `Cluster: NAME` for TCP.
fn chain_destination(chain: &Value) -> String {
    let text = chain.to_string();
    let find = |key: &str| -> Option<String> {
        let at = text.find(&format!("\"{key}\":\""))?;
        let rest = &text[at + key.len() + 4..];
        Some(rest[..rest.find('"')?].to_string())
    };
    if let Some(rds) = find("rds") {
        return format!("Route: {rds}");
    }
    if let Some(cluster) = find("cluster") {
        return format!("Cluster: {cluster}");
    }
    if let Some(name) = find("name") {
        return format!("Inline Route: {name}");
    }
    "-".into()
}

fn routes(items: &[Value]) -> String {
    let mut rows = Vec::new();
    for i in items {
        let r = &i["route_config"];
        let name = str_of(&r["name"]);
        for vh in r["virtual_hosts"].as_array().into_iter().flatten() {
            let domains = vh["domains"]
                .as_array()
                .map(|d| d.iter().map(str_of).collect::<Vec<_>>().join(", "))
                .unwrap_or_default();
            let n = vh["routes"].as_array().map_or(0, Vec::len);
            rows.push(vec![
                name.clone(),
                str_of(&vh["name"]),
                or_dash(domains),
                n.to_string(),
            ]);
        }
    }
    render(&["NAME", "VHOST NAME", "DOMAINS", "ROUTES"], rows)
}

fn endpoints(items: &[Value]) -> String {
    let mut rows = Vec::new();
    for i in items {
        let cla = &i["endpoint_config"];
        let cluster = str_of(&cla["cluster_name"]);
        for e in cla["endpoints"].as_array().into_iter().flatten() {
            let status = match e["health"].as_str() {
                Some("Healthy") => "HEALTHY",
                Some("Unhealthy") => "UNHEALTHY",
                _ => "UNKNOWN",
            };
            rows.push(vec![
                str_of(&e["address"]),
                status.to_string(),
                str_of(&e["weight"]),
                cluster.clone(),
            ]);
        }
    }
    render(&["ENDPOINT", "STATUS", "WEIGHT", "CLUSTER"], rows)
}

fn secrets(items: &[Value]) -> String {
    let rows = items
        .iter()
        .map(|i| {
            let s = &i["secret"];
            let cert = &s["tls_certificate"];
            if cert.is_object() {
                vec![
                    str_of(&i["name"]),
                    "Cert Chain".into(),
                    "ACTIVE".into(),
                    str_of(&cert["serial_number"]),
                    str_of(&cert["expiration_time"]),
                    str_of(&cert["valid_from"]),
                ]
            } else {
                vec![
                    str_of(&i["name"]),
                    "CA".into(),
                    "ACTIVE".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                ]
            }
        })
        .collect();
    render(
        &[
            "RESOURCE NAME",
            "TYPE",
            "STATUS",
            "SERIAL NUMBER",
            "NOT AFTER",
            "NOT BEFORE",
        ],
        rows,
    )
}
