use std::time::Duration;

use clap::Parser;

use super::args::{parse_labels, RunArgs};
use super::server::server_conf;
use super::Error;

#[derive(Parser, Debug)]
struct Cli {
    #[command(flatten)]
    run: RunArgs,
}

const BASE: &[&str] = &[
    "mesh-proxy",
    "--xds-address",
    "127.0.0.1:15010",
    "--pod-name",
    "p",
    "--namespace",
    "ns",
    "--ip",
    "10.0.0.1",
];

/// Parse the base flags overridden by `extra` (flag-value pairs).
fn parse(extra: &[&str]) -> Result<RunArgs, clap::Error> {
    let mut args: Vec<&str> = vec![BASE[0]];
    for pair in BASE[1..].chunks(2) {
        if !extra.contains(&pair[0]) {
            args.extend_from_slice(pair);
        }
    }
    args.extend_from_slice(extra);
    Cli::try_parse_from(args).map(|c| c.run)
}

#[test]
fn defaults_match_the_design() {
    let s = parse(&[]).unwrap().validate().unwrap();
    let a = &s.args;
    assert_eq!(a.outbound_addr.to_string(), "0.0.0.0:15001");
    assert_eq!(a.inbound_addr.to_string(), "0.0.0.0:15006");
    assert_eq!(a.admin_addr.to_string(), "127.0.0.1:15000");
    assert_eq!(a.readiness_addr.to_string(), "0.0.0.0:15021");
    assert_eq!(a.protocol_detection_timeout, Duration::from_millis(100));
    assert_eq!(a.cluster_domain, "cluster.local");
    assert_eq!(a.service_account, "default");
    assert!(a.labels.0.is_empty());
    assert_eq!(s.threads, 1);
    // 5 s drain: 4 s grace, then 1 s for the runtimes.
    assert_eq!((s.grace_period_secs, s.shutdown_timeout_secs), (4, 1));
    let conf = server_conf(&s);
    assert!(!conf.work_stealing);
    assert_eq!(conf.fast_timeout_to_tokio_threshold_seconds, Some(0));
    assert!(conf.upstream_keepalive_pool_size >= 1024);
}

#[test]
fn labels_parse_and_reject_bad_input() {
    let l = parse_labels("app=reviews, version=v2").unwrap();
    assert_eq!(l.0.get("app").map(String::as_str), Some("reviews"));
    assert_eq!(l.0.get("version").map(String::as_str), Some("v2"));
    assert!(parse_labels("").unwrap().0.is_empty());
    assert!(parse_labels("app").is_err());
    assert!(parse_labels("=x").is_err());
    assert!(parse_labels("a=1,a=2").is_err());
    assert!(parse_labels("a b=1").is_err());
    let err = parse(&["--labels", "novalue"]).unwrap_err().to_string();
    assert!(err.contains("--labels"), "{err}");
}

#[test]
fn bad_values_are_clear_errors() {
    let err = parse(&["--protocol-detection-timeout", "soon"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("--protocol-detection-timeout"), "{err}");
    let err = parse(&["--ip", "not-an-ip"]).unwrap_err().to_string();
    assert!(err.contains("--ip"), "{err}");

    let invalid = |extra: &[&str]| match parse(extra).unwrap().validate() {
        Err(Error::InvalidFlag { flag, .. }) => flag,
        other => panic!("expected an invalid flag, got {other:?}"),
    };
    assert_eq!(
        invalid(&["--protocol-detection-timeout", "0s"]),
        "--protocol-detection-timeout"
    );
    assert_eq!(invalid(&["--concurrency", "100000"]), "--concurrency");
    assert_eq!(
        invalid(&["--inbound-addr", "0.0.0.0:15001"]),
        "--inbound-addr"
    );
    assert_eq!(invalid(&["--admin-addr", "127.0.0.1:0"]), "--admin-addr");
    assert_eq!(invalid(&["--pod-name", " "]), "--pod-name");
    assert_eq!(invalid(&["--drain-duration", "2h"]), "--drain-duration");
}

#[test]
fn drain_duration_rounds_up_to_whole_seconds() {
    let s = parse(&["--drain-duration", "1500ms"])
        .unwrap()
        .validate()
        .unwrap();
    assert_eq!((s.grace_period_secs, s.shutdown_timeout_secs), (1, 1));
    let s = parse(&["--drain-duration", "0s"])
        .unwrap()
        .validate()
        .unwrap();
    assert_eq!((s.grace_period_secs, s.shutdown_timeout_secs), (0, 0));
    let s = parse(&["--concurrency", "0"]).unwrap().validate().unwrap();
    assert!(s.threads >= 1);
}

#[test]
fn identity_flags() {
    let s = parse(&[]).unwrap().validate().unwrap();
    assert!(s.identity.is_none(), "no token file, no identity");
    let s = parse(&[
        "--token-file",
        "/var/run/token",
        "--service-account",
        "reviews",
    ])
    .unwrap()
    .validate()
    .unwrap();
    let id = s.identity.unwrap();
    assert_eq!(id.spiffe_id, "spiffe://cluster.local/ns/ns/sa/reviews");
    assert_eq!(
        id.ca.address,
        crate::identity::client::CaAddress::Plain("127.0.0.1:15010".into())
    );
    assert_eq!(id.ca.tls_address, "127.0.0.1:15012");
    assert_eq!(id.ca.ttl, Duration::from_secs(24 * 3600));
    assert_eq!(id.forced_renewal, None);
    let s = parse(&[
        "--token-file",
        "t",
        "--ca-address",
        "http://10.0.0.1:15010",
        "--ca-tls-address",
        "10.0.0.1:25012",
        "--cert-ttl",
        "2m",
        "--cert-renew-interval",
        "3s",
    ])
    .unwrap()
    .validate()
    .unwrap();
    let id = s.identity.unwrap();
    assert_eq!(id.ca.tls_address, "10.0.0.1:25012");
    assert_eq!(id.ca.ttl, Duration::from_secs(120));
    assert_eq!(id.forced_renewal, Some(Duration::from_secs(3)));

    let invalid = |extra: &[&str]| match parse(extra).unwrap().validate() {
        Err(Error::InvalidFlag { flag, .. }) => flag,
        other => panic!("expected an invalid flag, got {other:?}"),
    };
    assert_eq!(
        invalid(&["--token-file", "t", "--cert-ttl", "10s"]),
        "--cert-ttl"
    );
    assert_eq!(
        invalid(&["--token-file", "t", "--ca-address", "https://istiod:15012"]),
        "--ca-root-cert"
    );
    assert_eq!(
        invalid(&["--token-file", "t", "--ca-address", "grpc://x:1"]),
        "--ca-address"
    );
    assert_eq!(
        invalid(&[
            "--token-file",
            "t",
            "--ca-root-cert",
            "/nonexistent/root.pem"
        ]),
        "--ca-root-cert"
    );
}

#[test]
fn telemetry_flags() {
    let s = parse(&[]).unwrap().validate().unwrap();
    let a = &s.args;
    assert_eq!(a.stats_addr.to_string(), "0.0.0.0:15090");
    assert_eq!(a.status_addr.to_string(), "0.0.0.0:15020");
    assert!(a.access_log);
    assert_eq!(a.access_log_format, crate::accesslog::Format::Json);
    assert_eq!(a.tracing_sampling, 1.0);
    assert!(a.tracing_otlp_endpoint.is_none());
    let off = parse(&["--access-log", "off", "--access-log-format", "text"]).unwrap();
    assert!(!off.access_log);
    assert_eq!(off.access_log_format, crate::accesslog::Format::Text);
    assert!(parse(&["--access-log", "maybe"]).is_err());
    assert!(parse(&["--access-log-format", "xml"]).is_err());
    for (flags, flag) in [
        (&["--tracing-sampling", "100.5"][..], "--tracing-sampling"),
        (
            &["--tracing-otlp-endpoint", "collector:4317"][..],
            "--tracing-otlp-endpoint",
        ),
        (&["--stats-addr", "0.0.0.0:15021"][..], "--stats-addr"),
    ] {
        match parse(flags).unwrap().validate() {
            Err(Error::InvalidFlag { flag: f, .. }) => assert_eq!(f, flag),
            other => panic!("{flags:?}: {other:?}"),
        }
    }
    assert!(parse(&["--tracing-otlp-endpoint", "http://10.0.0.9:4317"])
        .unwrap()
        .validate()
        .is_ok());
}
