//! Partial views of the resources a simulated proxy takes in: only the fields it records (names,
//! the EDS service name, the RDS names listeners reference, virtual host names), with the tags
//! of Envoy's v3 messages. Decoding one still reads every byte of the resource (prost checks
//! and skips the fields a view leaves out), but builds nothing for them, so hundreds of
//! simulated proxies in the benchmark's process cost little next to the control plane they
//! measure. `tests` checks each view against the full message.

use envoy_types::pb::google::protobuf::Any;

/// `envoy.config.cluster.v3.Cluster`: name, discovery type, EDS config.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct ClusterView {
    /// `name`.
    #[prost(string, tag = "1")]
    pub name: String,
    /// `type` (of the `cluster_discovery_type` oneof).
    #[prost(int32, optional, tag = "2")]
    pub discovery_type: Option<i32>,
    /// `eds_cluster_config`.
    #[prost(message, optional, tag = "3")]
    pub eds: Option<EdsConfigView>,
}

/// `Cluster.EdsClusterConfig`: the service name.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct EdsConfigView {
    /// `service_name`.
    #[prost(string, tag = "2")]
    pub service_name: String,
}

/// `envoy.config.listener.v3.Listener`: name and filter chains.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct ListenerView {
    /// `name`.
    #[prost(string, tag = "1")]
    pub name: String,
    /// `filter_chains`.
    #[prost(message, repeated, tag = "3")]
    pub filter_chains: Vec<FilterChainView>,
    /// `default_filter_chain`.
    #[prost(message, optional, tag = "25")]
    pub default_filter_chain: Option<FilterChainView>,
}

/// `FilterChain`: its network filters.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct FilterChainView {
    /// `filters`.
    #[prost(message, repeated, tag = "3")]
    pub filters: Vec<FilterView>,
}

/// `Filter`: its typed config.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct FilterView {
    /// `typed_config` (of the `config_type` oneof).
    #[prost(message, optional, tag = "4")]
    pub typed_config: Option<Any>,
}

/// `HttpConnectionManager`: where its routes come from.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct HcmView {
    /// `rds` (of the `route_specifier` oneof).
    #[prost(message, optional, tag = "3")]
    pub rds: Option<RdsView>,
}

/// `HttpConnectionManager.Rds`: the route configuration's name.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct RdsView {
    /// `route_config_name`.
    #[prost(string, tag = "2")]
    pub route_config_name: String,
}

/// `envoy.config.route.v3.RouteConfiguration`: name and virtual hosts.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct RouteConfigView {
    /// `name`.
    #[prost(string, tag = "1")]
    pub name: String,
    /// `virtual_hosts`.
    #[prost(message, repeated, tag = "2")]
    pub virtual_hosts: Vec<VirtualHostView>,
}

/// `VirtualHost`: its name.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct VirtualHostView {
    /// `name`.
    #[prost(string, tag = "1")]
    pub name: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::cluster::v3::{cluster, Cluster};
    use envoy_types::pb::envoy::config::core::v3::{config_source, ConfigSource};
    use envoy_types::pb::envoy::config::listener::v3::{filter, Filter, FilterChain, Listener};
    use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, VirtualHost};
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
        http_connection_manager::RouteSpecifier, HttpConnectionManager, Rds,
    };
    use envoy_types::util::pack_any;
    use prost::Message;

    #[test]
    fn views_read_the_fields_of_the_full_messages() {
        let cluster = Cluster {
            name: "outbound|80||a".into(),
            cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::Eds as i32,
            )),
            eds_cluster_config: Some(cluster::EdsClusterConfig {
                eds_config: Some(ConfigSource {
                    config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
                        Default::default(),
                    )),
                    ..Default::default()
                }),
                service_name: "svc-a".into(),
            }),
            alt_stat_name: "ignored".into(),
            ..Default::default()
        };
        let view = ClusterView::decode(cluster.encode_to_vec().as_slice()).unwrap();
        assert_eq!(view.name, "outbound|80||a");
        assert_eq!(
            view.discovery_type,
            Some(cluster::DiscoveryType::Eds as i32)
        );
        assert_eq!(view.eds.unwrap().service_name, "svc-a");

        let hcm = |name: &str| Filter {
            name: "envoy.filters.network.http_connection_manager".into(),
            config_type: Some(filter::ConfigType::TypedConfig(pack_any(
                HttpConnectionManager {
                    stat_prefix: "x".into(),
                    route_specifier: Some(RouteSpecifier::Rds(Rds {
                        config_source: None,
                        route_config_name: name.into(),
                    })),
                    ..Default::default()
                },
            ))),
        };
        let listener = Listener {
            name: "0.0.0.0_80".into(),
            filter_chains: vec![FilterChain {
                filters: vec![hcm("80")],
                ..Default::default()
            }],
            default_filter_chain: Some(FilterChain {
                filters: vec![hcm("8080")],
                ..Default::default()
            }),
            ..Default::default()
        };
        let view = ListenerView::decode(listener.encode_to_vec().as_slice()).unwrap();
        assert_eq!(view.name, "0.0.0.0_80");
        let names: Vec<String> = view
            .filter_chains
            .iter()
            .chain(&view.default_filter_chain)
            .flat_map(|c| &c.filters)
            .filter_map(|f| f.typed_config.as_ref())
            .map(|a| HcmView::decode(a.value.as_slice()).unwrap())
            .filter_map(|h| h.rds.map(|r| r.route_config_name))
            .collect();
        assert_eq!(names, ["80", "8080"]);

        let routes = RouteConfiguration {
            name: "80".into(),
            virtual_hosts: vec![
                VirtualHost {
                    name: "a:80".into(),
                    domains: vec!["a".into()],
                    ..Default::default()
                },
                VirtualHost {
                    name: "allow_any".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let view = RouteConfigView::decode(routes.encode_to_vec().as_slice()).unwrap();
        assert_eq!(view.name, "80");
        let vhosts: Vec<&str> = view.virtual_hosts.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(vhosts, ["a:80", "allow_any"]);
    }
}
