//! The `meshctl proxy-config` case of the end-to-end telemetry test (`e2e_telemetry`): the
//! tables and JSON it renders from each sidecar's admin port.

use anyhow::{ensure, Context, Result};
use mesh_tests::harness::{bin, Pod};
use serde_json::Value as Json;

use super::common::{self, HTTP_PORT};
use super::REVIEWS;

/// `meshctl proxy-config KIND POD ARGS` in `pod`'s network (the admin port is on its
/// loopback).
fn meshctl(pod: &Pod, args: &[&str]) -> Result<mesh_tests::harness::ExecOutput> {
    let mut argv = vec!["proxy-config"];
    argv.extend_from_slice(args);
    Ok(pod.command([bin("meshctl")]).args(argv).exec()?)
}

/// The whitespace-separated cells of the table row of `out` that starts with `first`.
fn row(out: &str, first: &str) -> Result<Vec<String>> {
    out.lines()
        .find(|l| l.split_whitespace().next() == Some(first))
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .with_context(|| format!("no row {first} in:\n{out}"))
}

pub fn check_proxy_config(client: &Pod, server: &Pod) -> Result<()> {
    let out = meshctl(client, &["clusters", "client"])?.ok()?;
    ensure!(
        out.lines()
            .next()
            .is_some_and(|h| h.starts_with("SERVICE FQDN")),
        "{out}"
    );
    let reviews = out
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|c| c.first() == Some(&REVIEWS) && c.get(1) == Some(&"9080"))
        .with_context(|| format!("no reviews:9080 cluster:\n{out}"))?;
    ensure!(reviews[2..] == ["-", "outbound", "EDS"], "{reviews:?}");
    let eps = meshctl(client, &["endpoints", "client.default"])?.ok()?;
    let ep = row(&eps, &format!("{}:{HTTP_PORT}", server.ip()))?;
    ensure!(ep[1] == "HEALTHY", "{ep:?}");
    ensure!(
        eps.contains(&format!("outbound|{HTTP_PORT}||{REVIEWS}")),
        "{eps}"
    );
    let json: Json =
        serde_json::from_str(&meshctl(client, &["endpoints", "client", "-o", "json"])?.ok()?)?;
    let cla = json
        .as_array()
        .and_then(|a| {
            a.iter().find(|c| {
                c["endpoint_config"]["cluster_name"] == format!("outbound|{HTTP_PORT}||{REVIEWS}")
            })
        })
        .with_context(|| format!("-o json: {json}"))?;
    ensure!(
        cla["endpoint_config"]["endpoints"][0]["address"] == format!("{}:{HTTP_PORT}", server.ip()),
        "{cla}"
    );
    let routes = meshctl(client, &["routes", "client"])?.ok()?;
    ensure!(
        routes.contains(&format!("{REVIEWS}:{HTTP_PORT}")),
        "{routes}"
    );
    let listeners = meshctl(server, &["listeners", "reviews-v1"])?.ok()?;
    ensure!(
        listeners.contains("virtualInbound") && listeners.contains("virtualOutbound"),
        "{listeners}"
    );
    let secret = meshctl(server, &["secret", "reviews-v1"])?.ok()?;
    let serial = common::config_dump(server)?["identity"]["certificate"]["serial"]
        .as_str()
        .context("no serial")?
        .to_owned();
    let default = row(&secret, "default")?;
    ensure!(default[1..4] == ["Cert", "Chain", "ACTIVE"], "{secret}");
    ensure!(
        default[4].eq_ignore_ascii_case(&serial),
        "serial {serial}: {secret}"
    );
    ensure!(
        row(&secret, "ROOTCA").is_ok() && !secret.contains("PRIVATE"),
        "{secret}"
    );
    // `-o json`: the raw dump items of each kind, each with the version it arrived in.
    for (pod, name, kind, needle) in [
        (
            client,
            "client",
            "clusters",
            format!("outbound|{HTTP_PORT}||{REVIEWS}"),
        ),
        (client, "client", "routes", format!("{REVIEWS}:{HTTP_PORT}")),
        (
            server,
            "reviews-v1",
            "listeners",
            "virtualInbound".to_string(),
        ),
        (server, "reviews-v1", "secret", serial.to_ascii_lowercase()),
    ] {
        let text = meshctl(pod, &[kind, name, "-o", "json"])?.ok()?;
        let json: Json =
            serde_json::from_str(&text).with_context(|| format!("{kind} -o json: {text}"))?;
        let items = json.as_array().with_context(|| format!("{kind}: {text}"))?;
        ensure!(
            !items.is_empty()
                && items.iter().all(|i| {
                    // A listener carries it in its `active_state`, as Envoy's does.
                    let v = i["version_info"].as_str();
                    let v = v.or(i["active_state"]["version_info"].as_str());
                    v.is_some_and(|v| !v.is_empty())
                }),
            "{kind} -o json, a version for each: {text}"
        );
        ensure!(
            text.to_ascii_lowercase()
                .contains(&needle.to_ascii_lowercase()),
            "{kind} -o json has no {needle}: {text}"
        );
        ensure!(!text.contains("PRIVATE KEY"), "{kind}: {text}");
    }

    // Another pod's sidecar is an error, not a table.
    let wrong = meshctl(client, &["clusters", "reviews-v1"])?;
    ensure!(
        !wrong.success()
            && wrong
                .stderr
                .contains("is pod client.default, not reviews-v1"),
        "{wrong:?}"
    );
    Ok(())
}
