//! TLS for the listeners: the rustls server configuration from `[tls]` or from a
//! generated self-signed certificate. TLS 1.2 and 1.3 only (rustls offers
//! nothing older). Clients that reconnect resume their session from a ticket.

pub mod self_signed;

use std::path::PathBuf;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::Config;

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

/// The server-side TLS configuration every listener shares.
pub fn server_config(config: &Config) -> Result<Arc<ServerConfig>, TlsSetupError> {
    install_crypto_provider();
    let files = match &config.tls {
        Some(files) => files.clone(),
        None => self_signed::ensure(&config.data_dir, &config.hostname)?,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsSetupError::Certificate(files.cert.clone(), e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsSetupError::Certificate(
            files.cert.clone(),
            "no certificate in the file".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| TlsSetupError::Key(files.key.clone(), e.to_string()))?;
    let mut server = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsSetupError::Config(e.to_string()))?;
    // A client that connects per message (phones, scripts) skips the key
    // exchange's certificate signature on every reconnect. Stateless tickets,
    // not rustls's default session cache: that keeps 256 sessions, so a busy
    // server forgot a client after ~128 others had connected, and holds
    // nothing per client. The ticket key is random per process and rotates
    // every 6 hours (tickets live 12); TLS 1.3 resumption still runs an
    // ephemeral key exchange, so a leaked ticket key does not open recorded
    // sessions. The session cache stays for TLS 1.2 clients without tickets.
    server.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()
        .map_err(|e| TlsSetupError::Tickets(e.to_string()))?;
    Ok(Arc::new(server))
}
