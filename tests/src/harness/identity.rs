//! Workload identity for injected pods, as Kubernetes gives it to istio-agent: a bootstrap
//! token per pod (`meshctl token create` with the control plane's CA, written to
//! `<work dir>/token` and passed as `--token-file`). A token is written as soon as the CA
//! exists (the control plane generates it on its first start, into its state directory, or
//! uses the `--ca-dir` it was started with); pods injected before that get theirs once the
//! control plane is ready. The proxy re-reads the file until it succeeds.

use std::path::{Path, PathBuf};

use super::cmd::output_with_timeout;
use super::error::{HarnessError, Result};
use super::paths::bin;
use super::pod::{Pod, PodData, EXEC_TIMEOUT};
use super::topology::TopologyInner;

/// The token file of a pod, inside its work directory.
pub(crate) const TOKEN_FILE: &str = "token";
/// The CA's key file, whose presence marks a CA directory.
const CA_KEY: &str = "ca-key.pem";

impl TopologyInner {
    /// The CA directory of the control plane: the `--ca-dir` it was started with, else
    /// `ca/` in its state directory.
    pub(crate) fn ca_dir(&self) -> PathBuf {
        self.lock()
            .ca_dir
            .clone()
            .unwrap_or_else(|| self.state_dir.join("controlplane").join("ca"))
    }

    /// Writes `pod`'s token if it has an identity, has no token yet, and the CA exists.
    pub(crate) fn write_token(&self, pod: &PodData) -> Result<()> {
        let Some(sa) = pod.service_account() else {
            return Ok(());
        };
        let path = pod.work_dir.join(TOKEN_FILE);
        let ca_dir = self.ca_dir();
        if path.exists() || !ca_dir.join(CA_KEY).is_file() {
            return Ok(());
        }
        let token = create_token(&ca_dir, &pod.namespace, &sa)?;
        let tmp = pod.work_dir.join(".token.tmp");
        std::fs::write(&tmp, token).map_err(HarnessError::io("write", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(HarnessError::io("rename to", &path))
    }

    /// Writes the tokens every pod with an identity still lacks.
    pub(crate) fn write_tokens(&self) -> Result<()> {
        let pods = self.lock().pods.clone();
        pods.iter().try_for_each(|p| self.write_token(p))
    }
}

/// `meshctl token create --namespace NS --service-account SA --ca-dir DIR`.
pub fn create_token(ca_dir: &Path, namespace: &str, service_account: &str) -> Result<String> {
    let mut cmd = std::process::Command::new(bin("meshctl"));
    cmd.args(["token", "create", "--namespace", namespace])
        .args(["--service-account", service_account])
        .arg("--ca-dir")
        .arg(ca_dir);
    let out = output_with_timeout(cmd, EXEC_TIMEOUT)?;
    Ok(out.ok()?.trim().to_owned())
}

impl super::ControlPlane {
    /// The CA directory the control plane uses (`--ca-dir`, else `ca/` in its state
    /// directory; it exists once the control plane has started).
    pub fn ca_dir(&self) -> PathBuf {
        self.topo.ca_dir()
    }
}

impl Pod {
    /// Where the pod's bootstrap token is (or will be) written.
    pub fn token_file(&self) -> PathBuf {
        self.data.work_dir.join(TOKEN_FILE)
    }
}
