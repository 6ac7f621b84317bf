//! `meshctl`: the mesh's command-line tool: `analyze DIR`, `proxy-status`, `proxy-config`,
//! `token create`.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use controlplane::analyze::{self, Level};
use controlplane::ca::{store, token, Authority};
use controlplane::config::ConfigStore;
use controlplane::proxy_config::{self, Kind};
use controlplane::proxy_status;

/// Command-line tool of the mesh.
#[derive(Debug, Parser)]
#[command(name = "meshctl", version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validates a config directory as the control plane loads it and analyzes the objects
    /// together (references, conflicts, selectors), printing every finding with Istio's
    /// message codes; exits 1 if there is any error (warnings are printed, exit 0).
    Analyze {
        /// The config directory.
        dir: PathBuf,
        /// Cluster domain of Service host names.
        #[arg(long, default_value = "cluster.local")]
        cluster_domain: String,
    },
    /// Bootstrap tokens for proxies.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Shows every proxy connected to the control plane and, per xDS type, whether it has
    /// ACKed the last config sent (SYNCED), not ACKed it yet (STALE), rejected it (STALE with
    /// the NACK's message) or was never sent that type (NOT SENT), as istioctl does.
    #[command(name = "proxy-status", visible_alias = "ps")]
    ProxyStatus {
        /// Only proxies whose POD.NAMESPACE contains this.
        proxy: Option<String>,
        /// The control plane's debug address (HOST:PORT).
        #[arg(long, env = "MESH_CP_ADDR", default_value = "127.0.0.1:8080")]
        cp_addr: String,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Shows what one sidecar applied, read from its admin port's `/config_dump`: routes,
    /// clusters, listeners, endpoints or secrets (certificates, never keys), as istioctl
    /// does. The admin port listens on the pod's loopback: run it in the pod's network
    /// (`ip netns exec POD meshctl proxy-config ...`) or give `--admin-addr`.
    #[command(name = "proxy-config", visible_alias = "pc")]
    ProxyConfig {
        /// What to show.
        #[arg(value_enum)]
        kind: ConfigKind,
        /// The pod, `NAME` or `NAME.NAMESPACE`; the sidecar at the address must be its.
        pod: String,
        /// The sidecar's admin address (HOST:PORT).
        #[arg(long, env = "MESH_ADMIN_ADDR", default_value = "127.0.0.1:15000")]
        admin_addr: String,
        /// Output format: a table, or the dump's section as JSON.
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
}

/// The first argument of `proxy-config`.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum ConfigKind {
    /// Route configurations, one row per virtual host.
    #[value(alias = "route")]
    Routes,
    /// Clusters.
    #[value(alias = "cluster")]
    Clusters,
    /// Listeners, one row per filter chain.
    #[value(alias = "listener")]
    Listeners,
    /// Endpoints of every cluster.
    #[value(alias = "endpoint")]
    Endpoints,
    /// Certificates and the trust bundle.
    #[value(alias = "secrets")]
    Secret,
}

impl From<ConfigKind> for Kind {
    fn from(k: ConfigKind) -> Kind {
        match k {
            ConfigKind::Routes => Kind::Routes,
            ConfigKind::Clusters => Kind::Clusters,
            ConfigKind::Listeners => Kind::Listeners,
            ConfigKind::Endpoints => Kind::Endpoints,
            ConfigKind::Secret => Kind::Secret,
        }
    }
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Prints a short-lived token, signed with the CA key, that proves NAMESPACE and
    /// SERVICE-ACCOUNT to the CA for a proxy's first certificate (give it to `mesh-proxy run
    /// --token-file`). A JWT (ES256 or RS256, after the CA key), audience `istio-ca`.
    Create {
        /// The workload's namespace.
        #[arg(long)]
        namespace: String,
        /// The workload's service account.
        #[arg(long)]
        service_account: String,
        /// The CA directory the control plane runs with (`--ca-dir`); default: `ca/` in the
        /// state directory.
        #[arg(long, env = "MESH_CA_DIR")]
        ca_dir: Option<PathBuf>,
        /// The control plane's state directory, where a generated CA is kept; default
        /// $XDG_STATE_HOME/mesh (else ~/.local/state/mesh).
        #[arg(long, env = "MESH_STATE_DIR")]
        state_dir: Option<PathBuf>,
        /// How long the token is valid (at most 24h).
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
}

/// `-o` of `proxy-status`.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Output {
    /// istioctl's table.
    Table,
    /// A JSON list, one object per proxy.
    Json,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match args.command {
        Command::Analyze {
            dir,
            cluster_domain,
        } => run_analyze(dir, &cluster_domain),
        Command::Token {
            command:
                TokenCommand::Create {
                    namespace,
                    service_account,
                    ca_dir,
                    state_dir,
                    ttl,
                },
        } => {
            let dir = store::ca_dir(ca_dir.as_deref(), state_dir.as_deref());
            match create_token(&dir, &namespace, &service_account, ttl) {
                Ok(t) => {
                    println!("{t}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("Error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::ProxyStatus {
            proxy,
            cp_addr,
            output,
        } => run_proxy_status(&cp_addr, proxy.as_deref(), output),
        Command::ProxyConfig {
            kind,
            pod,
            admin_addr,
            output,
        } => run_proxy_config(kind.into(), &pod, &admin_addr, output),
    }
}

fn run_proxy_config(kind: Kind, pod: &str, admin_addr: &str, output: Output) -> ExitCode {
    let items = match proxy_config::fetch(admin_addr, pod, kind) {
        Ok(items) => items,
        Err(e) => {
            eprintln!("Error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match output {
        Output::Table => print!("{}", proxy_config::table(kind, &items)),
        Output::Json => match serde_json::to_string_pretty(&items) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("Error: {e}");
                return ExitCode::FAILURE;
            }
        },
    }
    ExitCode::SUCCESS
}

fn create_token(
    dir: &std::path::Path,
    namespace: &str,
    service_account: &str,
    ttl: Duration,
) -> Result<String, String> {
    controlplane::ca::SpiffeId::new("cluster.local", namespace, service_account)
        .map_err(|e| e.to_string())?;
    if !store::exists(dir) {
        return Err(format!(
            "no CA in {}: start the control plane first (it generates one), or pass the --ca-dir it runs with",
            dir.display()
        ));
    }
    // The trust domain does not enter the token.
    let ca = Authority::load(dir, "cluster.local").map_err(|e| e.to_string())?;
    token::create(
        ca.signing_key(),
        ca.public_key(),
        namespace,
        service_account,
        ttl,
    )
    .map_err(|e| e.to_string())
}

fn run_proxy_status(cp_addr: &str, filter: Option<&str>, output: Output) -> ExitCode {
    let proxies = match proxy_status::fetch(cp_addr) {
        Ok(p) => proxy_status::select(p, filter),
        Err(e) => {
            eprintln!("Error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match output {
        Output::Table => print!("{}", proxy_status::table(&proxies)),
        Output::Json => match serde_json::to_string_pretty(&proxy_status::json(&proxies)) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("Error: {e}");
                return ExitCode::FAILURE;
            }
        },
    }
    ExitCode::SUCCESS
}

fn run_analyze(dir: PathBuf, cluster_domain: &str) -> ExitCode {
    if !dir.is_dir() {
        eprintln!("Error: {}: not a directory", dir.display());
        return ExitCode::FAILURE;
    }
    let snapshot = ConfigStore::load_in_domain(&dir, cluster_domain).current();
    let report = analyze::analyze(&snapshot, cluster_domain);
    for e in &report.store_errors {
        println!("Error: {e}");
    }
    for m in &report.messages {
        println!("{m}");
    }
    let (errors, warnings, infos) = (
        report.count(Level::Error),
        report.count(Level::Warning),
        report.count(Level::Info),
    );
    if errors + warnings + infos == 0 {
        println!(
            "No validation issues found when analyzing {} ({} objects).",
            dir.display(),
            snapshot.objects.len()
        );
    } else {
        eprintln!(
            "{errors} error(s), {warnings} warning(s), {infos} info(s) in {} ({} valid objects).",
            dir.display(),
            snapshot.objects.len()
        );
    }
    if report.has_errors() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
