//! ServiceEntry and WorkloadEntry tables.

use super::{run_table, Case, Want};

const API: &str = "networking.istio.io/v1";

#[test]
fn service_entries() {
    let cases: Vec<Case<'_>> = vec![
        ("static", "{hosts: [db.example.com], addresses: [10.1.0.0/16], location: MESH_INTERNAL, resolution: STATIC, ports: [{number: 5432, name: tcp-db, protocol: TCP, targetPort: 15432}, {number: 80, name: http, protocol: HTTP}], endpoints: [{address: 10.1.0.1, ports: {tcp-db: 5433}, labels: {app: db}, weight: 2, locality: us/east}, {address: 'unix:///var/run/db.sock'}]}", Want::Err("spec.endpoints[1].address", "exactly 1 service port required for unix endpoints")),
        ("static ok", "{hosts: [db.example.com], resolution: STATIC, ports: [{number: 5432, name: tcp-db, protocol: TCP}], endpoints: [{address: 10.1.0.1, ports: {tcp-db: 5433}}, {address: 'unix:///var/run/db.sock'}]}", Want::Ok),
        ("dns", "{hosts: [api.example.com], resolution: DNS, ports: [{number: 443, name: https, protocol: TLS}], exportTo: ['~'], subjectAltNames: [api.example.com]}", Want::Ok),
        ("dns endpoints", "{hosts: ['*.example.com'], resolution: DNS, ports: [{number: 80, name: http, protocol: HTTP}], endpoints: [{address: lb.example.com, ports: {http: 8080}}]}", Want::Ok),
        ("dns round robin", "{hosts: [a.example.com], resolution: DNS_ROUND_ROBIN, ports: [{number: 80, name: http, protocol: HTTP}], endpoints: [{address: b.example.com}]}", Want::Ok),
        ("dynamic dns", "{hosts: ['*.example.com'], resolution: DYNAMIC_DNS, ports: [{number: 443, name: tls, protocol: TLS}]}", Want::Ok),
        ("selector", "{hosts: [vm.example.com], location: MESH_INTERNAL, resolution: STATIC, workloadSelector: {labels: {app: vm}}, ports: [{number: 80, name: http, protocol: HTTP}]}", Want::Ok),
        ("no hosts", "{ports: [{number: 80, name: http}]}", Want::Err("spec.hosts", "service entry must have at least one host")),
        ("wildcard host", "{hosts: ['*']}", Want::Err("spec.hosts[0]", "hostname cannot be wildcard")),
        ("bad host", "{hosts: ['a..b']}", Want::Err("spec.hosts[0]", "invalid")),
        ("partial wildcard", "{hosts: ['a*.example.com']}", Want::Err("spec.hosts[0]", "label \"a*\" invalid")),
        ("bad address", "{hosts: [a.com], addresses: [300.1.1.1]}", Want::Err("spec.addresses[0]", "300.1.1.1 is not a valid IP")),
        ("bad cidr", "{hosts: [a.com], addresses: [1.2.3.4/99]}", Want::Err("spec.addresses[0]", "not a valid CIDR block")),
        ("cidr with dns", "{hosts: [a.com], addresses: [10.0.0.0/8], resolution: DNS}", Want::Err("spec.addresses", "CIDR addresses are allowed only for NONE/STATIC")),
        ("duplicate port name", "{hosts: [a.com], ports: [{number: 1, name: a}, {number: 2, name: a}]}", Want::Err("spec.ports[1].name", "Duplicate value")),
        ("duplicate port number", "{hosts: [a.com], ports: [{number: 1, name: a}, {number: 1, name: b}]}", Want::Err("spec.ports[1].number", "port number cannot be duplicated")),
        ("port range", "{hosts: [a.com], ports: [{number: 70000, name: a}]}", Want::Err("spec.ports[0].number", "port must be between 1-65535")),
        ("bad port name", "{hosts: [a.com], ports: [{number: 80, name: Bad_Name}]}", Want::Err("spec.ports[0].name", "invalid port name: Bad_Name")),
        ("bad protocol", "{hosts: [a.com], ports: [{number: 80, name: a, protocol: SMTP}]}", Want::Err("spec.ports[0].protocol", "unsupported protocol: SMTP")),
        ("none with endpoints", "{hosts: [a.com], endpoints: [{address: 1.1.1.1}]}", Want::Err("spec.endpoints", "NONE mode cannot set endpoints")),
        ("none with an empty list", "{hosts: [a.com], endpoints: []}", Want::Err("spec.endpoints", "NONE mode cannot set endpoints")),
        ("none with selector", "{hosts: [a.com], workloadSelector: {labels: {app: a}}}", Want::Warn("spec.workloadSelector", "workloadSelector should not be set when resolution mode is NONE")),
        ("selector and endpoints", "{hosts: [a.com], resolution: STATIC, workloadSelector: {labels: {app: a}}, endpoints: [{address: 1.1.1.1}]}", Want::Err("spec", "only one of WorkloadSelector or Endpoints can be set")),
        ("static fqdn endpoint", "{hosts: [a.com], resolution: STATIC, endpoints: [{address: b.com}]}", Want::Err("spec.endpoints[0].address", "is not a valid IP address")),
        ("static undefined port", "{hosts: [a.com], resolution: STATIC, ports: [{number: 80, name: http}], endpoints: [{address: 1.1.1.1, ports: {grpc: 90}}]}", Want::Err("spec.endpoints[0].ports[grpc]", "endpoint port 90 is not defined by the service entry")),
        ("dns wildcard without endpoints", "{hosts: ['*.a.com'], resolution: DNS}", Want::Err("spec.hosts[0]", "hosts must be FQDN if no endpoints are provided for resolution mode DNS")),
        ("round robin endpoints", "{hosts: [a.com], resolution: DNS_ROUND_ROBIN, endpoints: [{address: b.com}, {address: c.com}]}", Want::Err("spec.endpoints", "DNS_ROUND_ROBIN mode cannot have multiple endpoints")),
        ("dns bad endpoint", "{hosts: [a.com], resolution: DNS, endpoints: [{address: 'b_c'}]}", Want::Err("spec.endpoints[0].address", "not a valid FQDN or an IP address")),
        ("several hosts on tcp", "{hosts: [a.com, b.com], resolution: DNS, ports: [{number: 3306, name: mysql, protocol: MYSQL}]}", Want::Err("spec.hosts", "multiple hosts provided with non-HTTP, non-TLS ports")),
        ("exportTo none and more", "{hosts: [a.com], exportTo: ['~', other]}", Want::Err("spec.exportTo", "cannot export service entry to no one (~) and someone")),
        ("bad resolution", "{hosts: [a.com], resolution: MAGIC}", Want::Err("spec.resolution", "unknown variant `MAGIC`")),
    ];
    run_table(API, "ServiceEntry", &cases);
}

#[test]
fn workload_entries() {
    let cases: Vec<Case<'_>> = vec![
        ("full", "{address: 1.2.3.4, serviceAccount: sa, network: net, labels: {app: a}, ports: {http: 8080}, weight: 2, locality: us/east/1}", Want::Ok),
        ("fqdn", "{address: vm.example.com}", Want::Ok),
        ("ipv6", "{address: 'fd00::1'}", Want::Ok),
        ("network only", "{network: net}", Want::Warn("spec.address", "address is unset with network \"net\"")),
        ("no address", "{}", Want::Err("spec.address", "Address is required")),
        ("bad fqdn", "{address: 'vm_1.example.com'}", Want::Err("spec.address", "not a valid FQDN or an IP address")),
        ("uds dir", "{address: 'unix:///dir/'}", Want::Err("spec.address", "UDS may not be a dir")),
        ("uds relative", "{address: 'unix://relative'}", Want::Err("spec.address", "UDS must be an absolute path or abstract socket")),
        ("uds ports", "{address: 'unix:///a.sock', ports: {http: 80}}", Want::Err("spec.ports", "UDS may not include ports")),
        ("port range", "{address: 1.1.1.1, ports: {http: 0}}", Want::Err("spec.ports[http]", "port must be between 1-65535")),
        ("port name", "{address: 1.1.1.1, ports: {'a b': 80}}", Want::Err("spec.ports[a b]", "port name must be valid")),
        ("label", "{address: 1.1.1.1, labels: {'-x': y}}", Want::Err("spec.labels[-x]", "invalid tag key")),
        ("negative port", "{address: 1.1.1.1, ports: {http: -1}}", Want::Err("spec.ports.http", "invalid value")),
    ];
    run_table(API, "WorkloadEntry", &cases);
    let parsed = crate::config::parse_str(
        std::path::Path::new("w.yaml"),
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: w}\n",
    );
    assert_eq!(parsed.errors[0].field(), Some("spec"));
    assert!(parsed.errors[0].to_string().ends_with("spec: required"));
}
