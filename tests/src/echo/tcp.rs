//! Raw TCP echo, client-first (`--tcp-port`) and server-first (`--tcp-banner-port`).

use std::time::Instant;

use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

use super::{ConnInfo, Identity, State};

/// The banner line a `--tcp-banner-port` writes on accept: `mesh-echo NAME VERSION\n`.
pub fn banner(identity: &Identity) -> String {
    format!("mesh-echo {} {}\n", identity.name, identity.version)
}

/// Serves one connection: writes the banner first when `banner` is set, then echoes every
/// byte back until the peer half-closes, then half-closes too. Logs one line when done.
pub(crate) async fn serve(state: &State, mut stream: TcpStream, conn: ConnInfo, banner: bool) {
    let start = Instant::now();
    let result = async {
        if banner {
            stream
                .write_all(self::banner(&state.identity).as_bytes())
                .await?;
        }
        let (mut reader, mut writer) = stream.split();
        let n = tokio::io::copy(&mut reader, &mut writer).await?;
        writer.shutdown().await?;
        Ok::<u64, std::io::Error>(n)
    }
    .await;
    let kind = if banner { "tcp-banner" } else { "tcp" };
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    match result {
        Ok(bytes) => tracing::info!(
            "{kind} {} -> {} echoed {bytes} bytes in {ms:.1}ms",
            conn.peer,
            conn.local
        ),
        Err(e) => tracing::info!("{kind} {} -> {} ended: {e}", conn.peer, conn.local),
    }
}
