//! Signatures for submitted mail: one per key of the domain in From:, relaxed
//! header and body canonicalization (they survive the re-folding and
//! trailing-space changes relays make), over the header fields RFC 6376
//! §5.4.1 recommends that the message has, with From: signed once more than
//! it occurs so that no From: can be added (over-signing).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mail_auth::common::crypto::{DkimKey, Ed25519Key, RsaKey, Sha256, SigningKey};
use mail_auth::common::headers::{HeaderWriter, Writable};
use mail_auth::dkim::{Canonicalization, DkimSigner};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;

use super::keys::{Algorithm, KeyState, domain_keys};
use crate::smtp::headers::{Entry, entries, header_section};

/// The fields signed when present: RFC 6376 §5.4.1's list, the other
/// originator fields, and those that say how the body is to be read.
pub const SIGNED_HEADERS: [&str; 26] = [
    "From",
    "Sender",
    "Reply-To",
    "Subject",
    "Date",
    "Message-ID",
    "To",
    "Cc",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "Content-Disposition",
    "In-Reply-To",
    "References",
    "Resent-Date",
    "Resent-From",
    "Resent-Sender",
    "Resent-To",
    "Resent-Cc",
    "List-Id",
    "List-Help",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "List-Subscribe",
    "List-Post",
    "List-Owner",
];

/// How long loaded keys are used before the files are read again: keys of a
/// domain added while the server runs are used within this time.
const RELOAD_AFTER: Duration = Duration::from_secs(60);

/// The domains' keys, loaded when first needed and again after
/// `RELOAD_AFTER`. Shared by every session; signing itself runs outside the
/// lock (and outside the async runtime: see `prepare`).
pub struct Signer {
    data_dir: PathBuf,
    loaded: Mutex<HashMap<String, Loaded>>,
}

/// A domain's keys and when they were read.
struct Loaded {
    at: Instant,
    keys: Arc<[Key]>,
}

/// A key ready to sign with.
pub(super) struct Key {
    pub(super) selector: String,
    pub(super) key: Arc<DkimKey>,
}

/// mail-auth's signer takes its key by value; this lets every message share
/// the one loaded key.
pub(super) struct SharedKey(pub(super) Arc<DkimKey>);

impl SigningKey for SharedKey {
    type Hasher = Sha256;

    fn sign(&self, input: impl Writable) -> mail_auth::Result<Vec<u8>> {
        self.0.sign(input)
    }

    fn algorithm(&self) -> mail_auth::common::crypto::Algorithm {
        self.0.algorithm()
    }
}

impl Signer {
    pub fn new(data_dir: &Path) -> Signer {
        Signer {
            data_dir: data_dir.to_path_buf(),
            loaded: Mutex::default(),
        }
    }

    /// The DKIM-Signature fields for `message` (given in pieces: the new
    /// header fields, then the message as received) signed for `domain`, one
    /// per key; empty when the domain has no key. Blocking: reads key files
    /// now and then, and hashes the whole message.
    pub fn sign(&self, domain: &str, message: &[&[u8]]) -> Vec<u8> {
        let keys = self.keys(domain);
        if keys.is_empty() {
            return Vec::new();
        }
        let headers = signed_headers(message);
        let mut fields = Vec::new();
        for key in keys.iter() {
            let signed = DkimSigner::from_key(SharedKey(Arc::clone(&key.key)))
                .domain(domain)
                .selector(&key.selector)
                .headers(headers.iter().copied())
                .header_canonicalization(Canonicalization::Relaxed)
                .body_canonicalization(Canonicalization::Relaxed)
                .sign_chained(message.iter().copied());
            match signed {
                Ok(signature) => fields.extend(signature.to_header().into_bytes()),
                Err(e) => tracing::warn!(
                    event = "dkim_not_signed",
                    domain,
                    selector = %key.selector,
                    error = %e
                ),
            }
        }
        fields
    }

    /// Has the next message of `domain` read its keys again (a rotation
    /// switched them).
    pub fn forget(&self, domain: &str) {
        self.loaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(domain);
    }

    pub(super) fn keys(&self, domain: &str) -> Arc<[Key]> {
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(cached) = loaded.get(domain)
            && cached.at.elapsed() < RELOAD_AFTER
        {
            return Arc::clone(&cached.keys);
        }
        let keys: Arc<[Key]> = load(&self.data_dir, domain).into();
        loaded.insert(
            domain.to_string(),
            Loaded {
                at: Instant::now(),
                keys: Arc::clone(&keys),
            },
        );
        keys
    }
}

/// The domain's active keys that can be read. One that cannot is logged
/// (each time keys are loaded) and left out: mail goes on, signed with the
/// others, rather than wait for an admin.
fn load(data_dir: &Path, domain: &str) -> Vec<Key> {
    let keys = match domain_keys(data_dir, domain) {
        Ok(keys) => keys,
        Err(error) => {
            tracing::error!(event = "dkim_key_unusable", domain, %error);
            return Vec::new();
        }
    };
    keys.into_iter()
        .filter(|k| k.state == KeyState::Active)
        .filter_map(|file| {
            let path = file.path(data_dir);
            match read_key(&path, file.algorithm) {
                Ok(key) => Some(Key {
                    selector: file.selector,
                    key: Arc::new(key),
                }),
                Err(error) => {
                    tracing::error!(
                        event = "dkim_key_unusable",
                        domain,
                        path = %path.display(),
                        %error
                    );
                    None
                }
            }
        })
        .collect()
}

fn read_key(path: &Path, algorithm: Algorithm) -> Result<DkimKey, String> {
    let pem = std::fs::read(path).map_err(|e| e.to_string())?;
    let der = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| e.to_string())?;
    match algorithm {
        Algorithm::Rsa => RsaKey::<Sha256>::from_key_der(der).map(DkimKey::Rsa),
        Algorithm::Ed25519 => {
            Ed25519Key::from_pkcs8_maybe_unchecked_der(der.secret_der()).map(DkimKey::Ed25519)
        }
    }
    .map_err(|e| e.to_string())
}

/// `SIGNED_HEADERS` that the message has, each once (mail-auth signs every
/// occurrence of a listed name), and From: once more.
fn signed_headers(message: &[&[u8]]) -> Vec<&'static str> {
    let mut present = [false; SIGNED_HEADERS.len()];
    // Each piece from its start: the new fields end where the received
    // message begins, and its header section at the empty line.
    for entry in message
        .iter()
        .flat_map(|piece| entries(header_section(piece)))
    {
        let Entry::Field(field) = entry else { continue };
        let name = field.name;
        if let Some(i) = SIGNED_HEADERS
            .iter()
            .position(|h| name.eq_ignore_ascii_case(h.as_bytes()))
        {
            present[i] = true;
        }
    }
    let mut out: Vec<&'static str> = SIGNED_HEADERS
        .iter()
        .zip(present)
        .filter(|(_, present)| *present)
        .map(|(h, _)| *h)
        .collect();
    out.push("From");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dkim::ensure_keys;

    const MESSAGE: &[u8] = b"From: Alice <alice@example.com>\r\nTo: bob@example.org\r\n\
        Subject: hello\r\nX-Mailer: test\r\n\r\nHi Bob.\r\n";

    fn tags(field: &str) -> HashMap<String, String> {
        let value = field.split_once(':').expect("field").1;
        value
            .split(';')
            .filter_map(|t| t.split_once('='))
            .map(|(k, v)| {
                (
                    k.trim().to_string(),
                    v.split_whitespace().collect::<String>(),
                )
            })
            .collect()
    }

    #[test]
    fn each_key_signs_the_present_fields_and_from_once_more() {
        let dir = tempfile::tempdir().expect("tempdir");
        ensure_keys(dir.path(), "example.com").expect("keys");
        let signer = Signer::new(dir.path());
        let trace = b"Received: by mx.example.com; Mon, 30 Nov 2026 10:00:00 +0000\r\n\
            Message-ID: <1@mx.example.com>\r\n";
        let fields =
            String::from_utf8(signer.sign("example.com", &[trace, MESSAGE])).expect("utf8");
        let fields: Vec<&str> = fields.split("DKIM-Signature:").skip(1).collect();
        assert_eq!(fields.len(), 2, "{fields:?}");
        for (field, (algorithm, selector)) in fields.iter().zip([
            ("rsa-sha256", "postern"),
            ("ed25519-sha256", "postern-ed25519"),
        ]) {
            let tags = tags(&format!("DKIM-Signature:{field}"));
            assert_eq!(tags["a"], algorithm);
            assert_eq!(tags["s"], selector);
            assert_eq!(tags["d"], "example.com");
            assert_eq!(tags["c"], "relaxed/relaxed");
            let mut h: Vec<String> = tags["h"].split(':').map(str::to_lowercase).collect();
            h.sort();
            assert_eq!(
                h,
                ["from", "from", "message-id", "subject", "to"],
                "{field}"
            );
        }
    }

    #[test]
    fn a_domain_without_keys_gets_no_signature() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(
            Signer::new(dir.path())
                .sign("example.com", &[MESSAGE])
                .is_empty()
        );
    }

    #[test]
    fn an_unreadable_key_is_left_out_and_the_other_signs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = ensure_keys(dir.path(), "example.com").expect("keys");
        std::fs::write(keys[0].path(dir.path()), "not a key").expect("spoil");
        let fields = String::from_utf8(Signer::new(dir.path()).sign("example.com", &[MESSAGE]))
            .expect("utf8");
        assert_eq!(fields.matches("DKIM-Signature:").count(), 1);
        assert!(fields.contains("a=ed25519-sha256"), "{fields}");
    }
}
