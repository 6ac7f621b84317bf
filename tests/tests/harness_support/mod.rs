//! What a topology leaves on the host, for the harness self-tests: its resources written to
//! and read from a file (a helper process reports them), and which of them still exist.

use std::path::{Path, PathBuf};
use std::process::Command;

use mesh_tests::harness::{Resources, STATE_ROOT};

/// `r` as text, one `kind value` per line.
pub fn encode(r: &Resources) -> String {
    let mut s = format!("bridge {}\nstate {}\n", r.bridge, r.state_dir.display());
    r.netns.iter().for_each(|n| s += &format!("netns {n}\n"));
    r.host_veths
        .iter()
        .for_each(|n| s += &format!("veth {n}\n"));
    r.etc_netns_dirs
        .iter()
        .for_each(|n| s += &format!("etc {}\n", n.display()));
    r.pids.iter().for_each(|n| s += &format!("pid {n}\n"));
    s
}

/// The [`Resources`] written by [`encode`].
pub fn decode(text: &str) -> Resources {
    let mut r = Resources {
        bridge: String::new(),
        netns: vec![],
        host_veths: vec![],
        etc_netns_dirs: vec![],
        state_dir: PathBuf::new(),
        pids: vec![],
    };
    for line in text.lines() {
        let Some((k, v)) = line.split_once(' ') else {
            continue;
        };
        match k {
            "bridge" => r.bridge = v.to_owned(),
            "state" => r.state_dir = v.into(),
            "netns" => r.netns.push(v.to_owned()),
            "veth" => r.host_veths.push(v.to_owned()),
            "etc" => r.etc_netns_dirs.push(v.into()),
            "pid" => r.pids.push(v.parse().expect("pid")),
            _ => {}
        }
    }
    r
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(") ")
                .is_some_and(|(_, rest)| !rest.starts_with('Z'))
        })
        .unwrap_or(false)
}

/// What of `r` is still on the host (empty when all is gone).
pub fn leftovers(r: &Resources) -> Vec<String> {
    let mut left = Vec::new();
    let netns_list = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    let netns_list = String::from_utf8_lossy(&netns_list).into_owned();
    for ns in &r.netns {
        if netns_list
            .lines()
            .any(|l| l.split_whitespace().next() == Some(ns))
            || Path::new("/run/netns").join(ns).exists()
        {
            left.push(format!("netns {ns}"));
        }
    }
    for link in r.host_veths.iter().chain(std::iter::once(&r.bridge)) {
        if Path::new("/sys/class/net").join(link).exists() {
            left.push(format!("link {link}"));
        }
    }
    let rules = Command::new("iptables")
        .args(["-w", "-S", "FORWARD"])
        .output();
    let rule = format!("-A FORWARD -i {0} -o {0} -j ACCEPT", r.bridge);
    if rules.is_ok_and(|o| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .any(|l| l == rule)
    }) {
        left.push(format!("FORWARD rule of {}", r.bridge));
    }
    for dir in r.etc_netns_dirs.iter().chain(std::iter::once(&r.state_dir)) {
        if dir.exists() {
            left.push(format!("path {}", dir.display()));
        }
    }
    for pid in &r.pids {
        if alive(*pid) {
            left.push(format!("process {pid}"));
        }
    }
    let slot: u8 = r
        .bridge
        .trim_start_matches("mtbr")
        .parse()
        .expect("slot of bridge name");
    let lock_free = Command::new("flock")
        .args(["-n", &format!("{STATE_ROOT}/slot-{slot}.lock"), "true"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !lock_free {
        left.push(format!("slot {slot} still locked"));
    }
    left
}
