//! VirtualService tables.

use super::{run_table, Case, Want};

const ROUTE: &str = "route: [{destination: {host: reviews}}]";

fn vs(http: &str) -> String {
    format!("{{hosts: [reviews], http: [{http}]}}")
}

#[test]
fn valid_virtual_services() {
    let full = r#"
hosts: [reviews, reviews.other.svc.cluster.local]
gateways: [mesh, istio-system/ingress]
exportTo: [".", other]
http:
- name: canary
  match:
  - name: jason
    uri: {prefix: /api}
    scheme: {exact: https}
    method: {regex: "GET|POST"}
    authority: {prefix: reviews}
    headers: {end-user: {exact: jason}, x-id: {regex: "^[0-9]+$"}}
    withoutHeaders: {x-skip: {regex: "*"}}
    queryParams: {debug: {exact: "1"}}
    port: 9080
    sourceLabels: {app: productpage}
    sourceNamespace: default
    gateways: [mesh]
    ignoreUriCase: true
    statPrefix: jason
  route:
  - destination: {host: reviews, subset: v2, port: {number: 9080}}
    weight: 80
    headers: {request: {set: {x-canary: "yes"}}, response: {remove: [x-internal]}}
  - destination: {host: reviews, subset: v3}
    weight: 20
  timeout: 10s
  retries: {attempts: 3, perTryTimeout: 2s, retryOn: "5xx,gateway-error,connect-failure,503,retriable-status-codes,cancelled", retryRemoteLocalities: true, backoff: 25ms}
  fault:
    delay: {fixedDelay: 5s, percentage: {value: 0.1}}
    abort: {httpStatus: 503, percentage: {value: 10}}
  mirror: {host: reviews, subset: v1}
  mirrorPercentage: {value: 50}
  corsPolicy:
    allowOrigins: [{exact: "https://example.com"}, {regex: "https://.*\\.example\\.com"}]
    allowMethods: [GET, POST, "*"]
    allowHeaders: [x-a, "*"]
    exposeHeaders: [x-b]
    maxAge: 24h
    allowCredentials: true
    unmatchedPreflights: IGNORE
  headers:
    request: {set: {":authority": reviews.example.com}, add: {x-env: "%HOSTNAME%"}, remove: [x-drop]}
    response: {add: {x-served-by: "100%%"}}
- match: [{uri: {exact: /old}}]
  redirect: {uri: /new, authority: reviews, port: 8080, scheme: https, redirectCode: 308}
- match: [{uri: {regex: "^/v[0-9]+/.*"}}]
  rewrite: {uriRegexRewrite: {match: "^/v1/(.*)", rewrite: "/\\1"}, authority: r}
  route: [{destination: {host: reviews}}]
- match: [{uri: {exact: /health}}]
  directResponse: {status: 200, body: {string: ok}}
- match: [{uri: {exact: /bytes}}]
  directResponse: {status: 503, body: {bytes: aGVsbG8=}}
- match: [{uri: {prefix: /mirrors}}]
  route: [{destination: {host: reviews}}]
  mirrors: [{destination: {host: reviews, subset: v1}, percentage: {value: 5}}]
- route: [{destination: {host: reviews}}]
tcp:
- match: [{port: 3306, destinationSubnets: [10.0.0.0/8, 10.1.2.3], sourceLabels: {app: db}}]
  route: [{destination: {host: mysql.example.com, port: {number: 3306}}, weight: 100}]
tls:
- match: [{sniHosts: [reviews], port: 443}]
  route: [{destination: {host: reviews}}]
"#;
    let delegate = "{http: [{match: [{uri: {prefix: /a}}], route: [{destination: {host: a}}]}]}";
    let root = "{hosts: [a.example.com], gateways: [ns/gw], http: [{match: [{uri: {prefix: /a}}], delegate: {name: d, namespace: ns}}]}";
    let cases: Vec<Case<'_>> = vec![
        ("full", full, Want::Ok),
        ("delegate without hosts", delegate, Want::Ok),
        ("root delegating", root, Want::Ok),
        (
            "one destination of weight 0",
            "{hosts: [a], http: [{route: [{destination: {host: a}, weight: 0}]}]}",
            Want::Ok,
        ),
        (
            "jwt claim routing on a gateway",
            "{hosts: [a.example.com], gateways: [gw], http: [{match: [{headers: {'@request.auth.claims.group': {exact: admin}}}], route: [{destination: {host: a}}]}]}",
            Want::Ok,
        ),
        (
            "ip host",
            "{hosts: [10.0.0.1], http: [{route: [{destination: {host: a}}]}]}",
            Want::Ok,
        ),
    ];
    for v in [
        "networking.istio.io/v1",
        "networking.istio.io/v1beta1",
        "networking.istio.io/v1alpha3",
    ] {
        run_table(v, "VirtualService", &cases);
    }
}

#[test]
fn invalid_virtual_services() {
    let owned: Vec<(String, Want)> = vec![
        (vs("{route: [{destination: {host: reviews}, weight: -1}]}"), Want::Err("spec.http[0].route[0].weight", "weight -1 < 0")),
        (vs("{route: [{destination: {host: reviews}, weight: 0}, {destination: {host: ratings}, weight: 0}]}"), Want::Err("spec.http[0].route", "total destination weight = 0")),
        (vs("{route: [{weight: 100}]}"), Want::Err("spec.http[0].route[0].destination", "destination is required")),
        (vs("{route: [{destination: {host: '*'}}]}"), Want::Err("spec.http[0].route[0].destination.host", "invalid destination host *")),
        (vs("{route: [{destination: {host: reviews, subset: v_1}}]}"), Want::Err("spec.http[0].route[0].destination.subset", "subset name is invalid: v_1")),
        (vs("{route: [{destination: {host: reviews, port: {number: 70000}}}]}"), Want::Err("spec.http[0].route[0].destination.port.number", "must be in the range 1..65535")),
        (vs(&format!("{{match: [{{uri: {{regex: '('}}}}], {ROUTE}}}")), Want::Err("spec.http[0].match[0].uri", "Istio uses RE2 style regex-based match")),
        (vs(&format!("{{match: [{{uri: {{regex: ''}}}}], {ROUTE}}}")), Want::Err("spec.http[0].match[0].uri", "regex string match should not be empty")),
        (vs(&format!("{{match: [{{method: {{prefix: ''}}}}], {ROUTE}}}")), Want::Err("spec.http[0].match[0].method", "prefix string match should not be empty")),
        (vs(&format!("{{match: [{{uri: {{exact: /a, prefix: /b}}}}], {ROUTE}}}")), Want::Err("spec.http[0].match[0].uri", "only one of exact, prefix or regex")),
        (vs(&format!("{{match: [{{headers: {{'bad header': {{exact: a}}}}}}], {ROUTE}}}")), Want::Err("spec.http[0].match[0].headers[bad header]", "not a valid header name")),
        (vs(&format!("{{match: [{{headers: {{x: {{regex: '[a'}}}}}}], {ROUTE}}}")), Want::Err("spec.http[0].match[0].headers[x]", "\"headers\"")),
        (vs(&format!("{{match: [{{port: 0}}], {ROUTE}}}")), Want::Ok),
        (vs(&format!("{{match: [{{port: 65536}}], {ROUTE}}}")), Want::Err("spec.http[0].match[0].port", "port number 65536")),
        (vs(&format!("{{match: [{{sourceNamespace: Bad_NS}}], {ROUTE}}}")), Want::Err("spec.http[0].match[0].sourceNamespace", "sourceNamespace match Bad_NS is invalid")),
        (vs(&format!("{{match: [{{sourceLabels: {{'a b': c}}}}], {ROUTE}}}")), Want::Err("spec.http[0].match[0].sourceLabels[a b]", "invalid tag key")),
        (vs(&format!("{{match: [{{gateways: ['ns/']}}], {ROUTE}}}")), Want::Err("spec.http[0].match[0].gateways[0]", "cannot be empty")),
        (vs(&format!("{{match: [{{headers: {{'@request.auth.claims.group': {{exact: a}}}}}}], {ROUTE}}}")), Want::Err("spec.http[0].match[0].headers[@request.auth.claims.group]", "only supported for gateway")),
        (vs("{match: [{uri: {exact: /a}}]}"), Want::Err("spec.http[0].route", "HTTP route, redirect or direct_response is required")),
        (vs(&format!("{{redirect: {{uri: /b}}, {ROUTE}}}")), Want::Err("spec.http[0].redirect", "cannot contain both route and redirect")),
        (vs("{redirect: {uri: /b}, rewrite: {uri: /c}}"), Want::Err("spec.http[0].redirect", "cannot contain both rewrite and redirect")),
        (vs("{directResponse: {status: 200}, fault: {abort: {httpStatus: 500}}}"), Want::Err("spec.http[0].directResponse", "cannot contain both fault and direct_response")),
        (vs(&format!("{{mirror: {{host: a}}, mirrors: [{{destination: {{host: b}}}}], {ROUTE}}}")), Want::Err("spec.http[0].mirrors", "both mirror and mirrors")),
        (vs("{redirect: {}}"), Want::Err("spec.http[0].redirect", "redirect must specify URI, authority, scheme, or port")),
        (vs("{redirect: {uri: /b, redirectCode: 200}}"), Want::Err("spec.http[0].redirect.redirectCode", "200 is not a valid redirect code")),
        (vs("{redirect: {scheme: ftp}}"), Want::Err("spec.http[0].redirect.scheme", "invalid redirect scheme")),
        (vs("{redirect: {port: 80, derivePort: FROM_REQUEST_PORT}}"), Want::Err("spec.http[0].redirect", "only one of port or derivePort")),
        (vs("{directResponse: {status: 100}}"), Want::Err("spec.http[0].directResponse.status", "HTTP status 100 is not in range 200-599")),
        (vs("{directResponse: {body: {string: x}}}"), Want::Err("spec.http[0].directResponse.status", "required")),
        (vs("{directResponse: {status: 200, body: {bytes: '!!'}}}"), Want::Err("spec.http[0].directResponse.body.bytes", "base64")),
        (vs(&format!("{{rewrite: {{uri: /a, uriRegexRewrite: {{match: a, rewrite: b}}}}, {ROUTE}}}")), Want::Err("spec.http[0].rewrite", "only contain one of URI or UriRegexRewrite")),
        (vs(&format!("{{rewrite: {{}}, {ROUTE}}}")), Want::Err("spec.http[0].rewrite", "must specify at least one of URI")),
        (vs(&format!("{{rewrite: {{uriRegexRewrite: {{match: '(', rewrite: b}}}}, {ROUTE}}}")), Want::Err("spec.http[0].rewrite.uriRegexRewrite.match", "HTTPRewrite.UriRegexRewrite.Match")),
        (vs(&format!("{{rewrite: {{authority: a}}, headers: {{request: {{set: {{host: b}}}}}}, {ROUTE}}}")), Want::Err("spec.http[0].headers.request.set[host]", "authority header cannot be set multiple times")),
        (vs(&format!("{{headers: {{request: {{set: {{':path': /x}}}}}}, {ROUTE}}}")), Want::Err("spec.http[0].headers.request.set[:path]", "header cannot have \":\" prefix")),
        (vs(&format!("{{headers: {{response: {{set: {{host: x}}}}}}, {ROUTE}}}")), Want::Err("spec.http[0].headers.response.set[host]", "cannot set Host header")),
        (vs(&format!("{{headers: {{request: {{add: {{x: '%BROKEN'}}}}}}, {ROUTE}}}")), Want::Err("spec.http[0].headers.request.add[x]", "Un-terminated variable expression")),
        (vs(&format!("{{timeout: 0s, {ROUTE}}}")), Want::Err("spec.http[0].timeout", "duration must be greater than 1ms")),
        (vs(&format!("{{timeout: -1s, {ROUTE}}}")), Want::Err("spec.http[0].timeout", "duration must be greater than 1ms")),
        (vs(&format!("{{timeout: 1500us, {ROUTE}}}")), Want::Err("spec.http[0].timeout", "only durations to ms precision")),
        (vs(&format!("{{timeout: 10, {ROUTE}}}")), Want::Err("spec.http[0].timeout", "duration string")),
        (vs(&format!("{{retries: {{attempts: -1}}, {ROUTE}}}")), Want::Err("spec.http[0].retries.attempts", "attempts cannot be negative")),
        (vs(&format!("{{retries: {{attempts: 0, perTryTimeout: 1s}}, {ROUTE}}}")), Want::Err("spec.http[0].retries.attempts", "attempts are set to 0 (disabled)")),
        (vs(&format!("{{retries: {{attempts: 2, retryOn: '5xx,bogus'}}, {ROUTE}}}")), Want::Err("spec.http[0].retries.retryOn", "\"bogus\" is not a valid retryOn policy")),
        (vs(&format!("{{retries: {{attempts: 2, retryOn: '306'}}, {ROUTE}}}")), Want::Err("spec.http[0].retries.retryOn", "\"306\"")),
        (vs(&format!("{{retries: {{attempts: 2, perTryTimeout: 0.5ms}}, {ROUTE}}}")), Want::Err("spec.http[0].retries.perTryTimeout", "greater than 1ms")),
        (vs(&format!("{{fault: {{}}, {ROUTE}}}")), Want::Err("spec.http[0].fault", "must have an abort and/or a delay")),
        (vs(&format!("{{fault: {{delay: {{fixedDelay: 1s, percentage: {{value: 150}}}}}}, {ROUTE}}}")), Want::Err("spec.http[0].fault.delay.percentage", "neither 0.0, nor in range [0.0001, 100.0]")),
        (vs(&format!("{{fault: {{delay: {{exponentialDelay: 1s}}}}, {ROUTE}}}")), Want::Err("spec.http[0].fault.delay.exponentialDelay", "exponentialDelay not supported yet")),
        (vs(&format!("{{fault: {{abort: {{httpStatus: 700}}}}, {ROUTE}}}")), Want::Err("spec.http[0].fault.abort.httpStatus", "HTTP status 700")),
        (vs(&format!("{{fault: {{abort: {{grpcStatus: BOGUS}}}}, {ROUTE}}}")), Want::Err("spec.http[0].fault.abort.grpcStatus", "gRPC status \"BOGUS\" is not supported")),
        (vs(&format!("{{fault: {{abort: {{http2Error: x}}}}, {ROUTE}}}")), Want::Err("spec.http[0].fault.abort.http2Error", "HTTP/2 abort")),
        (vs(&format!("{{fault: {{abort: {{percentage: {{value: 5}}}}}}, {ROUTE}}}")), Want::Warn("spec.http[0].fault.abort", "error type not set")),
        (vs(&format!("{{mirrorPercentage: {{value: 101}}, {ROUTE}}}")), Want::Err("spec.http[0].mirrorPercentage", "max value of 100")),
        (vs(&format!("{{mirrorPercent: 50, {ROUTE}}}")), Want::Warn("spec.http[0].mirrorPercent", "deprecated")),
        (vs(&format!("{{mirrors: [{{percentage: {{value: 5}}}}], {ROUTE}}}")), Want::Err("spec.http[0].mirrors[0].destination", "destination is required for mirrors")),
        (vs(&format!("{{corsPolicy: {{allowMethods: [FETCH]}}, {ROUTE}}}")), Want::Err("spec.http[0].corsPolicy.allowMethods[0]", "\"FETCH\" is not a supported HTTP method")),
        (vs(&format!("{{corsPolicy: {{allowOrigins: [{{exact: ''}}]}}, {ROUTE}}}")), Want::Err("spec.http[0].corsPolicy.allowOrigins[0]", "not a valid match type for CORS")),
        (vs(&format!("{{corsPolicy: {{maxAge: 1500ms}}, {ROUTE}}}")), Want::Err("spec.http[0].corsPolicy.maxAge", "seconds precision")),
        (vs(&format!("{{{ROUTE}}}, {{{ROUTE}}}")), Want::Warn("spec.http[1]", "only the last rule can have no matches")),
        (vs(&format!("{{match: [{{uri: {{prefix: /a}}}}], {ROUTE}}}, {{match: [{{uri: {{prefix: /a}}}}], {ROUTE}}}")), Want::Warn("spec.http[1]", "all matches used by prior rules")),
        (vs(&format!("{{match: [{{uri: {{prefix: /a}}}}], {ROUTE}}}, {{match: [{{uri: {{prefix: /ab}}}}], {ROUTE}}}")), Want::Warn("spec.http[1]", "match #0 of prefix /ab is not used")),
        (vs(&format!("{{{ROUTE}, bogus: 1}}")), Want::Err("spec.http[0].bogus", "unknown field `bogus`")),
    ];
    let mut cases: Vec<Case<'_>> = owned
        .iter()
        .map(|(spec, want)| ("http", spec.as_str(), *want))
        .collect();
    cases.extend([
        ("no routes", "{hosts: [a]}", Want::Err("spec", "http, tcp or tls must be provided")),
        ("mesh wildcard", "{hosts: ['*'], http: [{route: [{destination: {host: a}}]}]}", Want::Err("spec.hosts[0]", "wildcard host * is not allowed")),
        ("gateway wildcard", "{hosts: ['*'], gateways: [gw], http: [{route: [{destination: {host: a}}]}]}", Want::Ok),
        ("duplicate hosts", "{hosts: [a.example.com, '*.example.com'], http: [{route: [{destination: {host: a}}]}]}", Want::Err("spec.hosts[1]", "duplicate hosts in virtual service")),
        ("bad host", "{hosts: [a_b], http: [{route: [{destination: {host: a}}]}]}", Want::Err("spec.hosts[0]", "label \"a_b\" invalid")),
        ("numeric tld", "{hosts: [a.123], http: [{route: [{destination: {host: a}}]}]}", Want::Err("spec.hosts[0]", "cannot be all-numeric")),
        ("bad gateway", "{hosts: [a], gateways: [Bad_NS/gw], http: [{route: [{destination: {host: a}}]}]}", Want::Err("spec.gateways[0]", "invalid value for namespace")),
        ("legacy gateway", "{hosts: [a], gateways: [gw.ns], http: [{route: [{destination: {host: a}}]}]}", Want::Warn("spec.gateways[0]", "legacy gatewayName format")),
        ("delegate with gateways", "{gateways: [gw], http: [{route: [{destination: {host: a}}]}]}", Want::Err("spec.gateways", "delegate virtual service must have no gateways")),
        ("delegate with tcp", "{tcp: [{route: [{destination: {host: a}}]}]}", Want::Err("spec.tcp", "must have no tcp route")),
        ("root with route", "{hosts: [a], http: [{delegate: {name: d}, route: [{destination: {host: a}}]}]}", Want::Err("spec.http[0].route", "root HTTP route  must not specify route")),
        ("root with empty route", "{hosts: [a], http: [{delegate: {name: d}, route: []}]}", Want::Err("spec.http[0].route", "must not specify route")),
        ("delegate delegating", "{http: [{delegate: {name: d}}]}", Want::Err("spec.http[0].delegate", "delegate HTTP route cannot contain delegate")),
        ("tcp without route", "{hosts: [a], tcp: [{match: [{port: 80}]}]}", Want::Err("spec.tcp[0].route", "TCP route is required")),
        ("tcp bad subnet", "{hosts: [a], tcp: [{match: [{destinationSubnets: [10.0.0.0/33]}], route: [{destination: {host: a}}]}]}", Want::Err("spec.tcp[0].match[0].destinationSubnets[0]", "not a valid CIDR block")),
        ("tls without match", "{hosts: [a], tls: [{route: [{destination: {host: a}}]}]}", Want::Err("spec.tls[0].match", "TLS route must have at least one match condition")),
        ("tls sni outside hosts", "{hosts: [a.example.com], tls: [{match: [{sniHosts: [b.example.com]}], route: [{destination: {host: a}}]}]}", Want::Err("spec.tls[0].match[0].sniHosts[0]", "not a compatible subset")),
        ("tls ip sni", "{hosts: [a.example.com], tls: [{match: [{sniHosts: [10.0.0.1]}], route: [{destination: {host: a}}]}]}", Want::Warn("spec.tls[0].match[0].sniHosts[0]", "goes against SNI spec")),
        ("bad exportTo", "{hosts: [a], exportTo: ['~'], http: [{route: [{destination: {host: a}}]}]}", Want::Err("spec.exportTo[0]", "exportTo ~ (none) is not allowed")),
        ("exportTo . and own namespace", "{hosts: [a], exportTo: [ns, '.'], http: [{route: [{destination: {host: a}}]}]}", Want::Err("spec.exportTo[1]", "duplicate entries in exportTo: . and current namespace ns")),
        ("exportTo * and more", "{hosts: [a], exportTo: ['*', ns], http: [{route: [{destination: {host: a}}]}]}", Want::Err("spec.exportTo", "both public (*) and non-public")),
    ]);
    run_table("networking.istio.io/v1", "VirtualService", &cases);
}
