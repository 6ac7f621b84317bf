//! The real `mesh-proxy` on loopback with RBAC filters: an HTTP chain (DENY before ALLOW, a
//! dry-run rule, path normalization: the same normalized path is checked and forwarded) and
//! a TCP chain whose network RBAC filter closes denied connections before anything reaches
//! the upstream; denials are logged and counted.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::keepalive::Connection;
use common::upstreams::{http_echo, tcp_echo};
use common::xds::*;
use common::{curl, Ports, Proxy};
use envoy_types::pb::envoy::config::core::v3::CidrRange;
use envoy_types::pb::envoy::config::listener::v3::{filter, Filter};
use envoy_types::pb::envoy::config::rbac::v3::{self as rbac, permission, principal};
use envoy_types::pb::envoy::config::route::v3::{header_matcher, HeaderMatcher};
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as HttpRbac;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager, http_filter, HttpConnectionManager, HttpFilter,
};
use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac as NetworkRbac;
use envoy_types::pb::envoy::r#type::matcher::v3::{
    path_matcher, string_matcher, PathMatcher, StringMatcher,
};
use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};
use envoy_types::util::pack_any;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn path(m: string_matcher::MatchPattern) -> permission::Rule {
    permission::Rule::UrlPath(PathMatcher {
        rule: Some(path_matcher::Rule::Path(StringMatcher {
            match_pattern: Some(m),
            ..Default::default()
        })),
    })
}

fn policy(perms: Vec<permission::Rule>, ids: Vec<principal::Identifier>) -> rbac::Policy {
    rbac::Policy {
        permissions: vec![rbac::Permission {
            rule: Some(permission::Rule::OrRules(permission::Set {
                rules: perms
                    .into_iter()
                    .map(|r| rbac::Permission { rule: Some(r) })
                    .collect(),
            })),
        }],
        principals: ids
            .into_iter()
            .map(|i| rbac::Principal {
                identifier: Some(i),
            })
            .collect(),
        ..Default::default()
    }
}

fn rules(action: rbac::rbac::Action, name: &str, p: rbac::Policy) -> rbac::Rbac {
    rbac::Rbac {
        action: action as i32,
        policies: [(name.to_string(), p)].into(),
        ..Default::default()
    }
}

fn http_rbac(config: HttpRbac) -> HttpFilter {
    HttpFilter {
        name: "envoy.filters.http.rbac".into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(config))),
        ..Default::default()
    }
}

/// DENY `/admin` and `/admin/*`; dry-run DENY `/dry`; ALLOW `/public/*` or `x-token: secret`.
fn inbound_hcm(port: u16) -> Filter {
    use string_matcher::MatchPattern::{Exact, Prefix};
    let deny = HttpRbac {
        rules: Some(rules(
            rbac::rbac::Action::Deny,
            "ns[app]-policy[deny-admin]-rule[0]",
            policy(
                vec![path(Exact("/admin".into())), path(Prefix("/admin/".into()))],
                vec![principal::Identifier::Any(true)],
            ),
        )),
        shadow_rules: Some(rules(
            rbac::rbac::Action::Deny,
            "ns[app]-policy[dry]-rule[0]",
            policy(
                vec![path(Exact("/dry".into()))],
                vec![principal::Identifier::Any(true)],
            ),
        )),
        shadow_rules_stat_prefix: "istio_dry_run_deny_".into(),
        ..Default::default()
    };
    let token = principal::Identifier::Header(HeaderMatcher {
        name: "x-token".into(),
        header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(
            StringMatcher {
                match_pattern: Some(Exact("secret".into())),
                ..Default::default()
            },
        )),
        ..Default::default()
    });
    let allow = HttpRbac {
        rules: Some(rbac::Rbac {
            action: rbac::rbac::Action::Allow as i32,
            policies: [
                (
                    "ns[app]-policy[public]-rule[0]".to_string(),
                    policy(
                        vec![path(Prefix("/public/".into())), path(Exact("/dry".into()))],
                        vec![principal::Identifier::Any(true)],
                    ),
                ),
                (
                    "ns[app]-policy[token]-rule[0]".to_string(),
                    policy(vec![permission::Rule::Any(true)], vec![token]),
                ),
            ]
            .into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let routes = route_config(
        "inbound|app||",
        vec![vhost(
            "inbound|http|app",
            &["*"],
            vec![route_to("inbound|app||", None)],
        )],
    );
    let Some(filter::ConfigType::TypedConfig(any)) = hcm_inline(routes).config_type else {
        unreachable!()
    };
    let mut config: HttpConnectionManager = prost::Message::decode(any.value.as_slice()).unwrap();
    config.stat_prefix = format!("inbound_0.0.0.0_{port}");
    config.http_filters.insert(0, http_rbac(allow));
    config.http_filters.insert(0, http_rbac(deny));
    config.normalize_path = Some(BoolValue { value: true });
    config.merge_slashes = true;
    config.path_with_escaped_slashes_action =
        http_connection_manager::PathWithEscapedSlashesAction::UnescapeAndForward as i32;
    Filter {
        name: "envoy.filters.network.http_connection_manager".into(),
        config_type: Some(filter::ConfigType::TypedConfig(pack_any(config))),
    }
}

fn resources(ports: &Ports, app: SocketAddr, chain_filters: Vec<Filter>) -> Resources {
    let inb = ports.inbound.port();
    let mut inbound_chain = chain("inbound", Some(on_port(inb, &[])), chain_filters[0].clone());
    inbound_chain.filters = chain_filters;
    Resources::default()
        .listener(virtual_outbound(
            vec![],
            Some(chain(
                "PassthroughFilterChain",
                None,
                tcp("PassthroughCluster", None),
            )),
        ))
        .listener(virtual_inbound(vec![inbound_chain], None))
        .cluster(original_dst_cluster("PassthroughCluster", None))
        .cluster(static_cluster("inbound|app||", &[app], Proto::Http1))
}

async fn status(proxy: &Proxy, target: &str, headers: &[&str]) -> (u16, String) {
    let url = format!("http://{}{target}", proxy.inbound);
    let mut args = vec!["-s", "--path-as-is", "-w", "\n%{http_code}"];
    for h in headers {
        args.extend(["-H", h]);
    }
    args.push(&url);
    let out = curl(&args).await;
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", &out));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_rbac_denies_allows_and_checks_the_forwarded_path() {
    let app = http_echo("app").await;
    let ports = Ports::new();
    let ads = serve_ads(resources(
        &ports,
        app,
        vec![inbound_hcm(ports.inbound.port())],
    ))
    .await;
    let proxy = Proxy::start(ads, ports, &[]);
    proxy.wait_ready().await;

    let (code, body) = status(&proxy, "/public/a", &[]).await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = status(&proxy, "/other", &[]).await;
    assert_eq!((code, body.as_str()), (403, "RBAC: access denied"));
    assert_eq!(status(&proxy, "/other", &["x-token: secret"]).await.0, 200);
    assert_eq!(status(&proxy, "/other", &["X-TOKEN: secret"]).await.0, 200);
    assert_eq!(
        status(&proxy, "/other", &["x-token: nope", "x-token: secret"])
            .await
            .0,
        403,
        "a repeated header is checked as its joined value"
    );
    // DENY wins over an ALLOW match; every spelling of /admin is the same path.
    for target in [
        "/admin",
        "//admin",
        "/./admin",
        "/%61dmin",
        "/admin/../admin",
        "/public/../admin",
        "/public/..%2Fadmin",
        "/public%2F..%2Fadmin",
        "/public/%2e%2e/admin",
        "/public\\..\\admin",
        "/admin/x#frag",
        "/ADMIN/../admin",
    ] {
        let (code, body) = status(&proxy, target, &["x-token: secret"]).await;
        assert_eq!(code, 403, "{target}: {body}");
    }
    // What is forwarded is what was checked.
    let (code, body) = status(&proxy, "/public//x/./y/../%7Ez?q=/../a", &[]).await;
    assert_eq!(code, 200, "{body}");
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["path"], "/public/x/~z?q=/../a");
    assert_eq!(status(&proxy, "/public/%00", &[]).await.0, 400);

    // Denials and refused paths keep an HTTP/1.1 connection alive, like any response.
    let mut conn = Connection::open(proxy.inbound).await;
    for (target, headers, code) in [
        ("/other", &[][..], 403),
        ("/public/ka1", &[][..], 200),
        ("/admin", &[("x-token", "secret")][..], 403),
        ("/public/%00", &[][..], 400),
        ("/public/ka2", &[][..], 200),
    ] {
        let r = conn.send("GET", "app", target, headers).await;
        assert_eq!(r.status, code, "{target}: {r:?}");
        assert_eq!(
            r.header("connection"),
            Some("keep-alive"),
            "{target}: {r:?}"
        );
    }
    assert!(!conn.closed_within(Duration::from_millis(300)).await);

    // The dry-run DENY of /dry is logged, not enforced (the ALLOW rule lets it through).
    assert_eq!(status(&proxy, "/dry", &[]).await.0, 200);
    let log = proxy.wait_log(|l| l["path"] == "/dry").await;
    assert_eq!(log["shadow_engine_result"], "denied", "{log}");
    assert_eq!(
        log["shadow_effective_policy_id"],
        "ns[app]-policy[dry]-rule[0]"
    );
    assert_eq!(log["response_code"], 200);

    let log = proxy
        .wait_log(|l| l["path"] == "/admin" && l["response_code"] == 403)
        .await;
    assert_eq!(
        log["response_code_details"],
        "rbac_access_denied_matched_policy[ns[app]-policy[deny-admin]-rule[0]]"
    );
    assert_eq!(log["response_flags"], "-");
    let log = proxy
        .wait_log(|l| l["path"] == "/other" && l["response_code"] == 403)
        .await;
    assert_eq!(
        log["response_code_details"],
        "rbac_access_denied_matched_policy[none]"
    );
    let stats = curl(&["-s", &format!("http://{}/stats", proxy.admin)]).await;
    let prefix = format!("http.inbound_0.0.0.0_{}.rbac.", proxy.inbound.port());
    let value = |name: &str| -> u64 {
        stats
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{prefix}{name}: ")))
            .unwrap_or_else(|| panic!("{prefix}{name} in\n{stats}"))
            .parse()
            .unwrap()
    };
    assert!(value("denied") >= 14, "{stats}");
    assert!(value("allowed") >= 4, "{stats}");
    assert!(value("istio_dry_run_deny_shadow_denied") >= 1, "{stats}");
}

fn network_rbac(denied_source: &str) -> Filter {
    let config = NetworkRbac {
        rules: Some(rules(
            rbac::rbac::Action::Deny,
            "ns[app]-policy[deny-tcp]-rule[0]",
            rbac::Policy {
                permissions: vec![rbac::Permission {
                    rule: Some(permission::Rule::Any(true)),
                }],
                principals: vec![rbac::Principal {
                    identifier: Some(principal::Identifier::DirectRemoteIp(CidrRange {
                        address_prefix: denied_source.into(),
                        prefix_len: Some(UInt32Value { value: 32 }),
                    })),
                }],
                ..Default::default()
            },
        )),
        stat_prefix: "tcp.".into(),
        ..Default::default()
    };
    Filter {
        name: "envoy.filters.network.rbac".into(),
        config_type: Some(filter::ConfigType::TypedConfig(pack_any(config))),
    }
}

async fn echo_from(source: &str, to: SocketAddr) -> Vec<u8> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let mut stream = socket.connect(to).await.unwrap();
    let _ = stream.write_all(b"ping").await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let mut chunk = [0u8; 16];
        while let Ok(n) = stream.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.len() >= 4 {
                break;
            }
        }
    })
    .await;
    buf
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_rbac_closes_denied_connections() {
    let echo = tcp_echo().await;
    let ports = Ports::new();
    let filters = vec![network_rbac("127.0.0.2"), tcp("inbound|app||", None)];
    let ads = serve_ads(resources(&ports, echo, filters)).await;
    let proxy = Proxy::start(ads, ports, &[]);
    proxy.wait_ready().await;
    assert_eq!(echo_from("127.0.0.1", proxy.inbound).await, b"ping");
    assert_eq!(echo_from("127.0.0.2", proxy.inbound).await, b"");
    let log = proxy
        .wait_log(|l| !l["connection_termination_details"].is_null())
        .await;
    assert_eq!(
        log["connection_termination_details"],
        "rbac_access_denied_matched_policy[ns[app]-policy[deny-tcp]-rule[0]]"
    );
    assert!(log["downstream_remote_address"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.2:"));
    let stats = curl(&["-s", &format!("http://{}/stats", proxy.admin)]).await;
    assert!(stats.contains("tcp.rbac.denied: 1"), "{stats}");
    assert!(stats.contains("tcp.rbac.allowed: 1"), "{stats}");
}
