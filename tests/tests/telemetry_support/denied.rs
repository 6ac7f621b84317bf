//! The denied-request case of the end-to-end telemetry test (`e2e_telemetry`).

use anyhow::{ensure, Result};
use mesh_tests::harness::Pod;
use serde_json::Value as Json;

use super::common::{curl, s, wait_log, HTTP_PORT};
use super::{chrono_like, REVIEWS};

/// A request the server's sidecar denies (RBAC): 403 `RBAC: access denied`, logged by the
/// server's sidecar with Envoy's `rbac_access_denied_matched_policy[...]` details and no
/// response flag, and by the client's as a 403 from upstream.
pub fn check_denied(client: &Pod, server: &Pod) -> Result<()> {
    let denied = curl(
        client,
        &[&format!("http://reviews:{HTTP_PORT}/telemetry/denied")],
    )?;
    let body = "RBAC: access denied";
    ensure!(
        (denied.status, denied.body.trim()) == (403, body),
        "{denied:?}"
    );
    let out = wait_log(client, "the denied request", |e| {
        e["path"] == "/telemetry/denied"
    })?;
    let id = s(&out, "request_id").to_owned();
    let inb = super::common::request_log(server, &id, "inbound|")?;
    for (e, side, details) in [
        (
            &inb,
            "server",
            "rbac_access_denied_matched_policy[ns[default]-policy[deny-telemetry]-rule[0]]",
        ),
        (&out, "client", "via_upstream"),
    ] {
        for (field, want) in [
            ("method", Json::from("GET")),
            ("path", Json::from("/telemetry/denied")),
            ("protocol", Json::from("HTTP/1.1")),
            ("response_code", Json::from(403)),
            ("response_flags", Json::from("-")),
            ("response_code_details", Json::from(details)),
            ("authority", Json::from(format!("reviews:{HTTP_PORT}"))),
            ("bytes_received", Json::from(0)),
            ("bytes_sent", Json::from(denied.body.len())),
            ("request_id", Json::from(id.as_str())),
        ] {
            ensure!(
                e[field] == want,
                "denied, {side}: {field} is {}, want {want}: {e}",
                e[field]
            );
        }
        ensure!(s(e, "user_agent").starts_with("curl/"), "{side}: {e}");
        ensure!(chrono_like(s(e, "start_time")), "{side}: start_time {e}");
    }
    // Nothing went to the app: no upstream at the server.
    for field in ["upstream_host", "upstream_service_time"] {
        ensure!(inb[field].is_null(), "denied, server: {field} {inb}");
    }
    ensure!(
        out["upstream_cluster"] == format!("outbound|{HTTP_PORT}||{REVIEWS}")
            && out["upstream_host"] == format!("{}:{HTTP_PORT}", server.ip()),
        "denied, client: {out}"
    );
    Ok(())
}
