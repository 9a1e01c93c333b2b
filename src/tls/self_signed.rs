//! When `[tls]` is absent: a self-signed certificate for `hostname`, generated
//! once into `data_dir/tls/` and reused on every later start, so clients that
//! pinned it on first use keep working.

use std::path::Path;

use super::{TlsSetupError, write_private};
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
    let names = vec![hostname.to_string(), "localhost".to_string()];
    let generated = rcgen::generate_simple_self_signed(names)
        .map_err(|e| TlsSetupError::Generate(e.to_string()))?;
    write_private(&files.key, generated.signing_key.serialize_pem().as_bytes())?;
    write_private(&files.cert, generated.cert.pem().as_bytes())?;
    tracing::info!(event = "tls_generated", cert = %files.cert.display(), hostname, "generated a self-signed certificate");
    Ok(files)
}
