//! Which Bookinfo networking samples the end-to-end traffic tests prove, and which they skip
//! and why.

/// Samples that only configure an ingress gateway (a `Gateway` and VirtualServices bound to
/// it, not to `mesh`), which a sidecar never applies, and the egress sample, whose traffic goes
/// to www.googleapis.com on the internet (tests send traffic only to the namespaces they
/// create; its translation is covered by `xds_contract` and the control plane's golden files).
pub const NOT_SIDECAR: &[&str] = &[
    "bookinfo-gateway.yaml",
    "certmanager-gateway.yaml",
    "egress-rule-google-apis.yaml",
];

/// Every other sample, with the test proving it.
pub const TESTED: &[(&str, &str)] = &[
    (
        "destination-rule-all.yaml",
        "every test without a DestinationRule of its own",
    ),
    (
        "destination-rule-all-mtls.yaml",
        "all_mtls_with_all_v1_routes_every_service_to_v1",
    ),
    (
        "destination-rule-reviews.yaml",
        "destination_rule_reviews_spreads_reviews_over_every_version",
    ),
    (
        "fault-injection-details-v1.yaml",
        "fault_injection_details_v1_aborts_every_call_with_555",
    ),
    (
        "virtual-service-all-v1.yaml",
        "all_mtls_with_all_v1_routes_every_service_to_v1",
    ),
    (
        "virtual-service-details-v2.yaml",
        "details_v2_routes_every_call_to_v2",
    ),
    (
        "virtual-service-ratings-db.yaml",
        "ratings_db_routes_reviews_to_v3_and_ratings_to_v2",
    ),
    (
        "virtual-service-ratings-mysql-vm.yaml",
        "ratings_mysql_vm_routes_ratings_to_v2_mysql_vm",
    ),
    (
        "virtual-service-ratings-mysql.yaml",
        "ratings_mysql_routes_ratings_to_v2_mysql",
    ),
    (
        "virtual-service-ratings-test-abort.yaml",
        "ratings_test_abort_fails_jason_with_500",
    ),
    (
        "virtual-service-ratings-test-delay.yaml",
        "ratings_test_delay_delays_jason_by_7s",
    ),
    (
        "virtual-service-reviews-50-v3.yaml",
        "reviews_50_v3_splits_v1_v3_half_and_half",
    ),
    (
        "virtual-service-reviews-80-20.yaml",
        "reviews_80_20_splits_v1_v2_eighty_twenty",
    ),
    (
        "virtual-service-reviews-90-10.yaml",
        "reviews_90_10_splits_v1_v2_ninety_ten",
    ),
    (
        "virtual-service-reviews-jason-v2-v3.yaml",
        "reviews_jason_v2_v3_routes_jason_to_v2_others_to_v3",
    ),
    (
        "virtual-service-reviews-test-v2.yaml",
        "reviews_test_v2_routes_jason_to_v2_others_to_v1",
    ),
    (
        "virtual-service-reviews-v2-v3.yaml",
        "reviews_v2_v3_splits_v2_v3_half_and_half",
    ),
    (
        "virtual-service-reviews-v3.yaml",
        "reviews_v3_routes_every_call_to_v3",
    ),
];
