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
