//! The demo (`mesh-demo`, what `./scripts/demo.sh` runs) end to end: it builds the mesh of
//! `conf/demo/`, every version of reviews answers through the sidecars with 200s, and once
//! it exits nothing of its topology is left on the host.

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use mesh_tests::harness::{SLOT_ENV, STATE_ROOT};
use nix::fcntl::{Flock, FlockArg};

const BIN: &str = env!("CARGO_BIN_EXE_mesh-demo");
/// How long the demo may take: it normally needs seconds.
const DEMO_TIMEOUT: Duration = Duration::from_secs(240);
/// How long to wait for the demo's slot to be free again (another test may have taken it).
const SLOT_TIMEOUT: Duration = Duration::from_secs(120);
const REQUESTS: u32 = 10;

/// Runs `mesh-demo ARGS` with stdout and stderr in files; kills it after [`DEMO_TIMEOUT`].
fn run_demo(args: &[&str]) -> Result<(std::process::ExitStatus, String, String)> {
    let dir = tempfile::tempdir()?;
    let (out_path, err_path) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(File::create(&out_path)?)
        .stderr(File::create(&err_path)?)
        .spawn()
        .with_context(|| format!("starting {BIN}"))?;
    let deadline = Instant::now() + DEMO_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            // Its slot's guardian removes what it made.
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = std::fs::read_to_string(&out_path)?;
    let stderr = std::fs::read_to_string(&err_path)?;
    match status {
        Some(status) => Ok((status, stdout, stderr)),
        None => bail!(
            "mesh-demo did not finish in {DEMO_TIMEOUT:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
        ),
    }
}

/// The summary row of `service`: its cells after the name.
fn service_row<'a>(stdout: &'a str, service: &str) -> Option<&'a str> {
    stdout.lines().find_map(|l| {
        let rest = l.trim_start().strip_prefix(service)?;
        rest.starts_with(' ').then_some(rest)
    })
}

/// The slot number from the summary's `Pods (topology mtN: ...` line.
fn slot_of(stdout: &str) -> Option<u8> {
    let rest = stdout.split("(topology mt").nth(1)?;
    rest.split(':').next()?.parse().ok()
}

/// What of slot `n` is on the host: namespaces, links, `/etc/netns` entries, its state
/// directory, processes tagged with it.
fn slot_leftovers(n: u8) -> Vec<String> {
    let mut left = Vec::new();
    let prefix = format!("mt{n}-");
    let netns = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    left.extend(
        netns
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|ns| ns.starts_with(&prefix))
            .map(|ns| format!("netns {ns}")),
    );
    let names = |dir: &str| -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let is_veth = |name: &str| {
        let Some(rest) = name.strip_prefix(&format!("mt{n}")) else {
            return false;
        };
        let digits = rest.get(1..).unwrap_or("");
        (rest.starts_with('h') || rest.starts_with('p'))
            && !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
    };
    left.extend(
        names("/sys/class/net")
            .into_iter()
            .filter(|l| *l == format!("mtbr{n}") || is_veth(l))
            .map(|l| format!("link {l}")),
    );
    left.extend(
        names("/etc/netns")
            .into_iter()
            .filter(|d| d.starts_with(&prefix))
            .map(|d| format!("/etc/netns/{d}")),
    );
    let state = Path::new(STATE_ROOT).join(format!("slot-{n}"));
    if state.exists() {
        left.push(state.display().to_string());
    }
    let tag = format!("{SLOT_ENV}={n}");
    for pid in names("/proc")
        .into_iter()
        .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
    {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        if environ.split(|b| *b == 0).any(|v| v == tag.as_bytes()) {
            left.push(format!("process {pid}"));
        }
    }
    left
}

/// Holds the lock of slot `n` (as a topology does), so that nobody takes the slot while its
/// leftovers are looked for.
fn lock_slot(n: u8) -> Result<Flock<File>> {
    let path = Path::new(STATE_ROOT).join(format!("slot-{n}.lock"));
    let deadline = Instant::now() + SLOT_TIMEOUT;
    loop {
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((_, e)) if Instant::now() >= deadline => {
                bail!("slot {n} stayed locked by someone else for {SLOT_TIMEOUT:?}: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

#[test]
fn demo_answers_from_every_version_and_cleans_up() -> Result<()> {
    mesh_tests::skip_unless_netns!();
    let name = "demo_answers_from_every_version_and_cleans_up";
    let requests = REQUESTS.to_string();
    let (status, stdout, stderr) =
        run_demo(&["--no-wait", "--requests", requests.as_str(), "--name", name])?;
    let context = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    ensure!(status.success(), "mesh-demo exited {status}\n{context}");
    ensure!(
        stdout.contains("Problems: none"),
        "the summary lists problems\n{context}"
    );

    for service in ["productpage", "details", "reviews", "ratings"] {
        let row = service_row(&stdout, service)
            .with_context(|| format!("no summary row for {service}\n{context}"))?;
        ensure!(
            row.contains(&format!(" 200 x{REQUESTS} ")),
            "{service}: not every request got a 200: {row}\n{context}"
        );
    }
    let reviews = service_row(&stdout, "reviews").unwrap_or_default();
    for version in ["v1", "v2", "v3"] {
        ensure!(
            reviews.contains(&format!("reviews {version} x")),
            "reviews {version} never answered: {reviews}\n{context}"
        );
    }

    let n = slot_of(&stdout).with_context(|| format!("no topology in the summary\n{context}"))?;
    ensure!(
        stderr.contains("mesh-demo: removed everything"),
        "the demo did not report a clean teardown\n{context}"
    );
    let _lock = lock_slot(n)?;
    let left = slot_leftovers(n);
    ensure!(
        left.is_empty(),
        "left behind by the demo in slot {n}: {left:?}\n{context}"
    );
    Ok(())
}
