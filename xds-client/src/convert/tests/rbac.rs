//! RBAC filters (HTTP and network), their matchers, and the connection manager's path
//! normalization.

use envoy_types::pb::envoy::config::core::v3::{CidrRange, TypedExtensionConfig};
use envoy_types::pb::envoy::config::listener::v3 as lis;
use envoy_types::pb::envoy::config::rbac::v3::{self as rbac, permission, principal};
use envoy_types::pb::envoy::config::route::v3 as rt;
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as HttpRbac;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac as NetworkRbac;
use envoy_types::pb::envoy::extensions::path::r#match::uri_template::v3::UriTemplateMatchConfig;
use envoy_types::pb::envoy::r#type::matcher::v3::{
    path_matcher, string_matcher, PathMatcher, RegexMatcher, StringMatcher,
};
use envoy_types::util::pack_any;

use super::*;
use crate::model::matcher::{HeaderMatch, StringMatcher as Sm};
use crate::model::rbac::{Permission, Principal, RbacAction};
use crate::model::{EscapedSlashes, HttpFilter, Listener, NetworkFilter, PathNormalization};

fn regex(r: &str) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(string_matcher::MatchPattern::SafeRegex(RegexMatcher {
            regex: r.into(),
            engine_type: None,
        })),
        ..Default::default()
    }
}

fn policy(perms: Vec<permission::Rule>, ids: Vec<principal::Identifier>) -> rbac::Policy {
    rbac::Policy {
        permissions: perms
            .into_iter()
            .map(|r| rbac::Permission { rule: Some(r) })
            .collect(),
        principals: ids
            .into_iter()
            .map(|i| rbac::Principal {
                identifier: Some(i),
            })
            .collect(),
        ..Default::default()
    }
}

fn rules(action: rbac::rbac::Action, p: rbac::Policy) -> rbac::Rbac {
    rbac::Rbac {
        action: action as i32,
        policies: [("ns[foo]-policy[p]-rule[0]".to_string(), p)].into(),
        ..Default::default()
    }
}

fn sample_policy() -> rbac::Policy {
    policy(
        vec![
            permission::Rule::Header(rt::HeaderMatcher {
                name: ":Method".into(),
                header_match_specifier: Some(
                    rt::header_matcher::HeaderMatchSpecifier::StringMatch(StringMatcher {
                        match_pattern: Some(string_matcher::MatchPattern::Exact("GET".into())),
                        ..Default::default()
                    }),
                ),
                ..Default::default()
            }),
            permission::Rule::UrlPath(PathMatcher {
                rule: Some(path_matcher::Rule::Path(regex(".+"))),
            }),
            permission::Rule::UriTemplate(TypedExtensionConfig {
                name: "uri-template".into(),
                typed_config: Some(pack_any(UriTemplateMatchConfig {
                    path_template: "/v1/*/x".into(),
                })),
            }),
            permission::Rule::DestinationPort(8080),
        ],
        vec![
            principal::Identifier::Authenticated(principal::Authenticated {
                principal_name: Some(regex(".*/ns/foo/.*")),
            }),
            principal::Identifier::DirectRemoteIp(CidrRange {
                address_prefix: "10.1.2.3".into(),
                prefix_len: u32v(16),
            }),
        ],
    )
}

fn rbac_http_filter(config: HttpRbac) -> hcm::HttpFilter {
    hcm::HttpFilter {
        name: "envoy.filters.http.rbac".into(),
        config_type: Some(hcm::http_filter::ConfigType::TypedConfig(pack_any(config))),
        ..Default::default()
    }
}

fn inbound(
    filters: Vec<hcm::HttpFilter>,
    f: impl FnOnce(&mut hcm::HttpConnectionManager),
) -> Result<Listener, ConvertError> {
    let mut config = hcm_rds("9080");
    config.http_filters = filters;
    f(&mut config);
    Listener::try_from(lis::Listener {
        name: "virtualInbound".into(),
        address: Some(sock("0.0.0.0", 15006)),
        filter_chains: vec![http_chain(config)],
        ..Default::default()
    })
}

fn hcm_of(l: &Listener) -> &crate::model::HttpConnectionManager {
    match &l.filter_chains[0].filter {
        NetworkFilter::Http(h) => h,
        other => panic!("{other:?}"),
    }
}

#[test]
fn http_rbac_filter_before_the_router() {
    let config = HttpRbac {
        rules: Some(rules(rbac::rbac::Action::Deny, sample_policy())),
        shadow_rules: Some(rules(rbac::rbac::Action::Allow, sample_policy())),
        shadow_rules_stat_prefix: "istio_dry_run_allow_".into(),
        ..Default::default()
    };
    let l = inbound(vec![rbac_http_filter(config), router()], |_| {}).unwrap();
    let h = hcm_of(&l);
    let HttpFilter::Rbac(r) = &h.http_filters[0] else {
        panic!("{:?}", h.http_filters)
    };
    assert!(matches!(h.http_filters[1], HttpFilter::Router));
    let rules = r.rules.as_ref().unwrap();
    assert_eq!(rules.action, RbacAction::Deny);
    assert_eq!(r.shadow_rules.as_ref().unwrap().action, RbacAction::Allow);
    assert_eq!(r.shadow_rules_stat_prefix, "istio_dry_run_allow_");
    let p = &rules.policies["ns[foo]-policy[p]-rule[0]"];
    let Permission::Header(m) = &p.permissions[0] else {
        panic!()
    };
    assert_eq!(m.name, ":method");
    assert_eq!(m.rule, HeaderMatch::String(Sm::exact("GET")));
    assert!(matches!(&p.permissions[2], Permission::UriTemplate(t) if t.regex.is_match("/v1/a/x")));
    assert_eq!(p.permissions[3], Permission::DestinationPort(8080));
    assert_eq!(
        p.principals[1],
        Principal::DirectRemoteIp("10.1.0.0/16".parse().unwrap())
    );
    assert_eq!(h.path_normalization, PathNormalization::default());
}

#[test]
fn rbac_errors_name_the_field() {
    let bad = |p: rbac::Policy| {
        let config = HttpRbac {
            rules: Some(rules(rbac::rbac::Action::Allow, p)),
            ..Default::default()
        };
        message(inbound(vec![rbac_http_filter(config), router()], |_| {}))
    };
    let prefix = "listener \"virtualInbound\": filter_chains[0].filters[0].typed_config.\
                  http_filters[0].typed_config.rules.policies[\"ns[foo]-policy[p]-rule[0]\"]";
    assert_eq!(
        bad(policy(
            vec![permission::Rule::UrlPath(PathMatcher {
                rule: Some(path_matcher::Rule::Path(regex("(")))
            })],
            vec![principal::Identifier::Any(true)]
        )),
        format!(
            "{prefix}.permissions[0].url_path.path.safe_regex.regex: invalid regular \
             expression \"(: unclosed group\""
        )
    );
    let filter_state = bad(policy(
        vec![permission::Rule::Any(true)],
        vec![principal::Identifier::FilterState(Default::default())],
    ));
    assert_eq!(
        filter_state,
        format!("{prefix}.principals[0].filter_state: not supported by this proxy")
    );
    let template = bad(policy(
        vec![permission::Rule::UriTemplate(TypedExtensionConfig {
            name: "t".into(),
            typed_config: Some(pack_any(UriTemplateMatchConfig {
                path_template: "/**/*".into(),
            })),
        })],
        vec![principal::Identifier::Any(true)],
    ));
    assert!(
        template.contains("invalid path template \"/**/*: no operator may follow **\""),
        "{template}"
    );
    let mut cel = policy(
        vec![permission::Rule::Any(true)],
        vec![principal::Identifier::Any(true)],
    );
    cel.condition = Some(Default::default());
    assert_eq!(
        bad(cel),
        format!("{prefix}.condition: not supported by this proxy")
    );
    let no_principal = bad(policy(vec![permission::Rule::Any(true)], vec![]));
    assert_eq!(
        no_principal,
        format!("{prefix}.principals: required field is missing or empty")
    );
    // After the router.
    let config = HttpRbac::default();
    assert_eq!(
        message(inbound(vec![router(), rbac_http_filter(config)], |_| {})),
        "listener \"virtualInbound\": filter_chains[0].filters[0].typed_config.\
         http_filters[1]: the router must be the last HTTP filter"
    );
}

#[test]
fn path_normalization_from_the_connection_manager() {
    let l = inbound(vec![router()], |h| {
        h.normalize_path = yes();
        h.merge_slashes = true;
        h.path_with_escaped_slashes_action =
            hcm::http_connection_manager::PathWithEscapedSlashesAction::UnescapeAndForward as i32;
    })
    .unwrap();
    assert_eq!(
        hcm_of(&l).path_normalization,
        PathNormalization {
            normalize: true,
            merge_slashes: true,
            escaped_slashes: EscapedSlashes::UnescapeAndForward,
        }
    );
    let redirect = inbound(vec![router()], |h| {
        h.path_with_escaped_slashes_action =
            hcm::http_connection_manager::PathWithEscapedSlashesAction::UnescapeAndRedirect as i32;
    });
    assert!(message(redirect).ends_with(
        "path_with_escaped_slashes_action: unsupported value \"UNESCAPE_AND_REDIRECT\""
    ));
}

fn network_rbac(config: NetworkRbac) -> lis::Filter {
    net_filter("envoy.filters.network.rbac", pack_any(config))
}

#[test]
fn network_rbac_before_tcp_proxy() {
    let config = NetworkRbac {
        rules: Some(rules(rbac::rbac::Action::Allow, sample_policy())),
        stat_prefix: "tcp.".into(),
        ..Default::default()
    };
    let mut chain = tcp_chain("inbound|9000||");
    chain.filters.insert(0, network_rbac(config.clone()));
    let l = Listener::try_from(lis::Listener {
        name: "virtualInbound".into(),
        address: Some(sock("0.0.0.0", 15006)),
        filter_chains: vec![chain],
        ..Default::default()
    })
    .unwrap();
    let c = &l.filter_chains[0];
    assert_eq!(c.rbac.len(), 1);
    assert_eq!(c.rbac[0].stat_prefix, "tcp.");
    assert!(matches!(c.filter, NetworkFilter::Tcp(_)));

    let last = lis::FilterChain {
        filters: vec![network_rbac(config.clone())],
        ..Default::default()
    };
    let err = message(Listener::try_from(lis::Listener {
        name: "l".into(),
        address: Some(sock("0.0.0.0", 15006)),
        filter_chains: vec![last],
        ..Default::default()
    }));
    assert!(
        err.ends_with(
            "the last filter must be a terminal filter (http_connection_manager, tcp_proxy)"
        ),
        "{err}"
    );
    let no_prefix = NetworkRbac {
        stat_prefix: String::new(),
        ..config
    };
    let mut chain = tcp_chain("c");
    chain.filters.insert(0, network_rbac(no_prefix));
    let err = message(Listener::try_from(lis::Listener {
        name: "l".into(),
        address: Some(sock("0.0.0.0", 15006)),
        filter_chains: vec![chain],
        ..Default::default()
    }));
    assert!(
        err.ends_with("filters[0].typed_config.stat_prefix: required field is missing or empty"),
        "{err}"
    );
}
