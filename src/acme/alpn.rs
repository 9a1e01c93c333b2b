//! TLS-ALPN-01 (RFC 8737) on the HTTPS listener: a ClientHello that offers
//! the `acme-tls/1` protocol is the CA's validation, and is answered with the
//! challenge certificate for the name it asks for; every other hello gets
//! the certificate the server serves.

use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::Challenges;

/// The ALPN protocol of a TLS-ALPN-01 validation; the handshake is all it
/// needs, so the listener closes such a connection at once.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Wraps the served certificate's resolver.
#[derive(Debug)]
pub struct AlpnChallengeResolver {
    pub challenges: Arc<Challenges>,
    pub served: Arc<dyn ResolvesServerCert>,
}

impl ResolvesServerCert for AlpnChallengeResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let validation = hello
            .alpn()
            .is_some_and(|mut offered| offered.any(|p| p == ACME_TLS_ALPN));
        if validation {
            // No challenge for that name: the handshake fails, as it should.
            return hello
                .server_name()
                .and_then(|name| self.challenges.alpn_certificate(name));
        }
        self.served.resolve(hello)
    }
}
