//! The RBAC filters of one workload, from the AuthorizationPolicies that select it, as
//! istiod's `authz/builder` builds them.
//!
//! Filters, in order: CUSTOM (see below), AUDIT (`LOG`), DENY, ALLOW; one filter per action
//! that has policies. A policy's rules become policies named `ns[NS]-policy[NAME]-rule[I]`;
//! a policy without rules becomes one that never matches (an ALLOW policy without rules thus
//! denies everything: `spec: {}`). Policies annotated `istio.io/dry-run: true` go to the
//! filter's shadow rules (evaluated and logged, not enforced); a filter whose policies are all
//! dry-run has no enforced rules at all.
//!
//! CUSTOM delegates to an external authorizer (a mesh config extension provider). This mesh
//! has no extension providers, so every CUSTOM policy is in Istio's "bad provider" case and
//! fails closed the way istiod does: a DENY filter per provider (sorted by name) whose
//! policies are the CUSTOM rules, named `istio-ext-authz-PROVIDER-ns[NS]-policy[NAME]-rule[I]
//! -deny-due-to-bad-CUSTOM-action`: what the authorizer would have been asked about is
//! denied. (The analyzer reports such a policy as an error, `MESH0004`.)

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::listener::v3::{filter, Filter};
use envoy_types::pb::envoy::config::rbac::v3::{rbac::Action, Policy, Rbac};
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as HttpRbac;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_filter, HttpFilter,
};
use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac as NetworkRbac;
use envoy_types::util::pack_any;

use super::rule::{never, RuleModel};
use super::trust_domain::Bundle;
use crate::config::istio::authorization_policy::AuthorizationPolicy;
use crate::config::istio::IstioConfig;

/// The HTTP RBAC filter's name.
pub const HTTP_RBAC: &str = "envoy.filters.http.rbac";
/// The network RBAC filter's name.
pub const NETWORK_RBAC: &str = "envoy.filters.network.rbac";
/// The network RBAC filter's statistics prefix.
pub const TCP_STAT_PREFIX: &str = "tcp.";
/// Shadow statistics prefix of ALLOW rules.
pub const DRY_RUN_ALLOW_PREFIX: &str = "istio_dry_run_allow_";
/// Shadow statistics prefix of DENY rules.
pub const DRY_RUN_DENY_PREFIX: &str = "istio_dry_run_deny_";
/// The annotation that makes a policy a dry run.
pub const DRY_RUN_ANNOTATION: &str = "istio.io/dry-run";

/// A policy object.
pub type PolicyObject = IstioConfig<AuthorizationPolicy>;

/// The policies that apply to one workload, by action, in order.
#[derive(Clone, Debug, Default)]
pub struct Selected<'a> {
    /// CUSTOM policies.
    pub custom: Vec<&'a PolicyObject>,
    /// AUDIT policies.
    pub audit: Vec<&'a PolicyObject>,
    /// DENY policies.
    pub deny: Vec<&'a PolicyObject>,
    /// ALLOW policies.
    pub allow: Vec<&'a PolicyObject>,
}

impl Selected<'_> {
    /// Whether no policy applies.
    pub fn is_empty(&self) -> bool {
        self.custom.is_empty()
            && self.audit.is_empty()
            && self.deny.is_empty()
            && self.allow.is_empty()
    }
}

/// Enforced and shadow rules of one filter.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Built {
    /// Enforced rules (`None`: nothing enforced).
    pub rules: Option<Rbac>,
    /// Dry-run rules.
    pub shadow: Option<Rbac>,
    /// The fail-closed rules of CUSTOM policies (no shadow statistics prefix).
    pub custom: bool,
}

/// Whether a policy carries `istio.io/dry-run: true` (Go's boolean spellings).
pub fn is_dry_run(p: &PolicyObject) -> bool {
    p.annotations
        .get(DRY_RUN_ANNOTATION)
        .is_some_and(|v| matches!(v.as_str(), "1" | "t" | "T" | "TRUE" | "true" | "True"))
}

fn policy_name(prefix: &str, p: &PolicyObject, rule: usize) -> String {
    format!(
        "{prefix}ns[{}]-policy[{}]-rule[{rule}]",
        p.namespace, p.name
    )
}

/// The policies of each rule of `p` (for `action`; `strict` drops rules that cannot apply).
fn policies_of(
    p: &PolicyObject,
    prefix: &str,
    strict: bool,
    for_tcp: bool,
    bundle: &Bundle,
) -> Vec<(String, Policy)> {
    let rules = p.spec.rules.as_deref().unwrap_or_default();
    if rules.is_empty() {
        return vec![(policy_name(prefix, p, 0), never())];
    }
    let mut out = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let Ok(mut model) = RuleModel::new(rule) else {
            continue;
        };
        model.migrate_trust_domain(bundle);
        if let Ok(policy) = model.generate(for_tcp, strict, &p.namespace) {
            out.push((policy_name(prefix, p, i), policy));
        }
    }
    out
}

/// The rules of one action's policies; `None` when there is none.
pub fn build(
    policies: &[&PolicyObject],
    action: Action,
    for_tcp: bool,
    bundle: &Bundle,
) -> Option<Built> {
    if policies.is_empty() {
        return None;
    }
    let empty = || Rbac {
        action: action as i32,
        ..Default::default()
    };
    let (mut rules, mut shadow) = (None::<Rbac>, None::<Rbac>);
    let strict = action == Action::Allow;
    for p in policies {
        let target = if is_dry_run(p) {
            &mut shadow
        } else {
            &mut rules
        };
        let target = target.get_or_insert_with(empty);
        target
            .policies
            .extend(policies_of(p, "", strict, for_tcp, bundle));
    }
    Some(Built {
        rules,
        shadow,
        custom: false,
    })
}

/// Istio's shadow statistics prefix for shadow rules (`None` counts as ALLOW, as in Go);
/// none for CUSTOM's fail-closed filters.
fn shadow_prefix(built: &Built) -> String {
    if built.custom {
        return String::new();
    }
    match built
        .shadow
        .as_ref()
        .map_or(Ok(Action::Allow), |r| Action::try_from(r.action))
    {
        Ok(Action::Allow) => DRY_RUN_ALLOW_PREFIX.to_string(),
        Ok(Action::Deny) => DRY_RUN_DENY_PREFIX.to_string(),
        _ => String::new(),
    }
}

/// `envoy.filters.http.rbac` with `built`.
pub fn http_filter(built: Built) -> HttpFilter {
    let config = HttpRbac {
        shadow_rules_stat_prefix: shadow_prefix(&built),
        rules: built.rules,
        shadow_rules: built.shadow,
        ..Default::default()
    };
    HttpFilter {
        name: HTTP_RBAC.to_string(),
        config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(config))),
        ..Default::default()
    }
}

/// `envoy.filters.network.rbac` with `built`.
pub fn network_filter(built: Built) -> Filter {
    let config = NetworkRbac {
        shadow_rules_stat_prefix: shadow_prefix(&built),
        rules: built.rules,
        shadow_rules: built.shadow,
        stat_prefix: TCP_STAT_PREFIX.to_string(),
        ..Default::default()
    };
    Filter {
        name: NETWORK_RBAC.to_string(),
        config_type: Some(filter::ConfigType::TypedConfig(pack_any(config))),
    }
}

/// The fail-closed rules of CUSTOM policies, one per provider (sorted by name).
pub fn build_custom(policies: &[&PolicyObject], for_tcp: bool, bundle: &Bundle) -> Vec<Built> {
    let mut by_provider: BTreeMap<String, Rbac> = BTreeMap::new();
    for p in policies {
        let provider = p.spec.provider.as_ref().map_or("", |p| p.name.as_str());
        let prefix = format!("istio-ext-authz-{provider}-");
        let rbac = by_provider
            .entry(provider.to_string())
            .or_insert_with(|| Rbac {
                action: Action::Deny as i32,
                ..Default::default()
            });
        for (name, policy) in policies_of(p, &prefix, false, for_tcp, bundle) {
            rbac.policies
                .insert(format!("{name}-deny-due-to-bad-CUSTOM-action"), policy);
        }
    }
    by_provider
        .into_values()
        .map(|rules| Built {
            rules: Some(rules),
            shadow: None,
            custom: true,
        })
        .collect()
}

/// Every RBAC filter's rules for a chain, in order: CUSTOM, AUDIT, DENY, ALLOW.
pub fn build_all(selected: &Selected<'_>, for_tcp: bool, bundle: &Bundle) -> Vec<Built> {
    let mut out = build_custom(&selected.custom, for_tcp, bundle);
    for (policies, action) in [
        (&selected.audit, Action::Log),
        (&selected.deny, Action::Deny),
        (&selected.allow, Action::Allow),
    ] {
        out.extend(build(policies, action, for_tcp, bundle));
    }
    out
}
