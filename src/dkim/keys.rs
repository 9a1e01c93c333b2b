//! The key files and their states. A domain starts with one RSA-2048 key
//! (selector `postern`, where every receiver can check it) and one Ed25519
//! key (RFC 8463, selector `postern-ed25519`), both PKCS#8 PEM, 0600; every
//! message carries a signature for each active key. `rotation` adds pending
//! keys and moves them on; once a domain has been rotated, its keys and
//! their states are listed in `dkim/<domain>.json` (before that, the two
//! first files are the whole set, all active).

use std::path::{Path, PathBuf};

use base64::Engine;
use rcgen::PublicKeyData;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    Rsa,
    Ed25519,
}

impl Algorithm {
    pub const BOTH: [Algorithm; 2] = [Algorithm::Rsa, Algorithm::Ed25519];

    /// The `k=` tag of the DNS record.
    pub fn tag(self) -> &'static str {
        match self {
            Algorithm::Rsa => "rsa",
            Algorithm::Ed25519 => "ed25519",
        }
    }
}

/// Where a key is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    /// Made by a rotation; signs once DNS serves it.
    Pending,
    /// Signs.
    Active,
    /// Replaced; still published until `retire_at`, for mail signed with it
    /// that is still on its way, then deleted.
    Retired,
}

/// One key of a domain: the selector that publishes it, its file (a name
/// in `data_dir/dkim/`) and its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainKey {
    pub selector: String,
    pub algorithm: Algorithm,
    pub file: String,
    pub state: KeyState,
    /// For a retired key: when it stops being published (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retire_at: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum DkimError {
    #[error("cannot generate a DKIM key: {0}")]
    Generate(String),
    #[error("cannot write the DKIM key {0}: {1}")]
    Write(PathBuf, std::io::Error),
    #[error(transparent)]
    Key(#[from] DkimKeyError),
    #[error(
        "a rotation of {domain} is waiting for DNS to serve {selectors}: publish the records \
         `postern dns {domain}` prints; signing switches once they are served"
    )]
    RotationWaiting { domain: String, selectors: String },
}

#[derive(Debug, thiserror::Error)]
pub enum DkimKeyError {
    #[error("no DKIM key for {domain} in {dir}; `postern domain add {domain}` makes one")]
    Missing { domain: String, dir: PathBuf },
    #[error("the DKIM key {0} cannot be read: {1}")]
    Unreadable(PathBuf, String),
    #[error("the DKIM key list {0} cannot be read: {1}")]
    List(PathBuf, String),
}

pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("dkim")
}

fn list_path(data_dir: &Path, domain: &str) -> PathBuf {
    dir(data_dir).join(format!("{domain}.json"))
}

/// The first two keys of a domain. The RSA one kept the file name it had
/// before Ed25519 came, so a record published then stays valid.
fn first_keys(domain: &str) -> [DomainKey; 2] {
    [
        DomainKey {
            selector: "postern".into(),
            algorithm: Algorithm::Rsa,
            file: format!("{domain}.pem"),
            state: KeyState::Active,
            retire_at: None,
        },
        DomainKey {
            selector: "postern-ed25519".into(),
            algorithm: Algorithm::Ed25519,
            file: format!("{domain}.ed25519.pem"),
            state: KeyState::Active,
            retire_at: None,
        },
    ]
}

impl DomainKey {
    pub fn path(&self, data_dir: &Path) -> PathBuf {
        dir(data_dir).join(&self.file)
    }
}

/// The domain's keys: its list, or else those of its first two files that
/// exist. Empty when it has none.
pub fn domain_keys(data_dir: &Path, domain: &str) -> Result<Vec<DomainKey>, DkimKeyError> {
    let list = list_path(data_dir, domain);
    match std::fs::read(&list) {
        Ok(text) => {
            let keys: Vec<DomainKey> = serde_json::from_slice(&text)
                .map_err(|e| DkimKeyError::List(list.clone(), e.to_string()))?;
            // Names in the key directory and DNS labels, nothing else.
            let plain = |s: &str, extra: &[u8]| {
                !s.is_empty()
                    && !s.starts_with('.')
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || extra.contains(&b))
            };
            match keys
                .iter()
                .find(|k| !plain(&k.file, b"._") || !plain(&k.selector, b"."))
            {
                Some(bad) => Err(DkimKeyError::List(
                    list.clone(),
                    format!(
                        "{:?} / {:?} is not a plain file name and selector",
                        bad.file, bad.selector
                    ),
                )),
                None => Ok(keys),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(first_keys(domain)
            .into_iter()
            .filter(|k| k.path(data_dir).exists())
            .collect()),
        Err(e) => Err(DkimKeyError::List(list, e.to_string())),
    }
}

/// Writes the domain's key list (whole or not at all).
pub(super) fn save_keys(
    data_dir: &Path,
    domain: &str,
    keys: &[DomainKey],
) -> Result<(), DkimError> {
    let path = list_path(data_dir, domain);
    let text = serde_json::to_vec_pretty(keys).map_err(|e| DkimError::Generate(e.to_string()))?;
    crate::private_file::write(&path, &text).map_err(|e| DkimError::Write(path, e))
}

/// Writes a new key of `algorithm` to `file` in the key directory.
pub(super) fn generate(data_dir: &Path, file: &str, algorithm: Algorithm) -> Result<(), DkimError> {
    let kind = match algorithm {
        Algorithm::Rsa => &rcgen::PKCS_RSA_SHA256,
        Algorithm::Ed25519 => &rcgen::PKCS_ED25519,
    };
    let pair =
        rcgen::KeyPair::generate_for(kind).map_err(|e| DkimError::Generate(e.to_string()))?;
    let path = dir(data_dir).join(file);
    crate::private_file::write(&path, pair.serialize_pem().as_bytes())
        .map_err(|e| DkimError::Write(path, e))
}

/// For `postern domain add`: makes whichever of the first two keys is
/// missing (a domain that was rotated keeps its keys); returns the set.
pub fn ensure_keys(data_dir: &Path, domain: &str) -> Result<Vec<DomainKey>, DkimError> {
    if !list_path(data_dir, domain).exists() {
        for key in first_keys(domain) {
            if !key.path(data_dir).exists() {
                generate(data_dir, &key.file, key.algorithm)?;
            }
        }
    }
    Ok(domain_keys(data_dir, domain)?)
}

/// The TXT record values that publish the domain's keys, pending and
/// retired ones included (RFC 6376 §3.6.1; RFC 8463 §4 for Ed25519, whose
/// `p=` is the bare 32-octet key).
pub fn public_records(
    data_dir: &Path,
    domain: &str,
) -> Result<Vec<(DomainKey, String)>, DkimKeyError> {
    let keys = domain_keys(data_dir, domain)?;
    if keys.is_empty() {
        return Err(DkimKeyError::Missing {
            domain: domain.to_string(),
            dir: dir(data_dir),
        });
    }
    keys.into_iter()
        .map(|key| {
            let record = public_record(&key.path(data_dir), key.algorithm)?;
            Ok((key, record))
        })
        .collect()
}

fn public_record(path: &Path, algorithm: Algorithm) -> Result<String, DkimKeyError> {
    let unreadable = |e: String| DkimKeyError::Unreadable(path.to_path_buf(), e);
    let pem = std::fs::read_to_string(path).map_err(|e| unreadable(e.to_string()))?;
    let pair = rcgen::KeyPair::from_pem(&pem).map_err(|e| unreadable(e.to_string()))?;
    let public = match algorithm {
        Algorithm::Rsa => pair.subject_public_key_info(),
        Algorithm::Ed25519 => pair.public_key_raw().to_vec(),
    };
    let p = base64::engine::general_purpose::STANDARD.encode(public);
    Ok(format!("v=DKIM1; k={}; p={p}", algorithm.tag()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_keys_are_made_once_and_published() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = ensure_keys(dir.path(), "example.com").expect("keys");
        let pem = std::fs::read(first[0].path(dir.path())).expect("rsa key");
        ensure_keys(dir.path(), "example.com").expect("again");
        assert_eq!(
            std::fs::read(first[0].path(dir.path())).expect("rsa key"),
            pem
        );
        let records = public_records(dir.path(), "example.com").expect("records");
        assert_eq!(records.len(), 2);
        assert!(
            records[0].1.starts_with("v=DKIM1; k=rsa; p=MIIB"),
            "{}",
            records[0].1
        );
        let ed = records[1]
            .1
            .strip_prefix("v=DKIM1; k=ed25519; p=")
            .expect("ed25519");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(ed)
            .expect("base64");
        assert_eq!(raw.len(), 32);
    }

    #[test]
    fn a_domain_without_keys_is_named_with_the_command_that_makes_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = public_records(dir.path(), "example.org").expect_err("no keys");
        assert!(
            err.to_string().contains("postern domain add example.org"),
            "{err}"
        );
    }
}
