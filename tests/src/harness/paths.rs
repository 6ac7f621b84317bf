//! Where things are: the workspace's binaries and the per-test artifact directories.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::error::{HarnessError, Result};

/// The workspace root (the directory holding the workspace `Cargo.toml`).
pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// The build profile directory the running test binary belongs to (`target/debug`): the
/// test executable lives in its `deps/`.
fn profile_dir_of_current_exe() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    if dir.file_name()? == "deps" {
        dir.parent().map(Path::to_path_buf)
    } else {
        Some(dir.to_path_buf())
    }
}

/// The cargo target directory: `CARGO_TARGET_DIR` when set, else the one the running test
/// binary was built into, else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        let dir = PathBuf::from(dir);
        return if dir.is_absolute() {
            dir
        } else {
            workspace_dir().join(dir)
        };
    }
    profile_dir_of_current_exe()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| workspace_dir().join("target"))
}

/// The path of the workspace binary `name` (`mesh-proxy`, `mesh-controlplane`, `mesh-echo`,
/// `meshctl`). Looked up in `CARGO_BIN_EXE_<name>` (set at run time by cargo-nextest and at
/// build time for this crate's own binaries), then next to the running test binary, then in
/// `<target>/debug`.
///
/// # Panics
///
/// When the binary is not built (see [`find_bin`]): a test cannot do anything sensible
/// without it.
pub fn bin(name: &str) -> PathBuf {
    find_bin(name).unwrap_or_else(|e| panic!("{e}"))
}

/// [`bin`], or [`HarnessError::MissingBinary`] naming the places looked at, for tools that
/// report a missing build instead of panicking (`mesh-bench`).
pub fn find_bin(name: &str) -> Result<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(p) = std::env::var_os(format!("CARGO_BIN_EXE_{name}")) {
        candidates.push(PathBuf::from(p));
    }
    if let Some(profile) = profile_dir_of_current_exe() {
        candidates.push(profile.join(name));
    }
    candidates.push(target_dir().join("debug").join(name));
    if let Some(found) = candidates.iter().find(|p| p.is_file()) {
        return Ok(found.clone());
    }
    Err(HarnessError::MissingBinary {
        name: name.to_string(),
        looked: candidates
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// Topologies created so far in this process, per test name, so that a second topology of
/// the same test gets its own artifact directory.
static ARTIFACT_NAMES: Mutex<Option<HashMap<String, u32>>> = Mutex::new(None);

/// Creates (emptied) and returns the artifact directory for a topology of `test_name`:
/// `<target>/e2e-logs/<test_name>`, or `<test_name>.2`, `.3`, ... for further topologies of
/// the same test in the same process.
pub(crate) fn fresh_artifact_dir(test_name: &str) -> Result<PathBuf> {
    let n = {
        let mut guard = ARTIFACT_NAMES.lock().unwrap_or_else(|e| e.into_inner());
        let counts = guard.get_or_insert_with(HashMap::new);
        let n = counts.entry(test_name.to_owned()).or_insert(0);
        *n += 1;
        *n
    };
    let leaf = if n == 1 {
        test_name.to_owned()
    } else {
        format!("{test_name}.{n}")
    };
    let dir = target_dir().join("e2e-logs").join(leaf);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(HarnessError::io("remove", &dir))?;
    }
    std::fs::create_dir_all(&dir).map_err(HarnessError::io("create directory", &dir))?;
    Ok(dir)
}

/// A test name made safe for a directory name: anything but `[A-Za-z0-9_.-]` becomes `_`.
pub(crate) fn sanitize(test_name: &str) -> String {
    let s: String = test_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with('.') {
        format!("t{s}")
    } else {
        s
    }
}
