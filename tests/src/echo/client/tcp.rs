//! `mesh-echo client tcp`: raw TCP echo (and banner) check, one JSON line.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

use super::{parse_duration, ClientError, Sink};

/// Flags of `mesh-echo client tcp`.
#[derive(Debug, Clone, clap::Args)]
pub struct TcpArgs {
    /// `HOST:PORT` to connect to.
    pub target: String,
    /// Data to send (may be empty with `--expect-banner`).
    #[arg(long, default_value = "hello mesh-echo\n")]
    pub data: String,
    /// Read the server's banner line before sending anything (server-first ports).
    #[arg(long)]
    pub expect_banner: bool,
    /// Limit for the whole exchange.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// The exchange, as printed.
#[derive(Debug, Default, serde::Serialize)]
struct Report {
    banner: Option<String>,
    sent: String,
    received: String,
    ok: bool,
    error: Option<String>,
}

/// Connects, reads the banner if asked, sends the data, half-closes, reads everything back
/// and prints one line. Returns whether the banner (if expected) and the echo were right.
pub async fn run(args: &TcpArgs, sink: &mut Sink<'_>) -> Result<bool, ClientError> {
    let mut report = Report {
        sent: args.data.clone(),
        ..Report::default()
    };
    let result = tokio::time::timeout(args.timeout, exchange(args, &mut report))
        .await
        .unwrap_or_else(|_| Err(format!("timed out after {:?}", args.timeout)));
    if let Err(error) = result {
        report.error = Some(error);
    } else if report.received != args.data {
        report.error = Some("the echo differs from the data sent".to_string());
    }
    report.ok = report.error.is_none();
    sink(&serde_json::to_value(&report).unwrap_or_default())?;
    Ok(report.ok)
}

async fn exchange(args: &TcpArgs, report: &mut Report) -> Result<(), String> {
    let stream = TcpStream::connect(args.target.as_str())
        .await
        .map_err(|e| format!("connect {}: {e}", args.target))?;
    let mut stream = BufReader::new(stream);
    if args.expect_banner {
        let mut line = String::new();
        stream
            .read_line(&mut line)
            .await
            .map_err(|e| format!("reading the banner: {e}"))?;
        let banner = line.trim_end_matches('\n').to_string();
        report.banner = Some(banner.clone());
        if !banner.starts_with("mesh-echo ") {
            return Err(format!("unexpected banner {banner:?}"));
        }
    }
    if !args.data.is_empty() {
        stream
            .get_mut()
            .write_all(args.data.as_bytes())
            .await
            .map_err(|e| format!("send: {e}"))?;
    }
    stream
        .get_mut()
        .shutdown()
        .await
        .map_err(|e| format!("half-close: {e}"))?;
    let mut received = Vec::new();
    stream
        .read_to_end(&mut received)
        .await
        .map_err(|e| format!("receive: {e}"))?;
    report.received = String::from_utf8_lossy(&received).into_owned();
    Ok(())
}
