use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use super::*;

#[derive(Clone, Default)]
struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::ErrorKind::Other)?
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A writer that blocks until the test releases it.
struct Gate(std::sync::mpsc::Receiver<()>);

impl Write for Gate {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = self.0.recv();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn sample() -> AccessLogEntry {
    let mut e = AccessLogEntry::new(UNIX_EPOCH + Duration::from_millis(1_700_000_000_123));
    e.method = Some("GET".into());
    e.path = Some("/a?b=c".into());
    e.protocol = Some("HTTP/1.1");
    e.response_code = 503;
    e.response_flags = ResponseFlag::NoHealthyUpstream.into();
    e.upstream_cluster = Some("outbound|80||a.default.svc.cluster.local".into());
    e.downstream_local_address = Some("10.96.0.1:80".parse().unwrap());
    e
}

#[test]
fn entry_uses_istio_field_names_and_formats() {
    let v: serde_json::Value = serde_json::to_value(sample()).unwrap();
    assert_eq!(v["start_time"], "2023-11-14T22:13:20.123Z");
    assert_eq!(v["method"], "GET");
    assert_eq!(v["path"], "/a?b=c");
    assert_eq!(v["protocol"], "HTTP/1.1");
    assert_eq!(v["response_code"], 503);
    assert_eq!(v["response_flags"], "UH");
    assert_eq!(v["downstream_local_address"], "10.96.0.1:80");
    assert!(v["upstream_host"].is_null());
    assert!(v["route_name"].is_null());
    for key in [
        "authority",
        "bytes_received",
        "bytes_sent",
        "duration",
        "downstream_remote_address",
        "upstream_cluster",
        "request_id",
    ] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
    let none: serde_json::Value = serde_json::to_value(AccessLogEntry::new(UNIX_EPOCH)).unwrap();
    assert_eq!(none["response_flags"], "-");
}

#[test]
fn flags_are_written_in_the_order_they_were_set() {
    // Envoy 1.40: a retry limit noted before the failure that ends the request comes first.
    let mut flags = ResponseFlags::default();
    flags.insert(ResponseFlag::UpstreamRetryLimitExceeded);
    flags.insert(ResponseFlag::UpstreamConnectionFailure);
    flags.insert(ResponseFlag::UpstreamRetryLimitExceeded);
    assert_eq!(flags.to_string(), "URX,UF");
    let mut flags = ResponseFlags::default();
    flags.insert(ResponseFlag::DelayInjected);
    flags.insert(ResponseFlag::FaultInjected);
    flags.insert(ResponseFlag::NoClusterFound);
    assert_eq!(flags.to_string(), "DI,FI,NC");
    assert!(flags.contains(ResponseFlag::FaultInjected));
    assert!(!flags.contains(ResponseFlag::UpstreamOverflow));
}

#[test]
fn writes_one_line_per_entry() {
    let buf = SharedBuf::default();
    let log = AccessLog::spawn(buf.clone(), 16).unwrap();
    log.log(sample());
    log.log(sample());
    assert!(log.flush(Duration::from_secs(5)));
    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2);
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["response_code"], 503);
    }
    assert_eq!(log.dropped(), 0);
}

#[test]
fn full_queue_drops_and_counts_without_blocking() {
    let (release, gate) = std::sync::mpsc::channel();
    let log = AccessLog::spawn(Gate(gate), 2).unwrap();
    // The first entry gets the writer stuck in a write.
    log.log(sample());
    std::thread::sleep(Duration::from_millis(200));
    let started = std::time::Instant::now();
    for _ in 0..50 {
        log.log(sample());
    }
    assert!(started.elapsed() < Duration::from_secs(1));
    // Only the queue's two slots took entries.
    assert_eq!(log.dropped(), 48);
    for _ in 0..100 {
        let _ = release.send(());
    }
}

#[test]
fn text_format_is_istios_default_layout() {
    let mut e = sample();
    e.request_id = Some("abc".into());
    e.upstream_service_time = Some("7".into());
    e.duration = 12;
    let mut line = String::new();
    super::text::render(&e, &mut line);
    assert_eq!(
        line,
        "[2023-11-14T22:13:20.123Z] \"GET /a?b=c HTTP/1.1\" 503 UH - - \"-\" 0 0 12 7 \"-\" \"-\" \
         \"abc\" \"-\" \"-\" outbound|80||a.default.svc.cluster.local - 10.96.0.1:80 - - -"
    );
}

#[test]
fn text_lines_are_written_and_off_writes_nothing() {
    let buf = SharedBuf::default();
    let log = AccessLog::spawn_with(buf.clone(), 8, Format::Text).unwrap();
    log.log(sample());
    assert!(log.flush(Duration::from_secs(5)));
    let written = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert!(
        written.starts_with("[2023-11-14T22:13:20.123Z] \"GET"),
        "{written}"
    );
    assert!(written.ends_with('\n'));
    let off = AccessLog::off();
    off.log(sample());
    assert!(off.flush(Duration::from_millis(10)));
    assert!(!off.is_on());
    assert_eq!(off.dropped(), 0);
    assert_eq!("TEXT".parse::<Format>(), Ok(Format::Text));
    assert!("yaml".parse::<Format>().is_err());
}
