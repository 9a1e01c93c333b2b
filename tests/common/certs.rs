//! Certificates made per run with rcgen: none committed, none expiring.

use std::path::{Path, PathBuf};

/// Writes a self-signed certificate for `names` into `dir`; returns (cert, key).
pub fn self_signed(dir: &Path, names: &[&str]) -> (PathBuf, PathBuf) {
    let names: Vec<String> = names.iter().map(ToString::to_string).collect();
    let generated = rcgen::generate_simple_self_signed(names).expect("generate certificate");
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, generated.cert.pem()).expect("write cert");
    std::fs::write(&key, generated.signing_key.serialize_pem()).expect("write key");
    (cert, key)
}
