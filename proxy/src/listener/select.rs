//! Choosing the virtual listener and the filter chain of a captured connection.
//!
//! Filter chains are matched as Envoy matches them: level by level — destination port,
//! destination address (`prefix_ranges`), server name, transport protocol, application
//! protocols — keeping at each level only the most specific chains that match (a chain that
//! leaves a criterion empty is the least specific match). There is no backtracking: when the
//! most specific branch fails at a later level, the listener's default chain is used.

use std::net::SocketAddr;
use std::sync::Arc;

use xds_client::model::FilterChainMatch;

use crate::snapshot::{ChainRuntime, ListenerRuntime, Snapshot};

/// The transport protocol of a plaintext connection (Envoy's `raw_buffer`).
pub const RAW_BUFFER: &str = "raw_buffer";
/// The transport protocol of a TLS connection.
pub const TLS: &str = "tls";

/// Anything that carries a filter chain match.
pub trait HasMatch {
    /// The chain's match criteria.
    fn matcher(&self) -> &FilterChainMatch;
}

impl HasMatch for FilterChainMatch {
    fn matcher(&self) -> &FilterChainMatch {
        self
    }
}

impl HasMatch for Arc<ChainRuntime> {
    fn matcher(&self) -> &FilterChainMatch {
        &self.matcher
    }
}

/// What is known about a connection before its application protocol is detected.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionFacts<'a> {
    /// The original destination.
    pub destination: SocketAddr,
    /// TLS SNI, when known.
    pub server_name: Option<&'a str>,
    /// `raw_buffer` or `tls`.
    pub transport_protocol: &'a str,
}

/// The listener that handles a connection accepted on `capture` with original destination
/// `dst`: when `capture` uses the original destination, the non-bound listener for `dst`
/// (exact address, then `0.0.0.0:PORT`), else `capture` itself.
pub fn virtual_listener<'a>(
    snapshot: &'a Snapshot,
    capture: &'a Arc<ListenerRuntime>,
    dst: SocketAddr,
) -> &'a Arc<ListenerRuntime> {
    if capture.use_original_dst {
        if let Some(listener) = snapshot.handoff_listener(dst) {
            return listener;
        }
    }
    capture
}

/// The chains (indices into `chains`) still in the running after every level but the
/// application protocol.
pub fn candidates<T: HasMatch>(chains: &[T], facts: &ConnectionFacts<'_>) -> Vec<usize> {
    let all: Vec<usize> = (0..chains.len()).collect();
    let by_port = narrow(chains, all, |m| match m.destination_port {
        None => Some(0),
        Some(p) if p == facts.destination.port() => Some(1),
        Some(_) => None,
    });
    let ip = facts.destination.ip();
    let by_ip = narrow(chains, by_port, |m| {
        if m.prefix_ranges.is_empty() {
            return Some(0);
        }
        m.prefix_ranges
            .iter()
            .filter(|net| net.contains(&ip))
            .map(|net| u32::from(net.prefix_len()))
            .max()
    });
    let by_name = narrow(chains, by_ip, |m| {
        server_name_specificity(m, facts.server_name)
    });
    narrow(chains, by_name, |m| match &m.transport_protocol {
        None => Some(0),
        Some(t) if t == facts.transport_protocol => Some(1),
        Some(_) => None,
    })
}

/// Whether the application protocol must be detected to choose among `candidates`: true when
/// one of them names application protocols.
pub fn needs_application_protocol<T: HasMatch>(chains: &[T], candidates: &[usize]) -> bool {
    candidates
        .iter()
        .any(|&i| !chains[i].matcher().application_protocols.is_empty())
}

/// The chain for the detected application protocol (`None`: not detected or not HTTP),
/// among `candidates`; `None` means the listener's default chain applies.
pub fn choose<T: HasMatch>(
    chains: &[T],
    candidates: Vec<usize>,
    application_protocol: Option<&str>,
) -> Option<usize> {
    choose_any(chains, candidates, application_protocol.as_slice())
}

/// [`choose`] for a connection that offers several application protocols (a TLS ClientHello's
/// ALPN list): a chain matches when it names any of them.
pub fn choose_any<T: HasMatch>(
    chains: &[T],
    candidates: Vec<usize>,
    application_protocols: &[&str],
) -> Option<usize> {
    narrow(chains, candidates, |m| {
        if m.application_protocols.is_empty() {
            Some(0)
        } else if application_protocols
            .iter()
            .any(|p| m.application_protocols.iter().any(|a| a == p))
        {
            Some(1)
        } else {
            None
        }
    })
    .first()
    .copied()
}

/// The chain a connection gets: the matching chain or the default chain.
pub fn chain_for(
    listener: &ListenerRuntime,
    candidates: Vec<usize>,
    application_protocol: Option<&str>,
) -> Option<Arc<ChainRuntime>> {
    chain_for_any(listener, candidates, application_protocol.as_slice())
}

/// [`chain_for`] with several offered application protocols.
pub fn chain_for_any(
    listener: &ListenerRuntime,
    candidates: Vec<usize>,
    application_protocols: &[&str],
) -> Option<Arc<ChainRuntime>> {
    match choose_any(&listener.chains, candidates, application_protocols) {
        Some(i) => Some(listener.chains[i].clone()),
        None => listener.default_chain.clone(),
    }
}

/// Whether the transport protocol (and SNI) must be detected to choose a chain: true when a
/// chain names the `tls` transport or server names (Envoy's TLS inspector).
pub fn needs_transport_protocol<T: HasMatch>(chains: &[T]) -> bool {
    chains.iter().any(|c| {
        let m = c.matcher();
        m.transport_protocol.as_deref() == Some(TLS) || !m.server_names.is_empty()
    })
}

fn server_name_specificity(m: &FilterChainMatch, server_name: Option<&str>) -> Option<u32> {
    if m.server_names.is_empty() {
        return Some(0);
    }
    let name = server_name?.to_ascii_lowercase();
    m.server_names
        .iter()
        .filter_map(|candidate| {
            let candidate = candidate.to_ascii_lowercase();
            if candidate == name {
                Some(u32::MAX)
            } else {
                candidate
                    .strip_prefix('*')
                    .filter(|suffix| name.len() > suffix.len() && name.ends_with(suffix))
                    .map(|suffix| suffix.len() as u32 + 1)
            }
        })
        .max()
}

/// Keep the candidates with the highest specificity (`None`: does not match).
fn narrow<T: HasMatch>(
    chains: &[T],
    candidates: Vec<usize>,
    specificity: impl Fn(&FilterChainMatch) -> Option<u32>,
) -> Vec<usize> {
    let scored: Vec<(usize, u32)> = candidates
        .into_iter()
        .filter_map(|i| specificity(chains[i].matcher()).map(|s| (i, s)))
        .collect();
    let Some(best) = scored.iter().map(|(_, s)| *s).max() else {
        return Vec::new();
    };
    scored
        .into_iter()
        .filter(|(_, s)| *s == best)
        .map(|(i, _)| i)
        .collect()
}
