//! Test slots: which `/24` of the project's test range (10.211.N.0/24) and which names
//! (`mtN-*`) a topology may use, allocated across processes.
//!
//! Slot N is held by a *guardian*: `flock -n /run/mesh-tests/slot-N.lock sh -c GUARD`, started
//! in a process group of its own. It first removes whatever a dead former holder of slot N left
//! behind, prints `ready`, then waits for end of file on its stdin, which the test process
//! holds. When the test process ends in any way (normal drop, panic, `SIGKILL`, a nextest
//! timeout) the pipe closes, the guardian removes everything of slot N again (processes tagged
//! `MESH_TESTS_SLOT=N`, processes in `mtN-*` namespaces, the namespaces, links, the bridge's
//! FORWARD rule, `/etc/netns` entries, the slot's state directory) and exits, which releases the lock. The kernel drops a
//! `flock` with its holder, so a lock is never stale; the lock files themselves stay (deleting a
//! lock file races with its next holder).

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use super::cmd::describe;
use super::error::{HarnessError, Result};

/// Where slot locks and per-slot state (config directories, pod work directories) live.
pub const STATE_ROOT: &str = "/run/mesh-tests";
/// The first usable slot number.
pub const FIRST_SLOT: u8 = 1;
/// The last usable slot number.
pub const LAST_SLOT: u8 = 250;
/// Environment variable set on every process the harness starts, naming its slot; the
/// guardian kills every process carrying it when the slot is released.
pub const SLOT_ENV: &str = "MESH_TESTS_SLOT";

/// flock's exit code when the lock is held by someone else.
const BUSY: i32 = 75;

/// The guardian and sweeper, run by `sh -c` with `$1` = slot and `$2` = `guard` or `sweep`.
const GUARD_SCRIPT: &str = r#"
slot="$1"; mode="$2"
trap '' INT HUP PIPE
cleanup() {
  pids=$(grep -lzx "MESH_TESTS_SLOT=$slot" /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3)
  for ns in $(ip netns list 2>/dev/null | cut -d' ' -f1); do
    case "$ns" in "mt$slot-"*) pids="$pids $(ip netns pids "$ns" 2>/dev/null)";; esac
  done
  for p in $pids; do kill -KILL "$p" 2>/dev/null; done
  for p in $pids; do
    i=0
    while [ -r "/proc/$p/stat" ] && [ "$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | cut -c1)" != Z ] && [ $i -lt 50 ]; do
      sleep 0.1; i=$((i+1))
    done
  done
  for ns in $(ip netns list 2>/dev/null | cut -d' ' -f1); do
    case "$ns" in "mt$slot-"*) ip netns del "$ns" 2>/dev/null;; esac
  done
  for l in /sys/class/net/mt"$slot"h* /sys/class/net/mt"$slot"p*; do
    [ -e "$l" ] && ip link del "${l##*/}" 2>/dev/null
  done
  [ -e "/sys/class/net/mtbr$slot" ] && ip link del "mtbr$slot" 2>/dev/null
  while iptables -w -D FORWARD -i "mtbr$slot" -o "mtbr$slot" -j ACCEPT 2>/dev/null; do :; done
  rm -rf /etc/netns/mt"$slot"-* "/run/mesh-tests/slot-$slot"
}
cleanup
if [ "$mode" = guard ]; then
  echo ready
  read -r _
  cleanup
fi
exit 0
"#;

/// An acquired slot. Dropping it releases the slot after the guardian's final cleanup.
#[derive(Debug)]
pub(crate) struct Slot {
    n: u8,
    guardian: Child,
    stdin: Option<ChildStdin>,
}

fn lock_path(n: u8) -> PathBuf {
    PathBuf::from(format!("{STATE_ROOT}/slot-{n}.lock"))
}

/// The state directory of slot `n` (removed with the slot).
pub(crate) fn state_dir(n: u8) -> PathBuf {
    PathBuf::from(format!("{STATE_ROOT}/slot-{n}"))
}

fn guardian_command(n: u8, mode: &str) -> Command {
    let mut cmd = Command::new("flock");
    cmd.arg("-n")
        .arg("-E")
        .arg(BUSY.to_string())
        .arg(lock_path(n))
        .args(["sh", "-c", GUARD_SCRIPT, "mesh-tests-guardian"])
        .arg(n.to_string())
        .arg(mode)
        .env_remove(SLOT_ENV)
        .stderr(Stdio::null())
        // Out of the test's process group: a nextest timeout kills the test's group, and the
        // guardian must outlive it to clean up.
        .process_group(0);
    cmd
}

impl Slot {
    /// Acquires a free slot, starting the search at a place derived from the pid so that
    /// parallel test processes rarely contend. `owner` is written to the slot's `owner` file.
    pub(crate) fn acquire(owner: &str) -> Result<Slot> {
        std::fs::create_dir_all(STATE_ROOT)
            .map_err(HarnessError::io("create directory", STATE_ROOT))?;
        let count = u32::from(LAST_SLOT - FIRST_SLOT + 1);
        let start = std::process::id() % count;
        for i in 0..count {
            let n = u8::try_from(u32::from(FIRST_SLOT) + (start + i) % count).unwrap_or(FIRST_SLOT);
            if let Some(slot) = Self::try_acquire(n)? {
                let owner_file = state_dir(n).join("owner");
                std::fs::create_dir_all(state_dir(n))
                    .map_err(HarnessError::io("create directory", state_dir(n)))?;
                std::fs::write(&owner_file, format!("{} {owner}\n", std::process::id()))
                    .map_err(HarnessError::io("write", &owner_file))?;
                return Ok(slot);
            }
        }
        Err(HarnessError::NoFreeSlot(LAST_SLOT - FIRST_SLOT + 1))
    }

    fn try_acquire(n: u8) -> Result<Option<Slot>> {
        let mut cmd = guardian_command(n, "guard");
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        let command = describe(&cmd);
        let mut child = cmd.spawn().map_err(|source| HarnessError::Spawn {
            command: command.clone(),
            source,
        })?;
        let stdin = child.stdin.take();
        let mut line = String::new();
        if let Some(stdout) = child.stdout.take() {
            // EOF (nothing read) means flock gave up or the script failed.
            let _ = BufReader::new(stdout).read_line(&mut line);
        }
        if line.trim() == "ready" {
            return Ok(Some(Slot {
                n,
                guardian: child,
                stdin,
            }));
        }
        drop(stdin);
        let status = child.wait().map_err(|source| HarnessError::Spawn {
            command: command.clone(),
            source,
        })?;
        if status.code() == Some(BUSY) {
            Ok(None)
        } else {
            Err(HarnessError::CommandFailed {
                command,
                status: status.to_string(),
                stderr: "the slot guardian did not start".to_owned(),
            })
        }
    }

    /// The slot number N (the topology's subnet is 10.211.N.0/24).
    pub(crate) fn number(&self) -> u8 {
        self.n
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // End of file on its stdin: the guardian cleans up once more and exits.
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            match self.guardian.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        eprintln!(
            "mesh-tests: guardian of slot {} still running after 30 s; leaving it",
            self.n
        );
    }
}

/// The slot number in a harness-made name, if `name` is one: `mtN-...` (namespaces and
/// `/etc/netns` entries), `mtbrN` (bridges), `mtNhK` / `mtNpK` (veth ends), `slot-N` (state
/// directories).
fn slot_of_name(name: &str) -> Option<u8> {
    let digits = |s: &str| -> Option<(u8, usize)> {
        let len = s.bytes().take_while(u8::is_ascii_digit).count();
        if len == 0 {
            return None;
        }
        s[..len].parse().ok().map(|n| (n, len))
    };
    if let Some(rest) = name.strip_prefix("slot-") {
        return digits(rest)
            .filter(|&(_, len)| len == rest.len())
            .map(|(n, _)| n);
    }
    if let Some(rest) = name.strip_prefix("mtbr") {
        return digits(rest)
            .filter(|&(_, len)| len == rest.len())
            .map(|(n, _)| n);
    }
    let rest = name.strip_prefix("mt")?;
    let (n, len) = digits(rest)?;
    let tail = &rest[len..];
    let ok = tail.starts_with('-')
        || ((tail.starts_with('h') || tail.starts_with('p'))
            && tail.len() > 1
            && tail[1..].bytes().all(|b| b.is_ascii_digit()));
    ok.then_some(n)
}

fn names_in(dir: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Removes the leftovers of every slot whose holder is gone: processes, network namespaces,
/// links, `/etc/netns` entries and state directories named for a slot whose lock is free. Slots
/// held by live processes are left alone. Returns the slots it cleaned.
///
/// [`Topology::new`](super::Topology::new) runs it once per process; a freshly acquired slot is
/// also cleaned by its guardian before use.
pub fn sweep() -> Result<Vec<u8>> {
    let mut slots: Vec<u8> = Vec::new();
    let netns = super::cmd::ip(["netns", "list"])?;
    let mut names: Vec<String> = netns
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    names.extend(names_in("/sys/class/net"));
    names.extend(names_in("/etc/netns"));
    names.extend(
        names_in(STATE_ROOT)
            .into_iter()
            .filter(|n| !n.ends_with(".lock")),
    );
    for name in &names {
        if let Some(n) = slot_of_name(name) {
            if !slots.contains(&n) {
                slots.push(n);
            }
        }
    }
    let mut cleaned = Vec::new();
    for n in slots {
        std::fs::create_dir_all(STATE_ROOT)
            .map_err(HarnessError::io("create directory", STATE_ROOT))?;
        let mut cmd = guardian_command(n, "sweep");
        cmd.stdin(Stdio::null()).stdout(Stdio::null());
        let command = describe(&cmd);
        let status = cmd.status().map_err(|source| HarnessError::Spawn {
            command: command.clone(),
            source,
        })?;
        match status.code() {
            Some(0) => cleaned.push(n),
            Some(BUSY) => {}
            _ => {
                return Err(HarnessError::CommandFailed {
                    command,
                    status: status.to_string(),
                    stderr: "the slot sweeper failed".to_owned(),
                })
            }
        }
    }
    Ok(cleaned)
}

#[cfg(test)]
mod tests {
    use super::slot_of_name;

    #[test]
    fn recognises_harness_names_only() {
        assert_eq!(slot_of_name("mt12-productpage"), Some(12));
        assert_eq!(slot_of_name("mtbr7"), Some(7));
        assert_eq!(slot_of_name("mt250h3"), Some(250));
        assert_eq!(slot_of_name("mt3p0"), Some(3));
        assert_eq!(slot_of_name("slot-9"), Some(9));
        assert_eq!(slot_of_name("slot-9.lock"), None);
        assert_eq!(slot_of_name("mtprobe-12"), None);
        assert_eq!(slot_of_name("mt3h"), None);
        assert_eq!(slot_of_name("mt3x1"), None);
        assert_eq!(slot_of_name("eth0"), None);
        assert_eq!(slot_of_name("mtbr"), None);
        assert_eq!(slot_of_name("mt999-x"), None);
    }
}
