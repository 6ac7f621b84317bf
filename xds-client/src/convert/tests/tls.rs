//! Transport sockets as istiod shapes them: auto mTLS on outbound clusters, mTLS on inbound
//! chains, endpoint metadata, XFCC; and what the proxy cannot honour.

use envoy_types::pb::envoy::config::cluster::v3::{self as cl, cluster};
use envoy_types::pb::envoy::config::core::v3::{
    api_config_source::ApiType, config_source, grpc_service, transport_socket, ApiConfigSource,
    ApiVersion, ConfigSource, GrpcService, Metadata, TransportSocket,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::{
    ForwardClientCertDetails, SetCurrentClientCertDetails,
};
use envoy_types::pb::envoy::extensions::transport_sockets::raw_buffer::v3::RawBuffer;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    common_tls_context::{CombinedCertificateValidationContext, ValidationContextType},
    subject_alt_name_matcher::SanType as PbSan, CertificateValidationContext, CommonTlsContext,
    DownstreamTlsContext, SdsSecretConfig, SubjectAltNameMatcher, TlsCertificate,
    UpstreamTlsContext,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher, StringMatcher as PbString};
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
use envoy_types::util::pack_any;

use super::*;
use crate::model::matcher::StringMatcher;
use crate::model::tls::{ForwardClientCert, SanType, SecretName};
use crate::model::{Cluster, ClusterLoadAssignment, FilterChain, HttpConnectionManager};

/// istiod's secret source: SDS over gRPC to the node agent's cluster `cluster`.
fn grpc_source(cluster: &str, api_type: ApiType) -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::ApiConfigSource(
            ApiConfigSource {
                api_type: api_type as i32,
                transport_api_version: ApiVersion::V3 as i32,
                set_node_on_first_message_only: true,
                grpc_services: vec![GrpcService {
                    target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                        grpc_service::EnvoyGrpc {
                            cluster_name: cluster.into(),
                            ..Default::default()
                        },
                    )),
                    ..Default::default()
                }],
                ..Default::default()
            },
        )),
        initial_fetch_timeout: Some(Default::default()),
        resource_api_version: ApiVersion::V3 as i32,
        ..Default::default()
    }
}

fn sds(name: &str) -> SdsSecretConfig {
    SdsSecretConfig {
        name: name.into(),
        sds_config: Some(grpc_source("sds-grpc", ApiType::Grpc)),
    }
}

fn spiffe(id: &str) -> SubjectAltNameMatcher {
    SubjectAltNameMatcher {
        san_type: PbSan::Uri as i32,
        matcher: Some(PbString {
            match_pattern: Some(string_matcher::MatchPattern::Exact(id.into())),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Istio's `CommonTlsContext`: `default` certificate, `ROOTCA` with SAN matchers, ALPN.
fn istio_common(sans: &[&str], alpn: &[&str]) -> CommonTlsContext {
    CommonTlsContext {
        tls_certificate_sds_secret_configs: vec![sds("default")],
        validation_context_type: Some(ValidationContextType::CombinedValidationContext(
            CombinedCertificateValidationContext {
                default_validation_context: Some(CertificateValidationContext {
                    match_typed_subject_alt_names: sans.iter().map(|s| spiffe(s)).collect(),
                    ..Default::default()
                }),
                validation_context_sds_secret_config: Some(sds("ROOTCA")),
                ..Default::default()
            },
        )),
        alpn_protocols: alpn.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn tls_socket(config: envoy_types::pb::google::protobuf::Any) -> TransportSocket {
    TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(config)),
    }
}

fn upstream(common: CommonTlsContext, sni: &str) -> TransportSocket {
    tls_socket(pack_any(UpstreamTlsContext {
        common_tls_context: Some(common),
        sni: sni.into(),
        ..Default::default()
    }))
}

fn istio_cluster(name: &str) -> cl::Cluster {
    cl::Cluster {
        name: name.into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cluster::EdsClusterConfig {
            eds_config: Some(ads()),
            service_name: name.into(),
        }),
        transport_socket_matches: vec![
            cluster::TransportSocketMatch {
                name: "tlsMode-istio".into(),
                r#match: Some(Struct {
                    fields: [(
                        "tlsMode".to_string(),
                        Value {
                            kind: Some(Kind::StringValue("istio".into())),
                        },
                    )]
                    .into(),
                }),
                transport_socket: Some(upstream(
                    istio_common(
                        &["spiffe://cluster.local/ns/default/sa/reviews"],
                        &["istio-peer-exchange", "istio"],
                    ),
                    "outbound_.9080_._.reviews.default.svc.cluster.local",
                )),
            },
            cluster::TransportSocketMatch {
                name: "tlsMode-disabled".into(),
                r#match: Some(Struct::default()),
                transport_socket: Some(TransportSocket {
                    name: "envoy.transport_sockets.raw_buffer".into(),
                    config_type: Some(transport_socket::ConfigType::TypedConfig(pack_any(
                        RawBuffer::default(),
                    ))),
                }),
            },
        ],
        ..Default::default()
    }
}

#[test]
fn auto_mtls_cluster_and_endpoint_metadata() {
    let c = Cluster::try_from(istio_cluster("outbound|9080||reviews")).unwrap();
    assert!(c.transport_socket.is_none());
    let [istio, disabled] = c.transport_socket_matches.as_slice() else {
        panic!("{:?}", c.transport_socket_matches);
    };
    assert_eq!(istio.name, "tlsMode-istio");
    assert_eq!(
        istio.criteria.get("tlsMode").map(String::as_str),
        Some("istio")
    );
    let tls = istio.tls.as_ref().unwrap();
    assert_eq!(
        tls.sni.as_deref(),
        Some("outbound_.9080_._.reviews.default.svc.cluster.local")
    );
    assert_eq!(tls.common.certificate, Some(SecretName::Workload));
    let v = tls.common.validation.as_ref().unwrap();
    assert_eq!(v.trusted_ca, SecretName::Root);
    assert_eq!(v.san_matchers.len(), 1);
    assert_eq!(v.san_matchers[0].san_type, SanType::Uri);
    assert_eq!(
        v.san_matchers[0].matcher,
        StringMatcher::exact("spiffe://cluster.local/ns/default/sa/reviews")
    );
    assert_eq!(tls.common.alpn, ["istio-peer-exchange", "istio"]);
    assert!(disabled.criteria.is_empty() && disabled.tls.is_none());

    let mut lb = lb_endpoint("10.1.0.1", 9080);
    lb.metadata = Some(Metadata {
        filter_metadata: [(
            "envoy.transport_socket_match".to_string(),
            Struct {
                fields: [(
                    "tlsMode".to_string(),
                    Value {
                        kind: Some(Kind::StringValue("istio".into())),
                    },
                )]
                .into(),
            },
        )]
        .into(),
        ..Default::default()
    });
    let cla = ClusterLoadAssignment::try_from(ep::ClusterLoadAssignment {
        cluster_name: "c".into(),
        endpoints: vec![ep::LocalityLbEndpoints {
            lb_endpoints: vec![lb],
            ..Default::default()
        }],
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        cla.endpoints[0]
            .transport_metadata
            .get("tlsMode")
            .map(String::as_str),
        Some("istio")
    );
}

#[test]
fn inbound_mtls_chain_and_xfcc() {
    let mut hcm = hcm_rds("80");
    hcm.forward_client_cert_details = ForwardClientCertDetails::AppendForward as i32;
    hcm.set_current_client_cert_details = Some(SetCurrentClientCertDetails {
        subject: yes(),
        uri: true,
        dns: true,
        ..Default::default()
    });
    let mut chain = http_chain(hcm);
    chain.transport_socket = Some(tls_socket(pack_any(DownstreamTlsContext {
        common_tls_context: Some(istio_common(&[], &["h2", "http/1.1"])),
        require_client_certificate: yes(),
        ..Default::default()
    })));
    let chain = FilterChain::try_from(chain).unwrap();
    let tls = chain.tls.unwrap();
    assert!(tls.require_client_certificate);
    assert_eq!(tls.common.certificate, Some(SecretName::Workload));
    assert_eq!(tls.common.alpn, ["h2", "http/1.1"]);
    let crate::model::NetworkFilter::Http(HttpConnectionManager { xfcc, .. }) = chain.filter else {
        panic!("not HTTP");
    };
    assert_eq!(xfcc.forward, ForwardClientCert::AppendForward);
    assert!(xfcc.details.subject && xfcc.details.uri && xfcc.details.dns);
    // Envoy's default: sanitize.
    let FilterChain { filter, .. } = FilterChain::try_from(http_chain(hcm_rds("80"))).unwrap();
    let crate::model::NetworkFilter::Http(h) = filter else {
        panic!()
    };
    assert_eq!(h.xfcc.forward, ForwardClientCert::Sanitize);
    // DestinationRule files.
    assert_eq!(
        SecretName::parse("file-cert:/etc/certs/cert.pem~/etc/certs/key.pem"),
        Some(SecretName::FileCert {
            cert: "/etc/certs/cert.pem".into(),
            key: "/etc/certs/key.pem".into()
        })
    );
    assert_eq!(
        SecretName::parse("file-root:/etc/certs/ca.pem"),
        Some(SecretName::FileRoot("/etc/certs/ca.pem".into()))
    );
    assert_eq!(
        SecretName::parse("kubernetes://my-secret"),
        Some(SecretName::Kubernetes("my-secret".into()))
    );
    assert_eq!(SecretName::parse("kubernetes://"), None);
    assert_eq!(SecretName::parse("vault://x"), None);
}

#[test]
fn tls_the_proxy_cannot_honour_is_refused() {
    let cluster_with_common = |common: CommonTlsContext| {
        let mut c = istio_cluster("c");
        c.transport_socket_matches.clear();
        c.transport_socket = Some(upstream(common, "x"));
        c
    };
    let cluster_with =
        |common: CommonTlsContext| message(Cluster::try_from(cluster_with_common(common)));
    let mut unknown = istio_common(&[], &[]);
    unknown.tls_certificate_sds_secret_configs = vec![sds("vault://client-cert")];
    assert!(cluster_with(unknown).contains(
        "cluster \"c\": transport_socket.typed_config.common_tls_context.\
         tls_certificate_sds_secret_configs[0].name: unsupported value \"vault://client-cert"
    ));
    let mut inline = istio_common(&[], &[]);
    inline.tls_certificates = vec![TlsCertificate::default()];
    assert_eq!(
        cluster_with(inline),
        "cluster \"c\": transport_socket.typed_config.common_tls_context.tls_certificates: \
         not supported by this proxy"
    );
    let mut pinned = istio_common(&[], &[]);
    if let Some(ValidationContextType::CombinedValidationContext(c)) =
        &mut pinned.validation_context_type
    {
        c.default_validation_context
            .as_mut()
            .unwrap()
            .verify_certificate_spki = vec!["abc".into()];
    }
    assert!(cluster_with(pinned).ends_with("verify_certificate_spki: not supported by this proxy"));
    let mut expired = istio_common(&[], &[]);
    if let Some(ValidationContextType::CombinedValidationContext(c)) =
        &mut expired.validation_context_type
    {
        c.default_validation_context
            .as_mut()
            .unwrap()
            .allow_expired_certificate = true;
    }
    assert!(
        cluster_with(expired).ends_with("allow_expired_certificate: not supported by this proxy")
    );
    let mut not_ads = istio_common(&[], &[]);
    not_ads.tls_certificate_sds_secret_configs = vec![SdsSecretConfig {
        name: "default".into(),
        sds_config: None,
    }];
    assert!(cluster_with(not_ads).ends_with("sds_config: required field is missing or empty"));
    // Secrets over ADS are accepted; from any agent cluster but Istio's, or over REST, not.
    let mut over_ads = istio_common(&[], &[]);
    over_ads.tls_certificate_sds_secret_configs[0].sds_config = Some(ads());
    assert!(Cluster::try_from(cluster_with_common(over_ads)).is_ok());
    let mut elsewhere = istio_common(&[], &[]);
    elsewhere.tls_certificate_sds_secret_configs[0].sds_config =
        Some(grpc_source("other-agent", ApiType::Grpc));
    assert!(cluster_with(elsewhere).contains("only envoy_grpc sds-grpc"));
    let mut rest = istio_common(&[], &[]);
    rest.tls_certificate_sds_secret_configs[0].sds_config =
        Some(grpc_source("sds-grpc", ApiType::Rest));
    assert!(cluster_with(rest).ends_with("unsupported value \"REST (only GRPC)\""));
    // A downstream context on a cluster, TLS on an original-destination cluster, a server
    // without a certificate.
    let mut wrong = istio_cluster("c");
    wrong.transport_socket_matches.clear();
    wrong.transport_socket = Some(tls_socket(pack_any(DownstreamTlsContext::default())));
    assert!(message(Cluster::try_from(wrong)).contains("needs an UpstreamTlsContext"));
    let mut no_cert = tcp_chain("c");
    no_cert.transport_socket = Some(tls_socket(pack_any(DownstreamTlsContext {
        common_tls_context: Some(CommonTlsContext::default()),
        ..Default::default()
    })));
    assert_eq!(
        message(FilterChain::try_from(no_cert)),
        "transport_socket.typed_config.common_tls_context.tls_certificate_sds_secret_configs: \
         required field is missing or empty"
    );
}
