//! DestinationRule tables.

use super::{run_table, Case, Want};

const API: &str = "networking.istio.io/v1";

#[test]
fn valid_destination_rules() {
    let full = r#"
host: reviews
exportTo: ["*"]
trafficPolicy:
  loadBalancer:
    consistentHash:
      httpCookie: {name: user, path: /, ttl: 0s, attributes: [{name: SameSite, value: Strict}]}
      ringHash: {minimumRingSize: 1024}
    localityLbSetting:
      enabled: true
      distribute:
      - from: us-west/zone1/*
        to: {"us-west/zone1/*": 80, "us-west/zone2/*": 20}
    warmup: {duration: 60s, minimumPercent: 10, aggression: 1.5}
  connectionPool:
    tcp:
      maxConnections: 100
      connectTimeout: 30ms
      tcpKeepalive: {probes: 3, time: 7200s, interval: 75s}
      maxConnectionDuration: 1h
      idleTimeout: 0s
    http:
      http1MaxPendingRequests: 10
      http2MaxRequests: 100
      maxRequestsPerConnection: 10
      maxRetries: 3
      idleTimeout: 30s
      h2UpgradePolicy: DO_NOT_UPGRADE
      useClientProtocol: true
      maxConcurrentStreams: 100
      http2KeepAlive: {interval: 15s, timeout: 5s}
  outlierDetection:
    consecutive5xxErrors: 7
    consecutiveGatewayErrors: 5
    splitExternalLocalOriginErrors: true
    consecutiveLocalOriginFailures: 3
    interval: 5m
    baseEjectionTime: 15m
    maxEjectionPercent: 100
    minHealthPercent: 50
  tls:
    mode: SIMPLE
    caCertificates: /etc/certs/ca.pem
    subjectAltNames: [reviews.example.com]
    sni: reviews.example.com
  portLevelSettings:
  - port: {number: 80}
    loadBalancer: {simple: LEAST_REQUEST}
  - port: {number: 443}
    tls: {mode: MUTUAL, credentialName: client-cert}
  retryBudget: {percent: 20, minRetryConcurrency: 5}
subsets:
- name: v1
  labels: {version: v1}
- name: v2
  labels: {version: v2}
  trafficPolicy:
    loadBalancer:
      consistentHash: {httpHeaderName: x-user, maglev: {tableSize: 65537}}
"#;
    let cases: Vec<Case<'_>> = vec![
        ("full", full, Want::Ok),
        ("host only", "{host: '*.example.com'}", Want::Ok),
        ("tunnel", "{host: a.example.com, trafficPolicy: {tunnel: {protocol: CONNECT, targetHost: 10.0.0.1, targetPort: 8443}}}", Want::Ok),
        ("proxy protocol", "{host: a.example.com, trafficPolicy: {proxyProtocol: {version: V2}}}", Want::Ok),
        ("selector with own namespace", "{host: a, workloadSelector: {matchLabels: {app: a}}, exportTo: [.]}", Want::Ok),
        ("failover with outlier", "{host: a, trafficPolicy: {outlierDetection: {consecutive5xxErrors: 1}, loadBalancer: {localityLbSetting: {failover: [{from: us-east, to: eu-west}]}}}}", Want::Ok),
        ("mutual with files", "{host: a, trafficPolicy: {tls: {mode: MUTUAL, clientCertificate: /c.pem, privateKey: /k.pem}}}", Want::Ok),
        ("skip verify", "{host: a, trafficPolicy: {tls: {mode: SIMPLE, insecureSkipVerify: true}}}", Want::Ok),
    ];
    for v in [
        "networking.istio.io/v1",
        "networking.istio.io/v1beta1",
        "networking.istio.io/v1alpha3",
    ] {
        run_table(v, "DestinationRule", &cases);
    }
}

#[test]
fn invalid_destination_rules() {
    let tp = "spec.trafficPolicy";
    let cases: Vec<Case<'_>> = vec![
        ("no host", "{}", Want::Err("spec.host", "required")),
        ("bad host", "{host: 'a b'}", Want::Err("spec.host", "invalid")),
        ("empty policy", "{host: a, trafficPolicy: {}}", Want::Err(tp, "traffic policy must have at least one field")),
        ("empty port list", "{host: a, trafficPolicy: {portLevelSettings: []}}", Want::Ok),
        ("tunnel and proxy protocol", "{host: a, trafficPolicy: {tunnel: {targetHost: a.com, targetPort: 80}, proxyProtocol: {}}}", Want::Err(tp, "tunnel and proxyProtocol must not be set together")),
        ("tunnel protocol", "{host: a, trafficPolicy: {tunnel: {protocol: GET, targetHost: a.com, targetPort: 80}}}", Want::Err("spec.trafficPolicy.tunnel.protocol", "\"CONNECT\" or \"POST\"")),
        ("tunnel host", "{host: a, trafficPolicy: {tunnel: {targetHost: 'a b', targetPort: 80}}}", Want::Err("spec.trafficPolicy.tunnel.targetHost", "valid FQDN or IP address")),
        ("tunnel port", "{host: a, trafficPolicy: {tunnel: {targetHost: a.com, targetPort: 0}}}", Want::Err("spec.trafficPolicy.tunnel.targetPort", "tunnel target port is invalid")),
        ("tunnel without port", "{host: a, trafficPolicy: {tunnel: {targetHost: a.com}}}", Want::Err("spec.trafficPolicy.tunnel.targetPort", "required")),
        ("bad proxy protocol", "{host: a, trafficPolicy: {proxyProtocol: {version: V3}}}", Want::Err("spec.trafficPolicy.proxyProtocol.version", "unknown variant `V3`")),
        ("simple and hash", "{host: a, trafficPolicy: {loadBalancer: {simple: RANDOM, consistentHash: {useSourceIp: true}}}}", Want::Err("spec.trafficPolicy.loadBalancer", "only one of simple or consistentHash")),
        ("two hash keys", "{host: a, trafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true, httpHeaderName: x}}}}", Want::Err("spec.trafficPolicy.loadBalancer.consistentHash", "only one of httpHeaderName")),
        ("cookie without name", "{host: a, trafficPolicy: {loadBalancer: {consistentHash: {httpCookie: {ttl: 1s}}}}}", Want::Err("spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.name", "name required for HttpCookie")),
        ("maglev not prime", "{host: a, trafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true, maglev: {tableSize: 65536}}}}}", Want::Err("spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize", "prime")),
        ("maglev too large", "{host: a, trafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true, maglev: {tableSize: 5000011}}}}}", Want::Err("spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize", "less than 5000011")),
        ("ring size both ways", "{host: a, trafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true, minimumRingSize: 10, ringHash: {minimumRingSize: 10}}}}}", Want::Err("spec.trafficPolicy.loadBalancer.consistentHash.minimumRingSize", "only one of MinimumRingSize")),
        ("deprecated ring size", "{host: a, trafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true, minimumRingSize: 10}}}}", Want::Warn("spec.trafficPolicy.loadBalancer.consistentHash.minimumRingSize", "deprecated")),
        ("warmup without duration", "{host: a, trafficPolicy: {loadBalancer: {warmup: {minimumPercent: 5}}}}", Want::Err("spec.trafficPolicy.loadBalancer.warmup.duration", "duration is required")),
        ("warmup percent", "{host: a, trafficPolicy: {loadBalancer: {warmup: {duration: 1s, minimumPercent: 150}}}}", Want::Err("spec.trafficPolicy.loadBalancer.warmup.minimumPercent", "between 0 and 100")),
        ("warmup aggression", "{host: a, trafficPolicy: {loadBalancer: {warmup: {duration: 1s, aggression: 0.5}}}}", Want::Err("spec.trafficPolicy.loadBalancer.warmup.aggression", "greater than or equal to 1")),
        ("distribute and failover", "{host: a, trafficPolicy: {loadBalancer: {localityLbSetting: {distribute: [{from: a, to: {b: 100}}], failover: [{from: a, to: b}]}}}}", Want::Err("spec.trafficPolicy.loadBalancer.localityLbSetting", "'distribute' and 'failover'")),
        ("locality total", "{host: a, trafficPolicy: {loadBalancer: {localityLbSetting: {distribute: [{from: a, to: {b: 60, c: 30}}]}}}}", Want::Err("spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to", "total locality weight 90 != 100")),
        ("locality weight", "{host: a, trafficPolicy: {loadBalancer: {localityLbSetting: {distribute: [{from: a, to: {b: 0, c: 100}}]}}}}", Want::Err("spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to[b]", "range [1, 100]")),
        ("locality wildcard", "{host: a, trafficPolicy: {loadBalancer: {localityLbSetting: {distribute: [{from: 'a/*/c', to: {b: 100}}]}}}}", Want::Err("spec.trafficPolicy.loadBalancer.localityLbSetting.distribute", "must be in the end")),
        ("locality overlap", "{host: a, trafficPolicy: {loadBalancer: {localityLbSetting: {distribute: [{from: a, to: {b: 100}}, {from: a/z, to: {b: 100}}]}}}}", Want::Err("spec.trafficPolicy.loadBalancer.localityLbSetting.distribute", "overlap")),
        ("failover same region", "{host: a, trafficPolicy: {outlierDetection: {interval: 1s}, loadBalancer: {localityLbSetting: {failover: [{from: a, to: a}]}}}}", Want::Err("spec.trafficPolicy.loadBalancer.localityLbSetting.failover[0]", "different regions")),
        ("failover without outlier", "{host: a, trafficPolicy: {loadBalancer: {localityLbSetting: {failover: [{from: a, to: b}]}}}}", Want::Warn("spec.trafficPolicy.loadBalancer.localityLbSetting", "outlier detection policy must be provided")),
        ("empty pool", "{host: a, trafficPolicy: {connectionPool: {}}}", Want::Err("spec.trafficPolicy.connectionPool", "connection pool must have at least one field")),
        ("negative pending", "{host: a, trafficPolicy: {connectionPool: {http: {http1MaxPendingRequests: -1}}}}", Want::Err("spec.trafficPolicy.connectionPool.http.http1MaxPendingRequests", "must be non-negative")),
        ("upgrade and client protocol", "{host: a, trafficPolicy: {connectionPool: {http: {h2UpgradePolicy: UPGRADE, useClientProtocol: true}}}}", Want::Err("spec.trafficPolicy.connectionPool.http.useClientProtocol", "must not be true when H2UpgradePolicy is UPGRADE")),
        ("connect timeout 0", "{host: a, trafficPolicy: {connectionPool: {tcp: {connectTimeout: 0s}}}}", Want::Err("spec.trafficPolicy.connectionPool.tcp.connectTimeout", "greater than 1ms")),
        ("keepalive interval", "{host: a, trafficPolicy: {connectionPool: {tcp: {tcpKeepalive: {interval: 1.5ms}}}}}", Want::Err("spec.trafficPolicy.connectionPool.tcp.tcpKeepalive.interval", "ms precision")),
        ("ejection percent", "{host: a, trafficPolicy: {outlierDetection: {maxEjectionPercent: 101}}}", Want::Err("spec.trafficPolicy.outlierDetection.maxEjectionPercent", "percentage 101 is not in range 0..100")),
        ("local origin without split", "{host: a, trafficPolicy: {outlierDetection: {consecutiveLocalOriginFailures: 3}}}", Want::Err("spec.trafficPolicy.outlierDetection.consecutiveLocalOriginFailures", "split external local origin errors is set to false")),
        ("deprecated consecutive errors", "{host: a, trafficPolicy: {outlierDetection: {consecutiveErrors: 3}}}", Want::Warn("spec.trafficPolicy.outlierDetection.consecutiveErrors", "deprecated")),
        ("mutual without certificate", "{host: a, trafficPolicy: {tls: {mode: MUTUAL, privateKey: /k}}}", Want::Err("spec.trafficPolicy.tls.clientCertificate", "client certificate required for mutual tls")),
        ("credential with files", "{host: a, trafficPolicy: {tls: {mode: SIMPLE, credentialName: c, caCertificates: /ca}}}", Want::Err("spec.trafficPolicy.tls.credentialName", "If credentialName is set")),
        ("skip verify with sans", "{host: a, trafficPolicy: {tls: {mode: SIMPLE, insecureSkipVerify: true, subjectAltNames: [a]}}}", Want::Err("spec.trafficPolicy.tls.insecureSkipVerify", "InsecureSkipVerify is set true")),
        ("configmap of another namespace", "{host: a, trafficPolicy: {tls: {mode: SIMPLE, credentialName: 'configmap://other/ca'}}}", Want::Err("spec.trafficPolicy.tls.credentialName", "namespace must match")),
        ("bad tls mode", "{host: a, trafficPolicy: {tls: {mode: STRICT}}}", Want::Err("spec.trafficPolicy.tls.mode", "unknown variant `STRICT`")),
        ("port policy without port", "{host: a, trafficPolicy: {portLevelSettings: [{loadBalancer: {simple: RANDOM}}]}}", Want::Err("spec.trafficPolicy.portLevelSettings[0].port", "portTrafficPolicy must have valid port")),
        ("empty port policy", "{host: a, trafficPolicy: {portLevelSettings: [{port: {number: 80}}]}}", Want::Err("spec.trafficPolicy.portLevelSettings[0]", "port traffic policy must have at least one field")),
        ("duplicate subsets", "{host: a, subsets: [{name: v1}, {name: v1}]}", Want::Err("spec.subsets[1].name", "duplicate subset names: v1")),
        ("empty subset name", "{host: a, subsets: [{labels: {a: b}}]}", Want::Err("spec.subsets[0].name", "subset name cannot be empty")),
        ("bad subset name", "{host: a, subsets: [{name: v.1}]}", Want::Err("spec.subsets[0].name", "subset name is invalid: v.1")),
        ("bad subset label", "{host: a, subsets: [{name: v1, labels: {version: 'v 1'}}]}", Want::Err("spec.subsets[0].labels[version]", "invalid tag value")),
        ("subset empty policy", "{host: a, subsets: [{name: v1, trafficPolicy: {}}]}", Want::Err("spec.subsets[0].trafficPolicy", "at least one field")),
        ("selector beyond namespace", "{host: a, workloadSelector: {matchLabels: {app: a}}, exportTo: [other]}", Want::Err("spec.exportTo", "cannot have exportTo beyond current namespace")),
        ("selector wildcard", "{host: a, workloadSelector: {matchLabels: {app: '*'}}}", Want::Err("spec.workloadSelector.matchLabels[app]", "wildcard is not supported in selector")),
        ("negative max connections", "{host: a, trafficPolicy: {connectionPool: {tcp: {maxConnections: -5}}}}", Want::Err("spec.trafficPolicy.connectionPool.tcp.maxConnections", "max connections must be non-negative")),
    ];
    run_table(API, "DestinationRule", &cases);
}
