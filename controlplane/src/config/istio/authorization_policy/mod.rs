//! `AuthorizationPolicy` (`security.istio.io`): access control on workloads. Types from
//! Istio's `authorization_policy.proto`; Istio's `ValidateAuthorizationPolicy` rules (with
//! `pkg/config/security`'s value checks) and the CRD's CEL rules.

mod values;

use serde::{Deserialize, Serialize};

use values::{
    check_empty_values, check_path_templates, check_service_accounts, validate_attribute,
    validate_ips, validate_ports,
};

use super::names::{validate_selector_labels, validate_target_ref, Problem as NameProblem};
use super::types::{PolicyTargetReference, WorkloadSelector};
use super::{at, idx, Checker};

/// `AuthorizationPolicy.spec`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationPolicy {
    /// Workloads the policy applies to (the namespace when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// A Service, ServiceEntry or Gateway the policy applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    /// Several targets.
    #[serde(default)]
    pub target_refs: Vec<PolicyTargetReference>,
    /// Rules; a request matching any rule triggers the action. Absent and `[]` differ: a DENY
    /// or CUSTOM policy without the field is an error, with `[]` it matches nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<Rule>>,
    /// ALLOW (default), DENY, AUDIT or CUSTOM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    /// The external authorizer of a CUSTOM policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<ExtensionProvider>,
}

impl AuthorizationPolicy {
    /// The action, ALLOW by default.
    pub fn action(&self) -> Action {
        self.action.unwrap_or(Action::Allow)
    }
}

/// `AuthorizationPolicy.Action`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Action {
    /// Allow matching requests.
    Allow,
    /// Deny matching requests.
    Deny,
    /// Audit matching requests.
    Audit,
    /// Delegate to an external authorizer.
    Custom,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::Allow => "ALLOW",
            Action::Deny => "DENY",
            Action::Audit => "AUDIT",
            Action::Custom => "CUSTOM",
        }
    }
}

/// `AuthorizationPolicy.ExtensionProvider`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtensionProvider {
    /// Name of a provider of the mesh config.
    #[serde(default)]
    pub name: String,
}

/// `Rule`: sources, operations and conditions, all of which must match.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    /// Sources (any of them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Vec<RuleFrom>>,
    /// Operations (any of them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Vec<RuleTo>>,
    /// Extra conditions (all of them).
    #[serde(default)]
    pub when: Vec<Condition>,
}

/// `Rule.From`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleFrom {
    /// The source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
}

/// `Rule.To`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleTo {
    /// The operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,
}

/// `Source`: peer and request identities and addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Source {
    /// Peer identities (`cluster.local/ns/NS/sa/SA`; `*` prefix or suffix forms).
    #[serde(default)]
    pub principals: Vec<String>,
    /// Negated `principals`.
    #[serde(default)]
    pub not_principals: Vec<String>,
    /// JWT `iss/sub` identities.
    #[serde(default)]
    pub request_principals: Vec<String>,
    /// Negated `requestPrincipals`.
    #[serde(default)]
    pub not_request_principals: Vec<String>,
    /// Peer namespaces.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Negated `namespaces`.
    #[serde(default)]
    pub not_namespaces: Vec<String>,
    /// Peer service accounts (`SA` or `NS/SA`).
    #[serde(default)]
    pub service_accounts: Vec<String>,
    /// Negated `serviceAccounts`.
    #[serde(default)]
    pub not_service_accounts: Vec<String>,
    /// Peer trust domains.
    #[serde(default)]
    pub trust_domains: Vec<String>,
    /// Negated `trustDomains`.
    #[serde(default)]
    pub not_trust_domains: Vec<String>,
    /// Peer IPs or CIDRs.
    #[serde(default)]
    pub ip_blocks: Vec<String>,
    /// Negated `ipBlocks`.
    #[serde(default)]
    pub not_ip_blocks: Vec<String>,
    /// Original client IPs or CIDRs (X-Forwarded-For, PROXY protocol).
    #[serde(default)]
    pub remote_ip_blocks: Vec<String>,
    /// Negated `remoteIpBlocks`.
    #[serde(default)]
    pub not_remote_ip_blocks: Vec<String>,
}

/// `Operation`: what the request does.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Operation {
    /// Hosts (Host header).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Negated `hosts`.
    #[serde(default)]
    pub not_hosts: Vec<String>,
    /// Destination ports.
    #[serde(default)]
    pub ports: Vec<String>,
    /// Negated `ports`.
    #[serde(default)]
    pub not_ports: Vec<String>,
    /// HTTP methods.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Negated `methods`.
    #[serde(default)]
    pub not_methods: Vec<String>,
    /// Paths (`*` forms and `{*}` / `{**}` templates).
    #[serde(default)]
    pub paths: Vec<String>,
    /// Negated `paths`.
    #[serde(default)]
    pub not_paths: Vec<String>,
}

/// `Condition`: an attribute and its accepted or rejected values.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Condition {
    /// The attribute (`request.headers[x]`, `source.ip`...).
    #[serde(default)]
    pub key: String,
    /// Values, any of which matches.
    #[serde(default)]
    pub values: Vec<String>,
    /// Values none of which may match.
    #[serde(default)]
    pub not_values: Vec<String>,
}

/// What is wrong with an AuthorizationPolicy.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// CUSTOM without rules.
    #[error("CUSTOM action without `rules` is meaningless as it will never be triggered, add an empty rule `{{}}` if you want it be triggered for every request")]
    CustomWithoutRules,
    /// CUSTOM without provider.
    #[error("`provider.name` must not be empty")]
    ProviderName,
    /// A field CUSTOM cannot use.
    #[error("{0} is currently not supported with CUSTOM action")]
    NotWithCustom(String),
    /// A provider with another action.
    #[error("`provider` must not be with non CUSTOM action, found {0}")]
    ProviderWithoutCustom(&'static str),
    /// DENY without rules.
    #[error("DENY action without `rules` is meaningless as it will never be triggered, add an empty rule `{{}}` if you want it be triggered for every request")]
    DenyWithoutRules,
    /// `from: []`.
    #[error("`from` must not be empty, found at rule {0}")]
    FromEmpty(usize),
    /// A `from` without source.
    #[error("`from.source` must not be nil, found at rule {0}")]
    SourceNil(usize),
    /// Service accounts with namespaces or principals.
    #[error("Cannot set serviceAccounts with namespaces or principals")]
    ServiceAccountsWithOthers,
    /// `source: {}`.
    #[error("`from.source` must not be empty, found at rule {0}")]
    SourceEmpty(usize),
    /// `to: []`.
    #[error("`to` must not be empty, found at rule {0}")]
    ToEmpty(usize),
    /// A `to` without operation.
    #[error("`to.operation` must not be nil, found at rule {0}")]
    OperationNil(usize),
    /// `operation: {}`.
    #[error("`to.operation` must not be empty, found at rule {0}")]
    OperationEmpty(usize),
    /// A condition without key.
    #[error("`key` must not be empty")]
    KeyEmpty,
    /// A condition without values.
    #[error("at least one of `values` or `notValues` must be set for key {0}")]
    NoValues(String),
    /// A bad condition value.
    #[error("invalid `{which}` for `key` {key}: {problem}")]
    ConditionValue {
        /// `value` or `notValue`.
        which: &'static str,
        /// The key.
        key: String,
        /// What is wrong.
        problem: Box<Problem>,
    },
    /// A map-like key without `[name]`.
    #[error("bad key ({0}): should have format a[b]")]
    MapKey(String),
    /// An attribute replaced by metadata.namespace.
    #[error("attribute {0} is replaced by the metadata.namespace")]
    ReplacedByNamespace(String),
    /// An attribute replaced by the workload selector.
    #[error("attribute {0} is replaced by the workload selector")]
    ReplacedBySelector(String),
    /// A v1alpha1 attribute.
    #[error("deprecated attribute {0}: only supported in v1alpha1")]
    DeprecatedAttribute(String),
    /// An attribute Istio does not know.
    #[error("unknown attribute: {0}")]
    UnknownAttribute(String),
    /// An empty condition value.
    #[error("empty value not allowed, found in {0}")]
    EmptyConditionValue(String),
    /// An empty value in a list.
    #[error("empty value not allowed, found in {0}")]
    EmptyValue(&'static str),
    /// Not a CIDR.
    #[error("bad CIDR range ({0})")]
    BadCidr(String),
    /// Not an IP.
    #[error("bad IP address ({0})")]
    BadIp(String),
    /// Not a port.
    #[error("bad port ({0})")]
    BadPort(String),
    /// More than 16 service accounts.
    #[error("may not have more than 16 values")]
    TooManyServiceAccounts,
    /// A wildcard service account.
    #[error("wildcard not allowed, found in {0}")]
    ServiceAccountWildcard(&'static str),
    /// A badly formed service account.
    #[error(
        "expected format 'serviceAccount' or 'namespace/serviceAccount', found {value:?} in {key}"
    )]
    ServiceAccountFormat {
        /// The value.
        value: String,
        /// The field.
        key: &'static str,
    },
    /// A service account over 320 characters.
    #[error("value cannot exceed 320 characters, found {value:?} in {key}")]
    ServiceAccountLength {
        /// The value.
        value: String,
        /// The field.
        key: &'static str,
    },
    /// An unsupported path template.
    #[error("invalid or unsupported path {path}, found in {key}. {reason}")]
    PathTemplate {
        /// The path.
        path: String,
        /// The field.
        key: &'static str,
        /// Why.
        reason: String,
    },
    /// A DENY rule with HTTP-only attributes (a warning).
    #[error("configured AuthorizationPolicy will deny all traffic to TCP ports under its scope due to the use of only HTTP attributes in a DENY rule; it is recommended to explicitly specify the port")]
    DenyHttpOnly,
}

/// Checks an AuthorizationPolicy's spec.
pub(crate) fn check(c: &mut Checker, ap: &AuthorizationPolicy) {
    let selectors = usize::from(ap.selector.is_some())
        + usize::from(ap.target_ref.is_some())
        + usize::from(!ap.target_refs.is_empty());
    if selectors > 1 {
        c.err("spec", NameProblem::SelectorAndTargetRef);
    }
    if let Some(sel) = &ap.selector {
        validate_selector_labels(c, "spec.selector.matchLabels", &sel.match_labels);
    }
    if let Some(r) = &ap.target_ref {
        validate_target_ref(c, "spec.targetRef", r);
    }
    for (i, r) in ap.target_refs.iter().enumerate() {
        validate_target_ref(c, &idx("spec.targetRefs", i), r);
    }
    let action = ap.action();
    if action == Action::Custom {
        check_custom(c, ap);
    }
    if ap.provider.is_some() && action != Action::Custom {
        c.err(
            "spec.provider",
            Problem::ProviderWithoutCustom(action.name()),
        );
    }
    if action == Action::Deny && ap.rules.is_none() {
        c.err("spec.rules", Problem::DenyWithoutRules);
    }
    for (i, rule) in ap.rules.iter().flatten().enumerate() {
        check_rule(c, &idx("spec.rules", i), i, rule, action);
    }
}

fn check_custom(c: &mut Checker, ap: &AuthorizationPolicy) {
    if ap.rules.is_none() {
        c.err("spec.rules", Problem::CustomWithoutRules);
    } else if ap.provider.as_ref().is_none_or(|p| p.name.is_empty()) {
        c.err("spec.provider.name", Problem::ProviderName);
    }
    for (i, rule) in ap.rules.iter().flatten().enumerate() {
        let rp = idx("spec.rules", i);
        for (j, from) in rule.from.iter().flatten().enumerate() {
            let Some(src) = &from.source else { continue };
            let sp = at(&idx(&at(&rp, "from"), j), "source");
            for (name, leaf, list) in [
                ("From.Namespaces", "namespaces", &src.namespaces),
                ("From.NotNamespaces", "notNamespaces", &src.not_namespaces),
                (
                    "From.ServiceAccounts",
                    "serviceAccounts",
                    &src.service_accounts,
                ),
                (
                    "From.NotServiceAccounts",
                    "notServiceAccounts",
                    &src.not_service_accounts,
                ),
                ("From.Principals", "principals", &src.principals),
                ("From.NotPrincipals", "notPrincipals", &src.not_principals),
                (
                    "From.RequestPrincipals",
                    "requestPrincipals",
                    &src.request_principals,
                ),
                (
                    "From.NotRequestPrincipals",
                    "notRequestPrincipals",
                    &src.not_request_principals,
                ),
            ] {
                if !list.is_empty() {
                    c.err(at(&sp, leaf), Problem::NotWithCustom(name.to_string()));
                }
            }
        }
        for (j, w) in rule.when.iter().enumerate() {
            let k = w.key.as_str();
            let identity = matches!(
                k,
                "source.namespace" | "source.serviceAccount" | "source.principal"
            );
            if identity || k.starts_with("request.auth.") {
                c.err(
                    at(&idx(&at(&rp, "when"), j), "key"),
                    Problem::NotWithCustom(k.to_string()),
                );
            }
        }
    }
}

fn check_rule(c: &mut Checker, path: &str, i: usize, rule: &Rule, action: Action) {
    let mut tcp_in_from = false;
    let mut tcp_in_to = false;
    let mut from_exists = false;
    let mut to_exists = false;
    if rule.from.as_ref().is_some_and(Vec::is_empty) {
        c.err(at(path, "from"), Problem::FromEmpty(i));
    }
    for (j, from) in rule.from.iter().flatten().enumerate() {
        let fp = idx(&at(path, "from"), j);
        let Some(src) = &from.source else {
            c.err(at(&fp, "source"), Problem::SourceNil(i));
            continue;
        };
        from_exists = true;
        tcp_in_from |= check_source(c, &at(&fp, "source"), i, src);
    }
    if rule.to.as_ref().is_some_and(Vec::is_empty) {
        c.err(at(path, "to"), Problem::ToEmpty(i));
    }
    for (j, to) in rule.to.iter().flatten().enumerate() {
        let tp = idx(&at(path, "to"), j);
        let Some(op) = &to.operation else {
            c.err(at(&tp, "operation"), Problem::OperationNil(i));
            continue;
        };
        to_exists = true;
        tcp_in_to |= check_operation(c, &at(&tp, "operation"), i, op);
    }
    for (j, w) in rule.when.iter().enumerate() {
        check_condition(c, &idx(&at(path, "when"), j), w);
    }
    let http_only = (from_exists && !to_exists && !tcp_in_from) || (to_exists && !tcp_in_to);
    if http_only && action == Action::Deny {
        c.warn(path, Problem::DenyHttpOnly);
    }
}

/// Checks a source; returns whether it uses TCP-level attributes.
fn check_source(c: &mut Checker, path: &str, i: usize, s: &Source) -> bool {
    let identity =
        s.principals.len() + s.not_principals.len() + s.namespaces.len() + s.not_namespaces.len();
    let accounts = s.service_accounts.len() + s.not_service_accounts.len();
    if identity > 0 && accounts > 0 {
        c.err(path, Problem::ServiceAccountsWithOthers);
    }
    let lists: [(&'static str, &'static str, &Vec<String>); 14] = [
        ("Principals", "principals", &s.principals),
        (
            "RequestPrincipals",
            "requestPrincipals",
            &s.request_principals,
        ),
        ("Namespaces", "namespaces", &s.namespaces),
        ("ServiceAccounts", "serviceAccounts", &s.service_accounts),
        ("TrustDomains", "trustDomains", &s.trust_domains),
        ("IpBlocks", "ipBlocks", &s.ip_blocks),
        ("RemoteIpBlocks", "remoteIpBlocks", &s.remote_ip_blocks),
        ("NotPrincipals", "notPrincipals", &s.not_principals),
        (
            "NotRequestPrincipals",
            "notRequestPrincipals",
            &s.not_request_principals,
        ),
        ("NotNamespaces", "notNamespaces", &s.not_namespaces),
        (
            "NotServiceAccounts",
            "notServiceAccounts",
            &s.not_service_accounts,
        ),
        ("NotTrustDomains", "notTrustDomains", &s.not_trust_domains),
        ("NotIpBlocks", "notIpBlocks", &s.not_ip_blocks),
        (
            "NotRemoteIpBlocks",
            "notRemoteIpBlocks",
            &s.not_remote_ip_blocks,
        ),
    ];
    if lists.iter().all(|(_, _, l)| l.is_empty()) {
        c.err(path, Problem::SourceEmpty(i));
    }
    for (name, leaf, list) in lists {
        let field = at(path, leaf);
        if leaf.ends_with("erviceAccounts") {
            c.check(field, check_service_accounts(name, list));
            continue;
        }
        if leaf.ends_with("pBlocks") {
            for e in validate_ips(list) {
                c.err(field.clone(), e);
            }
        }
        c.check(field, check_empty_values(name, list));
    }
    // Everything but request principals can be enforced on TCP connections.
    identity > 0
        || accounts > 0
        || !s.ip_blocks.is_empty()
        || !s.not_ip_blocks.is_empty()
        || !s.remote_ip_blocks.is_empty()
        || !s.not_remote_ip_blocks.is_empty()
}

/// Checks an operation; returns whether it uses ports (TCP-level).
fn check_operation(c: &mut Checker, path: &str, i: usize, op: &Operation) -> bool {
    let lists: [(&'static str, &'static str, &Vec<String>); 8] = [
        ("Ports", "ports", &op.ports),
        ("Methods", "methods", &op.methods),
        ("Paths", "paths", &op.paths),
        ("Hosts", "hosts", &op.hosts),
        ("NotPorts", "notPorts", &op.not_ports),
        ("NotMethods", "notMethods", &op.not_methods),
        ("NotPaths", "notPaths", &op.not_paths),
        ("NotHosts", "notHosts", &op.not_hosts),
    ];
    if lists.iter().all(|(_, _, l)| l.is_empty()) {
        c.err(path, Problem::OperationEmpty(i));
    }
    for (name, leaf, list) in lists {
        let field = at(path, leaf);
        if leaf.ends_with("orts") {
            for e in validate_ports(list) {
                c.err(field.clone(), e);
            }
        }
        c.check(field.clone(), check_empty_values(name, list));
        if leaf.ends_with("aths") {
            c.check(field, check_path_templates(name, list));
        }
    }
    !op.ports.is_empty() || !op.not_ports.is_empty()
}

fn check_condition(c: &mut Checker, path: &str, w: &Condition) {
    if w.key.is_empty() {
        c.err(at(path, "key"), Problem::KeyEmpty);
        return;
    }
    if w.values.is_empty() && w.not_values.is_empty() {
        c.err(path, Problem::NoValues(w.key.clone()));
        return;
    }
    for (which, leaf, list) in [
        ("value", "values", &w.values),
        ("notValue", "notValues", &w.not_values),
    ] {
        if let Err(problem) = validate_attribute(&w.key, list) {
            c.err(
                at(path, leaf),
                Problem::ConditionValue {
                    which,
                    key: w.key.clone(),
                    problem: Box::new(problem),
                },
            );
        }
    }
}
