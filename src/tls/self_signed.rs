//! When `[tls]` is absent: a self-signed certificate for `hostname`, generated
//! once into `data_dir/tls/` and reused on every later start, so clients that
//! pinned it on first use keep working.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::TlsSetupError;
use crate::config::TlsFiles;

/// Returns the paths of the generated pair, creating it when missing.
pub fn ensure(data_dir: &Path, hostname: &str) -> Result<TlsFiles, TlsSetupError> {
    let dir = data_dir.join("tls");
    let files = TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    if files.cert.exists() && files.key.exists() {
        return Ok(files);
    }
    std::fs::create_dir_all(&dir).map_err(|e| TlsSetupError::Io(dir.clone(), e))?;
    let names = vec![hostname.to_string(), "localhost".to_string()];
    let generated = rcgen::generate_simple_self_signed(names)
        .map_err(|e| TlsSetupError::Generate(e.to_string()))?;
    write_private(&files.key, generated.signing_key.serialize_pem().as_bytes())?;
    write_private(&files.cert, generated.cert.pem().as_bytes())?;
    tracing::info!(event = "tls_generated", cert = %files.cert.display(), hostname, "generated a self-signed certificate");
    Ok(files)
}

/// Writes a file readable by its owner only, synced, through a temporary name so
/// a crash never leaves half a key behind.
fn write_private(path: &PathBuf, contents: &[u8]) -> Result<(), TlsSetupError> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let io = |e| TlsSetupError::Io(path.clone(), e);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(contents).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}
