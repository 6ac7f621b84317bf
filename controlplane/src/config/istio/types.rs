//! API types shared by several Istio kinds (`istio.networking.v1alpha3` and
//! `istio.type.v1beta1`), with Istio's field names. Every struct rejects unknown fields, as the
//! CRDs' structural schemas do.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `StringMatch`: at most one of `exact`, `prefix`, `regex` (validation enforces it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StringMatch {
    /// Exact string match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    /// Prefix-based match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// RE2 style regex-based match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// The one match a validated [`StringMatch`] holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Matcher<'a> {
    /// `exact`.
    Exact(&'a str),
    /// `prefix`.
    Prefix(&'a str),
    /// `regex`.
    Regex(&'a str),
}

impl Matcher<'_> {
    /// The string to match against.
    pub fn value(&self) -> &str {
        match self {
            Matcher::Exact(v) | Matcher::Prefix(v) | Matcher::Regex(v) => v,
        }
    }
}

impl StringMatch {
    /// The match, or `None` for an empty `{}`.
    pub fn matcher(&self) -> Option<Matcher<'_>> {
        if let Some(v) = &self.exact {
            Some(Matcher::Exact(v))
        } else if let Some(v) = &self.prefix {
            Some(Matcher::Prefix(v))
        } else {
            self.regex.as_deref().map(Matcher::Regex)
        }
    }

    /// How many of the three are set (validation requires at most one).
    pub(crate) fn count_set(&self) -> usize {
        [
            self.exact.is_some(),
            self.prefix.is_some(),
            self.regex.is_some(),
        ]
        .into_iter()
        .filter(|b| *b)
        .count()
    }
}

/// `Percent`: a fraction of 100, `{value: 12.5}`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Percent {
    /// The percentage (0 when absent, as in protobuf).
    #[serde(default)]
    pub value: f64,
}

/// `PortSelector`: a port number.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortSelector {
    /// Valid port number.
    #[serde(default)]
    pub number: u32,
}

/// `Destination`: a service host, optionally a subset and a port.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Destination {
    /// The name of a service from the service registry.
    #[serde(default)]
    pub host: String,
    /// The name of a subset within the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
    /// The port on the host being addressed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortSelector>,
}

/// `networking.v1alpha3.WorkloadSelector` (ServiceEntry, Sidecar): `labels`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadLabels {
    /// Labels that indicate the set of pods/VMs the configuration applies to.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// `type.v1beta1.WorkloadSelector` (DestinationRule, security policies): `matchLabels`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSelector {
    /// Labels that indicate a specific set of pods/VMs on which a policy is applied.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

/// `type.v1beta1.PolicyTargetReference`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyTargetReference {
    /// Group of the target resource (empty for the core group).
    #[serde(default)]
    pub group: String,
    /// Kind of the target resource.
    #[serde(default)]
    pub kind: String,
    /// Name of the target resource.
    #[serde(default)]
    pub name: String,
    /// Namespace of the referent (cross-namespace references are not supported).
    #[serde(default)]
    pub namespace: String,
}

/// Port protocols as Istio parses them (case-insensitive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// `GRPC`.
    Grpc,
    /// `GRPC-Web`.
    GrpcWeb,
    /// `HTTP`.
    Http,
    /// `HTTP_PROXY`.
    HttpProxy,
    /// `HTTP2`.
    Http2,
    /// `HTTPS`.
    Https,
    /// `TCP`.
    Tcp,
    /// `TLS`.
    Tls,
    /// `UDP`.
    Udp,
    /// `Mongo`.
    Mongo,
    /// `Redis`.
    Redis,
    /// `MySQL`.
    MySql,
    /// Anything else.
    Unsupported,
}

impl Protocol {
    /// Istio's `protocol.Parse`.
    pub fn parse(s: &str) -> Protocol {
        match s.to_ascii_lowercase().as_str() {
            "grpc" => Protocol::Grpc,
            "grpc-web" => Protocol::GrpcWeb,
            "http" => Protocol::Http,
            "http_proxy" => Protocol::HttpProxy,
            "http2" => Protocol::Http2,
            "https" => Protocol::Https,
            "tcp" => Protocol::Tcp,
            "tls" => Protocol::Tls,
            "udp" => Protocol::Udp,
            "mongo" => Protocol::Mongo,
            "redis" => Protocol::Redis,
            "mysql" => Protocol::MySql,
            _ => Protocol::Unsupported,
        }
    }

    /// HTTP-family protocols (routes apply).
    pub fn is_http(self) -> bool {
        matches!(
            self,
            Protocol::Http
                | Protocol::Http2
                | Protocol::HttpProxy
                | Protocol::Grpc
                | Protocol::GrpcWeb
        )
    }

    /// TLS-carrying protocols.
    pub fn is_tls(self) -> bool {
        matches!(self, Protocol::Https | Protocol::Tls)
    }

    /// TCP-family protocols.
    pub fn is_tcp(self) -> bool {
        matches!(
            self,
            Protocol::Tcp
                | Protocol::Https
                | Protocol::Tls
                | Protocol::Mongo
                | Protocol::Redis
                | Protocol::MySql
        )
    }
}
