//! `meshctl proxy-status`: every connected proxy's sync state per xDS type, read from the
//! control plane's `/debug/syncz`, printed as istioctl prints it:
//!
//! ```text
//! NAME                 CLUSTER        CDS        LDS        EDS        RDS        ECDS         ISTIOD                     VERSION
//! reviews-v1.default   Kubernetes     SYNCED     SYNCED     SYNCED     SYNCED     NOT SENT     mesh-controlplane.host     1.27
//! ```
//!
//! Per type: `SYNCED` (the last response sent is ACKed), `NOT SENT` (nothing sent, e.g. a
//! type the proxy did not ask for), `STALE` (sent, not ACKed yet), `STALE (Never
//! Acknowledged)` (nothing of that type ever ACKed) and, when the proxy rejected the last
//! response, `STALE (NACK: message)` with the message shortened in the table and given in full
//! below it. The control plane serves no ECDS: that column is always `NOT SENT`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Errors fetching the status.
#[derive(Debug, thiserror::Error)]
pub enum ProxyStatusError {
    /// The address is not `HOST:PORT` (optionally with `http://`).
    #[error("control plane address {0:?}: expected HOST:PORT")]
    Address(String),
    /// The control plane cannot be reached or the exchange failed.
    #[error("control plane at {addr}: {source}")]
    Io {
        /// The address.
        addr: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The answer is not HTTP 200.
    #[error("control plane at {addr}: GET /debug/syncz answered {status}: {body}")]
    Status {
        /// The address.
        addr: String,
        /// The status line.
        status: String,
        /// The body (shortened).
        body: String,
    },
    /// The body is not syncz's JSON.
    #[error("control plane at {addr}: /debug/syncz is not a list of proxies: {source}")]
    Json {
        /// The address.
        addr: String,
        /// The parser's error.
        source: serde_json::Error,
    },
}

/// One type of one proxy, as syncz shows it.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct TypeView {
    /// Nonce of the last response sent.
    pub sent_nonce: Option<String>,
    /// Version of the last response sent.
    pub sent_version: Option<String>,
    /// Nonce of the last response ACKed.
    pub acked_nonce: Option<String>,
    /// Version last ACKed.
    pub acked_version: Option<String>,
    /// The last NACK's message (cleared by an ACK).
    pub last_nack: Option<String>,
}

/// One proxy, as syncz shows it.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ProxyView {
    /// Node id.
    #[serde(default)]
    pub node_id: String,
    /// Pod name.
    pub pod: Option<String>,
    /// Namespace.
    pub namespace: Option<String>,
    /// `CLUSTER_ID`.
    pub cluster_id: Option<String>,
    /// The proxy's `ISTIO_VERSION`.
    pub istio_version: Option<String>,
    /// The control plane instance.
    #[serde(default)]
    pub control_plane: String,
    /// Per type (`cds`, `eds`, `lds`, `rds`).
    #[serde(default)]
    pub types: BTreeMap<String, TypeView>,
}

impl ProxyView {
    /// `POD.NAMESPACE` (istioctl's proxy id), else the node id.
    pub fn name(&self) -> String {
        match (&self.pod, &self.namespace) {
            (Some(p), Some(n)) => format!("{p}.{n}"),
            _ if !self.node_id.is_empty() => self.node_id.clone(),
            _ => "-".to_string(),
        }
    }
}

/// The sync state of one type.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", content = "nack")]
pub enum SyncState {
    /// The last response sent is ACKed.
    #[serde(rename = "SYNCED")]
    Synced,
    /// Nothing sent.
    #[serde(rename = "NOT SENT")]
    NotSent,
    /// Sent, not ACKed yet.
    #[serde(rename = "STALE")]
    Stale,
    /// Sent, and nothing of the type ever ACKed.
    #[serde(rename = "STALE (Never Acknowledged)")]
    NeverAcknowledged,
    /// The proxy rejected the last response: the NACK's message.
    #[serde(rename = "STALE")]
    Nacked(String),
}

impl SyncState {
    /// The state of a type from its syncz entry.
    pub fn of(t: Option<&TypeView>) -> SyncState {
        let Some(t) = t else {
            return SyncState::NotSent;
        };
        let Some(sent) = &t.sent_nonce else {
            return SyncState::NotSent;
        };
        if let Some(msg) = &t.last_nack {
            return SyncState::Nacked(msg.clone());
        }
        match &t.acked_nonce {
            Some(acked) if acked == sent => SyncState::Synced,
            Some(_) => SyncState::Stale,
            None => SyncState::NeverAcknowledged,
        }
    }

    /// The table cell: NACK messages shortened to `width` characters.
    pub fn cell(&self, width: usize) -> String {
        match self {
            SyncState::Synced => "SYNCED".into(),
            SyncState::NotSent => "NOT SENT".into(),
            SyncState::Stale => "STALE".into(),
            SyncState::NeverAcknowledged => "STALE (Never Acknowledged)".into(),
            SyncState::Nacked(msg) => {
                let short: String = if msg.chars().count() > width {
                    msg.chars().take(width).chain("...".chars()).collect()
                } else {
                    msg.clone()
                };
                format!("STALE (NACK: {short})")
            }
        }
    }
}

/// The table's type columns, in istioctl's order, with their syncz keys.
const TYPES: [(&str, &str); 5] = [
    ("CDS", "cds"),
    ("LDS", "lds"),
    ("EDS", "eds"),
    ("RDS", "rds"),
    ("ECDS", "ecds"),
];

/// How much of a NACK message the table shows.
const NACK_WIDTH: usize = 40;

/// `GET /debug/syncz` from `addr` (`HOST:PORT` or `http://HOST:PORT`).
pub fn fetch(addr: &str) -> Result<Vec<ProxyView>, ProxyStatusError> {
    let hostport = addr
        .strip_prefix("http://")
        .unwrap_or(addr)
        .trim_end_matches('/');
    let target = hostport
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| ProxyStatusError::Address(addr.to_string()))?;
    let io = |source| ProxyStatusError::Io {
        addr: hostport.to_string(),
        source,
    };
    let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(5)).map_err(io)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(io)?;
    write!(
        stream,
        "GET /debug/syncz HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n"
    )
    .map_err(io)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(io)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.lines().next().unwrap_or_default().to_string();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(ProxyStatusError::Status {
            addr: hostport.to_string(),
            status,
            body: body.chars().take(200).collect(),
        });
    }
    serde_json::from_str(body).map_err(|source| ProxyStatusError::Json {
        addr: hostport.to_string(),
        source,
    })
}

/// The proxies whose name contains `filter` (all without one), sorted by name.
pub fn select(mut proxies: Vec<ProxyView>, filter: Option<&str>) -> Vec<ProxyView> {
    proxies.retain(|p| filter.is_none_or(|f| p.name().contains(f)));
    proxies.sort_by_key(ProxyView::name);
    proxies
}

/// istioctl's table, then the full text of every NACK.
pub fn table(proxies: &[ProxyView]) -> String {
    let mut rows = vec![[
        "NAME", "CLUSTER", "CDS", "LDS", "EDS", "RDS", "ECDS", "ISTIOD", "VERSION",
    ]
    .map(String::from)
    .to_vec()];
    let mut nacks = Vec::new();
    for p in proxies {
        let mut row = vec![p.name(), p.cluster_id.clone().unwrap_or_default()];
        for (column, key) in TYPES {
            let state = SyncState::of(p.types.get(key));
            if let SyncState::Nacked(msg) = &state {
                nacks.push(format!("{} {column}: {msg}", p.name()));
            }
            row.push(state.cell(NACK_WIDTH));
        }
        row.push(p.control_plane.clone());
        row.push(p.istio_version.clone().unwrap_or_default());
        rows.push(row);
    }
    let columns = rows[0].len();
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if c + 1 < columns {
                // istioctl's tabwriter: five spaces of padding.
                let pad = widths[c] - cell.chars().count() + 5;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    if !nacks.is_empty() {
        out.push_str("\nRejected (NACK):\n");
        for n in nacks {
            out.push_str("  ");
            out.push_str(&n);
            out.push('\n');
        }
    }
    out
}

/// One proxy's status for `-o json`.
#[derive(Debug, Serialize)]
pub struct JsonRow {
    /// `POD.NAMESPACE`.
    pub name: String,
    /// Node id.
    pub node_id: String,
    /// `CLUSTER_ID`.
    pub cluster: String,
    /// Per type, in table order (`cds`, `lds`, `eds`, `rds`, `ecds`).
    pub types: BTreeMap<String, JsonType>,
    /// The control plane instance.
    pub istiod: String,
    /// The proxy's version.
    pub version: String,
}

/// One type of one proxy for `-o json`.
#[derive(Debug, Serialize)]
pub struct JsonType {
    /// The state (with the NACK message when rejected).
    #[serde(flatten)]
    pub state: SyncState,
    /// Nonce of the last response sent.
    pub sent_nonce: Option<String>,
    /// Nonce of the last response ACKed.
    pub acked_nonce: Option<String>,
    /// Version of the last response sent.
    pub sent_version: Option<String>,
    /// Version last ACKed.
    pub acked_version: Option<String>,
}

/// The `-o json` rows.
pub fn json(proxies: &[ProxyView]) -> Vec<JsonRow> {
    proxies
        .iter()
        .map(|p| JsonRow {
            name: p.name(),
            node_id: p.node_id.clone(),
            cluster: p.cluster_id.clone().unwrap_or_default(),
            types: TYPES
                .iter()
                .map(|(_, key)| {
                    let t = p.types.get(*key);
                    let row = JsonType {
                        state: SyncState::of(t),
                        sent_nonce: t.and_then(|t| t.sent_nonce.clone()),
                        acked_nonce: t.and_then(|t| t.acked_nonce.clone()),
                        sent_version: t.and_then(|t| t.sent_version.clone()),
                        acked_version: t.and_then(|t| t.acked_version.clone()),
                    };
                    (key.to_string(), row)
                })
                .collect(),
            istiod: p.control_plane.clone(),
            version: p.istio_version.clone().unwrap_or_default(),
        })
        .collect()
}

#[cfg(test)]
mod tests;
