//! The challenges of the order in progress, looked up by the HTTP listener
//! (HTTP-01: the key authorization for a token) and by the HTTPS listener's
//! certificate resolver (TLS-ALPN-01: a certificate for a name).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use rcgen::{CertificateParams, CustomExtension, KeyPair};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::AcmeError;

/// Empty unless an order is being validated.
#[derive(Debug, Default)]
pub struct Challenges {
    /// HTTP-01: token → key authorization.
    http: RwLock<HashMap<String, String>>,
    /// TLS-ALPN-01: name (lower case) → its challenge certificate.
    tls_alpn: RwLock<HashMap<String, Arc<CertifiedKey>>>,
}

impl Challenges {
    /// The body for `/.well-known/acme-challenge/<token>` (RFC 8555 §8.3).
    pub fn key_authorization(&self, token: &str) -> Option<String> {
        self.http
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            .cloned()
    }

    /// The certificate for an `acme-tls/1` handshake naming `name`.
    pub fn alpn_certificate(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        self.tls_alpn
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&name.to_ascii_lowercase())
            .cloned()
    }

    pub(super) fn add_http(&self, token: &str, key_authorization: &str) {
        self.http
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token.to_string(), key_authorization.to_string());
    }

    /// RFC 8737 §3: a self-signed certificate for `name` alone, with the
    /// SHA-256 digest of the key authorization in a critical
    /// id-pe-acmeIdentifier extension.
    pub(super) fn add_tls_alpn(&self, name: &str, digest: &[u8]) -> Result<(), AcmeError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![name.to_string()])?;
        params.custom_extensions = vec![CustomExtension::new_acme_identifier(digest)];
        let cert = params.self_signed(&key)?;
        // Not `from_der`: it checks the pair by parsing the certificate,
        // which refuses the critical extension this one must carry.
        let signing = rustls::crypto::aws_lc_rs::default_provider()
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                key.serialize_der(),
            )))
            .map_err(|e| crate::tls::TlsSetupError::Config(e.to_string()))?;
        let certified = CertifiedKey::new(vec![CertificateDer::from(cert.der().to_vec())], signing);
        self.tls_alpn
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_ascii_lowercase(), Arc::new(certified));
        Ok(())
    }

    /// Forgets every challenge: the order is over.
    pub(super) fn clear(&self) {
        self.http.write().unwrap_or_else(|p| p.into_inner()).clear();
        self.tls_alpn
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}
