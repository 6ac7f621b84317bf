//! The YAML shape of the supported kinds, as written by users: lenient types (numbers as
//! `i64`, everything optional) so that validation can say precisely what is wrong. Fields the
//! control plane does not use are ignored.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `metadata`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RawMeta {
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// An integer or a string (`targetPort`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum IntOrString {
    Int(i64),
    Str(String),
}

/// A Namespace.
#[derive(Debug, Deserialize)]
pub(crate) struct RawNamespace {
    #[serde(default)]
    pub metadata: RawMeta,
}

/// A Service.
#[derive(Debug, Deserialize)]
pub(crate) struct RawService {
    #[serde(default)]
    pub metadata: RawMeta,
    pub spec: Option<RawServiceSpec>,
}

/// A Service's `spec`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RawServiceSpec {
    #[serde(rename = "clusterIP")]
    pub cluster_ip: Option<String>,
    #[serde(rename = "type")]
    pub service_type: Option<String>,
    pub selector: Option<BTreeMap<String, String>>,
    pub ports: Option<Vec<RawServicePort>>,
}

/// An entry of `spec.ports`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RawServicePort {
    pub name: Option<String>,
    pub port: Option<i64>,
    pub target_port: Option<IntOrString>,
    pub protocol: Option<String>,
    pub app_protocol: Option<String>,
}

/// An Endpoints object.
#[derive(Debug, Deserialize)]
pub(crate) struct RawEndpoints {
    pub subsets: Option<Vec<RawSubset>>,
}

/// An entry of `subsets`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RawSubset {
    pub addresses: Option<Vec<RawEndpointAddress>>,
    pub not_ready_addresses: Option<Vec<RawEndpointAddress>>,
    pub ports: Option<Vec<RawEndpointPort>>,
}

/// An entry of `addresses` or `notReadyAddresses`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RawEndpointAddress {
    pub ip: Option<String>,
    pub node_name: Option<String>,
}

/// A port of an Endpoints subset or an EndpointSlice.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RawEndpointPort {
    pub name: Option<String>,
    pub port: Option<i64>,
    pub protocol: Option<String>,
}

/// An EndpointSlice.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RawEndpointSlice {
    #[serde(default)]
    pub metadata: RawMeta,
    pub address_type: Option<String>,
    pub endpoints: Option<Vec<RawSliceEndpoint>>,
    pub ports: Option<Vec<RawEndpointPort>>,
}

/// An entry of an EndpointSlice's `endpoints`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RawSliceEndpoint {
    pub addresses: Option<Vec<String>>,
    pub conditions: Option<RawConditions>,
    pub zone: Option<String>,
    pub node_name: Option<String>,
}

/// `conditions` of an EndpointSlice endpoint.
#[derive(Debug, Deserialize)]
pub(crate) struct RawConditions {
    pub ready: Option<bool>,
}

/// A ConfigMap.
#[derive(Debug, Deserialize)]
pub(crate) struct RawConfigMap {
    #[serde(default)]
    pub data: Option<BTreeMap<String, String>>,
}
