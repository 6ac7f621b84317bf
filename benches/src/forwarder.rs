//! `mesh-bench forwarder`: the bare Pingora forwarder, the framework's floor. A minimal
//! `ProxyHttp` with Pingora's default settings except the thread count (and short shutdown
//! grace periods): each listening port forwards to one upstream, over HTTP/1.1 or h2c.

use std::collections::HashMap;
use std::net::SocketAddr;

use async_trait::async_trait;
use pingora_core::apps::HttpServerOptions;
use pingora_core::protocols::ALPN;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::Server;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error as PError, ErrorType, Result as PResult};
use pingora_proxy::{http_proxy_service, ProxyHttp, Session};

/// Errors of the forwarder's flags.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A `--route` is not `PORT=IP:PORT[,h2]`.
    #[error("`{0}` is not LISTEN_PORT=UPSTREAM_IP:PORT[,h2]")]
    Route(String),
}

/// Flags of `mesh-bench forwarder`.
#[derive(clap::Args, Debug, Clone)]
pub struct ForwarderArgs {
    /// Address to listen on (all routes' ports are bound on it).
    #[arg(long, default_value = "0.0.0.0")]
    pub listen_ip: std::net::IpAddr,
    /// `PORT=UPSTREAM_IP:PORT[,h2]`: what a port forwards to, and whether over h2c.
    #[arg(long = "route", required = true)]
    pub routes: Vec<String>,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

struct Forward {
    by_port: HashMap<u16, (SocketAddr, bool)>,
}

#[async_trait]
impl ProxyHttp for Forward {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, session: &mut Session, _ctx: &mut ()) -> PResult<Box<HttpPeer>> {
        let port = session
            .as_downstream()
            .server_addr()
            .and_then(|a| a.as_inet().map(|a| a.port()))
            .unwrap_or(0);
        let Some(&(upstream, h2)) = self.by_port.get(&port) else {
            return PError::e_explain(ErrorType::InternalError, "no route for this port");
        };
        let mut peer = HttpPeer::new(upstream, false, String::new());
        if h2 {
            peer.options.alpn = ALPN::H2;
            peer.options.max_h2_streams = 100;
        }
        Ok(Box::new(peer))
    }
}

fn parse_route(s: &str) -> Result<(u16, SocketAddr, bool), Error> {
    let bad = || Error::Route(s.to_owned());
    let (port, rest) = s.split_once('=').ok_or_else(bad)?;
    let (addr, h2) = match rest.strip_suffix(",h2") {
        Some(a) => (a, true),
        None => (rest, false),
    };
    Ok((
        port.parse().map_err(|_| bad())?,
        addr.parse().map_err(|_| bad())?,
        h2,
    ))
}

/// Runs the forwarder until it is signalled.
pub fn run(args: &ForwarderArgs) -> Result<(), Error> {
    let routes = args
        .routes
        .iter()
        .map(|r| parse_route(r))
        .collect::<Result<Vec<_>, _>>()?;
    let conf = ServerConf {
        threads: args.threads,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(0),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let forward = Forward {
        by_port: routes.iter().map(|(p, a, h2)| (*p, (*a, *h2))).collect(),
    };
    let mut service = http_proxy_service(&server.configuration, forward);
    if let Some(proxy) = service.app_logic_mut() {
        let mut options = HttpServerOptions::default();
        options.h2c = true;
        proxy.server_options = Some(options);
    }
    for (port, _, _) in &routes {
        service.add_tcp(&SocketAddr::new(args.listen_ip, *port).to_string());
    }
    server.add_service(service);
    server.run_forever()
}

#[cfg(test)]
mod tests {
    use super::parse_route;

    #[test]
    fn routes_parse() {
        let (p, a, h2) = parse_route("18080=10.0.0.1:8080,h2").unwrap();
        assert_eq!(
            (p, a.to_string().as_str(), h2),
            (18080, "10.0.0.1:8080", true)
        );
        assert!(!parse_route("1=127.0.0.1:2").unwrap().2);
        assert!(parse_route("x").is_err());
    }
}
