//! Assembling a route configuration from the virtual hosts planned for one proxy: its own
//! (VirtualService routes, rendered per proxy) and the Services' default ones, encoded once and
//! shared through the render cache ([`super::cache::SharedVhost`]). Domains are deduplicated
//! across the configuration as Envoy requires, and the result encodes to exactly the bytes of
//! the equivalent `RouteConfiguration` message without building it.

use std::sync::Arc;

use envoy_types::pb::envoy::config::route::v3::{Route, RouteConfiguration, VirtualHost};
use prost::Message;
use rustc_hash::FxHashSet;

use super::cache::SharedVhost;

/// A virtual host before domain deduplication, rendered for this proxy.
pub(super) struct Planned {
    name: String,
    domains: Vec<String>,
    /// `domains`, lowercased.
    lower: Vec<String>,
    routes: Vec<Route>,
}

impl Planned {
    pub(super) fn new(name: String, domains: Vec<String>, routes: Vec<Route>) -> Planned {
        let lower = domains.iter().map(|d| d.to_ascii_lowercase()).collect();
        Planned {
            name,
            domains,
            lower,
            routes,
        }
    }

    pub(super) fn virtual_host(self) -> VirtualHost {
        VirtualHost {
            name: self.name,
            domains: self.domains,
            routes: self.routes,
            include_request_attempt_count: true,
            ..Default::default()
        }
    }
}

/// A virtual host of the plan: the proxy's own, or a Service's default one, shared.
pub(super) enum Plan {
    Own(Planned),
    Shared(Arc<SharedVhost>),
}

impl Plan {
    fn name(&self) -> &str {
        match self {
            Plan::Own(p) => &p.name,
            Plan::Shared(s) => &s.name,
        }
    }

    fn lower(&self) -> &[String] {
        match self {
            Plan::Own(p) => &p.lower,
            Plan::Shared(s) => &s.lower_domains,
        }
    }
}

/// A virtual host of the assembled configuration.
pub(super) enum Part {
    Own(Box<VirtualHost>),
    Shared(Arc<SharedVhost>),
}

impl Part {
    pub(super) fn name(&self) -> &str {
        match self {
            Part::Own(v) => &v.name,
            Part::Shared(s) => &s.name,
        }
    }
}

/// A route configuration as assembled for one proxy: its virtual hosts in order, some
/// shared encodings (see [`super::cache`]).
pub struct Assembled {
    /// The header and trailer fields (name, flags), without virtual hosts.
    pub(super) fields: RouteConfiguration,
    /// The virtual hosts, in order.
    pub(super) parts: Vec<Part>,
}

impl Assembled {
    /// The configuration's name.
    pub fn name(&self) -> &str {
        &self.fields.name
    }

    /// The encoded `RouteConfiguration`: byte for byte what encoding [`Assembled::message`]
    /// gives (fields in tag order: the name, the virtual hosts, the rest), without building it.
    pub fn encode(&self) -> Vec<u8> {
        let head = RouteConfiguration {
            name: self.fields.name.clone(),
            ..Default::default()
        };
        let tail = RouteConfiguration {
            name: String::new(),
            ..self.fields.clone()
        };
        let size = head.encoded_len()
            + tail.encoded_len()
            + self
                .parts
                .iter()
                .map(|p| match p {
                    Part::Own(v) => prost::encoding::message::encoded_len(VHOSTS_TAG, &**v),
                    Part::Shared(s) => s.field.len(),
                })
                .sum::<usize>();
        let mut out = Vec::with_capacity(size);
        head.encode_raw(&mut out);
        for p in &self.parts {
            match p {
                Part::Own(v) => prost::encoding::message::encode(VHOSTS_TAG, &**v, &mut out),
                Part::Shared(s) => out.extend_from_slice(&s.field),
            }
        }
        tail.encode_raw(&mut out);
        out
    }

    /// The `RouteConfiguration` message (shared virtual hosts decoded).
    pub fn message(self) -> RouteConfiguration {
        let mut rc = self.fields;
        rc.virtual_hosts = self
            .parts
            .into_iter()
            .map(|p| match p {
                Part::Own(v) => *v,
                Part::Shared(s) => decode_vhost(&s),
            })
            .collect();
        rc
    }
}

/// The field number of `RouteConfiguration.virtual_hosts`.
const VHOSTS_TAG: u32 = 2;

/// The virtual host of a shared `virtual_hosts` entry.
fn decode_vhost(s: &SharedVhost) -> VirtualHost {
    let mut rc = RouteConfiguration::default();
    // The entry is a valid RouteConfiguration holding this one virtual host.
    if rc.merge(s.field.as_slice()).is_err() {
        tracing::error!(vhost = %s.name, "a shared virtual host does not decode");
    }
    rc.virtual_hosts.pop().unwrap_or_default()
}

/// Encodes a virtual host as a shared `virtual_hosts` entry.
pub(super) fn share(vh: VirtualHost) -> Arc<SharedVhost> {
    let mut field = Vec::new();
    prost::encoding::message::encode(VHOSTS_TAG, &vh, &mut field);
    Arc::new(SharedVhost {
        lower_domains: vh.domains.iter().map(|d| d.to_ascii_lowercase()).collect(),
        name: vh.name,
        field,
    })
}

/// The virtual hosts of a plan, in plan order: the first of each name, each with the domains
/// no earlier one took (compared without case; Envoy rejects duplicates), none left without
/// domains. A shared virtual host whose domains are all free is kept shared.
pub(super) fn dedup(planned: &[Plan]) -> Vec<Part> {
    let domains = planned.iter().map(|p| p.lower().len()).sum();
    let mut names: FxHashSet<&str> =
        FxHashSet::with_capacity_and_hasher(planned.len(), Default::default());
    let mut taken: FxHashSet<&str> =
        FxHashSet::with_capacity_and_hasher(domains, Default::default());
    let mut parts = Vec::new();
    for plan in planned {
        if !names.insert(plan.name()) {
            continue;
        }
        let lower = plan.lower();
        let free = lower.len();
        let mut added = 0;
        while added < free && taken.insert(lower[added].as_str()) {
            added += 1;
        }
        if added == free {
            if free == 0 {
                continue;
            }
            parts.push(match plan {
                Plan::Own(p) => Part::Own(Box::new(own_vhost(p, lower.iter().map(|_| true)))),
                Plan::Shared(s) => Part::Shared(s.clone()),
            });
            continue;
        }
        // A clash: undo, and keep the free domains only.
        for d in &lower[..added] {
            taken.remove(d.as_str());
        }
        let keep: Vec<bool> = lower.iter().map(|d| taken.insert(d.as_str())).collect();
        if !keep.contains(&true) {
            continue;
        }
        let vh = match plan {
            Plan::Own(p) => own_vhost(p, keep.into_iter()),
            Plan::Shared(s) => {
                let mut vh = decode_vhost(s);
                let mut keep = keep.into_iter();
                vh.domains.retain(|_| keep.next().unwrap_or(false));
                vh
            }
        };
        parts.push(Part::Own(Box::new(vh)));
    }
    parts
}

/// The virtual host of a planned one, with the domains `keep` says.
fn own_vhost(p: &Planned, keep: impl Iterator<Item = bool>) -> VirtualHost {
    VirtualHost {
        name: p.name.clone(),
        domains: p
            .domains
            .iter()
            .zip(keep)
            .filter(|(_, k)| *k)
            .map(|(d, _)| d.clone())
            .collect(),
        routes: p.routes.clone(),
        include_request_attempt_count: true,
        ..Default::default()
    }
}
