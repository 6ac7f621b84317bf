//! Long-running processes started by a topology, on the host or inside a pod: logs to files,
//! stop / kill / restart, and cleanup with the topology.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::cmd::{describe, kill_group, wait_until};
use super::error::{HarnessError, Result};
use super::slot::SLOT_ENV;

/// The UID and GID the sidecar runs as (Istio's `istio-proxy` user).
pub const PROXY_UID: u32 = 1337;

/// The start of the lines the harness writes into stderr logs (one per start).
const MARKER: &str = "--- mesh-tests: ";

/// How long [`Process::stop`] waits after `SIGTERM` before `SIGKILL`.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// What to run and how: everything needed to start the process again.
#[derive(Debug, Clone)]
pub(crate) struct Launch {
    /// The network namespace to run in (`ip netns exec`), or `None` for the host.
    pub(crate) netns: Option<String>,
    /// Run as this UID/GID (through `setpriv --clear-groups`), or as the caller (root).
    pub(crate) user: Option<(u32, u32)>,
    /// Program and arguments.
    pub(crate) argv: Vec<OsString>,
    /// Extra environment.
    pub(crate) env: Vec<(OsString, OsString)>,
    /// Working directory.
    pub(crate) cwd: Option<PathBuf>,
    /// The slot, exported as [`SLOT_ENV`].
    pub(crate) slot: u8,
}

impl Launch {
    /// The full host command: `[ip netns exec NS] [setpriv ...] PROGRAM ARGS`, tagged with the
    /// slot variable.
    pub(crate) fn command(&self) -> Command {
        let mut parts: Vec<OsString> = Vec::new();
        if let Some(ns) = &self.netns {
            parts.extend(["ip", "netns", "exec"].map(OsString::from));
            parts.push(ns.into());
        }
        if let Some((uid, gid)) = self.user {
            parts.push("setpriv".into());
            parts.push(format!("--reuid={uid}").into());
            parts.push(format!("--regid={gid}").into());
            parts.push("--clear-groups".into());
        }
        parts.extend(self.argv.iter().cloned());
        let mut cmd = Command::new(&parts[0]);
        cmd.args(&parts[1..]);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.env(SLOT_ENV, self.slot.to_string());
        // Logs go to files: no colour codes in them.
        cmd.env("NO_COLOR", "1");
        if let Some(cwd) = &self.cwd {
            cmd.current_dir(cwd);
        }
        cmd
    }
}

#[derive(Debug)]
struct State {
    child: Option<Child>,
    exit: Option<ExitStatus>,
    starts: u32,
}

#[derive(Debug)]
struct Inner {
    name: String,
    launch: Launch,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    state: Mutex<State>,
}

/// A process started by a topology (see [`Pod::spawn`](super::Pod::spawn) and
/// [`Topology::spawn_host`](super::Topology::spawn_host)). Cheap to clone; all clones refer to
/// the same process. It runs in a process group of its own until it exits, is stopped through
/// this handle, or its topology is dropped, which stops every process it started (dropping a
/// `Process` handle does not). Its stdout and stderr go to
/// `<artifact dir>/<pod>-<name>.out.log` and `.err.log`.
#[derive(Debug, Clone)]
pub struct Process {
    inner: Arc<Inner>,
}

fn open_log(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(HarnessError::io("open", path))
}

impl Process {
    /// Starts `launch`, logging to `<log_dir>/<log_stem>.out.log` / `.err.log`.
    pub(crate) fn start(
        name: String,
        launch: Launch,
        log_dir: &Path,
        log_stem: &str,
    ) -> Result<Process> {
        let inner = Arc::new(Inner {
            name,
            launch,
            stdout_path: log_dir.join(format!("{log_stem}.out.log")),
            stderr_path: log_dir.join(format!("{log_stem}.err.log")),
            state: Mutex::new(State {
                child: None,
                exit: None,
                starts: 0,
            }),
        });
        let p = Process { inner };
        p.spawn_locked(&mut p.lock())?;
        Ok(p)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn spawn_locked(&self, state: &mut State) -> Result<()> {
        let stdout = open_log(&self.inner.stdout_path)?;
        let mut stderr = open_log(&self.inner.stderr_path)?;
        // A process run as another user owns its logs, so that it can open its own stdout
        // again (`/dev/stdout`, as Envoy's file access logger does), as a container can.
        if let Some((uid, gid)) = self.inner.launch.user {
            for (file, path) in [
                (&stdout, &self.inner.stdout_path),
                (&stderr, &self.inner.stderr_path),
            ] {
                std::os::unix::fs::fchown(file, Some(uid), Some(gid))
                    .map_err(HarnessError::io("chown", path))?;
            }
        }
        let mut cmd = self.inner.launch.command();
        let command = describe(&cmd);
        // A marker in the stderr log only: stdout stays machine-readable (access logs).
        let _ = writeln!(stderr, "{MARKER}start #{}: {command}", state.starts + 1);
        cmd.stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0);
        let child = cmd
            .spawn()
            .map_err(|source| HarnessError::Spawn { command, source })?;
        state.child = Some(child);
        state.exit = None;
        state.starts += 1;
        Ok(())
    }

    /// The harness name, `POD/NAME` or `host/NAME`.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The process id of the current run (the program itself: `ip netns exec` and `setpriv`
    /// exec into it), or `None` once it has been reaped.
    pub fn pid(&self) -> Option<u32> {
        let st = self.lock();
        st.child.as_ref().map(Child::id)
    }

    /// The stdout log file.
    pub fn stdout_path(&self) -> &Path {
        &self.inner.stdout_path
    }

    /// The stderr log file.
    pub fn stderr_path(&self) -> &Path {
        &self.inner.stderr_path
    }

    /// Everything the process (all its runs) wrote on stdout so far.
    pub fn stdout(&self) -> String {
        read_lossy(&self.inner.stdout_path)
    }

    /// Everything the process wrote on stderr so far, with the harness's start markers.
    pub fn stderr(&self) -> String {
        read_lossy(&self.inner.stderr_path)
    }

    /// The exit status if the process has exited (reaping it), `None` while it runs.
    pub fn try_exit_status(&self) -> Option<ExitStatus> {
        let mut st = self.lock();
        Self::poll_locked(&mut st)
    }

    fn poll_locked(st: &mut State) -> Option<ExitStatus> {
        if st.exit.is_none() {
            if let Some(child) = st.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    st.exit = Some(status);
                }
            }
        }
        st.exit
    }

    /// True while the current run has not exited.
    pub fn is_running(&self) -> bool {
        self.try_exit_status().is_none()
    }

    /// `Ok(())` while running; [`HarnessError::ProcessExited`] with the log tail once exited.
    pub fn check_running(&self) -> Result<()> {
        match self.try_exit_status() {
            None => Ok(()),
            Some(status) => Err(HarnessError::ProcessExited {
                name: self.inner.name.clone(),
                status: status.to_string(),
                log_tail: self.log_tail(20),
            }),
        }
    }

    /// Waits up to `timeout` for the process to exit on its own; its status, or `None`.
    pub fn wait_exit(&self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `signal` to the process's group.
    pub fn signal(&self, signal: Signal) {
        if let Some(pid) = self.pid() {
            if self.is_running() {
                kill_group(pid, signal);
            }
        }
    }

    /// Stops the process: `SIGTERM` to its group, up to `grace` for it to exit, then `SIGKILL`.
    /// Returns how it exited. Stopping an exited process returns its status.
    pub fn stop_within(&self, grace: Duration) -> Option<ExitStatus> {
        self.signal(Signal::SIGTERM);
        if let Some(status) = self.wait_exit(grace) {
            // Its children may linger in the group; the leader was reaped an instant ago.
            if let Some(pid) = self.pid() {
                kill_group(pid, Signal::SIGKILL);
            }
            return Some(status);
        }
        self.kill()
    }

    /// [`Process::stop_within`] with [`STOP_GRACE`].
    pub fn stop(&self) -> Option<ExitStatus> {
        self.stop_within(STOP_GRACE)
    }

    /// `SIGKILL` to the whole group at once (a crash, for fault tests), then reaps it.
    /// A process already reaped is not signalled again (its pid may have been reused).
    pub fn kill(&self) -> Option<ExitStatus> {
        let mut st = self.lock();
        if st.exit.is_none() {
            if let Some(child) = st.child.as_mut() {
                // Not reaped yet, so the pid (and the group id) cannot have been reused.
                kill_group(child.id(), Signal::SIGKILL);
                st.exit = child.wait().ok();
            }
        }
        st.exit
    }

    /// Stops the process (if running) and starts it again with the same command, appending to
    /// the same logs.
    pub fn restart(&self) -> Result<()> {
        self.stop();
        let mut st = self.lock();
        self.spawn_locked(&mut st)
    }

    /// Starts the process again if it has exited (after [`Process::kill`], say); an error if it
    /// is still running.
    pub fn start_again(&self) -> Result<()> {
        let mut st = self.lock();
        if Self::poll_locked(&mut st).is_none() && st.child.is_some() {
            return Err(HarnessError::StillRunning(self.inner.name.clone()));
        }
        self.spawn_locked(&mut st)
    }

    /// Waits up to `timeout` until the process has written `needle` on stdout or stderr (the
    /// harness's own start markers are not searched); fails early if the process exits first
    /// without having written it.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> Result<()> {
        wait_until(
            &format!("`{needle}` in the logs of {}", self.inner.name),
            timeout,
            Duration::from_millis(50),
            || {
                let own = |l: &&str| !l.starts_with(MARKER);
                if self.stdout().contains(needle)
                    || self
                        .stderr()
                        .lines()
                        .filter(own)
                        .any(|l| l.contains(needle))
                {
                    return Ok(true);
                }
                self.check_running().map(|()| false)
            },
        )
    }

    /// The last `lines` lines of stdout and of stderr, labelled, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        format!(
            "== {} ==\n{}== {} ==\n{}",
            self.inner.stdout_path.display(),
            tail(&self.stdout(), lines),
            self.inner.stderr_path.display(),
            tail(&self.stderr(), lines)
        )
    }
}

fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// The last `lines` lines of `text`, each ending in a newline.
pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    all[start..].iter().map(|l| format!("{l}\n")).collect()
}

/// Stops every process in `procs` together: `SIGTERM` to all, up to `grace` in all, then
/// `SIGKILL` to the rest. Used by topology teardown.
pub(crate) fn stop_all(procs: &[Process], grace: Duration) {
    for p in procs {
        p.signal(Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && procs.iter().any(Process::is_running) {
        std::thread::sleep(Duration::from_millis(10));
    }
    for p in procs {
        p.kill();
    }
}
