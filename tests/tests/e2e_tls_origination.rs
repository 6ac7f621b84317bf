//! DestinationRule `tls` through captured sidecars: TLS origination to a TLS server outside
//! the mesh (a ServiceEntry `MESH_EXTERNAL`; `openssl s_server` in a pod without a sidecar)
//! with `SIMPLE` and `MUTUAL` (certificate files, `sni`, `subjectAltNames`), each failing
//! closed on a wrong SAN, an untrusted server or a missing client certificate; `ISTIO_MUTUAL`
//! and `DISABLE` towards a sidecar; connection pools that never let a connection verified for
//! one identity carry traffic that expects another; and `portLevelMtls: DISABLE` on one port
//! of a STRICT workload (then mesh-wide STRICT from the root namespace); an endpoint whose
//! certificate names another identity than the service's refused.

mod common;

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use common::{
    certs, curl, echo_client, s, seen_header, stat, wait_for, wait_log, Mesh, Reply, HTTP_PORT, NS,
    TCP_PORT,
};
use mesh_tests::harness::{Pod, Process};
use serde_json::Value;

/// The SIMPLE TLS server's port (no client certificate asked).
const SIMPLE_PORT: u16 = 8443;
/// The MUTUAL TLS server's port (a client certificate from the test CA required).
const MUTUAL_PORT: u16 = 9443;
/// The name in the TLS server's certificate, and the only SNI it accepts.
const SERVER_NAME: &str = "secure.external";
/// How long a config change gets to reach the client's sidecar.
const PUSH_TIMEOUT: Duration = Duration::from_secs(15);
/// How the client's sidecar explains a server certificate without an expected SAN.
const SAN_REFUSED: &str = "match none of the expected identities";
/// The identity of the `reviews` pods (the harness's default service account).
const REVIEWS_SA: &str = "spiffe://cluster.local/ns/default/sa/default";

/// `curl ARGS` in `pod` until the reply's status is `want` (a new rule takes a push).
fn wait_status(pod: &Pod, args: &[&str], want: u16) -> Result<Reply> {
    let mut last = None;
    wait_for(
        &format!("{args:?} from {} to answer {want}", pod.name()),
        PUSH_TIMEOUT,
        || {
            let r = curl(pod, &[&["-sS", "--max-time", "5"], args].concat())?;
            let done = r.status == want;
            last = Some(r);
            Ok(done)
        },
    )?;
    last.context("no reply")
}

/// The client sidecar's access-log line for a request to `path` answered `code`.
fn client_log(pod: &Pod, path: &str, code: u16) -> Result<Value> {
    wait_log(pod, &format!("{path} answered {code}"), |e| {
        e["path"] == path && e["response_code"] == code
    })
}

/// Asserts the client sidecar refused the upstream's TLS: 503 with `UF` and the reason.
fn ensure_tls_refused(client: &Pod, path: &str, reason: &str, what: &str) -> Result<()> {
    let log = client_log(client, path, 503)?;
    ensure!(
        s(&log, "response_flags").contains("UF"),
        "{what}: no UF flag: {log}"
    );
    ensure!(
        // BoringSSL names a failed verification `CERTIFICATE_VERIFY_FAILED` or in words,
        // depending on where the handshake stopped: compare without case.
        s(&log, "upstream_transport_failure_reason")
            .to_lowercase()
            .contains(reason),
        "{what}: expected a failure reason with {reason:?}: {log}"
    );
    Ok(())
}

/// `openssl s_server -www` on `port` of `pod` with the server certificate, accepting only
/// the SNI [`SERVER_NAME`]; with `client_ca`, a client certificate signed by it is required.
fn tls_server(
    pod: &Pod,
    port: u16,
    cert: &str,
    key: &str,
    client_ca: Option<&str>,
) -> Result<Process> {
    let accept = format!("0.0.0.0:{port}");
    let mut argv = vec![
        "openssl",
        "s_server",
        "-accept",
        &accept,
        "-www",
        "-cert",
        cert,
        "-key",
        key,
        "-servername",
        SERVER_NAME,
        "-cert2",
        cert,
        "-key2",
        key,
        "-servername_fatal",
    ];
    if let Some(ca) = client_ca {
        argv.extend(["-Verify", "1", "-verify_return_error", "-CAfile", ca]);
    }
    let process = pod.spawn(&format!("s_server-{port}"), argv)?;
    process.wait_for_log("ACCEPT", Duration::from_secs(10))?;
    Ok(process)
}

#[test]
fn destination_rule_tls_originates_simple_and_mutual_tls_to_an_external_server() -> Result<()> {
    mesh_tests::skip_unless_netns!();
    let mesh = Mesh::new("destination_rule_tls_to_an_external_server")?;
    let topo = &mesh.topo;
    topo.add_namespace("external")?;
    let server = topo.pod("tls-server", "external", &[("app", "tls-server")])?;
    let dir = server.work_dir().to_path_buf();
    let (ca, ca_key) = certs::ca(&dir, "external-ca")?;
    let (rogue, _) = certs::ca(&dir, "rogue-ca")?;
    let (cert, key) = certs::leaf(
        &dir,
        "server",
        &[&format!("DNS:{SERVER_NAME}")],
        &ca,
        &ca_key,
    )?;
    let (client_cert, client_key) =
        certs::leaf(&dir, "client", &["DNS:client.mesh"], &ca, &ca_key)?;
    let p = |p: &std::path::Path| p.display().to_string();
    let _simple = tls_server(&server, SIMPLE_PORT, &p(&cert), &p(&key), None)?;
    let _mutual = tls_server(&server, MUTUAL_PORT, &p(&cert), &p(&key), Some(&p(&ca)))?;
    // `simple.external` and `mutual.external` resolve to VIPs nobody holds; the app speaks
    // plain HTTP to them and the client's sidecar originates TLS.
    let (simple_vip, mutual_vip) = (topo.next_cluster_ip(), topo.next_cluster_ip());
    topo.service("simple", "external", simple_vip)?;
    topo.service("mutual", "external", mutual_vip)?;
    let entry = |name: &str, vip, port| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n\
             metadata: {{name: {name}, namespace: {NS}}}\nspec:\n  hosts: [{name}.external]\n  \
             addresses: [{vip}]\n  location: MESH_EXTERNAL\n  resolution: STATIC\n  \
             ports: [{{number: {port}, name: http, protocol: HTTP}}]\n  \
             endpoints: [{{address: {}}}]\n",
            server.ip()
        )
    };
    topo.write_config(
        "service-entries.yaml",
        &format!(
            "{}---\n{}",
            entry("simple", simple_vip, SIMPLE_PORT),
            entry("mutual", mutual_vip, MUTUAL_PORT)
        ),
    )?;
    topo.start_control_plane()?;
    let client = mesh.client_pod()?;
    let dr = |host: &str, tls: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
             metadata: {{name: {}, namespace: {NS}}}\nspec:\n  host: {host}\n  \
             trafficPolicy:\n    tls: {tls}\n",
            host.replace('.', "-")
        )
    };
    let (ca, rogue) = (p(&ca), p(&rogue));
    let (client_cert, client_key) = (p(&client_cert), p(&client_key));
    mesh.check(|| {
        topo.wait_ready(common::READY_TIMEOUT)?;
        let simple = |path: &str| format!("http://simple.external:{SIMPLE_PORT}{path}");
        let mutual = |path: &str| format!("http://mutual.external:{MUTUAL_PORT}{path}");
        // Without a DestinationRule the sidecar sends plaintext: the TLS server cannot answer.
        ensure!(
            curl(&client, &["-sS", "--max-time", "5", &simple("/plain")])
                .map_or(true, |r| r.status != 200),
            "plaintext to a TLS server answered 200"
        );

        // SIMPLE: the server verified against the CA file, by the SAN named, with the SNI.
        topo.write_config(
            "dr.yaml",
            &dr(
                "simple.external",
                &format!(
                    "{{mode: SIMPLE, sni: {SERVER_NAME}, subjectAltNames: [{SERVER_NAME}], \
                     caCertificates: {ca}}}"
                ),
            ),
        )?;
        let r = wait_status(&client, &[&simple("/simple")], 200)?;
        ensure!(
            r.body.contains("no client certificate available"),
            "SIMPLE presented a client certificate: {}",
            r.body
        );
        ensure!(stat(&client, "upstream_ssl.handshake")? >= 1);

        // A SAN the server does not have: refused after the handshake.
        topo.write_config(
            "dr.yaml",
            &dr(
                "simple.external",
                &format!(
                    "{{mode: SIMPLE, sni: {SERVER_NAME}, subjectAltNames: [other.external], \
                     caCertificates: {ca}}}"
                ),
            ),
        )?;
        wait_status(&client, &[&simple("/wrong-san")], 503)?;
        ensure_tls_refused(&client, "/wrong-san", SAN_REFUSED, "wrong SAN")?;
        ensure!(stat(&client, "upstream_ssl.fail_verify_san")? >= 1);

        // A server certificate another CA signed: untrusted.
        topo.write_config(
            "dr.yaml",
            &dr(
                "simple.external",
                &format!("{{mode: SIMPLE, sni: {SERVER_NAME}, caCertificates: {rogue}}}"),
            ),
        )?;
        wait_status(&client, &[&simple("/untrusted")], 503)?;
        ensure_tls_refused(&client, "/untrusted", "certificate", "untrusted server")?;

        // The SNI is sent as written: the server refuses any other name.
        topo.write_config(
            "dr.yaml",
            &dr(
                "simple.external",
                &format!(
                    "{{mode: SIMPLE, sni: wrong.external, subjectAltNames: [{SERVER_NAME}], \
                     caCertificates: {ca}}}"
                ),
            ),
        )?;
        wait_status(&client, &[&simple("/wrong-sni")], 503)?;
        ensure_tls_refused(&client, "/wrong-sni", "", "wrong SNI")?;

        // MUTUAL with certificate files: the server sees the client's certificate.
        topo.write_config(
            "dr.yaml",
            &dr(
                "mutual.external",
                &format!(
                    "{{mode: MUTUAL, sni: {SERVER_NAME}, subjectAltNames: [{SERVER_NAME}], \
                     caCertificates: {ca}, clientCertificate: {client_cert}, \
                     privateKey: {client_key}}}"
                ),
            ),
        )?;
        let r = wait_status(&client, &[&mutual("/mutual")], 200)?;
        ensure!(
            r.body.contains("Client certificate") && r.body.contains("CN=client"),
            "the server saw no client certificate: {}",
            r.body
        );
        // credentialName: no secret store serves `kubernetes://` secrets to this proxy; the
        // cluster fails closed (and the proxy takes the config: no NACK keeps MUTUAL alive).
        topo.write_config(
            "dr.yaml",
            &dr(
                "mutual.external",
                &format!("{{mode: MUTUAL, sni: {SERVER_NAME}, credentialName: mutual-credential}}"),
            ),
        )?;
        wait_status(&client, &[&mutual("/credential-name")], 503)?;
        ensure_tls_refused(
            &client,
            "/credential-name",
            "secret kubernetes://mutual-credential",
            "credentialName",
        )?;
        // SIMPLE to the server that requires a client certificate: refused.
        topo.write_config(
            "dr.yaml",
            &dr(
                "mutual.external",
                &format!(
                    "{{mode: SIMPLE, sni: {SERVER_NAME}, subjectAltNames: [{SERVER_NAME}], \
                     caCertificates: {ca}}}"
                ),
            ),
        )?;
        wait_status(&client, &[&mutual("/no-client-cert")], 503)?;
        Ok(())
    })
}

/// `reviews` with two subsets of the same pods (`verified`, `expects-other`) whose
/// ISTIO_MUTUAL settings expect different identities, and a third (`also-verified`) that
/// accepts the pods' identity among others; the header `x-subset` picks one.
fn subsets_yaml() -> String {
    let host = common::REVIEWS_HOST;
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
         metadata: {{name: reviews, namespace: {NS}}}\nspec:\n  host: {host}\n  subsets:\n\
         \x20 - name: verified\n    labels: {{app: reviews}}\n\
         \x20   trafficPolicy: {{tls: {{mode: ISTIO_MUTUAL}}}}\n\
         \x20 - name: expects-other\n    labels: {{app: reviews}}\n\
         \x20   trafficPolicy: {{tls: {{mode: ISTIO_MUTUAL, subjectAltNames: \
         [spiffe://cluster.local/ns/default/sa/payments]}}}}\n\
         \x20 - name: also-verified\n    labels: {{app: reviews}}\n\
         \x20   trafficPolicy: {{tls: {{mode: ISTIO_MUTUAL, subjectAltNames: \
         [spiffe://cluster.local/ns/default/sa/payments, {REVIEWS_SA}]}}}}\n\
         ---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n\
         metadata: {{name: reviews, namespace: {NS}}}\nspec:\n  hosts: [reviews]\n  http:\n\
         \x20 - match: [{{headers: {{x-subset: {{exact: expects-other}}}}}}]\n\
         \x20   route: [{{destination: {{host: reviews, subset: expects-other}}}}]\n\
         \x20 - match: [{{headers: {{x-subset: {{exact: also-verified}}}}}}]\n\
         \x20   route: [{{destination: {{host: reviews, subset: also-verified}}}}]\n\
         \x20 - route: [{{destination: {{host: reviews, subset: verified}}}}]\n"
    )
}

#[test]
fn a_pooled_connection_verified_for_one_identity_never_carries_anothers_traffic() -> Result<()> {
    mesh_tests::skip_unless_netns!();
    let (mesh, client, servers) = Mesh::standard("pool_per_identity", &["v1"])?;
    let server = &servers[0];
    mesh.check(|| {
        mesh.topo.write_config("subsets.yaml", &subsets_yaml())?;
        let url = format!("http://reviews:{HTTP_PORT}/pool");
        let with = |subset: &str| format!("x-subset: {subset}");
        wait_for("the subsets", PUSH_TIMEOUT, || {
            let r = curl(&client, &["-sS", "-H", &with("expects-other"), &url])?;
            Ok(r.status == 503)
        })?;
        // A verified connection to the pod is pooled...
        for _ in 0..3 {
            let r = curl(&client, &["-sS", &url])?;
            ensure!(r.status == 200, "verified subset: {r:?}");
        }
        let handshakes = stat(server, "ssl.handshake")?;
        let refused = stat(&client, "upstream_ssl.fail_verify_san")?;
        // ...yet traffic that expects another identity never rides on it: a new handshake,
        // whose server identity is refused.
        for i in 0..3 {
            let r = curl(&client, &["-sS", "-H", &with("expects-other"), &url])?;
            ensure!(
                r.status == 503,
                "request {i} expecting another identity got {r:?}"
            );
        }
        ensure!(
            stat(&client, "upstream_ssl.fail_verify_san")? >= refused + 3,
            "the refusals were not SAN checks"
        );
        let log = wait_log(&client, "a refused attempt", |e| {
            e["response_code"] == 503 && s(e, "upstream_cluster").contains("expects-other")
        })?;
        ensure!(s(&log, "response_flags").contains("UF"), "{log}");
        ensure!(
            stat(server, "ssl.handshake")? > handshakes,
            "no new handshake reached the server"
        );
        // Another identity set that includes the pod's: its own connection, verified anew.
        let before = stat(server, "ssl.handshake")?;
        let r = curl(&client, &["-sS", "-H", &with("also-verified"), &url])?;
        ensure!(r.status == 200, "also-verified: {r:?}");
        ensure!(
            stat(server, "ssl.handshake")? > before,
            "the also-verified request reused another subset's connection"
        );
        let echo = r.json()?;
        let xfcc = seen_header(&echo, "x-forwarded-client-cert").context("no XFCC")?;
        ensure!(xfcc.contains(&format!("URI={REVIEWS_SA}")), "{xfcc}");
        // The verified subset still works.
        let r = curl(&client, &["-sS", &url])?;
        ensure!(r.status == 200, "verified subset after the others: {r:?}");
        Ok(())
    })
}

#[test]
fn istio_mutual_and_disable_from_a_destination_rule() -> Result<()> {
    mesh_tests::skip_unless_netns!();
    let (mesh, client, servers) = Mesh::standard("dr_istio_mutual_and_disable", &["v1"])?;
    let url = format!("http://reviews:{HTTP_PORT}/dr");
    let dr = |tls: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
             metadata: {{name: reviews, namespace: {NS}}}\nspec:\n  host: reviews\n  \
             trafficPolicy: {{tls: {tls}}}\n"
        )
    };
    mesh.check(|| {
        // DISABLE under PERMISSIVE: plaintext, so the app sees no client certificate.
        mesh.topo.write_config("dr.yaml", &dr("{mode: DISABLE}"))?;
        wait_for("plaintext to reviews", PUSH_TIMEOUT, || {
            let r = curl(&client, &["-sS", &url])?;
            Ok(r.status == 200 && seen_header(&r.json()?, "x-forwarded-client-cert").is_none())
        })?;
        // DISABLE against STRICT: the server refuses the plaintext connection.
        mesh.topo.write_config(
            "pa.yaml",
            &format!(
                "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
                 metadata: {{name: default, namespace: {NS}}}\nspec: {{mtls: {{mode: STRICT}}}}\n"
            ),
        )?;
        wait_status(&client, &[&url], 503)?;
        wait_log(&servers[0], "the refused plaintext connection", |e| {
            e["response_flags"] == "NR"
        })?;
        // ISTIO_MUTUAL: mutual TLS again, the client's identity forwarded to the app.
        mesh.topo
            .write_config("dr.yaml", &dr("{mode: ISTIO_MUTUAL}"))?;
        let r = wait_status(&client, &[&url], 200)?;
        let xfcc = seen_header(&r.json()?, "x-forwarded-client-cert")
            .context("no XFCC")?
            .to_owned();
        ensure!(xfcc.contains(&format!("URI={REVIEWS_SA}")), "{xfcc}");
        // ISTIO_MUTUAL expecting an identity the server does not have: refused.
        mesh.topo.write_config(
            "dr.yaml",
            &dr("{mode: ISTIO_MUTUAL, subjectAltNames: [spiffe://cluster.local/ns/x/sa/y]}"),
        )?;
        let wrong = format!("http://reviews:{HTTP_PORT}/wrong-san");
        wait_status(&client, &[&wrong], 503)?;
        ensure_tls_refused(&client, "/wrong-san", SAN_REFUSED, "wrong SAN")?;
        Ok(())
    })
}

#[test]
fn a_port_level_disable_takes_plaintext_on_that_port_only() -> Result<()> {
    mesh_tests::skip_unless_netns!();
    let (mesh, client, servers) = Mesh::standard("port_level_disable", &["v1"])?;
    let plain = mesh.topo.pod("plain", NS, &[("app", "plain")])?;
    let server = &servers[0];
    mesh.check(|| {
        // The workload is STRICT except on its HTTP port.
        mesh.topo.write_config(
            "pa.yaml",
            &format!(
                "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
                 metadata: {{name: reviews, namespace: {NS}}}\nspec:\n  \
                 selector: {{matchLabels: {{app: reviews}}}}\n  mtls: {{mode: STRICT}}\n  \
                 portLevelMtls:\n    {HTTP_PORT}: {{mode: DISABLE}}\n"
            ),
        )?;
        let tcp_direct = format!("{}:{TCP_PORT}", server.ip());
        wait_for("STRICT on the TCP port", PUSH_TIMEOUT, || {
            Ok(!plain
                .echo_client(&["tcp", &tcp_direct, "--data", "x\n"])?
                .success())
        })?;
        // Plaintext from a pod without a sidecar: accepted on the DISABLE port only.
        let direct = format!("http://{}:{HTTP_PORT}/disabled-port", server.ip());
        let r = wait_status(&plain, &[&direct], 200)?;
        ensure!(
            seen_header(&r.json()?, "x-forwarded-client-cert").is_none(),
            "{r:?}"
        );
        ensure!(
            !plain
                .echo_client(&["tcp", &tcp_direct, "--data", "x\n"])?
                .success(),
            "plaintext reached the STRICT TCP port"
        );
        // The client's sidecar is told: plaintext to the DISABLE port, mutual TLS elsewhere.
        let url = format!("http://reviews:{HTTP_PORT}/from-sidecar");
        let r = wait_status(&client, &[&url], 200)?;
        ensure!(
            seen_header(&r.json()?, "x-forwarded-client-cert").is_none(),
            "mutual TLS to the DISABLE port: {r:?}"
        );
        let ok = echo_client(
            &client,
            &["tcp", &format!("reviews:{TCP_PORT}"), "--data", "hi\n"],
        )?;
        ensure!(ok[0]["ok"] == true, "{ok:?}");
        // Mesh-wide STRICT from the root namespace alone: plaintext refused on every port,
        // sidecars still served (mutual TLS, the client's identity forwarded).
        mesh.topo.remove_config("pa.yaml")?;
        mesh.topo.write_config(
            "mesh-pa.yaml",
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
             metadata: {name: default, namespace: istio-system}\nspec: {mtls: {mode: STRICT}}\n",
        )?;
        wait_for("mesh-wide STRICT", PUSH_TIMEOUT, || {
            Ok(curl(&plain, &["-sS", "--max-time", "5", &direct]).is_err())
        })?;
        let r = wait_status(&client, &[&url], 200)?;
        ensure!(
            seen_header(&r.json()?, "x-forwarded-client-cert").is_some(),
            "not mutual TLS under mesh-wide STRICT: {r:?}"
        );
        Ok(())
    })
}

#[test]
fn an_endpoint_whose_certificate_names_another_identity_is_refused() -> Result<()> {
    mesh_tests::skip_unless_netns!();
    let (mesh, client, servers) = Mesh::standard("endpoint_identity_checked", &["v1"])?;
    // A pod whose sidecar runs as `impostor`, made an endpoint of `reviews` by a
    // WorkloadEntry that claims the service's identity.
    let opts = mesh_tests::harness::ProxyOptions {
        service_account: "impostor".into(),
        ..Default::default()
    };
    let impostor = mesh
        .topo
        .injected_pod_with("impostor", NS, &[("app", "impostor")], &opts)?;
    impostor
        .spawn_echo(&mesh_tests::harness::EchoSpec::new("impostor", "v1").http(HTTP_PORT))?
        .wait_for_log("\"event\":\"listening\"", Duration::from_secs(10))?;
    mesh.check(|| {
        mesh.topo.write_config(
            "workload-entry.yaml",
            &format!(
                "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n\
                 metadata: {{name: impostor, namespace: {NS}}}\nspec:\n  address: {}\n  \
                 labels: {{app: reviews}}\n  serviceAccount: default\n",
                impostor.ip()
            ),
        )?;
        let want: Vec<String> = [servers[0].ip(), impostor.ip()]
            .iter()
            .map(|ip| format!("{ip}:{HTTP_PORT}"))
            .collect();
        common::wait_endpoints(
            &client,
            &format!("outbound|{HTTP_PORT}||{}", common::REVIEWS_HOST),
            &want,
        )?;
        impostor.wait_proxy_ready(common::READY_TIMEOUT)?;
        // Round robin tries the impostor too; its certificate is refused and the request
        // retried on the honest endpoint (Istio's default retry on connect failures).
        let url = format!("http://reviews:{HTTP_PORT}/identity");
        for i in 0..8 {
            let r = curl(&client, &["-sS", &url])?;
            ensure!(r.status == 200, "request {i}: {r:?}");
            ensure!(
                r.json()?["name"] == "reviews",
                "request {i} answered by {}",
                r.body
            );
        }
        ensure!(
            stat(&client, "upstream_ssl.fail_verify_san")? >= 1,
            "the impostor was never refused"
        );
        ensure!(
            !common::access_log(&impostor)
                .iter()
                .any(|e| e["path"] == "/identity"),
            "a request reached the impostor"
        );
        Ok(())
    })
}
