//! What the bench reads from `/proc`: CPU time of process groups (`/proc/PID/stat` utime and
//! stime, with every descendant), resident memory (`VmRSS`, `VmHWM` in `/proc/PID/status`,
//! reset through `clear_refs`), the machine's busy time (`/proc/stat`) and load average.

use std::collections::BTreeSet;
use std::path::PathBuf;

/// Errors reading `/proc`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file did not have the expected shape.
    #[error("{path}: unexpected format")]
    Format {
        /// The file.
        path: PathBuf,
    },
}

fn read(path: PathBuf) -> Result<String, Error> {
    std::fs::read_to_string(&path).map_err(|source| Error::Io { path, source })
}

/// Clock ticks per second, the unit of `/proc` CPU times.
pub fn ticks_per_second() -> f64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as f64,
        _ => 100.0,
    }
}

/// The fields of `/proc/PID/stat` after the command name (field 3 on).
fn stat_fields(pid: u32) -> Result<Vec<String>, Error> {
    let path = PathBuf::from(format!("/proc/{pid}/stat"));
    let text = read(path.clone())?;
    let rest = text
        .rfind(')')
        .map(|i| &text[i + 1..])
        .ok_or(Error::Format { path })?;
    Ok(rest.split_whitespace().map(str::to_owned).collect())
}

/// utime + stime of `pid` in clock ticks (its own threads; reaped children not included).
pub fn cpu_ticks(pid: u32) -> Result<u64, Error> {
    let f = stat_fields(pid)?;
    // After ')': state(0) ppid(1) ... utime(11) stime(12).
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    match (num(11), num(12)) {
        (Some(u), Some(s)) => Ok(u + s),
        _ => Err(Error::Format {
            path: PathBuf::from(format!("/proc/{pid}/stat")),
        }),
    }
}

/// On-CPU time of every live thread of `pid` in nanoseconds, from
/// `/proc/PID/task/TID/schedstat` (nanosecond resolution, where `stat` counts 10 ms ticks).
fn schedstat_ns(pid: u32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0u64;
    for t in tasks.flatten() {
        let text = std::fs::read_to_string(t.path().join("schedstat")).ok()?;
        total += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// Total CPU milliseconds of `pids`: their threads' on-CPU time from `schedstat` where the
/// kernel has it, else utime + stime ticks. Processes gone meanwhile count as zero.
pub fn cpu_ms(pids: &[u32]) -> f64 {
    pids.iter()
        .map(|p| match schedstat_ns(*p) {
            Some(ns) => ns as f64 / 1e6,
            None => cpu_ticks(*p).map_or(0.0, |t| t as f64 * 1000.0 / ticks_per_second()),
        })
        .sum()
}

/// `pids` and all their descendants, found through each process's parent in `/proc`.
pub fn with_descendants(pids: &[u32]) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            if let Some(ppid) = stat_fields(pid)
                .ok()
                .and_then(|f| f.get(1).and_then(|p| p.parse().ok()))
            {
                parents.push((pid, ppid));
            }
        }
    }
    let mut set: BTreeSet<u32> = pids.iter().copied().collect();
    loop {
        let before = set.len();
        for (pid, ppid) in &parents {
            if set.contains(ppid) {
                set.insert(*pid);
            }
        }
        if set.len() == before {
            return set.into_iter().collect();
        }
    }
}

/// A `kB` line of `/proc/PID/status`, in bytes.
fn status_kb(pid: u32, key: &str) -> Result<u64, Error> {
    let path = PathBuf::from(format!("/proc/{pid}/status"));
    let text = read(path.clone())?;
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or(Error::Format { path })
}

/// Resident memory now (`VmRSS`), summed over `pids`, in bytes.
pub fn rss_bytes(pids: &[u32]) -> Result<u64, Error> {
    pids.iter().map(|p| status_kb(*p, "VmRSS:")).sum()
}

/// Peak resident memory (`VmHWM`, since start or the last [`reset_peak`]), summed, in bytes.
pub fn peak_rss_bytes(pids: &[u32]) -> Result<u64, Error> {
    pids.iter().map(|p| status_kb(*p, "VmHWM:")).sum()
}

/// Resets the peak RSS of `pids` to their current RSS (`echo 5 > /proc/PID/clear_refs`).
pub fn reset_peak(pids: &[u32]) -> Result<(), Error> {
    for pid in pids {
        let path = PathBuf::from(format!("/proc/{pid}/clear_refs"));
        std::fs::write(&path, "5").map_err(|source| Error::Io { path, source })?;
    }
    Ok(())
}

/// Busy CPU time of the whole machine (user + nice + system over all CPUs), in milliseconds.
/// Interrupt time is left out: it is not charged to processes either.
pub fn machine_busy_ms() -> Result<f64, Error> {
    let path = PathBuf::from("/proc/stat");
    let text = read(path.clone())?;
    let line = text
        .lines()
        .find(|l| l.starts_with("cpu "))
        .ok_or(Error::Format { path: path.clone() })?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 3 {
        return Err(Error::Format { path });
    }
    Ok((v[0] + v[1] + v[2]) as f64 * 1000.0 / ticks_per_second())
}

/// The 1-minute load average.
pub fn loadavg_1m() -> Result<f64, Error> {
    let path = PathBuf::from("/proc/loadavg");
    let text = read(path.clone())?;
    text.split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .ok_or(Error::Format { path })
}

/// CPU time of this process and its reaped children, in milliseconds (`getrusage`).
pub fn own_and_children_cpu_ms() -> f64 {
    use nix::sys::resource::{getrusage, UsageWho};
    let ms = |who| {
        getrusage(who).map_or(0.0, |u| {
            let t = u.user_time() + u.system_time();
            t.tv_sec() as f64 * 1000.0 + t.tv_usec() as f64 / 1000.0
        })
    };
    ms(UsageWho::RUSAGE_SELF) + ms(UsageWho::RUSAGE_CHILDREN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(rss_bytes(&[me]).unwrap() > 0);
        assert!(peak_rss_bytes(&[me]).unwrap() >= rss_bytes(&[me]).unwrap() / 2);
        cpu_ticks(me).unwrap();
        assert!(cpu_ms(&[me]) > 0.0);
        assert!(with_descendants(&[me]).contains(&me));
        assert!(machine_busy_ms().unwrap() > 0.0);
        assert!(loadavg_1m().unwrap() >= 0.0);
    }
}
