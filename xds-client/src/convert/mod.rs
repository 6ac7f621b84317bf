//! Conversion of Envoy v3 resources into the proxy's config model, once, at the edge.
//!
//! Every conversion is a `TryFrom` from an `envoy-types` message into a [`crate::model`] type
//! and fails with a [`ConvertError`] that names the resource and the field, in the form
//! `listener "0.0.0.0_9080": filter_chains[0].filters[0]: unsupported filter "..."`. That text
//! is what the xDS client puts in a NACK's `error_detail`.
//!
//! The rule for every field of Envoy's API:
//! - fields the model carries are converted and validated;
//! - fields that change how traffic is handled and that the proxy cannot apply are rejected
//!   when set (a NACK, never a silent drop);
//! - fields that only concern Envoy's own observability or resource tuning (stat names, buffer
//!   limits, socket backlog, metadata) are accepted and ignored, because the proxy has its own
//!   telemetry and limits. Each submodule lists the fields it ignores. Access logs and tracing
//!   set by the Telemetry API are converted (`telemetry`).
//!
//! Envoy's defaults are applied where the model needs a value: a cluster without
//! `connect_timeout` gets 5 s, a route action without `timeout` gets 15 s, a `tcp_proxy`
//! without `idle_timeout` gets 1 hour, and an explicit zero duration means "none" for those
//! timeouts, as in Envoy.

mod action;
mod cluster;
mod cluster_policy;
mod dns;
mod endpoint;
mod filter_config;
mod filters;
mod listener;
mod matcher;
mod rbac;
mod route;
mod telemetry;
mod tls;

#[cfg(test)]
pub(crate) mod tests;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{
    address, config_source, socket_address, Address, ConfigSource, SocketAddress,
};
use envoy_types::pb::google::protobuf::{Any, BoolValue, Duration as PbDuration};
use prost::{Message, Name};

use crate::model::{Cluster, ClusterLoadAssignment, Listener, ResourceType, RouteConfig};

/// One step of the path from a resource to the offending field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    /// A field, by its protobuf name (`connect_timeout`).
    Field(&'static str),
    /// An element of a repeated field (`filter_chains[0]`).
    Index(&'static str, usize),
    /// An entry of a map field (`typed_extension_protocol_options["..."]`).
    Key(&'static str, String),
}

impl fmt::Display for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Segment::Field(name) => f.write_str(name),
            Segment::Index(name, index) => write!(f, "{name}[{index}]"),
            Segment::Key(name, key) => write!(f, "{name}[{key:?}]"),
        }
    }
}

/// Where an error is: the resource (type and name, once known) and the field path inside it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Location {
    resource: Option<(ResourceType, String)>,
    /// Innermost segment first: segments are pushed as the error travels outwards.
    path: Vec<Segment>,
}

impl Location {
    /// The resource type and name, when the error has been attributed to a resource.
    pub fn resource(&self) -> Option<(ResourceType, &str)> {
        self.resource.as_ref().map(|(t, n)| (*t, n.as_str()))
    }

    /// The field path, outermost segment first, joined with `.` (`filter_chains[0].filters[0]`).
    pub fn path(&self) -> String {
        let mut out = String::new();
        for (i, segment) in self.path.iter().rev().enumerate() {
            if i > 0 {
                out.push('.');
            }
            out.push_str(&segment.to_string());
        }
        out
    }
}

/// The name used for a resource type in error messages (the proto message, in snake case).
fn resource_label(resource_type: ResourceType) -> &'static str {
    match resource_type {
        ResourceType::Listener => "listener",
        ResourceType::Route => "route_configuration",
        ResourceType::Cluster => "cluster",
        ResourceType::Endpoint => "cluster_load_assignment",
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path();
        match &self.resource {
            Some((t, name)) if path.is_empty() => write!(f, "{} {name:?}", resource_label(*t)),
            Some((t, name)) => write!(f, "{} {name:?}: {path}", resource_label(*t)),
            None => f.write_str(&path),
        }
    }
}

/// Why a resource cannot be applied. The message names the resource and the field.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ConvertError {
    /// A required field is absent or empty.
    #[error("{at}: required field is missing or empty")]
    Missing {
        /// Where.
        at: Location,
    },
    /// A field is set that the proxy cannot apply.
    #[error("{at}: not supported by this proxy")]
    UnsupportedField {
        /// Where.
        at: Location,
    },
    /// A field has a value the proxy cannot apply (an enum value, a protocol name).
    #[error("{at}: unsupported value {value:?}")]
    UnsupportedValue {
        /// Where.
        at: Location,
        /// The value, as Envoy spells it.
        value: String,
    },
    /// A network filter the proxy does not implement.
    #[error("{at}: unsupported filter {name:?}")]
    UnsupportedFilter {
        /// Where.
        at: Location,
        /// The filter's name (or its config type when unnamed).
        name: String,
    },
    /// An HTTP filter the proxy does not implement and that is not marked `is_optional`.
    #[error("{at}: unsupported HTTP filter {name:?}")]
    UnsupportedHttpFilter {
        /// Where.
        at: Location,
        /// The filter's name (or its config type when unnamed).
        name: String,
    },
    /// A listener filter the proxy does not implement.
    #[error("{at}: unsupported listener filter {name:?}")]
    UnsupportedListenerFilter {
        /// Where.
        at: Location,
        /// The filter's name (or its config type when unnamed).
        name: String,
    },
    /// An `Any` holds a different message type than the field requires.
    #[error("{at}: unexpected type {type_url:?}, expected {expected:?}")]
    WrongType {
        /// Where.
        at: Location,
        /// The type URL found.
        type_url: String,
        /// The message type expected.
        expected: String,
    },
    /// An `Any` does not decode as the message its type URL names.
    #[error("{at}: cannot decode {type_url:?}: {source}")]
    Decode {
        /// Where.
        at: Location,
        /// The type URL of the bytes.
        type_url: String,
        /// The decoder's error.
        #[source]
        source: prost::DecodeError,
    },
    /// A value that does not parse or is out of range (an address, a port, a duration).
    #[error("{at}: invalid {what} {value:?}")]
    Invalid {
        /// Where.
        at: Location,
        /// What kind of value was expected (`IP address`, `port`, ...).
        what: &'static str,
        /// The value found.
        value: String,
    },
    /// A name or match that must be unique appears twice.
    #[error("{at}: duplicate {what} {value:?}")]
    Duplicate {
        /// Where (the second occurrence).
        at: Location,
        /// What is duplicated (`domain`, `filter_chain_match`, ...).
        what: &'static str,
        /// The duplicated value.
        value: String,
    },
    /// Fields that are valid alone but not together.
    #[error("{at}: {rule}")]
    Inconsistent {
        /// Where.
        at: Location,
        /// The rule that is broken, as a sentence.
        rule: &'static str,
    },
}

impl ConvertError {
    /// The location of the error.
    pub fn location(&self) -> &Location {
        match self {
            ConvertError::Missing { at }
            | ConvertError::UnsupportedField { at }
            | ConvertError::UnsupportedValue { at, .. }
            | ConvertError::UnsupportedFilter { at, .. }
            | ConvertError::UnsupportedHttpFilter { at, .. }
            | ConvertError::UnsupportedListenerFilter { at, .. }
            | ConvertError::WrongType { at, .. }
            | ConvertError::Decode { at, .. }
            | ConvertError::Invalid { at, .. }
            | ConvertError::Duplicate { at, .. }
            | ConvertError::Inconsistent { at, .. } => at,
        }
    }

    fn location_mut(&mut self) -> &mut Location {
        match self {
            ConvertError::Missing { at }
            | ConvertError::UnsupportedField { at }
            | ConvertError::UnsupportedValue { at, .. }
            | ConvertError::UnsupportedFilter { at, .. }
            | ConvertError::UnsupportedHttpFilter { at, .. }
            | ConvertError::UnsupportedListenerFilter { at, .. }
            | ConvertError::WrongType { at, .. }
            | ConvertError::Decode { at, .. }
            | ConvertError::Invalid { at, .. }
            | ConvertError::Duplicate { at, .. }
            | ConvertError::Inconsistent { at, .. } => at,
        }
    }

    /// Prefix the path with a field (the error happened inside it).
    pub(crate) fn at(mut self, field: &'static str) -> Self {
        self.location_mut().path.push(Segment::Field(field));
        self
    }

    /// Prefix the path with an element of a repeated field.
    pub(crate) fn at_index(mut self, field: &'static str, index: usize) -> Self {
        self.location_mut().path.push(Segment::Index(field, index));
        self
    }

    /// Prefix the path with an entry of a map field.
    pub(crate) fn at_key(mut self, field: &'static str, key: &str) -> Self {
        self.location_mut()
            .path
            .push(Segment::Key(field, key.to_string()));
        self
    }

    /// Attribute the error to a resource (kept if already attributed).
    pub(crate) fn in_resource(mut self, resource_type: ResourceType, name: &str) -> Self {
        let at = self.location_mut();
        if at.resource.is_none() {
            at.resource = Some((resource_type, name.to_string()));
        }
        self
    }

    pub(crate) fn missing(field: &'static str) -> Self {
        ConvertError::Missing {
            at: Location::default(),
        }
        .at(field)
    }

    /// A missing value, located by the caller (the field holding it).
    pub(crate) fn absent() -> Self {
        ConvertError::Missing {
            at: Location::default(),
        }
    }

    pub(crate) fn unsupported(field: &'static str) -> Self {
        ConvertError::UnsupportedField {
            at: Location::default(),
        }
        .at(field)
    }

    pub(crate) fn unsupported_value(field: &'static str, value: impl Into<String>) -> Self {
        ConvertError::UnsupportedValue {
            at: Location::default(),
            value: value.into(),
        }
        .at(field)
    }

    pub(crate) fn invalid(what: &'static str, value: impl Into<String>) -> Self {
        ConvertError::Invalid {
            at: Location::default(),
            what,
            value: value.into(),
        }
    }

    pub(crate) fn duplicate(what: &'static str, value: impl Into<String>) -> Self {
        ConvertError::Duplicate {
            at: Location::default(),
            what,
            value: value.into(),
        }
    }

    pub(crate) fn inconsistent(rule: &'static str) -> Self {
        ConvertError::Inconsistent {
            at: Location::default(),
            rule,
        }
    }
}

/// Path building on results, so that `?` chains stay short.
pub(crate) trait Within<T> {
    /// See [`ConvertError::at`].
    fn at(self, field: &'static str) -> Result<T, ConvertError>;
    /// See [`ConvertError::at_index`].
    fn at_index(self, field: &'static str, index: usize) -> Result<T, ConvertError>;
}

impl<T> Within<T> for Result<T, ConvertError> {
    fn at(self, field: &'static str) -> Result<T, ConvertError> {
        self.map_err(|e| e.at(field))
    }

    fn at_index(self, field: &'static str, index: usize) -> Result<T, ConvertError> {
        self.map_err(|e| e.at_index(field, index))
    }
}

/// Reject each listed field of a message when it differs from its default value.
macro_rules! reject_set {
    ($msg:expr, $($field:ident),+ $(,)?) => {
        $(
            if !$crate::convert::is_default(&$msg.$field) {
                return Err($crate::convert::ConvertError::unsupported(stringify!($field)));
            }
        )+
    };
}
pub(crate) use reject_set;

/// Whether a field holds its protobuf default (unset).
pub(crate) fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// The message name of a type URL (`type.googleapis.com/a.b.C` is `a.b.C`).
pub(crate) fn type_name(type_url: &str) -> &str {
    type_url.rsplit('/').next().unwrap_or(type_url)
}

/// Decode an `Any` as `M`, checking its type URL.
pub(crate) fn decode_any<M: Message + Name + Default>(any: &Any) -> Result<M, ConvertError> {
    if type_name(&any.type_url) != M::full_name() {
        return Err(ConvertError::WrongType {
            at: Location::default(),
            type_url: any.type_url.clone(),
            expected: M::full_name(),
        });
    }
    M::decode(any.value.as_slice()).map_err(|source| ConvertError::Decode {
        at: Location::default(),
        type_url: any.type_url.clone(),
        source,
    })
}

/// A protobuf duration as a `std` one; negative or malformed durations are invalid.
pub(crate) fn duration(d: &PbDuration) -> Result<Duration, ConvertError> {
    if d.seconds < 0 || d.nanos < 0 || d.nanos >= 1_000_000_000 {
        return Err(ConvertError::invalid(
            "duration",
            format!("{}s {}ns", d.seconds, d.nanos),
        ));
    }
    Ok(Duration::new(d.seconds as u64, d.nanos as u32))
}

/// Envoy's timeout convention: absent means `default`, zero means no timeout.
pub(crate) fn timeout_or(
    d: Option<&PbDuration>,
    default: Duration,
) -> Result<Option<Duration>, ConvertError> {
    match d {
        None => Ok(Some(default)),
        Some(d) => {
            let d = duration(d)?;
            Ok((!d.is_zero()).then_some(d))
        }
    }
}

/// A `BoolValue` with Envoy's default when absent.
pub(crate) fn bool_or(value: Option<&BoolValue>, default: bool) -> bool {
    value.map_or(default, |v| v.value)
}

/// Reject a `BoolValue` that is set to true (features the proxy does not have).
pub(crate) fn reject_true(
    value: Option<&BoolValue>,
    field: &'static str,
) -> Result<(), ConvertError> {
    if bool_or(value, false) {
        return Err(ConvertError::unsupported(field));
    }
    Ok(())
}

/// The IP address of a `SocketAddress`, rejecting what the proxy cannot apply.
pub(crate) fn socket_ip(sa: &SocketAddress) -> Result<IpAddr, ConvertError> {
    if sa.protocol != socket_address::Protocol::Tcp as i32 {
        let name = socket_address::Protocol::try_from(sa.protocol)
            .map_or_else(|_| sa.protocol.to_string(), |p| p.as_str_name().to_string());
        return Err(ConvertError::unsupported_value("protocol", name));
    }
    reject_set!(sa, resolver_name, network_namespace_filepath);
    sa.address
        .parse::<IpAddr>()
        .map_err(|_| ConvertError::invalid("IP address", sa.address.clone()).at("address"))
}

/// A TCP socket address (`SocketAddress` with a numeric port).
pub(crate) fn socket_addr(sa: &SocketAddress) -> Result<SocketAddr, ConvertError> {
    let ip = socket_ip(sa)?;
    let port = match &sa.port_specifier {
        Some(socket_address::PortSpecifier::PortValue(port)) => u16::try_from(*port)
            .map_err(|_| ConvertError::invalid("port", port.to_string()).at("port_value"))?,
        Some(socket_address::PortSpecifier::NamedPort(_)) => {
            return Err(ConvertError::unsupported("named_port"))
        }
        None => 0,
    };
    Ok(SocketAddr::new(ip, port))
}

/// An `Address` that must be a TCP socket address; error paths are relative to the field
/// holding it.
pub(crate) fn address(addr: Option<&Address>) -> Result<SocketAddr, ConvertError> {
    match addr.and_then(|a| a.address.as_ref()) {
        Some(address::Address::SocketAddress(sa)) => socket_addr(sa).at("socket_address"),
        Some(address::Address::Pipe(_)) => Err(ConvertError::unsupported("pipe")),
        Some(address::Address::EnvoyInternalAddress(_)) => {
            Err(ConvertError::unsupported("envoy_internal_address"))
        }
        None => Err(ConvertError::absent()),
    }
}

/// A config source must be ADS (or `self`, the same server): the proxy holds one stream.
/// Error paths are relative to the field holding the config source.
pub(crate) fn require_ads(source: Option<&ConfigSource>) -> Result<(), ConvertError> {
    let Some(source) = source else {
        return Err(ConvertError::absent());
    };
    match &source.config_source_specifier {
        Some(config_source::ConfigSourceSpecifier::Ads(_))
        | Some(config_source::ConfigSourceSpecifier::Self_(_)) => Ok(()),
        Some(config_source::ConfigSourceSpecifier::ApiConfigSource(_)) => {
            Err(ConvertError::unsupported("api_config_source"))
        }
        #[allow(deprecated)]
        Some(config_source::ConfigSourceSpecifier::Path(_))
        | Some(config_source::ConfigSourceSpecifier::PathConfigSource(_)) => {
            Err(ConvertError::unsupported("path_config_source"))
        }
        None => Err(ConvertError::missing("config_source_specifier")),
    }
}

/// A converted resource of one of the four types.
#[derive(Clone, Debug, PartialEq)]
pub enum Resource {
    /// From LDS (boxed: a listener is much larger than the other resources).
    Listener(Box<Listener>),
    /// From RDS.
    Route(RouteConfig),
    /// From CDS (boxed: a cluster with its traffic policy is large too).
    Cluster(Box<Cluster>),
    /// From EDS.
    Endpoints(ClusterLoadAssignment),
}

impl Resource {
    /// The resource's name (for EDS, the cluster or service name).
    pub fn name(&self) -> &str {
        match self {
            Resource::Listener(l) => &l.name,
            Resource::Route(r) => &r.name,
            Resource::Cluster(c) => &c.name,
            Resource::Endpoints(e) => &e.cluster_name,
        }
    }
}

const RESOURCE_WRAPPER: &str = "envoy.service.discovery.v3.Resource";

/// Decode and convert one resource of a discovery response.
///
/// `resource_type` is the response's type; the `Any` must hold that type (optionally wrapped
/// in `envoy.service.discovery.v3.Resource`). Errors are located at the resource when its name
/// is known, else at `resources[index]`.
pub fn decode_resource(
    resource_type: ResourceType,
    any: &Any,
    index: usize,
) -> Result<Resource, ConvertError> {
    use envoy_types::pb::envoy::config::{cluster, endpoint, listener, route};
    use envoy_types::pb::envoy::service::discovery::v3::Resource as Wrapper;

    let unwrapped;
    let any = if type_name(&any.type_url) == RESOURCE_WRAPPER {
        let wrapper: Wrapper = decode_any(any).at_index("resources", index)?;
        unwrapped = wrapper
            .resource
            .ok_or_else(|| ConvertError::missing("resource").at_index("resources", index))?;
        &unwrapped
    } else {
        any
    };
    if type_name(&any.type_url) != type_name(resource_type.type_url()) {
        return Err(ConvertError::WrongType {
            at: Location::default(),
            type_url: any.type_url.clone(),
            expected: type_name(resource_type.type_url()).to_string(),
        }
        .at_index("resources", index));
    }
    match resource_type {
        ResourceType::Listener => {
            let proto: listener::v3::Listener = decode_any(any).at_index("resources", index)?;
            Listener::try_from(proto).map(|l| Resource::Listener(Box::new(l)))
        }
        ResourceType::Route => {
            let proto: route::v3::RouteConfiguration =
                decode_any(any).at_index("resources", index)?;
            RouteConfig::try_from(proto).map(Resource::Route)
        }
        ResourceType::Cluster => {
            let proto: cluster::v3::Cluster = decode_any(any).at_index("resources", index)?;
            Cluster::try_from(proto).map(|c| Resource::Cluster(Box::new(c)))
        }
        ResourceType::Endpoint => {
            let proto: endpoint::v3::ClusterLoadAssignment =
                decode_any(any).at_index("resources", index)?;
            ClusterLoadAssignment::try_from(proto).map(Resource::Endpoints)
        }
    }
}
