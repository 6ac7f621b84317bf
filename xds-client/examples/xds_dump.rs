//! Connect to a control plane as a sidecar would, wait until the config is synced (at most
//! 10 s), and print the snapshot and the client status as JSON.
//!
//! `cargo run -p xds-client --example xds_dump -- ADDRESS [POD NAMESPACE IP [k=v,...]]`
//! (defaults: `dump-0 default 10.1.0.9`, no labels). Exits non-zero unless synced without NACK.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use xds_client::{ClientOptions, NodeInfo, XdsClient};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(address) = args.first().cloned() else {
        eprintln!("usage: xds_dump ADDRESS [POD NAMESPACE IP [k=v,...]]");
        return ExitCode::from(2);
    };
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.into());
    let Ok(ip) = arg(3, "10.1.0.9").parse() else {
        eprintln!("invalid IP address {:?}", arg(3, ""));
        return ExitCode::from(2);
    };
    let labels: BTreeMap<String, String> = arg(4, "")
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let (client, handle) = XdsClient::new(ClientOptions {
        address,
        node: NodeInfo {
            pod_name: arg(1, "dump-0"),
            namespace: arg(2, "default"),
            ip,
            labels,
            service_account: "default".into(),
            cluster_domain: "cluster.local".into(),
        },
        initial_backoff: Duration::from_millis(200),
        max_backoff: Duration::from_secs(2),
    });
    tokio::spawn(client.run());
    let mut config = handle.subscribe();
    let done = tokio::time::timeout(Duration::from_secs(10), config.wait_for(|c| c.synced)).await;
    let snapshot = handle.current();
    let status = handle.status();
    let out = serde_json::json!({ "status": status, "config": &*snapshot });
    println!(
        "{}",
        serde_json::to_string_pretty(&out).expect("the model serializes")
    );
    if done.is_ok() && snapshot.synced && status.nacks == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
