//! Load balancing over a cluster's hosts: priorities, panic mode, and the policies
//! `ROUND_ROBIN` (smooth weighted), `RANDOM` (weighted), `LEAST_REQUEST` (best of N random
//! choices by requests in flight per weight), `RING_HASH` and `MAGLEV` (consistent hashing over
//! the hosts' addresses, so the same key reaches the same host across snapshots).
//!
//! Everything but the round-robin cursor is built once per snapshot; a pick reads atomics
//! only.

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use rand::Rng;
use xds_client::model::{LbPolicy, LbSettings};

use super::host::HostState;

/// Longest weighted round-robin sequence precomputed per priority; beyond it, weights are
/// ignored and hosts are taken in turn.
const MAX_WRR_SEQUENCE: u64 = 4096;

/// A 64-bit hash of `bytes` (FNV-1a with a final avalanche), stable across processes and
/// versions: consistent hashing depends on it.
pub fn hash64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// One host of a cluster.
#[derive(Debug, Clone)]
pub struct Host {
    /// Address.
    pub address: SocketAddr,
    /// Weight (at least 1).
    pub weight: u32,
    /// Priority (0 is the highest).
    pub priority: u32,
    /// Live state, shared across snapshots.
    pub state: Arc<HostState>,
}

/// The hosts of one priority and the structures to pick among them.
#[derive(Debug)]
struct Level {
    priority: u32,
    hosts: Range<usize>,
    /// Host indices in weighted round-robin order.
    sequence: Vec<u32>,
    /// `RING_HASH`: (hash, host index), sorted by hash.
    ring: Vec<(u64, u32)>,
    /// `MAGLEV`: host index per slot.
    table: Vec<u32>,
}

/// What a pick must take into account.
#[derive(Debug, Default, Clone, Copy)]
pub struct PickRequest<'a> {
    /// The request's hash (consistent-hash policies); `None`: a random one.
    pub hash: Option<u64>,
    /// Hosts to avoid (already tried), if another is available.
    pub avoid: &'a [SocketAddr],
    /// Picks per attempt before accepting an avoided host (at least 1).
    pub attempts: u32,
    /// Priorities to avoid (already tried), if another has hosts available.
    pub avoid_priorities: &'a [u32],
}

/// A cluster's balancer for one snapshot.
#[derive(Debug)]
pub struct Balancer {
    policy: LbPolicy,
    hosts: Vec<Host>,
    levels: Vec<Level>,
    cursor: Arc<AtomicUsize>,
    choices: u32,
    panic_threshold: f64,
}

impl Balancer {
    /// Build the balancer of `hosts` (any order) for `policy`, continuing `cursor`.
    pub fn new(
        policy: LbPolicy,
        settings: &LbSettings,
        mut hosts: Vec<Host>,
        cursor: Arc<AtomicUsize>,
    ) -> Balancer {
        hosts.sort_by_key(|h| h.priority);
        let mut levels = Vec::new();
        let mut start = 0;
        while start < hosts.len() {
            let priority = hosts[start].priority;
            let end = start
                + hosts[start..]
                    .iter()
                    .take_while(|h| h.priority == priority)
                    .count();
            let range = start..end;
            let slice = &hosts[range.clone()];
            let weights: Vec<u32> = slice.iter().map(|h| h.weight.max(1)).collect();
            let sequence = wrr_sequence(&weights)
                .into_iter()
                .map(|i| (i + start) as u32)
                .collect();
            let ring = if policy == LbPolicy::RingHash {
                build_ring(slice, start, settings.ring_size)
            } else {
                Vec::new()
            };
            let table = if policy == LbPolicy::Maglev {
                build_maglev(slice, start, settings.maglev_table_size as usize)
            } else {
                Vec::new()
            };
            levels.push(Level {
                priority,
                hosts: range,
                sequence,
                ring,
                table,
            });
            start = end;
        }
        Balancer {
            policy,
            hosts,
            levels,
            cursor,
            choices: settings.least_request_choices.max(2),
            panic_threshold: settings.healthy_panic_threshold,
        }
    }

    /// The hosts, by priority.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// Whether there is at least one host.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// Choose a host, or `None` when none is available (all ejected and no panic).
    pub fn pick(&self, req: &PickRequest<'_>) -> Option<&Host> {
        if self.hosts.is_empty() {
            return None;
        }
        let now = Instant::now();
        let available = self
            .hosts
            .iter()
            .filter(|h| !h.state.is_ejected(now))
            .count();
        let panic = (available as f64) * 100.0 < self.panic_threshold * self.hosts.len() as f64;
        let usable = |i: usize| panic || !self.hosts[i].state.is_ejected(now);
        let has_usable = |l: &Level| l.hosts.clone().any(usable);
        let level = self
            .levels
            .iter()
            .find(|l| !req.avoid_priorities.contains(&l.priority) && has_usable(l))
            .or_else(|| self.levels.iter().find(|l| has_usable(l)))?;
        let attempts = req.attempts.max(1);
        let avoided = |i: usize| req.avoid.contains(&self.hosts[i].address);
        let mut chosen = None;
        for attempt in 0..attempts {
            let i = self.pick_in(level, req.hash, attempt, &usable)?;
            chosen = Some(i);
            if !avoided(i) {
                break;
            }
        }
        if chosen.is_some_and(avoided) {
            // Every attempt met a host already tried (likely with a sticky hash and few
            // hosts): take the policy's next host that was not tried, when one exists.
            let fresh = |i: usize| usable(i) && !avoided(i);
            chosen = self.pick_in(level, req.hash, attempts, &fresh).or(chosen);
        }
        chosen.map(|i| &self.hosts[i])
    }

    fn pick_in(
        &self,
        level: &Level,
        hash: Option<u64>,
        attempt: u32,
        usable: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        let seq = &level.sequence;
        let scan = |start: usize| {
            (0..seq.len())
                .map(|k| seq[(start + k) % seq.len()] as usize)
                .find(|&i| usable(i))
        };
        match self.policy {
            LbPolicy::RoundRobin | LbPolicy::ClusterProvided => {
                scan(self.cursor.fetch_add(1, Ordering::Relaxed))
            }
            LbPolicy::Random => scan(rand::rng().random_range(0..seq.len())),
            LbPolicy::LeastRequest => {
                let mut rng = rand::rng();
                let mut best: Option<usize> = None;
                for _ in 0..self.choices {
                    let i = scan(rng.random_range(0..seq.len()))?;
                    let score = |i: usize| {
                        let h = &self.hosts[i];
                        (u64::from(h.state.active_requests()) + 1) * 1_000_000
                            / u64::from(h.weight.max(1))
                    };
                    if best.is_none_or(|b| score(i) < score(b)) {
                        best = Some(i);
                    }
                }
                best
            }
            LbPolicy::RingHash => {
                let ring = &level.ring;
                let key = rehash(hash.unwrap_or_else(rand::random), attempt);
                let start = ring.partition_point(|(h, _)| *h < key);
                (0..ring.len())
                    .map(|k| ring[(start + k) % ring.len()].1 as usize)
                    .find(|&i| usable(i))
            }
            LbPolicy::Maglev => {
                let table = &level.table;
                let key = rehash(hash.unwrap_or_else(rand::random), attempt);
                let start = (key % table.len() as u64) as usize;
                (0..table.len())
                    .map(|k| table[(start + k) % table.len()] as usize)
                    .find(|&i| usable(i))
            }
        }
    }
}

/// A different, deterministic key for a later pick of the same request.
fn rehash(hash: u64, attempt: u32) -> u64 {
    if attempt == 0 {
        hash
    } else {
        hash64(&[hash.to_le_bytes(), u64::from(attempt).to_le_bytes()].concat())
    }
}

fn host_key(address: &SocketAddr, replica: u64) -> u64 {
    hash64(format!("{address}_{replica}").as_bytes())
}

/// The ring of `hosts` (indices offset by `start`): between `min` and `max` entries,
/// distributed by weight.
fn build_ring(hosts: &[Host], start: usize, (min, max): (u64, u64)) -> Vec<(u64, u32)> {
    let total: u64 = hosts.iter().map(|h| u64::from(h.weight.max(1))).sum();
    let min_weight = hosts.iter().map(|h| h.weight.max(1)).min().unwrap_or(1);
    // Enough entries that the lightest host gets at least one, within [min, max].
    let target = (total / u64::from(min_weight)).max(min).min(max);
    let mut ring = Vec::with_capacity(target as usize + hosts.len());
    for (i, h) in hosts.iter().enumerate() {
        let replicas = (target * u64::from(h.weight.max(1))).div_ceil(total).max(1);
        for r in 0..replicas {
            ring.push((host_key(&h.address, r), (start + i) as u32));
        }
    }
    ring.sort_unstable();
    ring
}

/// Maglev's lookup table of `hosts` (indices offset by `start`), weighted.
fn build_maglev(hosts: &[Host], start: usize, size: usize) -> Vec<u32> {
    if hosts.is_empty() || size == 0 {
        return Vec::new();
    }
    let m = size as u64;
    let perms: Vec<(u64, u64)> = hosts
        .iter()
        .map(|h| {
            let name = h.address.to_string();
            let offset = hash64(name.as_bytes()) % m;
            let skip = hash64(format!("{name}#skip").as_bytes()) % (m - 1).max(1) + 1;
            (offset, skip)
        })
        .collect();
    let max_weight = f64::from(hosts.iter().map(|h| h.weight.max(1)).max().unwrap_or(1));
    let mut next = vec![0u64; hosts.len()];
    let mut target = vec![0f64; hosts.len()];
    let mut table = vec![u32::MAX; size];
    let mut filled = 0;
    let mut round = 0u64;
    while filled < size {
        for (i, h) in hosts.iter().enumerate() {
            if (round as f64) * f64::from(h.weight.max(1)) < target[i] {
                continue;
            }
            target[i] += max_weight;
            let (offset, skip) = perms[i];
            loop {
                let slot = ((offset + next[i] * skip) % m) as usize;
                next[i] += 1;
                if table[slot] == u32::MAX {
                    table[slot] = (start + i) as u32;
                    filled += 1;
                    break;
                }
            }
            if filled == size {
                break;
            }
        }
        round += 1;
    }
    table
}

/// The order in which weighted hosts are handed out: nginx's smooth weighted round robin,
/// one full cycle, as indices into `weights`. Equal weights give the hosts in order; a cycle
/// longer than [`MAX_WRR_SEQUENCE`] falls back to equal weights.
pub fn wrr_sequence(weights: &[u32]) -> Vec<usize> {
    let plain = || (0..weights.len()).collect::<Vec<_>>();
    let Some(first) = weights.first() else {
        return Vec::new();
    };
    if weights.iter().all(|w| w == first) {
        return plain();
    }
    let divisor = weights.iter().fold(0u64, |g, w| gcd(g, u64::from(*w)));
    let weights: Vec<u64> = weights
        .iter()
        .map(|w| u64::from(*w) / divisor.max(1))
        .collect();
    let total: u64 = weights.iter().sum();
    if total > MAX_WRR_SEQUENCE {
        return plain();
    }
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, w) in weights.iter().enumerate() {
            current[i] += *w as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total as i64;
        out.push(best);
    }
    out
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}
