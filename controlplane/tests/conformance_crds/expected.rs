//! What our message must say for each `_err` of Istio's invalid CRD documents: Istio's
//! expected message (or its start) and words of ours that carry the same meaning. When the
//! expected message starts with a field path (`spec.hosts: Required value`), the test also
//! requires our error to be about that field.

/// (Istio's `_err`, words one of our messages for that document must all contain).
pub const MEANINGS: &[(&str, &[&str])] = &[
    // AuthorizationPolicy
    (
        "Cannot set serviceAccounts with namespaces or principals",
        &["Cannot set serviceAccounts with namespaces or principals"],
    ),
    // DestinationRule
    (
        "spec.trafficPolicy.loadBalancer.warmup.minimumPercent: Invalid value",
        &["minimumPercent", "100"],
    ),
    (
        "spec.trafficPolicy.loadBalancer.warmup.duration: Required value",
        &["duration is required"],
    ),
    (
        "spec.trafficPolicy.loadBalancer.warmup.aggression: Invalid value",
        &["aggression", "greater than or equal to 1"],
    ),
    // Telemetry
    (
        "name in body should be at least 1 chars long",
        &["name in body should be at least 1 chars long"],
    ),
    (
        "customMetric in body should be at least 1 chars lon",
        &["customMetric in body should be at least 1 chars long"],
    ),
    (
        "value must be set when operation is UPSERT",
        &["value must be set when operation is UPSERT"],
    ),
    (
        "value must not be set when operation is REMOVE",
        &["value must not be set when operation is REMOVE"],
    ),
    // PeerAuthentication
    ("Unsupported value: \"BLAH\"", &["unknown variant", "BLAH"]),
    (
        "type conversion error from",
        &["type conversion error from", "acd"],
    ),
    (
        "portLevelMtls requires selector",
        &["portLevelMtls requires selector"],
    ),
    (
        "spec.portLevelMtls in body should have at least 1 properties",
        &["must have at least one element"],
    ),
    (
        "port must be between 1-65535",
        &["port must be between 1-65535"],
    ),
    // ServiceEntry
    ("spec: Required value", &["required"]),
    ("spec.hosts: Required value", &["at least one host"]),
    (
        "wildcard is not supported in selector",
        &["wildcard is not supported in selector"],
    ),
    (
        "only one of WorkloadSelector or Endpoints can be set",
        &["only one of WorkloadSelector or Endpoints can be set"],
    ),
    (
        "hostname cannot be wildcard",
        &["hostname cannot be wildcard"],
    ),
    (
        "CIDR addresses are allowed only for NONE/STATIC resolution types",
        &["CIDR addresses are allowed only for NONE/STATIC resolution types"],
    ),
    ("Duplicate value", &["Duplicate value"]),
    (
        "port number cannot be duplicated",
        &["port number cannot be duplicated"],
    ),
    (
        "NONE mode cannot set endpoints",
        &["NONE mode cannot set endpoints"],
    ),
    (
        "DNS_ROUND_ROBIN mode cannot have multiple endpoints",
        &["DNS_ROUND_ROBIN mode cannot have multiple endpoints"],
    ),
    // WorkloadEntry
    ("Address is required", &["Address is required"]),
    ("UDS may not be a dir", &["UDS may not be a dir"]),
    (
        "UDS must be an absolute path or abstract socket",
        &["UDS must be an absolute path or abstract socket"],
    ),
    ("UDS may not include ports", &["UDS may not include ports"]),
    ("spec.ports: Invalid value", &["port name must be valid"]),
];
