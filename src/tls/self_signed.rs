//! When `[tls]` is absent: a self-signed certificate for `hostname`, generated
//! into `data_dir/tls/` and reused on every later start, so clients that
//! pinned it on first use keep working; made again only when it no longer
//! names `hostname` or is about to expire. It is valid for a year, as a
//! client that pinned it would expect of a real one.

use std::path::Path;

use super::{TlsSetupError, write_private};
use crate::check::tls::CertInfo;
use crate::config::TlsFiles;

/// How long a generated certificate is valid.
const VALIDITY: time::Duration = time::Duration::days(365);
/// A certificate with less than this left is made again at start.
const RENEW_BEFORE: time::Duration = time::Duration::days(30);

/// Returns the paths of the generated pair, creating it when missing.
pub fn ensure(data_dir: &Path, hostname: &str) -> Result<TlsFiles, TlsSetupError> {
    let dir = data_dir.join("tls");
    let files = TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    let now = time::OffsetDateTime::now_utc();
    if files.key.exists() {
        match stale(&files, hostname, now) {
            Ok(None) => return Ok(files),
            Ok(Some(reason)) => {
                tracing::info!(event = "tls_regenerated", cert = %files.cert.display(), hostname, "the generated certificate {reason}; making a new one");
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(TlsSetupError::Io(files.cert.clone(), e)),
        }
    }
    std::fs::create_dir_all(&dir).map_err(|e| TlsSetupError::Io(dir.clone(), e))?;
    let generated = generate(hostname, now).map_err(|e| TlsSetupError::Generate(e.to_string()))?;
    write_private(&files.key, generated.signing_key.serialize_pem().as_bytes())?;
    write_private(&files.cert, generated.cert.pem().as_bytes())?;
    tracing::info!(event = "tls_generated", cert = %files.cert.display(), hostname, "generated a self-signed certificate");
    Ok(files)
}

/// Why the pair in `files` must be made again, if it must: it was made for
/// another host name, is about to expire, or does not read.
fn stale(
    files: &TlsFiles,
    hostname: &str,
    now: time::OffsetDateTime,
) -> std::io::Result<Option<String>> {
    use rustls_pki_types::pem::PemObject;
    let pem = std::fs::read(&files.cert)?;
    let leaf = rustls_pki_types::CertificateDer::pem_slice_iter(&pem)
        .next()
        .and_then(Result::ok)
        .and_then(|der| CertInfo::parse(der.as_ref()));
    let Some(leaf) = leaf else {
        return Ok(Some("does not read".to_string()));
    };
    if !leaf.names.iter().any(|n| n == hostname) {
        return Ok(Some(format!(
            "is for {}, not for hostname {hostname}",
            leaf.names.join(", ")
        )));
    }
    if leaf.not_after < (now + RENEW_BEFORE).unix_timestamp() {
        return Ok(Some("expires within 30 days".to_string()));
    }
    Ok(None)
}

/// A key and a certificate for `hostname` (its CN and first name) and
/// `localhost`, valid from a day before `now` (clocks differ) for a year.
fn generate(
    hostname: &str,
    now: time::OffsetDateTime,
) -> Result<rcgen::CertifiedKey<rcgen::KeyPair>, rcgen::Error> {
    let mut params =
        rcgen::CertificateParams::new(vec![hostname.to_string(), "localhost".to_string()])?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, hostname);
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + VALIDITY;
    let signing_key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&signing_key)?;
    Ok(rcgen::CertifiedKey { cert, signing_key })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::pem::PemObject;

    fn leaf(files: &TlsFiles) -> (CertInfo, String) {
        let der = rustls_pki_types::CertificateDer::from_pem_file(&files.cert).expect("pem");
        let (_, cert) = <x509_parser::prelude::X509Certificate as x509_parser::prelude::FromDer<
            _,
        >>::from_der(&der)
        .expect("der");
        let cn = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .unwrap_or_default()
            .to_string();
        (CertInfo::parse(&der).expect("parse"), cn)
    }

    #[test]
    fn made_for_the_hostname_for_a_year_and_kept_while_it_fits() {
        let dir = tempfile::tempdir().expect("dir");
        let files = ensure(dir.path(), "mx.example.com").expect("made");
        let (info, cn) = leaf(&files);
        assert_eq!(cn, "mx.example.com");
        assert_eq!(info.names, ["mx.example.com", "localhost"]);
        let days = (info.not_after - time::OffsetDateTime::now_utc().unix_timestamp()) / 86_400;
        assert!((363..=365).contains(&days), "valid {days} days");
        let before = std::fs::read(&files.cert).expect("read");
        ensure(dir.path(), "mx.example.com").expect("kept");
        assert_eq!(std::fs::read(&files.cert).expect("read"), before);
    }

    #[test]
    fn made_again_for_a_new_hostname_or_near_expiry() {
        let dir = tempfile::tempdir().expect("dir");
        let files = ensure(dir.path(), "old.example.com").expect("made");
        assert_eq!(leaf(&files).1, "old.example.com");
        let files = ensure(dir.path(), "new.example.com").expect("made again");
        assert_eq!(leaf(&files).1, "new.example.com");
        // A certificate made 340 days ago has 25 days left.
        let old = generate(
            "new.example.com",
            time::OffsetDateTime::now_utc() - time::Duration::days(340),
        )
        .expect("generate");
        write_private(&files.cert, old.cert.pem().as_bytes()).expect("write");
        write_private(&files.key, old.signing_key.serialize_pem().as_bytes()).expect("write");
        let now = time::OffsetDateTime::now_utc();
        assert_eq!(
            stale(&files, "new.example.com", now)
                .expect("read")
                .as_deref(),
            Some("expires within 30 days")
        );
        ensure(dir.path(), "new.example.com").expect("renewed");
        assert!(leaf(&files).0.not_after > (now + time::Duration::days(300)).unix_timestamp());
        std::fs::write(&files.cert, "not a certificate").expect("write");
        assert_eq!(
            stale(&files, "new.example.com", now)
                .expect("read")
                .as_deref(),
            Some("does not read")
        );
    }
}
