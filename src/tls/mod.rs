//! TLS for the listeners: the rustls server configuration from `[tls]`, the
//! pair `acme` obtained, or a generated self-signed certificate. TLS 1.2 and 1.3 only (rustls offers
//! nothing older). Clients that reconnect resume their session from a ticket.

pub mod certificates;
pub mod self_signed;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::server::ResolvesServerCert;

pub use certificates::Certificates;

use crate::config::{Config, TlsFiles};

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("cannot read certificates from {0}: {1}")]
    Certificate(PathBuf, String),
    #[error("cannot read the private key from {0}: {1}")]
    Key(PathBuf, String),
    #[error("the certificate and key do not work together: {0}")]
    Config(String),
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(String),
    #[error("cannot make the session ticket key: {0}")]
    Tickets(String),
}

/// Installs the one crypto provider (aws-lc-rs) for the process; safe to call
/// more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// The server-side TLS configuration every listener shares, and the
/// certificate it serves, which can be replaced while it runs.
pub struct ServerTls {
    pub config: Arc<ServerConfig>,
    pub certificates: Arc<Certificates>,
}

/// The certificate and key `config` names: `[tls]`; else, with `[acme]`, the
/// pair obtained from the CA once there is one; else the self-signed pair for
/// `hostname` in data_dir (made if missing).
pub fn files(config: &Config) -> Result<TlsFiles, TlsSetupError> {
    if let Some(files) = &config.tls {
        return Ok(files.clone());
    }
    let issued = acme_files(&config.data_dir);
    if config.acme.is_some() && issued.cert.exists() && issued.key.exists() {
        return Ok(issued);
    }
    self_signed::ensure(&config.data_dir, &config.hostname)
}

/// Where the pair from the ACME CA is kept (src/acme/): the one served to
/// every client, for `hostname`.
pub fn acme_files(data_dir: &Path) -> TlsFiles {
    acme_pair(data_dir, 0)
}

/// Pair `index` from the ACME CA: 0 is `acme_files`; the others hold the
/// names that one certificate cannot (see `acme::renewal`) and are served
/// to the clients that ask for one of them.
pub fn acme_pair(data_dir: &Path, index: usize) -> TlsFiles {
    let dir = data_dir.join("acme");
    let suffix = if index == 0 {
        String::new()
    } else {
        format!("-{index}")
    };
    TlsFiles {
        cert: dir.join(format!("cert{suffix}.pem")),
        key: dir.join(format!("key{suffix}.pem")),
    }
}

/// The indexes, in order, of the ACME pairs after the first whose
/// certificate file is there.
pub fn acme_more_pairs(data_dir: &Path) -> Vec<usize> {
    let Ok(entries) = std::fs::read_dir(data_dir.join("acme")) else {
        return Vec::new();
    };
    let mut indexes: Vec<usize> = entries
        .filter_map(|e| {
            let name = e.ok()?.file_name();
            let index = name.to_str()?.strip_prefix("cert-")?.strip_suffix(".pem")?;
            index.parse().ok().filter(|i| *i > 0)
        })
        .collect();
    indexes.sort_unstable();
    indexes
}

/// A key or certificate file, its owner's only (see `private_file`).
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), TlsSetupError> {
    crate::private_file::write(path, contents).map_err(|e| TlsSetupError::Io(path.to_path_buf(), e))
}

pub fn server_config(config: &Config) -> Result<ServerTls, TlsSetupError> {
    install_crypto_provider();
    let certificates = Arc::new(Certificates::load(files(config)?)?);
    if config.tls.is_none() && config.acme.is_some() {
        for index in acme_more_pairs(&config.data_dir) {
            // Unreadable: the next ACME check orders it again.
            let files = acme_pair(&config.data_dir, index);
            if let Err(e) = certificates.serve_also(index, Some(&files)) {
                tracing::warn!(event = "certificate_unreadable", error = %e, "not serving this certificate from the CA until it is ordered again");
            }
        }
    }
    let mut server = ServerConfig::builder()
        .with_no_client_auth()
        .with_cert_resolver(Arc::clone(&certificates) as Arc<dyn ResolvesServerCert>);
    // A client that connects per message (phones, scripts) skips the key
    // exchange's certificate signature on every reconnect. Stateless tickets,
    // not rustls's default session cache: that keeps 256 sessions, so a busy
    // server forgot a client after ~128 others had connected, and holds
    // nothing per client. The ticket key is random per process and rotates
    // every 6 hours (tickets live 12); TLS 1.3 resumption still runs an
    // ephemeral key exchange, so a leaked ticket key does not open recorded
    // sessions. The session cache stays for TLS 1.2 clients without tickets.
    // A reload replaces the certificate behind the resolver, not this
    // configuration, so tickets issued before it still resume.
    server.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()
        .map_err(|e| TlsSetupError::Tickets(e.to_string()))?;
    Ok(ServerTls {
        config: Arc::new(server),
        certificates,
    })
}
