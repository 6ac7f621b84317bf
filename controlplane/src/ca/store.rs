//! The CA's files, in Istio's `cacerts` layout: `ca-cert.pem` (the signing certificate, a
//! root or an intermediate), `ca-key.pem` (its key), `root-cert.pem` (the trust bundle: one
//! or more roots) and `cert-chain.pem` (the signing certificate up to the root). Where they
//! are when `--ca-dir` is not given, and the self-signed root written there on first start.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use boring::pkey::{PKey, Private};
use boring::x509::X509;

use super::cert;

/// The signing certificate.
pub const CA_CERT: &str = "ca-cert.pem";
/// The signing key.
pub const CA_KEY: &str = "ca-key.pem";
/// The trust bundle.
pub const ROOT_CERT: &str = "root-cert.pem";
/// The chain from the signing certificate to the root.
pub const CERT_CHAIN: &str = "cert-chain.pem";
/// Subdirectory of the state directory holding a generated CA.
pub const CA_SUBDIR: &str = "ca";
/// Lifetime of a generated root (Istio's self-signed CA default: 10 years).
pub const ROOT_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Errors reading or writing the CA's files.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file does not hold what it should.
    #[error("{path}: {problem}")]
    Content {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// BoringSSL failed to build a key or certificate.
    #[error("generating the CA: {0}")]
    Crypto(#[from] boring::error::ErrorStack),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The state directory used when `--state-dir` is not given: `$XDG_STATE_HOME/mesh`, else
/// `$HOME/.local/state/mesh`, else `/var/lib/mesh`. `meshctl` looks there too.
pub fn default_state_dir() -> PathBuf {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(xdg) = env("XDG_STATE_HOME") {
        xdg.join("mesh")
    } else if let Some(home) = env("HOME") {
        home.join(".local/state/mesh")
    } else {
        PathBuf::from("/var/lib/mesh")
    }
}

/// Where the CA lives: `--ca-dir` if given, else `ca/` in the state directory (the given one
/// or [`default_state_dir`]).
pub fn ca_dir(ca_dir: Option<&Path>, state_dir: Option<&Path>) -> PathBuf {
    match (ca_dir, state_dir) {
        (Some(dir), _) => dir.to_path_buf(),
        (None, Some(state)) => state.join(CA_SUBDIR),
        (None, None) => default_state_dir().join(CA_SUBDIR),
    }
}

/// The raw material of a CA directory.
pub struct Material {
    /// The signing key.
    pub key: PKey<Private>,
    /// The signing certificate.
    pub cert: X509,
    /// The roots.
    pub roots: Vec<X509>,
    /// The signing certificate up to the root (at least the signing certificate).
    pub chain: Vec<X509>,
}

fn read(dir: &Path, name: &str) -> Result<Vec<u8>, StoreError> {
    let path = dir.join(name);
    std::fs::read(&path).map_err(io(&path))
}

fn certs(dir: &Path, name: &str) -> Result<Vec<X509>, StoreError> {
    let path = dir.join(name);
    let pem = read(dir, name)?;
    let certs = X509::stack_from_pem(&pem).map_err(|e| StoreError::Content {
        path: path.clone(),
        problem: format!("not PEM certificates: {e}"),
    })?;
    if certs.is_empty() {
        return Err(StoreError::Content {
            path,
            problem: "no certificate in the file".into(),
        });
    }
    Ok(certs)
}

/// Whether `dir` holds a CA (its signing key exists).
pub fn exists(dir: &Path) -> bool {
    dir.join(CA_KEY).is_file()
}

/// Reads a CA directory. `cert-chain.pem` may be absent (then the chain is the signing
/// certificate, followed by the root when they differ).
pub fn load(dir: &Path) -> Result<Material, StoreError> {
    let key_path = dir.join(CA_KEY);
    let key = PKey::private_key_from_pem(&read(dir, CA_KEY)?).map_err(|e| StoreError::Content {
        path: key_path.clone(),
        problem: format!("not a PEM private key: {e}"),
    })?;
    let cert = certs(dir, CA_CERT)?.remove(0);
    let roots = certs(dir, ROOT_CERT)?;
    let chain = if dir.join(CERT_CHAIN).exists() {
        certs(dir, CERT_CHAIN)?
    } else {
        let mut chain = vec![cert.clone()];
        let self_signed = roots.iter().any(|r| r.to_der().ok() == cert.to_der().ok());
        if !self_signed {
            chain.push(roots[0].clone());
        }
        chain
    };
    Ok(Material {
        key,
        cert,
        roots,
        chain,
    })
}

/// Writes `contents` to `dir/name` atomically with `mode`.
fn write(dir: &Path, name: &str, contents: &[u8], mode: u32) -> Result<(), StoreError> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(contents).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))
}

/// Generates a self-signed root for `trust_domain` (ECDSA P-256, [`ROOT_TTL`]) and writes it
/// to `dir` in the `cacerts` layout (the directory is created, mode 0700; the key 0600).
pub fn generate(dir: &Path, trust_domain: &str) -> Result<Material, StoreError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io(dir))?;
    let key = cert::generate_ec_key()?;
    let root = cert::self_signed_root(&key, trust_domain, ROOT_TTL)?;
    let pem = root.to_pem()?;
    write(dir, ROOT_CERT, &pem, 0o644)?;
    write(dir, CERT_CHAIN, &pem, 0o644)?;
    write(dir, CA_CERT, &pem, 0o644)?;
    // The key last: its presence is what marks the directory as a CA.
    write(dir, CA_KEY, &key.private_key_to_pem_pkcs8()?, 0o600)?;
    Ok(Material {
        key,
        roots: vec![root.clone()],
        chain: vec![root.clone()],
        cert: root,
    })
}
