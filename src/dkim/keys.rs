//! The key files: one RSA-2048 key (selector `postern`, where every receiver
//! can check it) and one Ed25519 key (RFC 8463, selector `postern-ed25519`)
//! per domain, both PKCS#8 PEM, 0600. A message carries a signature for each,
//! so receivers that know Ed25519 get the stronger one and the others still
//! find the RSA one.

use std::path::{Path, PathBuf};

use base64::Engine;
use rcgen::PublicKeyData;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Rsa,
    Ed25519,
}

impl Algorithm {
    /// The `k=` tag of the DNS record.
    pub fn tag(self) -> &'static str {
        match self {
            Algorithm::Rsa => "rsa",
            Algorithm::Ed25519 => "ed25519",
        }
    }
}

/// One key of a domain: the selector that publishes it and its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainKey {
    pub selector: &'static str,
    pub algorithm: Algorithm,
    pub path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum DkimError {
    #[error("cannot generate a DKIM key: {0}")]
    Generate(String),
    #[error("cannot write the DKIM key {0}: {1}")]
    Write(PathBuf, std::io::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum DkimKeyError {
    #[error("no DKIM key for {domain} at {path}; `postern domain add {domain}` makes one")]
    Missing { domain: String, path: PathBuf },
    #[error("the DKIM key {0} cannot be read: {1}")]
    Unreadable(PathBuf, String),
}

/// The files a domain's keys live in, whether they exist or not. The RSA
/// one kept the name it had before Ed25519 came, so its published record
/// stays valid.
pub fn key_files(data_dir: &Path, domain: &str) -> [DomainKey; 2] {
    let dir = data_dir.join("dkim");
    [
        DomainKey {
            selector: "postern",
            algorithm: Algorithm::Rsa,
            path: dir.join(format!("{domain}.pem")),
        },
        DomainKey {
            selector: "postern-ed25519",
            algorithm: Algorithm::Ed25519,
            path: dir.join(format!("{domain}.ed25519.pem")),
        },
    ]
}

/// Makes whichever of the domain's keys is missing; returns them all.
pub fn ensure_keys(data_dir: &Path, domain: &str) -> Result<[DomainKey; 2], DkimError> {
    let keys = key_files(data_dir, domain);
    for key in keys.iter().filter(|k| !k.path.exists()) {
        let algorithm = match key.algorithm {
            Algorithm::Rsa => &rcgen::PKCS_RSA_SHA256,
            Algorithm::Ed25519 => &rcgen::PKCS_ED25519,
        };
        let pair = rcgen::KeyPair::generate_for(algorithm)
            .map_err(|e| DkimError::Generate(e.to_string()))?;
        crate::private_file::write(&key.path, pair.serialize_pem().as_bytes())
            .map_err(|e| DkimError::Write(key.path.clone(), e))?;
    }
    Ok(keys)
}

/// The TXT record values that publish the domain's existing keys (RFC 6376
/// §3.6.1; RFC 8463 §4 for Ed25519, whose `p=` is the bare 32-octet key).
pub fn public_records(
    data_dir: &Path,
    domain: &str,
) -> Result<Vec<(DomainKey, String)>, DkimKeyError> {
    let keys: Vec<DomainKey> = key_files(data_dir, domain)
        .into_iter()
        .filter(|k| k.path.exists())
        .collect();
    if keys.is_empty() {
        return Err(DkimKeyError::Missing {
            domain: domain.to_string(),
            path: key_files(data_dir, domain)[0].path.clone(),
        });
    }
    keys.into_iter()
        .map(|key| {
            let pair = read_pair(&key.path)?;
            let public = match key.algorithm {
                Algorithm::Rsa => pair.subject_public_key_info(),
                Algorithm::Ed25519 => pair.public_key_raw().to_vec(),
            };
            let p = base64::engine::general_purpose::STANDARD.encode(public);
            let record = format!("v=DKIM1; k={}; p={p}", key.algorithm.tag());
            Ok((key, record))
        })
        .collect()
}

fn read_pair(path: &Path) -> Result<rcgen::KeyPair, DkimKeyError> {
    let pem = std::fs::read_to_string(path)
        .map_err(|e| DkimKeyError::Unreadable(path.to_path_buf(), e.to_string()))?;
    rcgen::KeyPair::from_pem(&pem)
        .map_err(|e| DkimKeyError::Unreadable(path.to_path_buf(), e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_keys_are_made_once_and_published() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = ensure_keys(dir.path(), "example.com").expect("keys");
        let pem = std::fs::read(&first[0].path).expect("rsa key");
        ensure_keys(dir.path(), "example.com").expect("again");
        assert_eq!(std::fs::read(&first[0].path).expect("rsa key"), pem);
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
