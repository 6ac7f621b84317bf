//! Measuring one (path, peer) target: the fixed-rate latency run (the generator in the client
//! pod, pinned to the load core), then the maximum-throughput run (wrk for HTTP/1.1, h2load
//! for HTTP/2 and gRPC), with CPU and memory of the target's proxies read from `/proc`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mesh_tests::harness::HarnessError;

use crate::load::{LoadReport, Mode};
use crate::procfs;
use crate::results::{MaxFigures, RunFigures};
use crate::topo::spawn::{self_exe, taskset};
use crate::topo::{Bench, Target};
use crate::upstream::{grpc_frame, GRPC_PATH};

/// Errors of a measurement.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Running a command in a pod failed.
    #[error(transparent)]
    Harness(#[from] HarnessError),
    /// The generator's report could not be read.
    #[error("the generator's report is not JSON ({source}): {output}")]
    Report {
        /// Why.
        #[source]
        source: serde_json::Error,
        /// What it printed.
        output: String,
    },
    /// The generator failed.
    #[error("the generator failed: {0}")]
    Generator(String),
    /// A file could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The topology's helpers failed.
    #[error(transparent)]
    Topo(#[from] crate::topo::Error),
}

/// How long and how hard each run goes.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LoadSettings {
    /// Requests per second of the latency run.
    pub rate: u32,
    /// Connections of every run.
    pub connections: u32,
    /// Request body bytes (echoed back).
    pub body_size: usize,
    /// Discarded warm-up of the latency run, seconds.
    pub warmup_s: f64,
    /// Measured window of the latency run, seconds.
    pub duration_s: f64,
    /// Discarded warm-up run before the maximum-throughput run, seconds (0: none).
    pub max_warmup_s: f64,
    /// Maximum-throughput run, whole seconds (wrk's resolution).
    pub max_duration_s: u64,
}

/// Files the throughput tools read: the POST body, its gRPC frame and wrk's script.
#[derive(Debug, Clone)]
pub struct ToolFiles {
    body: PathBuf,
    grpc: PathBuf,
    wrk_script: PathBuf,
}

/// Writes the tools' files into `dir`.
pub fn tool_files(dir: &Path, body_size: usize) -> Result<ToolFiles, Error> {
    let write = |name: &str, data: &[u8]| -> Result<PathBuf, Error> {
        let path = dir.join(name);
        std::fs::write(&path, data).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        Ok(path)
    };
    let body = vec![b'x'; body_size];
    Ok(ToolFiles {
        body: write("body.bin", &body)?,
        grpc: write("grpc.bin", &grpc_frame(&body))?,
        wrk_script: write(
            "post.lua",
            format!(
                "wrk.method = \"POST\"\nwrk.body = string.rep(\"x\", {body_size})\n\
                 wrk.headers[\"Content-Type\"] = \"application/octet-stream\"\n"
            )
            .as_bytes(),
        )?,
    })
}

fn load_argv(
    t: &Target,
    cpu: usize,
    rate: u32,
    conns: u32,
    warmup: f64,
    duration: f64,
) -> Result<Vec<OsString>, Error> {
    let mut argv = taskset(cpu);
    argv.push(self_exe()?.into());
    for a in [
        "load".to_owned(),
        "--target".to_owned(),
        t.addr.to_string(),
        "--mode".to_owned(),
        mode_flag(t.mode).to_owned(),
        "--rate".to_owned(),
        rate.to_string(),
        "--connections".to_owned(),
        conns.to_string(),
        "--warmup".to_owned(),
        format!("{}ms", (warmup * 1000.0).round() as u64),
        "--duration".to_owned(),
        format!("{}ms", (duration * 1000.0).round().max(1.0) as u64),
    ] {
        argv.push(a.into());
    }
    Ok(argv)
}

fn mode_flag(mode: Mode) -> &'static str {
    match mode {
        Mode::Http1 => "http1",
        Mode::Http1Close => "http1-close",
        Mode::H2 => "h2",
        Mode::Grpc => "grpc",
    }
}

fn parse_report(stdout: &str) -> Result<LoadReport, Error> {
    serde_json::from_str(stdout.trim()).map_err(|source| Error::Report {
        source,
        output: stdout.chars().take(500).collect(),
    })
}

/// A short burst through `t` (readiness check): 200 rps for 300 ms on two connections.
pub fn probe(t: &Target) -> Result<LoadReport, Error> {
    let argv = load_argv(t, crate::topo::Cpus::detect().load, 200, 2, 0.0, 0.3)?;
    let out = t
        .client
        .command(argv)
        .timeout(Duration::from_secs(30))
        .exec()?;
    if !out.success() {
        return Err(Error::Generator(out.stderr));
    }
    parse_report(&out.stdout)
}

fn pids_of(procs: &[mesh_tests::harness::Process]) -> Vec<u32> {
    let roots: Vec<u32> = procs.iter().filter_map(|p| p.pid()).collect();
    if roots.is_empty() {
        Vec::new()
    } else {
        procfs::with_descendants(&roots)
    }
}

fn join(pids: &[u32]) -> String {
    pids.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Measures `t` once: the latency run at `s.rate`, then the maximum-throughput run.
pub fn measure(
    bench: &Bench,
    t: &Target,
    s: &LoadSettings,
    files: &ToolFiles,
    tools: &crate::peers::Tools,
) -> Result<RunFigures, Error> {
    let proxies = pids_of(&t.proxies);
    let upstream = pids_of(std::slice::from_ref(&t.upstream));
    let rest_roots: Vec<_> = bench
        .processes
        .iter()
        .filter(|p| {
            !t.proxies.iter().any(|q| q.name() == p.name()) && p.name() != t.upstream.name()
        })
        .cloned()
        .collect();
    let rest = pids_of(&rest_roots);
    // The peak is measured over this run only (best effort: needs a kernel with clear_refs).
    let _ = procfs::reset_peak(&proxies);
    let loadavg = procfs::loadavg_1m().unwrap_or(0.0);
    let mut argv = load_argv(
        t,
        bench.cpus.load,
        s.rate,
        s.connections,
        s.warmup_s,
        s.duration_s,
    )?;
    for (name, pids) in [
        ("proxy", &proxies),
        ("upstream", &upstream),
        ("rest", &rest),
    ] {
        argv.push("--cpu-group".into());
        argv.push(format!("{name}={}", join(pids)).into());
    }
    argv.push("--body-size".into());
    argv.push(s.body_size.to_string().into());
    let timeout = Duration::from_secs_f64(s.warmup_s + s.duration_s * 3.0 + 60.0);
    let out = t.client.command(argv).timeout(timeout).exec()?;
    if !out.success() {
        return Err(Error::Generator(out.stderr));
    }
    let report = parse_report(&out.stdout)?;
    let window_ms = report.window_s * 1000.0;
    let ours: f64 = report.cpu_ms.values().sum::<f64>() + report.generator_cpu_ms;
    let background_cores = ((report.machine_busy_ms - ours) / window_ms).max(0.0);
    let proxy_ms = report.cpu_ms.get("proxy").copied().unwrap_or(0.0);
    let max = max_throughput(t, s, files, tools, &proxies)?;
    let peak = procfs::peak_rss_bytes(&proxies).unwrap_or(0);
    Ok(RunFigures {
        latency_us: report.latency_us,
        added_us: None,
        max_latency_us: report.max_us,
        requests: report.requests,
        errors: report.errors,
        error_kinds: report.error_kinds,
        achieved_rps: report.achieved_rps,
        cpu_ms_per_1k: if report.requests > 0 {
            proxy_ms * 1000.0 / report.requests as f64
        } else {
            0.0
        },
        upstream_cpu_ms_per_1k: report
            .cpu_ms
            .get("upstream")
            .map(|ms| ms * 1000.0 / report.requests.max(1) as f64),
        peak_rss_mb: peak as f64 / 1_048_576.0,
        background_cores,
        loadavg_1m: loadavg,
        max,
    })
}

/// What a throughput tool reported.
struct ToolOutcome {
    rps: f64,
    requests: u64,
    errors: u64,
}

fn run_tool(t: &Target, cpu: usize, argv: Vec<OsString>, secs: f64) -> Result<ToolOutcome, Error> {
    let mut full = taskset(cpu);
    full.extend(argv);
    let out = t
        .client
        .command(full)
        .timeout(Duration::from_secs_f64(secs + 30.0))
        .exec()?;
    if !out.success() {
        return Err(Error::Generator(format!("{}{}", out.stdout, out.stderr)));
    }
    Ok(match t.mode {
        Mode::Http1 | Mode::Http1Close => parse_wrk(&out.stdout),
        Mode::H2 | Mode::Grpc => parse_h2load(&out.stdout),
    })
}

fn max_throughput(
    t: &Target,
    s: &LoadSettings,
    files: &ToolFiles,
    tools: &crate::peers::Tools,
    proxies: &[u32],
) -> Result<Option<MaxFigures>, Error> {
    let cpu = crate::topo::Cpus::detect().load;
    let url = format!("http://{}", t.addr);
    let argv = |secs: u64| -> Option<Vec<OsString>> {
        let c = s.connections.to_string();
        match t.mode {
            Mode::Http1 | Mode::Http1Close => {
                let mut a: Vec<OsString> = vec![
                    tools.wrk.clone()?.into(),
                    "-t1".into(),
                    format!("-c{c}").into(),
                    format!("-d{secs}s").into(),
                    "--timeout".into(),
                    "10s".into(),
                    "-s".into(),
                    files.wrk_script.clone().into(),
                ];
                if t.mode == Mode::Http1Close {
                    a.extend(["-H".into(), "Connection: close".into()]);
                }
                a.push(format!("{url}/").into());
                Some(a)
            }
            Mode::H2 | Mode::Grpc => {
                let grpc = t.mode == Mode::Grpc;
                let mut a: Vec<OsString> = vec![
                    tools.h2load.clone()?.into(),
                    "-t1".into(),
                    "-c".into(),
                    c.into(),
                    "-m1".into(),
                    "-D".into(),
                    format!("{secs}").into(),
                    "-d".into(),
                    if grpc {
                        files.grpc.clone()
                    } else {
                        files.body.clone()
                    }
                    .into(),
                ];
                if grpc {
                    a.extend([
                        "-H".into(),
                        "content-type: application/grpc".into(),
                        "-H".into(),
                        "te: trailers".into(),
                        format!("{url}{GRPC_PATH}").into(),
                    ]);
                } else {
                    a.extend([
                        "-H".into(),
                        "content-type: application/octet-stream".into(),
                        format!("{url}/").into(),
                    ]);
                }
                Some(a)
            }
        }
    };
    let Some(measured) = argv(s.max_duration_s) else {
        return Ok(None);
    };
    if s.max_warmup_s > 0.0 {
        if let Some(warm) = argv(s.max_warmup_s.ceil() as u64) {
            run_tool(t, cpu, warm, s.max_warmup_s)?;
        }
    }
    let before = procfs::cpu_ms(proxies);
    let r = run_tool(t, cpu, measured, s.max_duration_s as f64)?;
    let cpu_ms = procfs::cpu_ms(proxies) - before;
    Ok(Some(MaxFigures {
        rps: r.rps,
        requests: r.requests,
        errors: r.errors,
        cpu_us_per_request: if r.requests > 0 {
            cpu_ms * 1000.0 / r.requests as f64
        } else {
            0.0
        },
    }))
}

fn number_after(text: &str, key: &str) -> Option<f64> {
    let rest = &text[text.find(key)? + key.len()..];
    let num: String = rest
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    num.parse().ok()
}

/// wrk's summary: `N requests in ...`, `Requests/sec:`, non-2xx and socket errors.
fn parse_wrk(out: &str) -> ToolOutcome {
    let requests = out
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let mut errors = number_after(out, "Non-2xx or 3xx responses:").unwrap_or(0.0) as u64;
    if let Some(line) = out.lines().find(|l| l.contains("Socket errors:")) {
        errors += ["connect", "read", "write", "timeout"]
            .iter()
            .filter_map(|k| number_after(line, k))
            .sum::<f64>() as u64;
    }
    ToolOutcome {
        rps: number_after(out, "Requests/sec:").unwrap_or(0.0),
        requests,
        errors,
    }
}

/// h2load's summary: `finished in Xs, R req/s`, `requests: ... N succeeded, F failed, E
/// errored, T timeout`, and `status codes: A 2xx, ...`.
fn parse_h2load(out: &str) -> ToolOutcome {
    let rps = out
        .lines()
        .find(|l| l.starts_with("finished in"))
        .and_then(|l| l.split(',').nth(1))
        .and_then(|f| f.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0);
    let line = out
        .lines()
        .find(|l| l.starts_with("requests:"))
        .unwrap_or("");
    let field = |name: &str| -> u64 {
        line.split(',')
            .find(|f| f.trim().ends_with(name))
            .and_then(|f| f.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let status = out
        .lines()
        .find(|l| l.starts_with("status codes:"))
        .unwrap_or("");
    let non2xx: u64 = status
        .trim_start_matches("status codes:")
        .split(',')
        .filter_map(|f| {
            let mut it = f.split_whitespace();
            let n = it.next()?.parse::<u64>().ok()?;
            (it.next()? != "2xx").then_some(n)
        })
        .sum();
    let succeeded = field("succeeded");
    ToolOutcome {
        rps,
        requests: succeeded,
        errors: field("failed") + field("errored") + field("timeout") + non2xx,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_summary() {
        let out = "Running 2s test @ http://127.0.0.1:18081/\n  1 threads and 16 connections\n\
                   61234 requests in 2.00s, 70.1MB read\n  Socket errors: connect 0, read 2, write 0, timeout 1\n\
                   Non-2xx or 3xx responses: 4\nRequests/sec:  30600.50\nTransfer/sec:     35.05MB\n";
        let r = parse_wrk(out);
        assert_eq!((r.requests, r.errors), (61234, 7));
        assert!((r.rps - 30600.5).abs() < 1e-6);
    }

    #[test]
    fn h2load_summary() {
        let out = "finished in 2.00s, 25000.50 req/s, 27.00MB/s\n\
                   requests: 50001 total, 50001 started, 50001 done, 50000 succeeded, 1 failed, 0 errored, 0 timeout\n\
                   status codes: 50000 2xx, 0 3xx, 0 4xx, 1 5xx\n";
        let r = parse_h2load(out);
        assert_eq!((r.requests, r.errors), (50000, 2));
        assert!((r.rps - 25000.5).abs() < 1e-6);
    }
}
