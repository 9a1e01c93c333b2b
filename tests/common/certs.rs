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

/// Writes a certificate authority and a certificate for `names` it signed
/// into `dir`; returns (ca cert, cert, key).
pub fn ca_signed(dir: &Path, names: &[&str]) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "Postern test CA");
    let ca_cert = ca.self_signed(&ca_key).expect("ca cert");
    let key = KeyPair::generate().expect("key");
    let names: Vec<String> = names.iter().map(ToString::to_string).collect();
    let cert = CertificateParams::new(names)
        .expect("params")
        .signed_by(&key, &Issuer::new(ca, ca_key))
        .expect("cert");
    let paths = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&paths.0, ca_cert.pem()).expect("write ca");
    std::fs::write(&paths.1, cert.pem()).expect("write cert");
    std::fs::write(&paths.2, key.serialize_pem()).expect("write key");
    paths
}
