//! Resources rendered once and shared: a push builds each distinct resource once and hands the
//! same encoding to every proxy that is sent it (istiod's `XdsCache`).
//!
//! A [`Rendered`] resource is packed and hashed once and shared behind an `Arc`: streams keep
//! what they sent as `Arc`s, never as copies. The [`RenderCache`] memoizes outbound clusters
//! by everything their content depends on (the Service, the port, the DestinationRule that
//! applies, the subset, the identities of the Service's endpoints, whether the proxy has an
//! identity), so a key that is equal gives an equal cluster whatever snapshot or proxy asks:
//! the cache is carried from one snapshot to the next, and a push after one new Service
//! renders that Service's clusters only. Entries not used in the last two generations (registry
//! snapshots that rendered clusters) are dropped once the cache holds more than twice what
//! the current generation uses.
//!
//! Route configurations are per proxy (a Service's short-name domains depend on the proxy's
//! namespace), but most of their virtual hosts are not: a Service's default virtual host on a
//! port is memoized, encoded, by everything it depends on ([`VhostKey`]), and a route
//! configuration is assembled from those encodings and the virtual hosts rendered for the
//! proxy alone (see [`super::routes`]).

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use rustc_hash::FxHashMap;

use crate::networking::MergedRule;
use crate::registry::{Endpoint, Service};

/// A resource ready to send: its name, its packed message encoded as an entry of a
/// `DiscoveryResponse`'s `resources`, a hash of its content.
#[derive(Clone, Debug, PartialEq)]
pub struct Rendered {
    /// The resource name, shared with the streams that track the resource by it.
    pub name: Name,
    /// The `resources` entry of a `DiscoveryResponse` (field key, length, packed `Any`):
    /// responses are written from these bytes, shared, never re-encoded per stream.
    pub field: Bytes,
    /// A hash of the type URL and the encoded message.
    pub hash: u64,
}

/// A rendered resource, shared by every stream that sends it.
pub type Shared = Arc<Rendered>;

/// A resource name: streams key what they sent and what was ACKed by it, sharing one
/// allocation per name instead of a copy per map.
pub type Name = Arc<str>;

/// Field number of `DiscoveryResponse.resources`.
const RESOURCES_FIELD: u32 = 2;

impl Rendered {
    /// Packs and hashes `any` under `name`.
    pub fn new(name: String, any: Any) -> Shared {
        let mut h = DefaultHasher::new();
        any.type_url.hash(&mut h);
        any.value.hash(&mut h);
        let mut field = Vec::with_capacity(
            prost::length_delimiter_len(any.encoded_len()) + any.encoded_len() + 1,
        );
        prost::encoding::message::encode(RESOURCES_FIELD, &any, &mut field);
        Arc::new(Rendered {
            name: name.into(),
            hash: h.finish(),
            field: Bytes::from(field),
        })
    }

    /// The packed message.
    pub fn any(&self) -> Any {
        let mut buf = &self.field[..];
        // Written by `new`: a key, a length and an `Any`, which decode.
        let parsed = prost::encoding::decode_key(&mut buf)
            .and_then(|_| prost::decode_length_delimiter(&mut buf))
            .and_then(|_| Any::decode(buf));
        parsed.unwrap_or_default()
    }
}

/// Everything an outbound cluster of client-side load balancing depends on.
#[derive(Debug)]
pub(crate) struct ClusterKey {
    /// The cluster name.
    pub name: String,
    /// The Service (as the proxy's scope has it: its ports may be trimmed).
    pub service: Arc<Service>,
    /// The Service port.
    pub port: u16,
    /// The DestinationRule that applies to the host for the proxy.
    pub rule: Option<MergedRule>,
    /// The subset, for a subset cluster.
    pub subset: Option<String>,
    /// The identities of the Service's endpoints.
    pub sans: Vec<String>,
    /// Whether the proxy has an identity (auto mTLS).
    pub auto: bool,
}

impl PartialEq for ClusterKey {
    fn eq(&self, other: &ClusterKey) -> bool {
        self.name == other.name
            && self.port == other.port
            && self.auto == other.auto
            && self.subset == other.subset
            && (Arc::ptr_eq(&self.service, &other.service) || self.service == other.service)
            && self.sans == other.sans
            && self.rule == other.rule
    }
}

// A rule with a NaN in it never equals itself: such a key is rendered again on each use,
// which the sweep bounds.
impl Eq for ClusterKey {}

impl Hash for ClusterKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state);
        self.auto.hash(state);
    }
}

/// Everything a Service's default virtual host on a port depends on: the Service (its host,
/// names, addresses), the port, whether the proxy is in the Service's namespace (the short
/// name is a domain only there) and the route's hash policy (from the DestinationRule that
/// applies for the proxy), encoded.
#[derive(Debug)]
pub(crate) struct VhostKey {
    /// The Service.
    pub service: Arc<Service>,
    /// The port (the route configuration's).
    pub port: u16,
    /// Whether the proxy is in the Service's namespace.
    pub same_namespace: bool,
    /// The encoded hash policies of the default route (empty: none).
    pub hash_policy: Vec<u8>,
}

impl PartialEq for VhostKey {
    fn eq(&self, other: &VhostKey) -> bool {
        self.port == other.port
            && self.same_namespace == other.same_namespace
            && self.hash_policy == other.hash_policy
            && (Arc::ptr_eq(&self.service, &other.service) || self.service == other.service)
    }
}

impl Eq for VhostKey {}

impl Hash for VhostKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.service.hostname.hash(state);
        self.port.hash(state);
        self.same_namespace.hash(state);
    }
}

/// A virtual host encoded once, shared by every route configuration that holds it.
#[derive(Debug, PartialEq)]
pub struct SharedVhost {
    /// Its name.
    pub name: String,
    /// Its domains, lowercased, in order (for the duplicate check of an assembly).
    pub lower_domains: Vec<String>,
    /// The `virtual_hosts` entry of a `RouteConfiguration`: field key, length, message.
    pub field: Vec<u8>,
}

/// An entry and the generation that last used it.
#[derive(Debug)]
struct Entry<V> {
    value: V,
    generation: u64,
}

/// A map whose entries unused in the last two generations are dropped once it holds more
/// than twice what the current generation uses.
#[derive(Debug)]
struct Memo<K, V> {
    map: FxHashMap<K, Entry<V>>,
    /// The newest generation seen.
    generation: u64,
    /// Entries used in it.
    live: usize,
}

impl<K, V> Default for Memo<K, V> {
    fn default() -> Self {
        Memo {
            map: FxHashMap::default(),
            generation: 0,
            live: 0,
        }
    }
}

impl<K: Hash + Eq, V: Clone> Memo<K, V> {
    fn advance(&mut self, generation: u64) {
        if generation > self.generation {
            self.generation = generation;
            self.live = 0;
        }
    }

    /// The value of `key` if `valid` accepts it, marked used in `generation`.
    fn get<Q>(&mut self, key: &Q, generation: u64, valid: impl FnOnce(&V) -> bool) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.advance(generation);
        let newest = self.generation;
        let entry = self.map.get_mut(key).filter(|e| valid(&e.value))?;
        let first_use = entry.generation < newest;
        entry.generation = entry.generation.max(generation);
        let value = entry.value.clone();
        if first_use {
            self.live += 1;
        }
        Some(value)
    }

    /// [`Memo::get`] by an owned key that replaces the stored one on a hit: keys whose
    /// equality is cheap when they share their parts (`Arc::ptr_eq`) stay cheap for the
    /// next lookups of the same snapshot.
    /// Gives the key back on a miss.
    fn get_owned(&mut self, key: K, generation: u64) -> Result<V, K> {
        self.advance(generation);
        let newest = self.generation;
        let Some((_, mut entry)) = self.map.remove_entry(&key) else {
            return Err(key);
        };
        if entry.generation < newest {
            self.live += 1;
        }
        entry.generation = entry.generation.max(generation);
        let value = entry.value.clone();
        self.map.insert(key, entry);
        Ok(value)
    }

    fn insert(&mut self, key: K, value: V, generation: u64) {
        self.advance(generation);
        if self.map.len() > 2 * self.live + 1024 {
            let keep = self.generation.saturating_sub(1);
            self.map.retain(|_, e| e.generation >= keep);
        }
        let fresh = self
            .map
            .insert(key, Entry { value, generation })
            .is_none_or(|old| old.generation < self.generation);
        if fresh && generation >= self.generation {
            self.live += 1;
        }
    }
}

/// A rendered load assignment and the endpoints it was rendered from.
type Assignment = (Arc<[Endpoint]>, Shared);

/// Rendered resources shared by every snapshot the registry derives from the first one (see
/// the module documentation).
#[derive(Debug, Default)]
pub struct RenderCache {
    clusters: Mutex<Memo<ClusterKey, Shared>>,
    /// Load assignments by cluster name, with the endpoints they were rendered from.
    assignments: Mutex<Memo<String, Assignment>>,
    /// Default virtual hosts of Services.
    vhosts: Mutex<Memo<VhostKey, Arc<SharedVhost>>>,
}

impl RenderCache {
    /// The cluster of `key`, rendered by `render` unless an equal key was rendered before.
    /// `generation` is the snapshot's version.
    pub(crate) fn cluster(
        &self,
        key: ClusterKey,
        generation: u64,
        render: impl FnOnce() -> Shared,
    ) -> Shared {
        let found = lock(&self.clusters).get_owned(key, generation);
        let key = match found {
            Ok(value) => return value,
            Err(key) => key,
        };
        // Rendered outside the lock: streams render different clusters in parallel.
        let value = render();
        lock(&self.clusters).insert(key, value.clone(), generation);
        value
    }

    /// The load assignment `name` of `endpoints`, rendered by `render` unless it was
    /// rendered from the same endpoints before.
    pub(crate) fn assignment(
        &self,
        name: &str,
        endpoints: &[Endpoint],
        generation: u64,
        render: impl FnOnce() -> Shared,
    ) -> Shared {
        let found = lock(&self.assignments).get(name, generation, |(e, _)| **e == *endpoints);
        if let Some((_, value)) = found {
            return value;
        }
        let value = render();
        let entry = (Arc::from(endpoints), value.clone());
        lock(&self.assignments).insert(name.to_string(), entry, generation);
        value
    }

    /// The default virtual host of `key`, rendered by `render` unless an equal key was
    /// rendered before.
    pub(crate) fn vhost(
        &self,
        key: VhostKey,
        generation: u64,
        render: impl FnOnce() -> Arc<SharedVhost>,
    ) -> Arc<SharedVhost> {
        let found = lock(&self.vhosts).get_owned(key, generation);
        let key = match found {
            Ok(value) => return value,
            Err(key) => key,
        };
        let value = render();
        lock(&self.vhosts).insert(key, value.clone(), generation);
        value
    }

    /// Number of cached clusters, load assignments and virtual hosts.
    pub fn len(&self) -> usize {
        lock(&self.clusters).map.len()
            + lock(&self.assignments).map.len()
            + lock(&self.vhosts).map.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
