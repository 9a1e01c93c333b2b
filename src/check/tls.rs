//! TLS for `postern check`: a rustls client whose certificate verifier never
//! fails the handshake but records the server's certificate and the verdict
//! webpki gives against the system roots (plus `--ca-file`). A refused
//! certificate would end the handshake and hide what we want to show: the
//! names, the expiry, and exactly why a mail client would balk.

use std::sync::{Arc, Mutex};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::{CertificateError, RootCertStore};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::time::{Instant, timeout_at};
use tokio_rustls::TlsConnector;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use super::wire::Io;

/// The verifier's material, built once per run: loading the system roots
/// reads a few hundred files.
#[derive(Clone)]
pub struct TlsSetup {
    provider: Arc<CryptoProvider>,
    webpki: Option<Arc<WebPkiServerVerifier>>,
}

impl TlsSetup {
    /// System roots plus `extra` (from `--ca-file`). Without any root at all,
    /// every certificate is reported as issued by an unknown authority.
    pub fn new(extra: Vec<CertificateDer<'static>>) -> TlsSetup {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = RootCertStore::empty();
        roots.add_parsable_certificates(extra);
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .ok();
        TlsSetup { provider, webpki }
    }

    /// Runs a TLS handshake as a client for `host` on `io`, before `deadline`.
    pub async fn handshake(
        &self,
        io: Box<dyn Io>,
        host: &str,
        deadline: Instant,
    ) -> Result<(Box<dyn Io>, TlsSession), TlsFailure> {
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| TlsFailure::Other(format!("{host} is not a valid TLS server name")))?;
        let recorder = Arc::new(Recorder {
            webpki: self.webpki.clone(),
            algorithms: self.provider.signature_verification_algorithms,
            seen: Mutex::new(None),
        });
        let config = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsFailure::Other(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(recorder.clone())
            .with_no_client_auth();
        let connector = TlsConnector::from(Arc::new(config));
        let stream = match timeout_at(deadline, connector.connect(name, io)).await {
            Err(_) => return Err(TlsFailure::Timeout),
            Ok(Err(e)) => return Err(TlsFailure::from_io(&e)),
            Ok(Ok(stream)) => stream,
        };
        let (_, conn) = stream.get_ref();
        let version = conn
            .protocol_version()
            .map(|v| match v {
                rustls::ProtocolVersion::TLSv1_3 => "TLS 1.3".to_string(),
                rustls::ProtocolVersion::TLSv1_2 => "TLS 1.2".to_string(),
                other => format!("{other:?}"),
            })
            .unwrap_or_default();
        let cipher = conn
            .negotiated_cipher_suite()
            .map(|s| format!("{:?}", s.suite()))
            .unwrap_or_default();
        let seen = recorder
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let (cert, verdict) = match seen {
            Some((der, verdict)) => {
                let cert = CertInfo::parse(&der);
                let verdict = CertVerdict::from_webpki(verdict, cert.as_ref());
                (cert, verdict)
            }
            None => (None, CertVerdict::Other("no certificate".into())),
        };
        let session = TlsSession {
            version,
            cipher,
            cert,
            verdict,
        };
        Ok((Box::new(stream), session))
    }
}

/// A completed handshake: what was negotiated and what the certificate says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSession {
    pub version: String,
    pub cipher: String,
    pub cert: Option<CertInfo>,
    pub verdict: CertVerdict,
}

/// The facts of the server's certificate that a user can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// DNS names and IP addresses (subjectAltName), else the subject's CN.
    pub names: Vec<String>,
    pub issuer: String,
    pub not_after: i64,
    pub self_signed: bool,
    /// Issuer and serial: tells two certificates apart.
    pub id: String,
}

impl CertInfo {
    pub fn parse(der: &[u8]) -> Option<CertInfo> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let mut names = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(n) => names.push(n.to_ascii_lowercase()),
                    GeneralName::IPAddress(bytes) => names.extend(ip_of(bytes)),
                    _ => {}
                }
            }
        }
        if names.is_empty() {
            let cn = cert.subject().iter_common_name().next();
            names.extend(
                cn.and_then(|cn| cn.as_str().ok())
                    .map(str::to_ascii_lowercase),
            );
        }
        let issuer = cert
            .issuer()
            .iter_common_name()
            .chain(cert.issuer().iter_organization())
            .find_map(|a| a.as_str().ok().map(ToString::to_string))
            .unwrap_or_else(|| cert.issuer().to_string());
        Some(CertInfo {
            names,
            id: format!("{}/{}", cert.issuer(), cert.raw_serial_as_string()),
            issuer,
            not_after: cert.validity().not_after.timestamp(),
            self_signed: cert.subject().as_raw() == cert.issuer().as_raw(),
        })
    }
}

fn ip_of(bytes: &[u8]) -> Option<String> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        return Some(std::net::Ipv4Addr::from(v4).to_string());
    }
    <[u8; 16]>::try_from(bytes)
        .ok()
        .map(|v6| std::net::Ipv6Addr::from(v6).to_string())
}

/// What a mail client would think of the certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertVerdict {
    Valid,
    Expired,
    NotYetValid,
    SelfSigned,
    UnknownIssuer,
    /// The chain is good, but not for the name the client uses.
    NameMismatch,
    Other(String),
}

impl CertVerdict {
    fn from_webpki(result: Result<(), rustls::Error>, cert: Option<&CertInfo>) -> CertVerdict {
        let Err(e) = result else {
            return CertVerdict::Valid;
        };
        match e {
            rustls::Error::InvalidCertificate(c) => match c {
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    CertVerdict::Expired
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    CertVerdict::NotYetValid
                }
                CertificateError::UnknownIssuer if cert.is_some_and(|c| c.self_signed) => {
                    CertVerdict::SelfSigned
                }
                CertificateError::UnknownIssuer => CertVerdict::UnknownIssuer,
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => CertVerdict::NameMismatch,
                other => CertVerdict::Other(format!("{other:?}")),
            },
            other => CertVerdict::Other(other.to_string()),
        }
    }

    pub fn is_valid(&self) -> bool {
        *self == CertVerdict::Valid
    }

    /// The chain is trusted, whatever the name: the certificate belongs to
    /// whoever holds one of its names.
    pub fn chain_ok(&self) -> bool {
        matches!(self, CertVerdict::Valid | CertVerdict::NameMismatch)
    }

    /// A stable word for JSON.
    pub fn word(&self) -> &'static str {
        match self {
            CertVerdict::Valid => "valid",
            CertVerdict::Expired => "expired",
            CertVerdict::NotYetValid => "not-yet-valid",
            CertVerdict::SelfSigned => "self-signed",
            CertVerdict::UnknownIssuer => "unknown-issuer",
            CertVerdict::NameMismatch => "name-mismatch",
            CertVerdict::Other(_) => "invalid",
        }
    }
}

/// Why a TLS handshake did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsFailure {
    #[error("no TLS version in common (the server offers none of TLS 1.2 or 1.3)")]
    Version,
    #[error("the server does not speak TLS on this port ({0})")]
    NotTls(String),
    #[error("the server closed the connection during the TLS handshake")]
    Closed,
    #[error("the TLS handshake did not finish before the deadline")]
    Timeout,
    #[error("the server refused the TLS handshake ({0})")]
    Alert(String),
    #[error("{0}")]
    Other(String),
}

impl TlsFailure {
    fn from_io(e: &std::io::Error) -> TlsFailure {
        let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
            return match e.kind() {
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset => {
                    TlsFailure::Closed
                }
                _ => TlsFailure::Other(e.to_string()),
            };
        };
        use rustls::AlertDescription as A;
        match tls {
            rustls::Error::AlertReceived(A::ProtocolVersion)
            | rustls::Error::PeerIncompatible(
                rustls::PeerIncompatible::ServerDoesNotSupportTls12Or13
                | rustls::PeerIncompatible::ServerTlsVersionIsDisabledByOurConfig,
            ) => TlsFailure::Version,
            rustls::Error::AlertReceived(alert) => TlsFailure::Alert(format!("{alert:?}")),
            rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
                TlsFailure::NotTls(tls.to_string())
            }
            other => TlsFailure::Other(other.to_string()),
        }
    }

    /// A stable word for JSON.
    pub fn word(&self) -> &'static str {
        match self {
            TlsFailure::Version => "version",
            TlsFailure::NotTls(_) => "not-tls",
            TlsFailure::Closed => "closed",
            TlsFailure::Timeout => "timeout",
            TlsFailure::Alert(_) => "alert",
            TlsFailure::Other(_) => "other",
        }
    }
}

/// The end-entity certificate (DER) and webpki's verdict on it.
type Seen = (Vec<u8>, Result<(), rustls::Error>);

/// Accepts every certificate, and remembers it with webpki's verdict.
#[derive(Debug)]
struct Recorder {
    webpki: Option<Arc<WebPkiServerVerifier>>,
    algorithms: WebPkiSupportedAlgorithms,
    seen: Mutex<Option<Seen>>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verdict = match &self.webpki {
            Some(v) => v
                .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
                .map(|_| ()),
            None => Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            )),
        };
        *self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((end_entity.as_ref().to_vec(), verdict));
        // The verdict is reported, not enforced: this connection never
        // carries a password unless the verdict was Valid (see probe.rs).
        Ok(ServerCertVerified::assertion())
    }

    // The handshake signatures are still checked: they prove the server
    // holds the key of the certificate we report.
    verify_handshake_signatures!();
}

/// The handshake-signature half of a rustls `ServerCertVerifier` whose
/// certificate half is our own (DANE's in `outbound`, the recorder here):
/// checked as rustls checks them, with the verifier's
/// `algorithms: WebPkiSupportedAlgorithms`. Written once, here, beside the other certificate code; a trait
/// cannot supply another trait's methods.
macro_rules! verify_handshake_signatures {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.algorithms.supported_schemes()
        }
    };
}
pub(crate) use verify_handshake_signatures;

/// A Unix time as an RFC 3339 UTC date-time (`2027-01-31T12:00:00Z`).
pub fn rfc3339(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days: exact for the proleptic Gregorian calendar.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_798_761_599), "2026-12-31T23:59:59Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn certificates_are_read() {
        let generated =
            rcgen::generate_simple_self_signed(vec!["Mail.Example.com".into(), "192.0.2.7".into()])
                .unwrap();
        let info = CertInfo::parse(generated.cert.der()).unwrap();
        assert_eq!(info.names, vec!["mail.example.com", "192.0.2.7"]);
        assert!(info.self_signed);
        assert!(info.not_after > 1_700_000_000);
        assert_eq!(CertInfo::parse(b"not a certificate"), None);
    }
}
