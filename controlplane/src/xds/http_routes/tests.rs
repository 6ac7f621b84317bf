use super::policy::{self, split_retry_on};
use crate::config::istio::types::Percent;
use crate::config::istio::virtual_service::{
    FaultAbort, FaultDelay, HttpFaultInjection, HttpRetry,
};
use crate::config::istio::Duration;

#[test]
fn retry_on_splits_status_codes() {
    assert_eq!(
        split_retry_on("5xx, 503,gateway-error,999,retriable-4xx"),
        ("5xx,gateway-error,999,retriable-4xx".to_string(), vec![503])
    );
    let p = policy::retry_policy(
        Some(&HttpRetry {
            attempts: 3,
            retry_on: "connect-failure,503".into(),
            per_try_timeout: Some(Duration::from_millis(2000)),
            ..Default::default()
        }),
        false,
    )
    .unwrap();
    assert_eq!(p.retry_on, "connect-failure,retriable-status-codes");
    assert_eq!(p.retriable_status_codes, [503]);
    assert_eq!(p.num_retries.unwrap().value, 3);
    assert_eq!(p.per_try_timeout.unwrap().seconds, 2);
    assert_eq!(p.host_selection_retry_max_attempts, 5);
    assert_eq!(p.retry_host_predicate.len(), 1);
}

#[test]
fn default_and_disabled_retries() {
    let d = policy::retry_policy(None, false).unwrap();
    assert_eq!(d.retry_on, policy::DEFAULT_RETRY_ON);
    assert_eq!(d.num_retries.unwrap().value, 2);
    assert_eq!(d.retriable_status_codes, [503]);
    assert!(policy::retry_policy(None, true)
        .unwrap()
        .retry_host_predicate
        .is_empty());
    let off = HttpRetry {
        attempts: 0,
        ..Default::default()
    };
    assert!(policy::retry_policy(Some(&off), false).is_none());
}

#[test]
fn fault_percentages_are_millionths() {
    let f = policy::fault(&HttpFaultInjection {
        delay: Some(FaultDelay {
            fixed_delay: Some(Duration::from_millis(7000)),
            percentage: Some(Percent { value: 12.5 }),
            ..Default::default()
        }),
        abort: Some(FaultAbort {
            grpc_status: Some("UNAVAILABLE".into()),
            percentage: Some(Percent { value: 100.0 }),
            ..Default::default()
        }),
    })
    .unwrap();
    let delay = f.delay.unwrap().percentage.unwrap();
    assert_eq!((delay.numerator, delay.denominator), (125_000, 2));
    let abort = f.abort.unwrap();
    assert_eq!(abort.percentage.unwrap().numerator, 1_000_000);
    assert!(matches!(
        abort.error_type,
        Some(envoy_types::pb::envoy::extensions::filters::http::fault::v3::fault_abort::ErrorType::GrpcStatus(14))
    ));
}

mod vhosts {
    use std::path::Path;

    use envoy_types::pb::envoy::config::route::v3::{
        route::Action, route_action::ClusterSpecifier,
    };

    use crate::config::{parse_str, ConfigSnapshot, StoredObject};
    use crate::registry::{MeshSnapshot, ProxyInfo};
    use crate::xds::routes::outbound_route;

    const SERVICES: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: reviews, namespace: default}\nspec:\n  clusterIP: 10.96.0.5\n  selector: {app: reviews}\n  ports: [{name: http, port: 9080}]\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews, namespace: default}\nspec: {host: reviews, subsets: [{name: a, labels: {v: a}}, {name: b, labels: {v: b}}, {name: c, labels: {v: c}}]}\n";

    fn vs(name: &str, ns: &str, subset: &str, extra: &str) -> String {
        format!(
            "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  hosts: [reviews.default.svc.cluster.local]\n{extra}  http:\n  - route: [{{destination: {{host: reviews.default.svc.cluster.local, subset: {subset}}}}}]\n"
        )
    }

    fn clusters(yaml: &str, proxy_ns: &str, labels: &[(&str, &str)]) -> Vec<String> {
        let parsed = parse_str(Path::new("t.yaml"), yaml);
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        let mut snap = ConfigSnapshot::default();
        for o in parsed.objects {
            let object = o;
            snap.objects.insert(
                object.key(),
                StoredObject {
                    object,
                    file: "t.yaml".into(),
                    kept: false,
                },
            );
        }
        let proxy = ProxyInfo {
            namespace: Some(proxy_ns.to_string()),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        };
        let mesh = MeshSnapshot::build(&std::sync::Arc::new(snap), [&proxy], "cluster.local");
        let rc = outbound_route(&mesh, &proxy, 9080);
        let vh = rc
            .virtual_hosts
            .iter()
            .find(|v| v.name.starts_with("reviews"))
            .unwrap();
        vh.routes
            .iter()
            .map(|r| match &r.action {
                Some(Action::Route(a)) => match &a.cluster_specifier {
                    Some(ClusterSpecifier::Cluster(c)) => c.clone(),
                    other => format!("{other:?}"),
                },
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn the_first_virtual_service_of_a_host_wins() {
        let yaml = format!(
            "{SERVICES}{}{}",
            vs("zeta", "default", "a", ""),
            vs("alpha", "default", "b", "")
        );
        assert_eq!(
            clusters(&yaml, "default", &[]),
            ["outbound|9080|b|reviews.default.svc.cluster.local"]
        );
    }

    #[test]
    fn a_virtual_service_private_to_the_proxys_namespace_comes_first() {
        let yaml = format!(
            "{SERVICES}{}{}",
            vs("alpha", "default", "a", ""),
            vs("zeta", "shop", "c", "  exportTo: ['.']\n")
        );
        assert_eq!(
            clusters(&yaml, "shop", &[]),
            ["outbound|9080|c|reviews.default.svc.cluster.local"]
        );
        assert_eq!(
            clusters(&yaml, "default", &[]),
            ["outbound|9080|a|reviews.default.svc.cluster.local"]
        );
    }

    #[test]
    fn rules_for_other_sources_leave_the_default_route() {
        let yaml = format!(
            "{SERVICES}---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: r, namespace: default}}\nspec:\n  hosts: [reviews]\n  http:\n  - match: [{{sourceLabels: {{app: front}}}}]\n    route: [{{destination: {{host: reviews, subset: a}}}}]\n"
        );
        assert_eq!(
            clusters(&yaml, "default", &[("app", "front")]),
            ["outbound|9080|a|reviews.default.svc.cluster.local"]
        );
        assert_eq!(
            clusters(&yaml, "default", &[("app", "other")]),
            ["outbound|9080||reviews.default.svc.cluster.local"]
        );
    }
}
