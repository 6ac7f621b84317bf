//! Kubernetes-style YAML for the control plane's config directory: Namespace, Service
//! (clusterIP, ports, selector) and Endpoints, and helpers that write them into a topology.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use super::error::Result;
use super::topology::Topology;

/// A YAML double-quoted scalar (JSON string syntax, which YAML accepts as is).
fn q(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// One port of a [`ServiceSpec`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// Its name (`http`, `grpc-web`, `tcp-db`...: the prefix gives the protocol); empty for
    /// an unnamed port.
    pub name: String,
    /// The service port.
    pub port: u16,
    /// The workload's port.
    pub target_port: u16,
    /// `appProtocol`, which takes precedence over the name prefix.
    pub app_protocol: Option<String>,
}

/// A `v1` Service: name, namespace, ClusterIP, ports and selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `spec.clusterIP`; [`Topology::add_service`] assigns one when `None`.
    pub cluster_ip: Option<Ipv4Addr>,
    /// `spec.ports`.
    pub ports: Vec<ServicePort>,
    /// `spec.selector`.
    pub selector: BTreeMap<String, String>,
}

impl ServiceSpec {
    /// A service with no ports, no selector and no ClusterIP yet.
    pub fn new(name: &str, namespace: &str) -> Self {
        ServiceSpec {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            cluster_ip: None,
            ports: Vec::new(),
            selector: BTreeMap::new(),
        }
    }

    /// Adds port `name` `port` → `target_port`. An empty `name` leaves the port unnamed
    /// (Kubernetes allows that for a Service's only port; its protocol is then sniffed).
    pub fn port(mut self, name: &str, port: u16, target_port: u16) -> Self {
        self.ports.push(ServicePort {
            name: name.to_owned(),
            port,
            target_port,
            app_protocol: None,
        });
        self
    }

    /// Adds a port with an `appProtocol`.
    pub fn port_with_protocol(
        mut self,
        name: &str,
        port: u16,
        target_port: u16,
        app_protocol: &str,
    ) -> Self {
        self.ports.push(ServicePort {
            name: name.to_owned(),
            port,
            target_port,
            app_protocol: Some(app_protocol.to_owned()),
        });
        self
    }

    /// Adds `key: value` to the selector.
    pub fn selector(mut self, key: &str, value: &str) -> Self {
        self.selector.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Sets the ClusterIP.
    pub fn cluster_ip(mut self, ip: Ipv4Addr) -> Self {
        self.cluster_ip = Some(ip);
        self
    }

    /// The Service as a YAML document.
    pub fn to_yaml(&self) -> String {
        let mut y = format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {}\n  namespace: {}\nspec:\n",
            q(&self.name),
            q(&self.namespace)
        );
        if let Some(ip) = self.cluster_ip {
            let _ = writeln!(y, "  clusterIP: {}", q(&ip.to_string()));
        }
        if !self.selector.is_empty() {
            y.push_str("  selector:\n");
            for (k, v) in &self.selector {
                let _ = writeln!(y, "    {}: {}", q(k), q(v));
            }
        }
        y.push_str("  ports:\n");
        for p in &self.ports {
            y.push_str("  -");
            if !p.name.is_empty() {
                let _ = write!(y, " name: {}\n   ", q(&p.name));
            }
            let _ = write!(
                y,
                " port: {}\n    targetPort: {}\n    protocol: TCP\n",
                p.port, p.target_port
            );
            if let Some(ap) = &p.app_protocol {
                let _ = writeln!(y, "    appProtocol: {}", q(ap));
            }
        }
        y
    }
}

/// A `v1` Namespace document.
pub fn namespace_yaml(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {}\n",
        q(name)
    )
}

/// A `v1` Endpoints document for service `name` in `namespace`: one subset with `addresses`
/// and the named `ports` (the workloads' ports).
pub fn endpoints_yaml(
    name: &str,
    namespace: &str,
    addresses: &[Ipv4Addr],
    ports: &[(&str, u16)],
) -> String {
    let mut y = format!(
        "apiVersion: v1\nkind: Endpoints\nmetadata:\n  name: {}\n  namespace: {}\nsubsets:\n- addresses:\n",
        q(name),
        q(namespace)
    );
    for a in addresses {
        let _ = writeln!(y, "  - ip: {}", q(&a.to_string()));
    }
    y.push_str("  ports:\n");
    for (pname, port) in ports {
        let _ = write!(
            y,
            "  - name: {}\n    port: {port}\n    protocol: TCP\n",
            q(pname)
        );
    }
    y
}

impl Topology {
    /// Declares `spec` everywhere a test needs it: assigns a ClusterIP if it has none
    /// ([`Topology::next_cluster_ip`]), makes the pods' hosts files resolve its names
    /// ([`Topology::service`]) and writes it to `service-<ns>-<name>.yaml` in the config
    /// directory. Returns the ClusterIP.
    pub fn add_service(&self, spec: &ServiceSpec) -> Result<Ipv4Addr> {
        let mut spec = spec.clone();
        let ip = match spec.cluster_ip {
            Some(ip) => ip,
            None => self.next_cluster_ip(),
        };
        spec.cluster_ip = Some(ip);
        self.service(&spec.name, &spec.namespace, ip)?;
        self.write_config(
            &format!("service-{}-{}.yaml", spec.namespace, spec.name),
            &spec.to_yaml(),
        )?;
        Ok(ip)
    }

    /// Writes a Namespace object to `namespace-<name>.yaml` in the config directory.
    pub fn add_namespace(&self, name: &str) -> Result<()> {
        self.write_config(&format!("namespace-{name}.yaml"), &namespace_yaml(name))
            .map(drop)
    }

    /// Writes an Endpoints object (see [`endpoints_yaml`]) to
    /// `endpoints-<namespace>-<name>.yaml` in the config directory.
    pub fn add_endpoints(
        &self,
        name: &str,
        namespace: &str,
        addresses: &[Ipv4Addr],
        ports: &[(&str, u16)],
    ) -> Result<()> {
        let yaml = endpoints_yaml(name, namespace, addresses, ports);
        self.write_config(&format!("endpoints-{namespace}-{name}.yaml"), &yaml)
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_yaml_has_every_field() {
        let y = ServiceSpec::new("reviews", "default")
            .cluster_ip(Ipv4Addr::new(10, 96, 0, 10))
            .port("http", 9080, 9080)
            .port_with_protocol("grpc", 7070, 17070, "grpc")
            .selector("app", "reviews")
            .to_yaml();
        assert_eq!(
            y,
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: \"reviews\"\n  namespace: \"default\"\nspec:\n  \
             clusterIP: \"10.96.0.10\"\n  selector:\n    \"app\": \"reviews\"\n  ports:\n  - name: \"http\"\n    \
             port: 9080\n    targetPort: 9080\n    protocol: TCP\n  - name: \"grpc\"\n    port: 7070\n    \
             targetPort: 17070\n    protocol: TCP\n    appProtocol: \"grpc\"\n"
        );
    }

    #[test]
    fn an_empty_port_name_leaves_the_port_unnamed() {
        let y = ServiceSpec::new("legacy", "default")
            .port("", 9101, 9101)
            .to_yaml();
        assert!(
            y.ends_with("  ports:\n  - port: 9101\n    targetPort: 9101\n    protocol: TCP\n"),
            "{y}"
        );
    }

    #[test]
    fn endpoints_yaml_lists_addresses_and_ports() {
        let y = endpoints_yaml(
            "db",
            "prod",
            &[Ipv4Addr::new(10, 211, 3, 2)],
            &[("tcp", 5432)],
        );
        assert!(y.contains("kind: Endpoints\n"));
        assert!(y.contains("  - ip: \"10.211.3.2\"\n"));
        assert!(y.contains("  - name: \"tcp\"\n    port: 5432\n"));
    }
}
