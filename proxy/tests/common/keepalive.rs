//! One HTTP/1.1 connection carrying request after request, written and read by hand (no
//! client library that would quietly reconnect): it proves that the proxy keeps a connection
//! open after a response that says `connection: keep-alive`.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A response read off the connection.
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers, names lowercase.
    pub headers: Vec<(String, String)>,
    /// Body (by `content-length`).
    pub body: String,
}

impl Response {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An open HTTP/1.1 connection.
pub struct Connection {
    stream: BufReader<TcpStream>,
    /// The client side's address (what the proxy logs as `downstream_remote_address`).
    pub local: SocketAddr,
}

impl Connection {
    /// Connect to `addr`.
    pub async fn open(addr: SocketAddr) -> Connection {
        let stream = TcpStream::connect(addr)
            .await
            .expect("connect to the proxy");
        let local = stream.local_addr().unwrap();
        Connection {
            stream: BufReader::new(stream),
            local,
        }
    }

    /// Send `method path` with `Host: host` and `headers` (no body), read the response.
    /// Panics if the connection was closed or the response is malformed.
    pub async fn send(
        &mut self,
        method: &str,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Response {
        let mut req = format!("{method} {path} HTTP/1.1\r\nhost: {host}\r\n");
        for (name, value) in headers {
            req.push_str(&format!("{name}: {value}\r\n"));
        }
        req.push_str("\r\n");
        tokio::time::timeout(
            Duration::from_secs(20),
            self.exchange(req.as_bytes(), method),
        )
        .await
        .unwrap_or_else(|_| panic!("{method} {host}{path}: no answer in time"))
    }

    async fn exchange(&mut self, req: &[u8], method: &str) -> Response {
        self.stream
            .get_mut()
            .write_all(req)
            .await
            .expect("the connection is still open for writing");
        let mut line = String::new();
        let n = self.stream.read_line(&mut line).await.expect("status line");
        assert!(
            n > 0,
            "the proxy closed the connection instead of answering"
        );
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {line:?}"));
        let mut headers = Vec::new();
        loop {
            line.clear();
            self.stream.read_line(&mut line).await.expect("header line");
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let (name, value) = l.split_once(':').expect("header");
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
        let mut resp = Response {
            status,
            headers,
            body: String::new(),
        };
        assert!(
            resp.header("transfer-encoding").is_none(),
            "local replies carry a content-length: {resp:?}"
        );
        let len: usize = resp
            .header("content-length")
            .map_or(0, |v| v.parse().expect("content-length"));
        if method != "HEAD" {
            let mut body = vec![0; len];
            self.stream.read_exact(&mut body).await.expect("body");
            resp.body = String::from_utf8_lossy(&body).into_owned();
        }
        resp
    }

    /// Whether the proxy closed the connection (EOF within `wait`).
    pub async fn closed_within(&mut self, wait: Duration) -> bool {
        let mut byte = [0u8; 1];
        match tokio::time::timeout(wait, self.stream.read(&mut byte)).await {
            Ok(Ok(0)) | Ok(Err(_)) => true,
            Ok(Ok(_)) => panic!("unexpected bytes after a response"),
            Err(_) => false,
        }
    }
}
