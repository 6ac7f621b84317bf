//! AuthorizationPolicy on mutual TLS identities, through captured sidecars: a namespace
//! denied by default (`spec: {}`) with explicit allows by `principals` and `namespaces`,
//! a port rule (monitoring reaches the metrics port only, HTTP and TCP), `when` conditions on
//! `source.principal` and `source.namespace`, an AUDIT policy marking what it matches, spoofed
//! `x-forwarded-client-cert` headers that claim an allowed identity and never get through,
//! and an open TCP connection closed when a new policy denies it. A denied request gets 403
//! `RBAC: access denied`, a denied TCP connection is closed before any byte reaches the app.

mod common;

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use common::{curl, s, seen_header, wait_for, wait_log, Mesh, Reply, HTTP_PORT, TCP_PORT};
use mesh_tests::harness::{EchoSpec, Pod, ProxyOptions, ServiceSpec};
use serde_json::Value;

/// The server sidecar's body for a denied request.
const DENIED: &str = "RBAC: access denied";
/// `payments`' metrics port (HTTP).
const METRICS_PORT: u16 = 9090;
/// `orders`' identity, the one the principal rule names.
const ORDERS: &str = "cluster.local/ns/orders/sa/orders";

fn policy(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
         metadata:\n  name: {name}\n  namespace: payments\nspec:\n{spec}"
    )
}

/// `payments`' policies: deny all, then allow `orders` by principal, `billing` by namespace,
/// `monitoring` on the metrics port only, and two paths by `when` conditions.
fn policies() -> String {
    [
        policy("deny-all", "  {}\n"),
        policy(
            "allow-orders",
            &format!(
                "  selector: {{matchLabels: {{app: payments}}}}\n  rules:\n\
                 \x20 - from: [{{source: {{principals: [\"{ORDERS}\"]}}}}]\n"
            ),
        ),
        policy(
            "allow-billing",
            "  selector: {matchLabels: {app: payments}}\n  rules:\n\
             \x20 - from: [{source: {namespaces: [billing]}}]\n",
        ),
        policy(
            "allow-monitoring-metrics",
            &format!(
                "  selector: {{matchLabels: {{app: payments}}}}\n  rules:\n\
                 \x20 - from: [{{source: {{namespaces: [monitoring]}}}}]\n\
                 \x20   to: [{{operation: {{ports: [\"{METRICS_PORT}\"]}}}}]\n"
            ),
        ),
        policy(
            "allow-when",
            "  selector: {matchLabels: {app: payments}}\n  rules:\n\
             \x20 - to: [{operation: {paths: [/when-principal]}}]\n\
             \x20   when: [{key: source.principal, values: [cluster.local/ns/orders/sa/batch]}]\n\
             \x20 - to: [{operation: {paths: [/when-namespace]}}]\n\
             \x20   when: [{key: source.namespace, values: [web]}]\n",
        ),
        // AUDIT decides nothing; it marks what it matches in the access log.
        policy(
            "audit-web",
            "  selector: {matchLabels: {app: payments}}\n  action: AUDIT\n  rules:\n\
             \x20 - from: [{source: {principals: [cluster.local/ns/web/sa/web]}}]\n",
        ),
    ]
    .join("---\n")
}

/// `curl -sS ARGS` in `pod`.
fn get(pod: &Pod, args: &[&str]) -> Result<Reply> {
    curl(pod, &[&["-sS", "--max-time", "5"], args].concat())
}

fn ensure_denied(r: &Reply, what: &str) -> Result<()> {
    ensure!(
        r.status == 403 && r.body.trim() == DENIED,
        "{what}: expected 403 {DENIED:?}, got {} {:?}",
        r.status,
        r.body
    );
    Ok(())
}

fn ensure_served(r: &Reply, what: &str) -> Result<Value> {
    ensure!(
        r.status == 200,
        "{what}: expected 200, got {} {:?}",
        r.status,
        r.body
    );
    r.json()
}

/// A TCP echo through `pod`'s sidecar to `payments`' TCP port: whether the data came back.
fn tcp_echo(pod: &Pod) -> Result<bool> {
    let out = pod.echo_client(&[
        "tcp",
        &format!("payments.payments:{TCP_PORT}"),
        "--data",
        "hello\n",
    ])?;
    let report: Value = serde_json::from_str(out.stdout.lines().next().context("no report")?)?;
    Ok(report["ok"] == true && report["received"] == "hello\n")
}

/// An injected pod `NS-SA` in namespace `ns` running as service account `sa`.
fn caller(mesh: &Mesh, ns: &str, sa: &str) -> Result<Pod> {
    let opts = ProxyOptions {
        service_account: sa.to_owned(),
        ..ProxyOptions::default()
    };
    Ok(mesh
        .topo
        .injected_pod_with(&format!("{ns}-{sa}"), ns, &[("app", sa)], &opts)?)
}

#[test]
fn principals_namespaces_ports_and_when_decide_who_reaches_payments() -> Result<()> {
    mesh_tests::skip_unless_netns!();
    let mesh = Mesh::new("principals_namespaces_ports_and_when")?;
    for ns in ["payments", "orders", "billing", "monitoring", "web"] {
        mesh.topo.add_namespace(ns)?;
    }
    mesh.topo.add_service(
        &ServiceSpec::new("payments", "payments")
            .port("http", HTTP_PORT, HTTP_PORT)
            .port("http-metrics", METRICS_PORT, METRICS_PORT)
            .port("tcp-echo", TCP_PORT, TCP_PORT)
            .selector("app", "payments"),
    )?;
    mesh.topo.start_control_plane()?;
    let payments = caller(&mesh, "payments", "payments")?;
    let mut echo = EchoSpec::new("payments", "v1")
        .http(HTTP_PORT)
        .tcp(TCP_PORT);
    echo.extra_args = vec!["--http-port".into(), METRICS_PORT.to_string()];
    payments
        .spawn_echo(&echo)?
        .wait_for_log("\"event\":\"listening\"", Duration::from_secs(10))?;
    let orders = caller(&mesh, "orders", "orders")?;
    // Same namespace as `orders`, another service account: not the principal allowed.
    let batch = caller(&mesh, "orders", "batch")?;
    let billing = caller(&mesh, "billing", "billing")?;
    let monitoring = caller(&mesh, "monitoring", "prometheus")?;
    let web = caller(&mesh, "web", "web")?;
    // A pod without a sidecar, in the allowed namespace.
    let plain = mesh
        .topo
        .pod("orders-plain", "orders", &[("app", "plain")])?;
    mesh.check(|| {
        mesh.topo.wait_ready(Duration::from_secs(30))?;
        let svc = |port: u16, path: &str| format!("http://payments.payments:{port}{path}");
        // Everyone reaches payments before the policies.
        wait_for("web to reach payments", Duration::from_secs(15), || {
            Ok(get(&web, &[&svc(HTTP_PORT, "/pay")])?.status == 200)
        })?;
        mesh.topo.write_config("payments-authz.yaml", &policies())?;
        wait_for("the deny-all", Duration::from_secs(15), || {
            Ok(get(&web, &[&svc(HTTP_PORT, "/pay")])?.status == 403)
        })?;

        // Who reaches which port (HTTP).
        for (pod, port, path, allowed) in [
            (&orders, HTTP_PORT, "/pay", true),
            (&orders, METRICS_PORT, "/metrics", true),
            (&batch, HTTP_PORT, "/pay", false),
            (&billing, HTTP_PORT, "/pay", true),
            (&billing, METRICS_PORT, "/metrics", true),
            (&monitoring, METRICS_PORT, "/metrics", true),
            (&monitoring, HTTP_PORT, "/pay", false),
            (&web, HTTP_PORT, "/pay", false),
            (&web, METRICS_PORT, "/metrics", false),
            // `when` on source.principal and source.namespace.
            (&batch, HTTP_PORT, "/when-principal", true),
            (&orders, HTTP_PORT, "/when-principal", true),
            (&web, HTTP_PORT, "/when-principal", false),
            (&web, HTTP_PORT, "/when-namespace", true),
            (&batch, HTTP_PORT, "/when-namespace", false),
            (&monitoring, METRICS_PORT, "/when-namespace", true),
            (&monitoring, HTTP_PORT, "/when-namespace", false),
        ] {
            let what = format!("{} -> payments:{port}{path}", pod.name());
            let r = get(pod, &[&svc(port, path)])?;
            if allowed {
                ensure_served(&r, &what)?;
            } else {
                ensure_denied(&r, &what)?;
            }
        }
        // TCP: the allowed callers' connections echo; monitoring's (metrics port only) and
        // web's are closed before any byte reaches the app.
        for (pod, allowed) in [
            (&orders, true),
            (&billing, true),
            (&monitoring, false),
            (&web, false),
        ] {
            ensure!(
                tcp_echo(pod)? == allowed,
                "{} -> payments:{TCP_PORT}: expected allowed={allowed}",
                pod.name()
            );
        }
        let log = wait_log(&payments, "monitoring's denied TCP connection", |e| {
            !e["connection_termination_details"].is_null()
                && s(e, "downstream_peer_uri_san")
                    == "spiffe://cluster.local/ns/monitoring/sa/prometheus"
        })?;
        ensure!(log["bytes_sent"] == 0, "{log}");
        // AUDIT marked web's requests, allowed or denied, and only web's.
        let audited = wait_log(&payments, "web's audited request", |e| {
            e["path"] == "/when-namespace" && e["response_code"] == 200
        })?;
        ensure!(audited["access_log_hint"] == true, "{audited}");
        let other = wait_log(&payments, "batch's request", |e| {
            e["path"] == "/when-principal" && e["response_code"] == 200
        })?;
        ensure!(other["access_log_hint"] == false, "{other}");
        // The denial names the caller's verified identity.
        let log = wait_log(&payments, "web's denied request", |e| {
            e["path"] == "/pay"
                && e["response_code"] == 403
                && s(e, "downstream_peer_uri_san") == "spiffe://cluster.local/ns/web/sa/web"
        })?;
        ensure!(
            log["response_code_details"] == "rbac_access_denied_matched_policy[none]",
            "{log}"
        );

        // Spoofed x-forwarded-client-cert claiming the allowed identity: never trusted.
        let spoof = format!(
            "x-forwarded-client-cert: By=spiffe://cluster.local/ns/payments/sa/payments;\
             Hash=00;Subject=\"\";URI=spiffe://{ORDERS}"
        );
        ensure_denied(
            &get(&web, &["-H", &spoof, &svc(HTTP_PORT, "/pay")])?,
            "web with a spoofed XFCC",
        )?;
        // From a pod without a sidecar (plaintext, no client certificate), straight to the
        // workload: nothing to authenticate, so no principal rule matches.
        let direct = format!("http://{}:{HTTP_PORT}/pay", payments.ip());
        ensure_denied(
            &get(&plain, &["-H", &spoof, &direct])?,
            "a pod without a sidecar with a spoofed XFCC",
        )?;
        // An allowed caller's app sends a forged header: the app sees only the XFCC the
        // server's sidecar set, for the verified client certificate.
        let forged = "x-forwarded-client-cert: By=evil;URI=spiffe://cluster.local/ns/x/sa/admin";
        let echo = ensure_served(
            &get(&orders, &["-H", forged, &svc(HTTP_PORT, "/pay")])?,
            "orders with a forged XFCC",
        )?;
        let xfcc = seen_header(&echo, "x-forwarded-client-cert").context("no XFCC")?;
        ensure!(
            xfcc.starts_with("By=spiffe://cluster.local/ns/payments/sa/payments;Hash=")
                && xfcc.contains(&format!(";URI=spiffe://{ORDERS}"))
                && !xfcc.contains("admin")
                && !xfcc.contains("evil")
                && !xfcc.contains(','),
            "the app saw {xfcc}"
        );
        ensure!(
            echo["headers"]["x-forwarded-client-cert"]
                .as_array()
                .is_some_and(|v| v.len() == 1),
            "{echo}"
        );
        Ok(())
    })
}

/// A long-lived TCP connection from `pod` to `payments`' TCP port (bash's `/dev/tcp`): it
/// sends `first`, prints what came back, waits for the file `go` to appear, sends `second`
/// and prints what came back, then `closed` once the connection ends.
fn long_lived_tcp(
    pod: &Pod,
    name: &str,
    go: &std::path::Path,
) -> Result<mesh_tests::harness::Process> {
    let script = format!(
        "exec 3<>/dev/tcp/payments.payments/{TCP_PORT} || exit 1\n\
         echo first >&3; read -r l <&3; echo \"got $l\"\n\
         while [ ! -e {go} ]; do sleep 0.05; done\n\
         echo second >&3; read -r l <&3 && echo \"got $l\"\n\
         echo closed\n",
        go = go.display()
    );
    Ok(pod.spawn(name, ["bash", "-c", &script])?)
}

#[test]
fn an_open_tcp_connection_is_closed_when_a_new_policy_denies_it() -> Result<()> {
    mesh_tests::skip_unless_netns!();
    let mesh = Mesh::new("open_tcp_connection_policy_change")?;
    for ns in ["payments", "orders", "billing"] {
        mesh.topo.add_namespace(ns)?;
    }
    mesh.topo.add_service(
        &ServiceSpec::new("payments", "payments")
            .port("tcp-echo", TCP_PORT, TCP_PORT)
            .selector("app", "payments"),
    )?;
    mesh.topo.write_config(
        "authz.yaml",
        &policy(
            "allow-both",
            "  rules:\n  - from: [{source: {namespaces: [orders, billing]}}]\n",
        ),
    )?;
    mesh.topo.start_control_plane()?;
    let payments = caller(&mesh, "payments", "payments")?;
    payments
        .spawn_echo(&EchoSpec::new("payments", "v1").tcp(TCP_PORT))?
        .wait_for_log("\"event\":\"listening\"", Duration::from_secs(10))?;
    let orders = caller(&mesh, "orders", "orders")?;
    let billing = caller(&mesh, "billing", "billing")?;
    mesh.check(|| {
        mesh.topo.wait_ready(Duration::from_secs(30))?;
        wait_for("orders to reach payments", Duration::from_secs(15), || {
            tcp_echo(&orders)
        })?;
        let go = orders.work_dir().join("go");
        let denied = long_lived_tcp(&orders, "tcp-orders", &go)?;
        let kept = long_lived_tcp(&billing, "tcp-billing", &go)?;
        for p in [&denied, &kept] {
            p.wait_for_log("got first", Duration::from_secs(10))?;
        }
        // The policy now allows billing only: orders' open connection is closed, billing's
        // carries on.
        mesh.topo.write_config(
            "authz.yaml",
            &policy(
                "allow-both",
                "  rules:\n  - from: [{source: {namespaces: [billing]}}]\n",
            ),
        )?;
        let log = wait_for_log_line(&payments, "orders' revoked connection", |e| {
            s(e, "connection_termination_details").starts_with("rbac_access_denied")
                && s(e, "downstream_peer_uri_san") == format!("spiffe://{ORDERS}")
        })?;
        ensure!(log["bytes_received"] == 6, "{log}");
        std::fs::write(&go, "")?;
        denied.wait_for_log("closed", Duration::from_secs(10))?;
        ensure!(
            !denied.stdout().contains("got second"),
            "a denied connection still echoed: {}",
            denied.stdout()
        );
        kept.wait_for_log("got second", Duration::from_secs(10))?;
        // New connections follow the policy too.
        ensure!(
            !tcp_echo(&orders)?,
            "a new connection from orders got through"
        );
        ensure!(tcp_echo(&billing)?, "billing's new connection was refused");
        Ok(())
    })
}

/// Waits (longer than [`wait_log`]'s 5 s: a push comes first) for `pod`'s access-log line
/// that `pred` accepts.
fn wait_for_log_line(pod: &Pod, what: &str, pred: impl Fn(&Value) -> bool) -> Result<Value> {
    let mut found = None;
    wait_for(what, Duration::from_secs(15), || {
        found = common::access_log(pod).into_iter().find(|e| pred(e));
        Ok(found.is_some())
    })?;
    found.context("no line")
}
