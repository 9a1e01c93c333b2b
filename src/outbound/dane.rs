//! DANE for SMTP (RFC 7672). When a domain's MX records and an MX host's
//! TLSA records (`_25._tcp.<host>`) validate with DNSSEC (`dns::Dns::tlsa`),
//! that host gets mail only over TLS, and only when its certificate matches
//! one of the usable records:
//! - DANE-EE (usage 3): the server's own certificate or public key; no name
//!   or date check (§3.1.1: the record is the authentication);
//! - DANE-TA (usage 2): a certificate of the chain the server presents is the
//!   trust anchor; the chain up to it and the MX host's name are checked as
//!   WebPKI does (§3.1.2).
//!
//! PKIX-TA and PKIX-EE (0, 1) are not for SMTP (§3.1.3) and are ignored; a
//! TLSA set with none usable still makes TLS mandatory, unauthenticated
//! (§2.2). DANE comes before MTA-STS for a host that has it (RFC 8461 §2).
//!
//! Written here: no maintained crate matches TLSA records for rustls; the
//! chain and signature checks are rustls' own.

use std::sync::Arc;

use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::TlsConnector;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::dns::Tlsa;

impl Tlsa {
    /// Whether SMTP uses it (§3.1): DANE-TA or DANE-EE, a known selector
    /// and matching type.
    pub fn usable(&self) -> bool {
        matches!(self.usage, 2 | 3) && self.selector <= 1 && self.matching <= 2
    }

    /// The record's data as a zone file shows it.
    fn presented(&self) -> String {
        let hex: String = self.data.iter().map(|b| format!("{b:02x}")).collect();
        format!("{} {} {} {hex}", self.usage, self.selector, self.matching)
    }

    /// Whether `cert` is what the record names.
    fn matches(&self, cert: &CertificateDer<'_>) -> bool {
        let selected: Vec<u8> = match self.selector {
            0 => cert.to_vec(),
            1 => match X509Certificate::from_der(cert) {
                Ok((_, parsed)) => parsed.tbs_certificate.subject_pki.raw.to_vec(),
                Err(_) => return false,
            },
            _ => return false,
        };
        let digest = |algorithm| aws_lc_rs::digest::digest(algorithm, &selected);
        match self.matching {
            0 => selected == self.data,
            1 => digest(&aws_lc_rs::digest::SHA256).as_ref() == self.data.as_slice(),
            2 => digest(&aws_lc_rs::digest::SHA512).as_ref() == self.data.as_slice(),
            _ => false,
        }
    }
}

/// How a host with TLSA records is reached: always over TLS.
#[derive(Clone)]
pub struct Dane {
    /// Checks the certificate against the usable records; `None` when no
    /// record is usable for SMTP: TLS all the same, unauthenticated.
    pub verifier: Option<TlsConnector>,
    /// The records as presented (`3 1 1 0a1b…`), for TLS reports.
    pub records: Vec<String>,
}

impl Dane {
    /// What `records` (validated) ask of the host.
    pub fn of(records: Vec<Tlsa>) -> Result<Dane, String> {
        let presented = records.iter().map(Tlsa::presented).collect();
        let usable: Vec<Tlsa> = records.into_iter().filter(Tlsa::usable).collect();
        if usable.is_empty() {
            return Ok(Dane {
                verifier: None,
                records: presented,
            });
        }
        let provider = CryptoProvider::get_default()
            .cloned()
            .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
        let verifier = DaneVerifier {
            records: usable,
            algorithms: provider.signature_verification_algorithms,
            provider: Arc::clone(&provider),
        };
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        Ok(Dane {
            verifier: Some(TlsConnector::from(Arc::new(config))),
            records: presented,
        })
    }
}

#[derive(Debug)]
struct DaneVerifier {
    records: Vec<Tlsa>,
    provider: Arc<CryptoProvider>,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for DaneVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self
            .records
            .iter()
            .any(|r| r.usage == 3 && r.matches(end_entity))
        {
            return Ok(ServerCertVerified::assertion());
        }
        let anchor = self.records.iter().filter(|r| r.usage == 2).find_map(|r| {
            intermediates
                .iter()
                .chain(std::iter::once(end_entity))
                .find(|c| r.matches(c))
        });
        if let Some(anchor) = anchor {
            let mut roots = RootCertStore::empty();
            roots
                .add(anchor.clone().into_owned())
                .map_err(|e| rustls::Error::General(format!("DANE: the TLSA trust anchor: {e}")))?;
            let webpki = WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                Arc::clone(&self.provider),
            )
            .build()
            .map_err(|e| rustls::Error::General(format!("DANE: {e}")))?;
            return webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp, now);
        }
        Err(rustls::Error::General(
            "DANE: the certificate matches none of the host's TLSA records".into(),
        ))
    }

    crate::check::tls::verify_handshake_signatures!();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert() -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().expect("key");
        let params =
            rcgen::CertificateParams::new(vec!["mx.example.org".to_string()]).expect("params");
        params.self_signed(&key).expect("cert").der().clone()
    }

    fn sha256(data: &[u8]) -> Vec<u8> {
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data)
            .as_ref()
            .to_vec()
    }

    #[test]
    fn records_match_the_certificate_or_its_key() {
        let cert = cert();
        let (_, parsed) = X509Certificate::from_der(&cert).expect("parse");
        let spki = parsed.tbs_certificate.subject_pki.raw.to_vec();
        let record = |selector, matching, data| Tlsa {
            usage: 3,
            selector,
            matching,
            data,
        };
        assert!(record(1, 1, sha256(&spki)).matches(&cert));
        assert!(record(0, 1, sha256(&cert)).matches(&cert));
        assert!(record(0, 0, cert.to_vec()).matches(&cert));
        assert!(record(1, 0, spki.clone()).matches(&cert));
        assert!(
            !record(1, 1, sha256(&cert)).matches(&cert),
            "key, not certificate"
        );
        let other = self::cert();
        assert!(!record(1, 1, sha256(&other)).matches(&cert), "another key");
        assert!(
            !record(1, 2, sha256(&spki)).matches(&cert),
            "SHA-512 expected"
        );
        assert!(
            !Tlsa {
                usage: 1,
                ..record(1, 1, sha256(&spki))
            }
            .usable()
        );
        assert!(!record(1, 3, vec![]).usable());
    }
}
