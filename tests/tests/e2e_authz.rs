//! AuthorizationPolicy through captured sidecars and the control plane: rules by path,
//! method, port and ipBlocks (DENY before ALLOW), dry-run policies that log instead of
//! enforcing, a namespace denied by default with explicit allows, and requests crafted to slip
//! past the rules (path variants, escapes, `%00`, fragments, header case, repeated headers,
//! Host case, port and trailing dot). A denied request gets 403 `RBAC: access denied`, a
//! denied TCP connection is closed; both are in the server sidecar's JSON access log.

mod common;

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use common::{curl, echo_client, s, wait_for, wait_log, Mesh, Reply, HTTP_PORT, NS, TCP_PORT};
use mesh_tests::harness::{EchoSpec, Pod, ServiceSpec};
use serde_json::Value;

/// The server sidecar's body for a denied request.
const DENIED: &str = "RBAC: access denied";

/// `curl ARGS` in `pod`, waiting until the reply's status is `want` (a new policy takes a
/// push to arrive).
fn wait_status(pod: &Pod, args: &[&str], want: u16) -> Result<Reply> {
    let mut last = None;
    wait_for(
        &format!("{args:?} from {} to answer {want}", pod.name()),
        Duration::from_secs(15),
        || {
            let r = curl(pod, args)?;
            let done = r.status == want;
            last = Some(r);
            Ok(done)
        },
    )?;
    last.context("no reply")
}

/// Asserts a denial: 403 with Envoy's body.
fn ensure_denied(r: &Reply, what: &str) -> Result<()> {
    ensure!(
        r.status == 403 && r.body.trim() == DENIED,
        "{what}: expected 403 {DENIED:?}, got {} {:?}",
        r.status,
        r.body
    );
    Ok(())
}

/// Asserts the app answered, and returns the path it saw.
fn ensure_served(r: &Reply, what: &str) -> Result<String> {
    ensure!(
        r.status == 200,
        "{what}: expected 200, got {} {:?}",
        r.status,
        r.body
    );
    Ok(r.json()?["path"].as_str().unwrap_or_default().to_owned())
}

/// The access-log line of `pod`'s sidecar for `path` answered `code` (a server pod's sidecar
/// logs only inbound requests).
fn inbound_log(pod: &Pod, path: &str, code: u16) -> Result<Value> {
    wait_log(pod, &format!("{path} answered {code}"), |e| {
        e["path"] == path && e["response_code"] == code
    })
}

fn policy(name: &str, ns: &str, annotations: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
         metadata:\n  name: {name}\n  namespace: {ns}\n{annotations}spec:\n{spec}"
    )
}

#[test]
fn rules_by_path_method_port_and_ip_blocks_deny_with_403_and_dry_run_logs() -> Result<()> {
    mesh_tests::skip_unless_netns!();
    let test = "rules_by_path_method_port_and_ip_blocks_deny_with_403_and_dry_run_logs";
    let (mesh, client, servers) = Mesh::standard(test, &["v1"])?;
    let server = &servers[0];
    // Another caller in the mesh, not in the ipBlocks rule.
    let intruder = mesh
        .topo
        .injected_pod("intruder", NS, &[("app", "intruder")])?;
    mesh.check(|| {
        mesh.topo.wait_ready(Duration::from_secs(30))?;
        let client_ip = client.ip();
        let allow = policy(
            "reviews-allow",
            NS,
            "",
            &format!(
                "  selector: {{matchLabels: {{app: reviews}}}}\n  rules:\n\
                 \x20 - to: [{{operation: {{methods: [GET], paths: [\"/public/*\", \"/exact\"]}}}}]\n\
                 \x20 - to: [{{operation: {{methods: [POST], paths: [\"/submit\"]}}}}]\n\
                 \x20 - from: [{{source: {{ipBlocks: [\"{client_ip}/32\"]}}}}]\n\
                 \x20   to: [{{operation: {{paths: [\"/ipblock/*\"]}}}}]\n\
                 \x20 - to: [{{operation: {{ports: [\"{TCP_PORT}\"]}}}}]\n\
                 \x20 - to: [{{operation: {{paths: [\"/dry-run\"]}}}}]\n"
            ),
        );
        // The DENY rules name the HTTP port: on TCP their HTTP fields do not apply and Istio
        // widens the rule to the rest (a DENY of `paths` alone closes every TCP port).
        let deny = policy(
            "reviews-deny",
            NS,
            "",
            "  selector: {matchLabels: {app: reviews}}\n  action: DENY\n  rules:\n\
             \x20 - to: [{operation: {ports: [\"9080\"], paths: [\"/public/secret\"]}}]\n",
        );
        let dry_run = policy(
            "reviews-dry-run",
            NS,
            "  annotations: {istio.io/dry-run: \"true\"}\n",
            "  selector: {matchLabels: {app: reviews}}\n  action: DENY\n  rules:\n\
             \x20 - to: [{operation: {ports: [\"9080\"], paths: [\"/dry-run\"]}}]\n",
        );
        // Before any policy: everything passes.
        let url = |p: &str| format!("http://reviews:{HTTP_PORT}{p}");
        ensure_served(&curl(&client, &[&url("/anything")])?, "no policy yet")?;
        mesh.topo.write_config(
            "authz.yaml",
            &format!("{allow}---\n{deny}---\n{dry_run}"),
        )?;
        let r = wait_status(&client, &[&url("/anything")], 403)?;
        ensure_denied(&r, "GET /anything, matched by no ALLOW rule")?;

        // Paths and methods.
        for (method, path, allowed) in [
            ("GET", "/public/a", true),
            ("GET", "/exact", true),
            ("GET", "/exact/more", false),
            ("POST", "/public/a", false),
            ("POST", "/submit", true),
            ("GET", "/submit", false),
            ("DELETE", "/submit", false),
            // DENY wins over ALLOW.
            ("GET", "/public/secret", false),
            // The same path reached through dot segments (BASE normalization).
            ("GET", "/public/x/../secret", false),
            ("GET", "/public/./secret", false),
        ] {
            let r = curl(&client, &["--path-as-is", "-X", method, &url(path)])?;
            let what = format!("{method} {path}");
            if allowed {
                ensure_served(&r, &what)?;
            } else {
                ensure_denied(&r, &what)?;
            }
        }
        // The denial is in the server sidecar's access log, with the policy that matched.
        let log = inbound_log(server, "/public/secret", 403)?;
        ensure!(
            log["response_code_details"]
                == "rbac_access_denied_matched_policy[ns[default]-policy[reviews-deny]-rule[0]]",
            "{log}"
        );
        let log = inbound_log(server, "/exact/more", 403)?;
        ensure!(
            log["response_code_details"] == "rbac_access_denied_matched_policy[none]",
            "{log}"
        );

        // ipBlocks: the client's address only.
        ensure_served(&curl(&client, &[&url("/ipblock/x")])?, "ipBlocks, client")?;
        ensure_denied(
            &curl(&intruder, &[&url("/ipblock/x")])?,
            "ipBlocks, another pod",
        )?;
        // remote.ip is not source.ip: a spoofed x-forwarded-for does not help.
        ensure_denied(
            &curl(
                &intruder,
                &["-H", &format!("x-forwarded-for: {client_ip}"), &url("/ipblock/x")],
            )?,
            "ipBlocks with a spoofed x-forwarded-for",
        )?;

        // Ports: TCP on the allowed port passes; on another port the connection is closed
        // before any byte reaches the app.
        let ok = echo_client(
            &client,
            &["tcp", &format!("reviews:{TCP_PORT}"), "--data", "hello\n"],
        )?;
        ensure!(ok[0]["ok"] == true, "{ok:?}");
        let out = client
            .echo_client(&[
                "tcp",
                &format!("reviews:{}", common::BANNER_PORT),
                "--expect-banner",
                "--data",
                "x\n",
            ])?
            .stdout;
        let report: Value = serde_json::from_str(out.lines().next().context("no report")?)?;
        ensure!(
            report["ok"] == false && report["banner"].as_str().unwrap_or_default().is_empty(),
            "a denied TCP connection got through: {report}"
        );
        let log = wait_log(server, "the denied TCP connection", |e| {
            !e["connection_termination_details"].is_null()
        })?;
        ensure!(
            log["connection_termination_details"] == "rbac_access_denied_matched_policy[none]"
                && log["bytes_sent"] == 0,
            "{log}"
        );

        // Dry run: the DENY rule is evaluated and logged, never enforced.
        let path = ensure_served(&curl(&client, &[&url("/dry-run")])?, "dry-run DENY")?;
        ensure!(path == "/dry-run");
        let log = inbound_log(server, "/dry-run", 200)?;
        ensure!(
            log["shadow_engine_result"] == "denied"
                && log["shadow_effective_policy_id"]
                    == "ns[default]-policy[reviews-dry-run]-rule[0]",
            "{log}"
        );
        let stats = server.admin("/stats")?;
        ensure!(
            stats.lines().any(|l| l.contains("rbac.istio_dry_run_deny_shadow_denied")
                && !l.ends_with(": 0")),
            "no shadow denial counted:\n{stats}"
        );
        // Denials are counted under Envoy's names: HTTP under the connection manager's
        // prefix, TCP under the network filter's.
        let counted = |prefix: &str| {
            stats
                .lines()
                .filter_map(|l| l.split_once(": "))
                .any(|(k, v)| {
                    k.starts_with(prefix)
                        && k.ends_with("rbac.denied")
                        && v.trim().parse::<u64>().unwrap_or(0) > 0
                })
        };
        ensure!(counted("http."), "no HTTP denial counted:\n{stats}");
        ensure!(counted("tcp."), "no TCP denial counted:\n{stats}");

        // Removing the policies opens everything again.
        mesh.topo.remove_config("authz.yaml")?;
        wait_status(&client, &[&url("/public/secret")], 200)?;
        Ok(())
    })
}

#[test]
fn a_namespace_denied_by_default_with_explicit_allows() -> Result<()> {
    mesh_tests::skip_unless_netns!();
    let test = "a_namespace_denied_by_default_with_explicit_allows";
    let mesh = Mesh::new(test)?;
    for ns in ["payments", "orders", "billing", "monitoring", "web"] {
        mesh.topo.add_namespace(ns)?;
    }
    mesh.topo.add_service(
        &ServiceSpec::new("payments", "payments")
            .port("http", HTTP_PORT, HTTP_PORT)
            .port("http-metrics", 9090, 9090)
            .selector("app", "payments"),
    )?;
    mesh.topo.start_control_plane()?;
    let payments = mesh
        .topo
        .injected_pod("payments-v1", "payments", &[("app", "payments")])?;
    let mut echo = EchoSpec::new("payments", "v1").http(HTTP_PORT);
    echo.extra_args = vec!["--http-port".into(), "9090".into()];
    payments
        .spawn_echo(&echo)?
        .wait_for_log("\"event\":\"listening\"", Duration::from_secs(10))?;
    let callers: Vec<Pod> = ["orders", "billing", "monitoring", "web"]
        .iter()
        .map(|ns| {
            mesh.topo
                .injected_pod(&format!("{ns}-1"), ns, &[("app", ns)])
        })
        .collect::<std::result::Result<_, _>>()?;
    mesh.check(|| {
        mesh.topo.wait_ready(Duration::from_secs(30))?;
        let ip = |i: usize| format!("\"{}/32\"", callers[i].ip());
        // Without mutual TLS the callers are told apart by address (ipBlocks); with it, by
        // source.namespace.
        let yaml = [
            policy("deny-all", "payments", "", "  {}\n"),
            policy(
                "allow-orders-billing",
                "payments",
                "",
                &format!(
                    "  selector: {{matchLabels: {{app: payments}}}}\n  rules:\n\
                     \x20 - from: [{{source: {{ipBlocks: [{}, {}]}}}}]\n",
                    ip(0),
                    ip(1)
                ),
            ),
            policy(
                "allow-monitoring-metrics",
                "payments",
                "",
                &format!(
                    "  selector: {{matchLabels: {{app: payments}}}}\n  rules:\n\
                     \x20 - from: [{{source: {{ipBlocks: [{}]}}}}]\n\
                     \x20   to: [{{operation: {{ports: [\"9090\"]}}}}]\n",
                    ip(2)
                ),
            ),
        ]
        .join("---\n");
        let svc = |port: u16| format!("http://payments.payments:{port}/pay");
        mesh.topo.write_config("payments-authz.yaml", &yaml)?;
        let r = wait_status(&callers[3], &[&svc(HTTP_PORT)], 403)?;
        ensure_denied(&r, "web -> payments:9080")?;
        for (i, port, allowed) in [
            (0, HTTP_PORT, true),
            (0, 9090, true),
            (1, HTTP_PORT, true),
            (2, HTTP_PORT, false),
            (2, 9090, true),
            (3, HTTP_PORT, false),
            (3, 9090, false),
        ] {
            let what = format!("{} -> payments:{port}", callers[i].namespace());
            let r = wait_status(&callers[i], &[&svc(port)], if allowed { 200 } else { 403 })?;
            if allowed {
                ensure_served(&r, &what)?;
            } else {
                ensure_denied(&r, &what)?;
            }
        }
        let log = inbound_log(&payments, "/pay", 403)?;
        ensure!(
            log["response_code_details"] == "rbac_access_denied_matched_policy[none]",
            "{log}"
        );
        Ok(())
    })
}

#[test]
fn requests_crafted_to_slip_past_the_rules_never_get_through() -> Result<()> {
    mesh_tests::skip_unless_netns!();
    let test = "requests_crafted_to_slip_past_the_rules_never_get_through";
    let mesh = Mesh::new(test)?;
    // Istio's strictest normalization: escaped slashes decoded, slashes merged.
    mesh.cp
        .start(&["--path-normalization", "DECODE_AND_MERGE_SLASHES"])?;
    mesh.cp.wait_ready(Duration::from_secs(30))?;
    let server = mesh.reviews_pod("v1")?;
    // An attacker without a sidecar, talking straight to the pod: the server's sidecar is
    // the only defence.
    let attacker = mesh.topo.pod("attacker", NS, &[("app", "attacker")])?;
    mesh.check(|| {
        mesh.topo.wait_ready(Duration::from_secs(30))?;
        let yaml = [
            policy(
                "deny-admin",
                NS,
                "",
                "  selector: {matchLabels: {app: reviews}}\n  action: DENY\n  rules:\n\
                 \x20 - to: [{operation: {paths: [\"/admin\", \"/admin/*\"]}}]\n\
                 \x20 - to: [{operation: {hosts: [\"admin.example.com\"]}}]\n\
                 \x20 - when: [{key: \"request.headers[X-User]\", values: [\"blocked\"]}]\n",
            ),
            policy(
                "allow-alice-on-private",
                NS,
                "",
                "  selector: {matchLabels: {app: reviews}}\n  rules:\n\
                 \x20 - to: [{operation: {notPaths: [\"/private\"]}}]\n\
                 \x20 - to: [{operation: {paths: [\"/private\"]}}]\n\
                 \x20   when: [{key: \"request.headers[x-user]\", values: [\"alice\"]}]\n",
            ),
        ]
        .join("---\n");
        let base = format!("http://{}:{HTTP_PORT}", server.ip());
        mesh.topo.write_config("bypass.yaml", &yaml)?;
        let r = wait_status(&attacker, &[&format!("{base}/admin")], 403)?;
        ensure_denied(&r, "/admin")?;

        // Request targets sent as written (curl neither normalizes nor drops the fragment).
        for target in [
            "//admin",
            "///admin/x",
            "/./admin",
            "/public/../admin",
            "/public/%2e%2e/admin",
            "/%61dmin",
            "/%61dmin/%78",
            "/admin%2Fx",
            "/admin%2fx",
            "/public%2F..%2Fadmin",
            "/admin%5Cx",
            "/admin%5cx",
            "/admin#fragment",
            "/admin?x=1",
            "/admin/",
        ] {
            let r = curl(
                &attacker,
                &["--request-target", target, &format!("{base}/")],
            )?;
            ensure_denied(&r, target)?;
        }
        // A raw backslash is a separator too (or the request is refused).
        let r = curl(
            &attacker,
            &[
                "--request-target",
                "/public\\..\\admin",
                &format!("{base}/"),
            ],
        )?;
        ensure!(
            r.status == 403 || r.status == 400,
            "raw backslashes: {} {:?}",
            r.status,
            r.body
        );
        // %00 is refused outright.
        for target in ["/admin%00", "/public%00/../admin", "/ok%00"] {
            let r = curl(
                &attacker,
                &["--request-target", target, &format!("{base}/")],
            )?;
            ensure!(r.status == 400, "{target}: {} {:?}", r.status, r.body);
        }
        // What passes is forwarded as it was checked.
        for (target, seen) in [
            ("/public//x/./y/../z", "/public/x/z"),
            ("/%7Euser", "/~user"),
            ("/admins#x", "/admins"),
        ] {
            let r = curl(
                &attacker,
                &["--request-target", target, &format!("{base}/")],
            )?;
            let path = ensure_served(&r, target)?;
            ensure!(path == seen, "{target}: the app saw {path}, not {seen}");
        }

        // Header case, repeated headers.
        let get = |headers: &[&str], path: &str| -> Result<Reply> {
            let mut args: Vec<&str> = Vec::new();
            for h in headers {
                args.extend(["-H", h]);
            }
            let url = format!("{base}{path}");
            args.push(&url);
            curl(&attacker, &args)
        };
        for h in ["X-User: blocked", "x-user: blocked", "X-USER: blocked"] {
            ensure_denied(&get(&[h], "/")?, h)?;
        }
        ensure_served(&get(&["x-user: alice"], "/private")?, "alice on /private")?;
        ensure_denied(&get(&["x-user: bob"], "/private")?, "bob on /private")?;
        ensure_denied(
            &get(&["x-user: alice", "x-user: mallory"], "/private")?,
            "alice and mallory on /private",
        )?;
        ensure_denied(
            &get(&["x-user: mallory", "x-user: alice"], "/private")?,
            "mallory and alice on /private",
        )?;
        // A repeated header the rules read reaches the app as it was checked: joined.
        let r = get(&["x-user: ok", "x-user: blocked"], "/")?;
        ensure_served(&r, "x-user ok and blocked (checked as \"ok,blocked\")")?;
        let seen = r.json()?["headers"]["x-user"].clone();
        ensure!(
            seen == serde_json::json!(["ok,blocked"]),
            "the app saw {seen}, not what was checked"
        );

        // Host: case, port and trailing dot.
        for host in [
            "admin.example.com",
            "ADMIN.Example.COM",
            "admin.example.com:9080",
            "admin.example.com.",
            "Admin.Example.Com.:80",
        ] {
            ensure_denied(&get(&[&format!("Host: {host}")], "/")?, host)?;
        }
        ensure_served(&get(&["Host: www.example.com"], "/")?, "another host")?;

        // Every denial is logged by the server's sidecar.
        let log = wait_log(&server, "a denied request", |e| {
            e["response_code"] == 403 && s(e, "response_code_details").contains("deny-admin")
        })?;
        ensure!(s(&log, "response_code_details").starts_with("rbac_access_denied"));
        Ok(())
    })
}
