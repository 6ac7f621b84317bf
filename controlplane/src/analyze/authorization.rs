//! AuthorizationPolicies this mesh cannot enforce as written: CUSTOM actions (no external
//! authorizer exists here: the policy's requests are denied, MESH0004) and `targetRef`s
//! (they attach to gateways and waypoints, never to sidecars: the policy applies to no
//! workload, MESH0005).

use super::index::Index;
use super::{Message, CUSTOM_ACTION_UNSUPPORTED, TARGET_REF_NOT_FOR_SIDECARS};
use crate::config::istio::authorization_policy::Action;

/// Runs the checks.
pub(super) fn check(idx: &Index<'_>, out: &mut Vec<Message>) {
    for e in &idx.authorization_policies {
        let spec = &e.obj.spec;
        if spec.action() == Action::Custom {
            let provider = spec.provider.as_ref().map_or("", |p| p.name.as_str());
            out.push(e.message(
                "AuthorizationPolicy",
                CUSTOM_ACTION_UNSUPPORTED,
                format!(
                    "action CUSTOM needs the external authorizer {provider:?}, and this mesh has \
                     no extension providers: requests matching the policy's rules are denied \
                     (Istio's behavior for an unavailable provider)"
                ),
            ));
        }
        if spec.target_ref.is_some() || !spec.target_refs.is_empty() {
            out.push(
                e.message(
                    "AuthorizationPolicy",
                    TARGET_REF_NOT_FOR_SIDECARS,
                    "targetRef attaches a policy to gateways and waypoints, not to sidecars: this \
                 policy applies to no workload of this mesh (use a selector)"
                        .to_string(),
                ),
            );
        }
    }
}
