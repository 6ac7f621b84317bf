//! Test certificates made with the `openssl` command: certificate authorities that are not
//! the mesh's, and leaf certificates (server or client, SPIFFE URI or DNS SANs) signed by
//! any CA, the mesh's own included. Files are world-readable so a sidecar (UID 1337) can
//! read the ones a DestinationRule names.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Result};

/// `openssl ARGS`, failing with its stderr.
pub fn openssl(args: &[&str]) -> Result<()> {
    let out = Command::new("openssl").args(args).output()?;
    ensure!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

fn readable(paths: &[&Path]) -> Result<()> {
    for path in paths {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))?;
    }
    Ok(())
}

fn ec_key(path: &Path) -> Result<()> {
    openssl(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        &p(path),
    ])
}

/// A self-signed CA `NAME` in `dir` (`NAME.pem`, `NAME-key.pem`); returns (certificate, key).
pub fn ca(dir: &Path, name: &str) -> Result<(PathBuf, PathBuf)> {
    let key = dir.join(format!("{name}-key.pem"));
    let cert = dir.join(format!("{name}.pem"));
    ec_key(&key)?;
    openssl(&[
        "req",
        "-x509",
        "-new",
        "-key",
        &p(&key),
        "-subj",
        &format!("/O={name}"),
        "-days",
        "1",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=keyCertSign",
        "-out",
        &p(&cert),
    ])?;
    readable(&[&cert, &key])?;
    Ok((cert, key))
}

/// A leaf certificate `NAME` in `dir` with the subject alternative names `sans` (openssl's
/// form: `DNS:host`, `URI:spiffe://...`), for server and client authentication, signed by
/// `ca_cert`/`ca_key`; returns (certificate, key).
pub fn leaf(
    dir: &Path,
    name: &str,
    sans: &[&str],
    ca_cert: &Path,
    ca_key: &Path,
) -> Result<(PathBuf, PathBuf)> {
    let key = dir.join(format!("{name}-key.pem"));
    let csr = dir.join(format!("{name}.csr"));
    let cert = dir.join(format!("{name}.pem"));
    let ext = dir.join(format!("{name}.ext"));
    std::fs::write(
        &ext,
        format!(
            "subjectAltName={}\nextendedKeyUsage=serverAuth,clientAuth\n",
            sans.join(",")
        ),
    )?;
    ec_key(&key)?;
    openssl(&[
        "req",
        "-new",
        "-key",
        &p(&key),
        "-subj",
        &format!("/O=test/CN={name}"),
        "-out",
        &p(&csr),
    ])?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        &p(&csr),
        "-CA",
        &p(ca_cert),
        "-CAkey",
        &p(ca_key),
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        &p(&ext),
        "-out",
        &p(&cert),
    ])?;
    readable(&[&cert, &key])?;
    Ok((cert, key))
}
