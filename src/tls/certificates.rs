//! The server's certificate and key, replaceable while it runs. rustls asks
//! this resolver at every handshake, so a reload (SIGHUP, `postern reload`, or
//! the files changing on disk, as when certbot renews them) reaches the next
//! session without rebuilding the TLS configuration: its session cache and
//! ticket keys survive, and sessions already open keep their certificate.
//!
//! Past the names one certificate may hold, the ACME CA's further
//! certificates are served to the clients that ask for one of their names
//! (SNI); every other client gets the main one.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::TlsSetupError;
use crate::config::TlsFiles;

/// The certificates the listeners serve: the main one, and by name the
/// further ones from the ACME CA.
#[derive(Debug)]
pub struct Certificates {
    current: RwLock<Loaded>,
    more: RwLock<More>,
}

/// The further certificates, by their index (`tls::acme_pair`) and by each
/// name they hold.
#[derive(Debug, Default)]
struct More {
    pairs: BTreeMap<usize, Arc<CertifiedKey>>,
    by_name: HashMap<String, Arc<CertifiedKey>>,
}

#[derive(Debug)]
struct Loaded {
    files: TlsFiles,
    key: Arc<CertifiedKey>,
    /// What the files looked like when they were read.
    stamp: Stamp,
}

/// Modification time and length of the certificate and key files: a
/// renewal replaces at least one of them.
type Stamp = [(Option<SystemTime>, u64); 2];

fn stamp(files: &TlsFiles) -> Stamp {
    let of =
        |path: &Path| std::fs::metadata(path).map_or((None, 0), |m| (m.modified().ok(), m.len()));
    [of(&files.cert), of(&files.key)]
}

/// Reads and checks a certificate chain and its key.
pub fn read(files: &TlsFiles) -> Result<CertifiedKey, TlsSetupError> {
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
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    CertifiedKey::from_der(certs, key, &provider).map_err(|e| TlsSetupError::Config(e.to_string()))
}

/// When the first certificate of `key` stopped being valid, if it has by
/// `now` (Unix seconds): clients refuse it, so `config check` fails on it and
/// the server says so when it loads it.
pub fn expired_on(key: &CertifiedKey, now: i64) -> Option<String> {
    let leaf = crate::check::tls::CertInfo::parse(key.cert.first()?)?;
    (leaf.not_after < now).then(|| crate::check::tls::rfc3339(leaf.not_after))
}

impl Certificates {
    /// Reads `files`.
    pub fn load(files: TlsFiles) -> Result<Certificates, TlsSetupError> {
        let loaded = Loaded::read(files)?;
        Ok(Certificates {
            current: RwLock::new(loaded),
            more: RwLock::default(),
        })
    }

    /// Serves the pair in `files` as further certificate `index` to the
    /// clients that name one of its names; `None` stops serving `index`.
    pub fn serve_also(&self, index: usize, files: Option<&TlsFiles>) -> Result<(), TlsSetupError> {
        let key = files.map(read).transpose()?;
        let mut more = self.more.write().unwrap_or_else(|p| p.into_inner());
        match key {
            Some(key) => more.pairs.insert(index, Arc::new(key)),
            None => more.pairs.remove(&index),
        };
        let mut by_name = HashMap::new();
        for key in more.pairs.values() {
            let names = key
                .cert
                .first()
                .and_then(|leaf| crate::check::tls::CertInfo::parse(leaf))
                .map(|info| info.names)
                .unwrap_or_default();
            for name in names {
                by_name
                    .entry(name.to_ascii_lowercase())
                    .or_insert_with(|| Arc::clone(key));
            }
        }
        more.by_name = by_name;
        Ok(())
    }

    /// Serves the pair in `files` from the next handshake on, if it reads and
    /// checks; otherwise the current one stays and the error says why.
    pub fn replace(&self, files: TlsFiles) -> Result<(), TlsSetupError> {
        let loaded = Loaded::read(files)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = loaded;
        Ok(())
    }

    /// Reads the files again if they changed on disk since they were read;
    /// returns whether the certificate was replaced. A file caught half
    /// written fails to read: the current pair stays, and the next look
    /// tries again.
    pub fn reload_if_changed(&self) -> Result<bool, TlsSetupError> {
        let files = {
            let current = self.current.read().unwrap_or_else(|p| p.into_inner());
            if stamp(&current.files) == current.stamp {
                return Ok(false);
            }
            current.files.clone()
        };
        self.replace(files).map(|()| true)
    }

    /// Where the served pair was read from.
    pub fn files(&self) -> TlsFiles {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .files
            .clone()
    }
}

impl Loaded {
    fn read(files: TlsFiles) -> Result<Loaded, TlsSetupError> {
        // Stamped before reading: a change made while reading is seen next time.
        let stamp = stamp(&files);
        let key = Arc::new(read(&files)?);
        if let Some(date) = expired_on(&key, crate::clock::now_unix()) {
            tracing::warn!(event = "certificate_expired", cert = %files.cert.display(), "the certificate expired on {date}; clients that check it will refuse TLS until it is renewed");
        }
        Ok(Loaded { files, key, stamp })
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = hello.server_name() {
            let more = self.more.read().unwrap_or_else(|p| p.into_inner());
            if let Some(key) = more.by_name.get(&name.to_ascii_lowercase()) {
                return Some(Arc::clone(key));
            }
        }
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(|p| p.into_inner()).key,
        ))
    }
}
