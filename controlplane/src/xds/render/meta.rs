//! Rendering of the listener matches the registry's translation adds: `CidrRange`.

use envoy_types::pb::envoy::config::core::v3::CidrRange;
use serde_json::{Map, Value};

use super::R;

/// Renders a `CidrRange`.
pub(super) fn cidr(m: CidrRange) -> R {
    let CidrRange {
        address_prefix,
        prefix_len,
    } = m;
    let mut out = Map::new();
    out.insert("address_prefix".to_string(), Value::String(address_prefix));
    if let Some(len) = prefix_len {
        out.insert("prefix_len".to_string(), Value::from(len.value));
    }
    Ok(Value::Object(out))
}
