//! Gateway and Sidecar tables.

use std::path::Path;

use super::{run_table, Case, Want};
use crate::config::parse_str;

const API: &str = "networking.istio.io/v1";

#[test]
fn gateways() {
    let http = "port: {number: 80, name: http, protocol: HTTP}";
    let full = r#"
selector: {istio: ingressgateway}
servers:
- port: {number: 80, name: http, protocol: HTTP}
  hosts: [bookinfo.example.com, "ns/*.example.com", "./reviews.example.com"]
  tls: {httpsRedirect: true}
- port: {number: 443, name: https, protocol: HTTPS}
  hosts: ["*"]
  tls: {mode: SIMPLE, credentialName: bookinfo-cert, minProtocolVersion: TLSV1_2, cipherSuites: [ECDHE-RSA-AES128-GCM-SHA256]}
- port: {number: 8443, name: mtls, protocol: HTTPS}
  hosts: ["*/api.example.com"]
  tls: {mode: MUTUAL, serverCertificate: /c.pem, privateKey: /k.pem, caCertificates: /ca.pem, subjectAltNames: [client]}
- port: {number: 15443, name: tls, protocol: TLS}
  hosts: ["*.local"]
  tls: {mode: AUTO_PASSTHROUGH}
- port: {number: 31400, name: tcp, protocol: TCP}
  hosts: ["*"]
  bind: 10.0.0.1
- port: {number: 0, name: uds, protocol: HTTP}
  bind: unix:///var/run/gw.sock
  hosts: ["*"]
"#;
    let cases: Vec<(&str, String, Want)> = vec![
        ("full", full.to_string(), Want::Ok),
        ("ip host", format!("{{servers: [{{{http}, hosts: [10.0.0.1]}}]}}"), Want::Ok),
        ("no servers", "{selector: {a: b}}".to_string(), Want::Err("spec.servers", "gateway must have at least one server")),
        ("no hosts", format!("{{servers: [{{{http}}}]}}"), Want::Err("spec.servers[0].hosts", "at least one host")),
        ("short host", format!("{{servers: [{{{http}, hosts: [reviews]}}]}}"), Want::Err("spec.servers[0].hosts[0]", "short names (non FQDN) are not allowed")),
        ("partial wildcard", format!("{{servers: [{{{http}, hosts: ['a*.example.com']}}]}}"), Want::Err("spec.servers[0].hosts[0]", "partial wildcard")),
        ("empty namespace", format!("{{servers: [{{{http}, hosts: ['/a.example.com']}}]}}"), Want::Err("spec.servers[0].hosts[0]", "cannot be empty")),
        ("bad namespace", format!("{{servers: [{{{http}, hosts: ['Bad_NS/a.example.com']}}]}}"), Want::Err("spec.servers[0].hosts[0]", "invalid namespace value \"Bad_NS\" in gateway")),
        ("no port", "{servers: [{hosts: ['*']}]}".to_string(), Want::Err("spec.servers[0].port", "port is required")),
        ("bad protocol", "{servers: [{port: {number: 80, name: x, protocol: SMTP}, hosts: ['*']}]}".to_string(), Want::Err("spec.servers[0].port.protocol", "invalid protocol \"SMTP\"")),
        ("no port name", "{servers: [{port: {number: 80, protocol: HTTP}, hosts: ['*']}]}".to_string(), Want::Err("spec.servers[0].port.name", "port name must be set")),
        ("bad port number", "{servers: [{port: {number: 0, name: x, protocol: HTTP}, hosts: ['*']}]}".to_string(), Want::Err("spec.servers[0].port.number", "port number 0")),
        ("target port", "{servers: [{port: {number: 80, name: x, protocol: HTTP, targetPort: 8080}, hosts: ['*']}]}".to_string(), Want::Err("spec.servers[0].port.targetPort", "no impact on Gateways")),
        ("duplicate port names", format!("{{servers: [{{{http}, hosts: ['*']}}, {{port: {{number: 81, name: http, protocol: HTTP}}, hosts: ['*']}}]}}"), Want::Err("spec.servers[1].port.name", "port names in servers must be unique")),
        ("https without tls", "{servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*']}]}".to_string(), Want::Err("spec.servers[0].tls", "server must have TLS settings for HTTPS/TLS protocols")),
        ("tls on tcp", "{servers: [{port: {number: 9000, name: tcp, protocol: TCP}, hosts: ['*'], tls: {mode: SIMPLE, credentialName: c}}]}".to_string(), Want::Err("spec.servers[0].tls", "cannot have TLS settings for non HTTPS/TLS ports")),
        ("certificates on http", format!("{{servers: [{{{http}, hosts: ['*'], tls: {{mode: SIMPLE, credentialName: c}}}}]}}"), Want::Err("spec.servers[0].tls", "plain text HTTP ports")),
        ("simple without certificate", "{servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*'], tls: {mode: SIMPLE, privateKey: /k}}]}".to_string(), Want::Err("spec.servers[0].tls.serverCertificate", "SIMPLE TLS requires a server certificate")),
        ("mutual without ca", "{servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*'], tls: {mode: MUTUAL, serverCertificate: /c, privateKey: /k}}]}".to_string(), Want::Err("spec.servers[0].tls.caCertificates", "MUTUAL TLS requires a client CA bundle")),
        ("istio mutual with key", "{servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*'], tls: {mode: ISTIO_MUTUAL, privateKey: /k}}]}".to_string(), Want::Err("spec.servers[0].tls.privateKey", "ISTIO_MUTUAL TLS cannot have associated private key")),
        ("two certificate sources", "{servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*'], tls: {mode: SIMPLE, credentialName: c, credentialNames: [d]}}]}".to_string(), Want::Err("spec.servers[0].tls", "only one of credential_name, credential_names")),
        ("crl with simple", "{servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*'], tls: {mode: SIMPLE, serverCertificate: /c, privateKey: /k, caCrl: /crl}}]}".to_string(), Want::Err("spec.servers[0].tls.caCrl", "CRL is not supported with SIMPLE TLS")),
        ("bad cipher", "{servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*'], tls: {mode: SIMPLE, credentialName: c, cipherSuites: [BOGUS]}}]}".to_string(), Want::Warn("spec.servers[0].tls.cipherSuites", "ignoring invalid cipher suites: [BOGUS]")),
        ("redirect on tcp", "{servers: [{port: {number: 443, name: tls, protocol: TLS}, hosts: ['*'], tls: {httpsRedirect: true}}]}".to_string(), Want::Warn("spec.servers[0].tls", "httpsRedirect should only be used with http servers")),
        ("bad bind", format!("{{servers: [{{{http}, hosts: ['*'], bind: not-an-ip}}]}}"), Want::Err("spec.servers[0].bind", "not-an-ip is not a valid IP")),
        ("socket with port", format!("{{servers: [{{{http}, hosts: ['*'], bind: 'unix:///s.sock'}}]}}"), Want::Err("spec.servers[0].bind", "port number must be 0 for unix domain socket")),
        ("bad tls version", "{servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*'], tls: {mode: SIMPLE, credentialName: c, minProtocolVersion: TLSV9}}]}".to_string(), Want::Err("spec.servers[0].tls.minProtocolVersion", "unknown variant `TLSV9`")),
    ];
    run_table(API, "Gateway", &cases);
    let dotted = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: my.gateway}\n\
                  spec: {servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]}\n";
    let parsed = parse_str(Path::new("g.yaml"), dotted);
    assert_eq!(parsed.errors[0].field(), Some("metadata.name"));
    assert!(parsed.errors[0]
        .to_string()
        .contains("invalid gateway name: \"my.gateway\""));
}

#[test]
fn sidecars() {
    let full = r#"
workloadSelector: {labels: {app: reviews}}
ingress:
- port: {number: 9080, protocol: HTTP, name: http}
  defaultEndpoint: 127.0.0.1:8080
  connectionPool: {http: {http1MaxPendingRequests: 10}}
- port: {number: 9443, protocol: HTTPS, name: https}
  defaultEndpoint: unix:///var/run/app.sock
  tls: {mode: SIMPLE, serverCertificate: /c.pem, privateKey: /k.pem}
egress:
- port: {number: 3306, protocol: MYSQL, name: mysql}
  bind: 127.0.0.1
  hosts: ["*/mysql.foo.com"]
- port: {number: 0, protocol: HTTP, name: uds}
  bind: unix:///var/run/egress.sock
  captureMode: NONE
  hosts: ["./*"]
- hosts: ["./*", "istio-system/*", "~/*"]
inboundConnectionPool: {tcp: {maxConnections: 100}}
outboundTrafficPolicy:
  mode: ALLOW_ANY
  egressProxy: {host: egress.example.com, subset: v1, port: {number: 443}}
"#;
    let cases: Vec<Case<'_>> = vec![
        ("full", full, Want::Ok),
        ("registry only", "{outboundTrafficPolicy: {mode: REGISTRY_ONLY}}", Want::Ok),
        ("empty", "{}", Want::Err("spec", "sidecar: empty configuration provided")),
        ("selector without labels", "{workloadSelector: {}, egress: [{hosts: ['./*']}]}", Want::Warn("spec.workloadSelector.labels", "sidecar: workload selector specified without labels")),
        ("selector wildcard", "{workloadSelector: {labels: {app: '*'}}, egress: [{hosts: ['./*']}]}", Want::Err("spec.workloadSelector.labels[app]", "wildcard is not supported")),
        ("host without namespace", "{egress: [{hosts: [foo.com]}]}", Want::Err("spec.egress[0].hosts[0]", "host must be of form namespace/dnsName")),
        ("short egress host", "{egress: [{hosts: [ns/foo]}]}", Want::Err("spec.egress[0].hosts[0]", "short names")),
        ("bad egress namespace", "{egress: [{hosts: ['Bad_NS/*']}]}", Want::Err("spec.egress[0].hosts[0]", "invalid namespace value \"Bad_NS\" in sidecar")),
        ("no egress hosts", "{egress: [{port: {number: 80, protocol: HTTP, name: http}}]}", Want::Err("spec.egress[0].hosts", "egress listener must contain at least one host")),
        ("catch-all not last", "{egress: [{hosts: ['./*']}, {port: {number: 80, protocol: HTTP, name: http}, hosts: ['./*']}]}", Want::Err("spec.egress[0].port", "should be the last listener")),
        ("two catch-alls", "{egress: [{hosts: ['./*']}, {hosts: ['./*']}]}", Want::Err("spec.egress[0].port", "should be the last listener")),
        ("duplicate egress ports", "{egress: [{port: {number: 80, protocol: HTTP, name: a}, hosts: ['./*']}, {port: {number: 80, protocol: HTTP, name: b}, hosts: ['./*']}]}", Want::Err("spec.egress[1].port.number", "ports on IP bound listeners must be unique")),
        ("zero port without socket", "{egress: [{port: {number: 0, protocol: HTTP, name: a}, hosts: ['./*']}]}", Want::Err("spec.egress[0].bind", "ports with 0 value must have a unix domain socket bind address")),
        ("socket capture", "{egress: [{port: {number: 0, protocol: HTTP, name: a}, bind: 'unix:///s', captureMode: IPTABLES, hosts: ['./*']}]}", Want::Err("spec.egress[0].captureMode", "captureMode must be DEFAULT/NONE")),
        ("bad egress protocol", "{egress: [{port: {number: 80, protocol: SMTP, name: a}, hosts: ['./*']}]}", Want::Err("spec.egress[0].port.protocol", "unsupported protocol: SMTP")),
        ("duplicated host", "{egress: [{hosts: ['ns/a.com', 'ns/a.com']}]}", Want::Warn("spec.egress[0].hosts[1]", "duplicated egress host: ns/a.com")),
        ("all and more", "{egress: [{hosts: ['*/*', 'ns/a.com']}]}", Want::Warn("spec.egress[0].hosts", "`*/*` host select all resources")),
        ("ingress without port", "{ingress: [{defaultEndpoint: '127.0.0.1:80'}]}", Want::Err("spec.ingress[0].port", "port is required for ingress listeners")),
        ("ingress duplicate ports", "{ingress: [{port: {number: 80, protocol: HTTP, name: a}}, {port: {number: 80, protocol: HTTP, name: b}}]}", Want::Err("spec.ingress[1].port.number", "must be unique")),
        ("bad default endpoint", "{ingress: [{port: {number: 80, protocol: HTTP, name: a}, defaultEndpoint: '1.2.3.4:80'}]}", Want::Err("spec.ingress[0].defaultEndpoint", "defaultEndpoint must be of form 127.0.0.1:<port>")),
        ("default endpoint port", "{ingress: [{port: {number: 80, protocol: HTTP, name: a}, defaultEndpoint: '127.0.0.1:http'}]}", Want::Err("spec.ingress[0].defaultEndpoint", "is not a number")),
        ("ingress tls on http", "{ingress: [{port: {number: 80, protocol: HTTP, name: a}, tls: {mode: SIMPLE, serverCertificate: /c, privateKey: /k}}]}", Want::Err("spec.ingress[0].tls", "cannot have TLS settings for non HTTPS/TLS ports")),
        ("ingress istio mutual", "{ingress: [{port: {number: 443, protocol: HTTPS, name: a}, tls: {mode: ISTIO_MUTUAL}}]}", Want::Err("spec.ingress[0].tls.mode", "cannot set mode to ISTIO_MUTUAL")),
        ("ingress credential", "{ingress: [{port: {number: 443, protocol: HTTPS, name: a}, tls: {mode: SIMPLE, credentialName: c}}]}", Want::Err("spec.ingress[0].tls.credentialName", "credentialName is not currently supported")),
        ("http pool on tcp", "{ingress: [{port: {number: 80, protocol: TCP, name: a}, connectionPool: {http: {maxRetries: 1}}}]}", Want::Warn("spec.ingress[0].connectionPool", "only TCP settings will apply")),
        ("egress proxy outside allow any", "{outboundTrafficPolicy: {mode: REGISTRY_ONLY, egressProxy: {host: a.com, port: {number: 80}}}}", Want::Err("spec.outboundTrafficPolicy.egressProxy", "egress_proxy must be set only with ALLOW_ANY")),
        ("egress proxy without port", "{outboundTrafficPolicy: {mode: ALLOW_ANY, egressProxy: {host: a.com}}}", Want::Err("spec.outboundTrafficPolicy.egressProxy.port", "egress_proxy port must be non-nil")),
        ("egress proxy without mode", "{outboundTrafficPolicy: {egressProxy: {host: a.com, port: {number: 80}}}}", Want::Err("spec.outboundTrafficPolicy.egressProxy", "ALLOW_ANY")),
    ];
    run_table(API, "Sidecar", &cases);
}
