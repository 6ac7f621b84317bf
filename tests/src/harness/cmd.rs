//! Running commands: short host commands (`ip ...`) and commands with a deadline whose output
//! is captured.

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use super::error::{HarnessError, Result};

/// What a finished command printed, and how it exited.
#[derive(Debug, Clone)]
pub struct ExecOutput {
    /// The command line, for messages.
    pub command: String,
    /// How it exited.
    pub status: ExitStatus,
    /// Its stdout, lossy UTF-8.
    pub stdout: String,
    /// Its stderr, lossy UTF-8.
    pub stderr: String,
}

impl ExecOutput {
    /// True when the command exited 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Its stdout if it exited 0, else [`HarnessError::ExecFailed`] carrying both streams.
    pub fn ok(self) -> Result<String> {
        if self.status.success() {
            Ok(self.stdout)
        } else {
            Err(HarnessError::ExecFailed {
                command: self.command,
                status: self.status.to_string(),
                stdout: self.stdout,
                stderr: self.stderr,
            })
        }
    }
}

/// The command line of `cmd` as one string, for messages.
pub(crate) fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    s
}

/// Runs a short host command to completion; an error unless it exits 0. Returns stdout.
pub(crate) fn run<I, S>(program: &str, args: I) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null());
    let command = describe(&cmd);
    let out = cmd.output().map_err(|source| HarnessError::Spawn {
        command: command.clone(),
        source,
    })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(HarnessError::CommandFailed {
            command,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// `ip ARGS...`, an error unless it exits 0.
pub(crate) fn ip<I, S>(args: I) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run("ip", args)
}

/// The host firewall rule that lets a topology's pods talk across its bridge `bridge`:
/// `FORWARD -i BRIDGE -o BRIDGE -j ACCEPT`. With `bridge-nf-call-iptables=1` bridged traffic
/// crosses the host's FORWARD chain, whose policy is DROP on Docker hosts.
fn forward_rule(bridge: &str) -> [&str; 6] {
    ["-i", bridge, "-o", bridge, "-j", "ACCEPT"]
}

/// Inserts the [`forward_rule`] of `bridge` first in the host's FORWARD chain.
pub(crate) fn allow_bridge_forwarding(bridge: &str) -> Result<()> {
    let rule = forward_rule(bridge);
    run("iptables", ["-w", "-I", "FORWARD", "1"].iter().chain(&rule)).map(drop)
}

/// Deletes the [`forward_rule`] of `bridge` (every copy); none left is not an error.
pub(crate) fn remove_bridge_forwarding(bridge: &str) {
    let rule = forward_rule(bridge);
    // Each successful deletion removes one copy; the first failure means none is left.
    while run("iptables", ["-w", "-D", "FORWARD"].iter().chain(&rule)).is_ok() {}
}

/// Runs `cmd` in a process group of its own, capturing stdout and stderr, and waits at most
/// `timeout`. On timeout the whole group is killed and [`HarnessError::Timeout`] is returned
/// with what it had printed so far.
pub(crate) fn output_with_timeout(mut cmd: Command, timeout: Duration) -> Result<ExecOutput> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let command = describe(&cmd);
    let mut child = cmd.spawn().map_err(|source| HarnessError::Spawn {
        command: command.clone(),
        source,
    })?;
    let stdout = child.stdout.take().map(reader_thread);
    let stderr = child.stderr.take().map(reader_thread);
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => {
                kill_group(child.id(), Signal::SIGKILL);
                // Reap it; the group is dead so this returns at once.
                let _ = child.wait();
                break None;
            }
            Ok(None) => {
                thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            Err(source) => {
                kill_group(child.id(), Signal::SIGKILL);
                let _ = child.wait();
                return Err(HarnessError::Spawn { command, source });
            }
        }
    };
    let stdout = stdout.map(join_reader).unwrap_or_default();
    let stderr = stderr.map(join_reader).unwrap_or_default();
    match status {
        Some(status) => Ok(ExecOutput {
            command,
            status,
            stdout,
            stderr,
        }),
        None => Err(HarnessError::Timeout {
            what: format!("`{command}` to finish"),
            waited: timeout,
            detail: format!("\nstdout so far: {stdout}\nstderr so far: {stderr}"),
        }),
    }
}

fn reader_thread<R: Read + Send + 'static>(mut r: R) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        // A read error ends the capture; what was read so far is kept.
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

fn join_reader(h: thread::JoinHandle<Vec<u8>>) -> String {
    String::from_utf8_lossy(&h.join().unwrap_or_default()).into_owned()
}

/// Sends `signal` to the process group led by `pid`. A group that no longer exists is not an
/// error (the goal, the group's end, is already reached).
pub(crate) fn kill_group(pid: u32, signal: Signal) {
    let Ok(raw) = i32::try_from(pid) else { return };
    // ESRCH (gone) is the expected outcome for exited processes; anything else here cannot be
    // acted on by the caller during teardown either.
    let _ = killpg(Pid::from_raw(raw), signal);
}

/// Calls `check` every `interval` until it returns `Ok(true)` or `timeout` passes. The last
/// error `check` returned (if any) is put into the timeout error's detail.
pub fn wait_until<F>(what: &str, timeout: Duration, interval: Duration, mut check: F) -> Result<()>
where
    F: FnMut() -> Result<bool>,
{
    let deadline = Instant::now() + timeout;
    let mut last_err = None;
    loop {
        match check() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            // A process that died will not come back: report it at once.
            Err(e @ HarnessError::ProcessExited { .. }) => return Err(e),
            Err(e) => last_err = Some(e),
        }
        if Instant::now() >= deadline {
            return Err(HarnessError::Timeout {
                what: what.to_owned(),
                waited: timeout,
                detail: last_err
                    .map(|e| format!(": last error: {e}"))
                    .unwrap_or_default(),
            });
        }
        thread::sleep(interval);
    }
}
