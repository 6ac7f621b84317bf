//! Route selection: the virtual host for an authority (Envoy's domain rules) and the first
//! route whose path condition matches.
//!
//! A [`RouteTable`] indexes one route configuration's domains once, when the snapshot is
//! built; a request then costs one hash lookup for the common exact-domain case.

use std::collections::HashMap;

use xds_client::model::{PathMatch, Route, RouteConfig, VirtualHost};

/// A route configuration with its domains indexed.
#[derive(Debug)]
pub struct RouteTable {
    config: RouteConfig,
    /// Exact domains → virtual host index (the first virtual host listing a domain wins).
    exact: HashMap<String, usize>,
    /// `*SUFFIX` domains, longest suffix first.
    suffixes: Vec<(String, usize)>,
    /// `PREFIX*` domains, longest prefix first.
    prefixes: Vec<(String, usize)>,
    /// The `*` virtual host.
    any: Option<usize>,
}

impl RouteTable {
    /// Index `config`'s domains.
    pub fn new(config: RouteConfig) -> RouteTable {
        let mut exact = HashMap::new();
        let mut suffixes = Vec::new();
        let mut prefixes = Vec::new();
        let mut any = None;
        for (i, vh) in config.virtual_hosts.iter().enumerate() {
            for domain in &vh.domains {
                let domain = domain.to_ascii_lowercase();
                if domain == "*" {
                    any.get_or_insert(i);
                } else if let Some(suffix) = domain.strip_prefix('*') {
                    suffixes.push((suffix.to_string(), i));
                } else if let Some(prefix) = domain.strip_suffix('*') {
                    prefixes.push((prefix.to_string(), i));
                } else {
                    exact.entry(domain).or_insert(i);
                }
            }
        }
        // Stable sorts: among equally long wildcards, config order decides.
        suffixes.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        prefixes.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        RouteTable {
            config,
            exact,
            suffixes,
            prefixes,
            any,
        }
    }

    /// The route configuration's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The route configuration.
    pub fn config(&self) -> &RouteConfig {
        &self.config
    }

    /// The virtual host for a request's authority (`Host` or `:authority`, port included as
    /// sent), in Envoy's order: exact domain, then the longest `*suffix`, then the longest
    /// `prefix*`, then `*`. Wildcards match at least one character; case is ignored. Istio
    /// lists both `name` and `name:port` domains, which is how a port in the authority matches.
    pub fn virtual_host(&self, authority: &str) -> Option<&VirtualHost> {
        let lowered;
        let host = if authority.bytes().any(|b| b.is_ascii_uppercase()) {
            lowered = authority.to_ascii_lowercase();
            lowered.as_str()
        } else {
            authority
        };
        let index = self
            .exact
            .get(host)
            .copied()
            .or_else(|| {
                self.suffixes
                    .iter()
                    .find(|(s, _)| host.len() > s.len() && host.ends_with(s.as_str()))
                    .map(|(_, i)| *i)
            })
            .or_else(|| {
                self.prefixes
                    .iter()
                    .find(|(p, _)| host.len() > p.len() && host.starts_with(p.as_str()))
                    .map(|(_, i)| *i)
            })
            .or(self.any)?;
        self.config.virtual_hosts.get(index)
    }
}

/// The first route of `vh` whose path condition matches. `path_and_query` is the request's
/// `:path`; a prefix applies to it as sent, an exact path to it without the query string.
pub fn find_route<'a>(vh: &'a VirtualHost, path_and_query: &str) -> Option<&'a Route> {
    let path = path_and_query
        .split_once('?')
        .map_or(path_and_query, |(p, _)| p);
    vh.routes.iter().find(|r| match &r.matcher.path {
        PathMatch::Prefix(prefix) => path_and_query.starts_with(prefix.as_str()),
        PathMatch::Exact(exact) => path == exact,
    })
}
