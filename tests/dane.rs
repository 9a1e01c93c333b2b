//! DANE (RFC 7672) against a real DNSSEC-signed zone served by BIND
//! (common/signed_dns.rs): MX hosts with signed TLSA records get mail only
//! over TLS whose certificate matches them; a host without TLSA records
//! gets it as before.

use std::path::Path;
use std::time::Duration;

use crate::common::signed_dns::SignedZone;
use crate::common::*;
use crate::delivery::{send, show_after_attempt};

/// The SHA-256 of a certificate's public key (TLSA 3 1 1), by openssl.
fn spki_sha256(cert: &Path) -> String {
    require_tool("openssl");
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl x509 -in '{}' -pubkey -noout | openssl pkey -pubin -outform DER | \
             openssl dgst -sha256 -hex",
            cert.display()
        ))
        .output()
        .expect("openssl");
    let text = String::from_utf8_lossy(&out.stdout);
    text.rsplit(' ').next().expect("digest").trim().to_string()
}

fn tls_peer(last: u8, port: u16, name: &str) -> (Peer, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("dir");
    let (cert, key) = self_signed(dir.path(), &[name]);
    let peer = Peer::start(
        format!("127.0.0.{last}:{port}").parse().expect("addr"),
        &[
            "--cert",
            cert.to_str().expect("path"),
            "--key",
            key.to_str().expect("path"),
        ],
    );
    let digest = spki_sha256(&cert);
    (peer, digest, dir)
}

#[test]
fn mx_hosts_with_signed_tlsa_records_get_mail_only_over_matching_tls() {
    let port = free_port();
    let (good, good_key, _g) = tls_peer(71, port, "mx-good.dane.test");
    let (wrong, _, _w) = tls_peer(72, port, "mx-wrong.dane.test");
    let plain = Peer::start(format!("127.0.0.73:{port}").parse().expect("addr"), &[]);
    let untagged = Peer::start(format!("127.0.0.74:{port}").parse().expect("addr"), &[]);
    let mut records = String::new();
    for (name, last, tlsa) in [
        ("good", 71, true),
        ("wrong", 72, true),
        ("plain", 73, true),
        ("none", 74, false),
    ] {
        records.push_str(&format!(
            "{name} MX 10 mx-{name}\nmx-{name} A 127.0.0.{last}\n"
        ));
        if tlsa {
            // Every host is told to present the good host's key.
            records.push_str(&format!("_{port}._tcp.mx-{name} TLSA 3 1 1 {good_key}\n"));
        }
    }
    let zone = SignedZone::start("dane.test", &records);
    let s = TestServer::delivering(&format!(
        "trusted_networks = [\"127.0.0.1/32\"]\n[delivery]\nmx_port = {port}\n{}retry_min = 60\n\
         retry_max = 120\ntimeout = 5\nconnect_timeout = 3\n",
        zone.delivery_config()
    ));
    let ids: Vec<String> = ["good", "wrong", "plain", "none"]
        .iter()
        .map(|d| {
            send(
                &s,
                "app@example.com",
                &[&format!("x@{d}.dane.test")],
                &format!("Subject: {d}\n\nx\n"),
            )
        })
        .collect();
    let got = good.wait_for(1, Duration::from_secs(30));
    assert_eq!(got[0]["tls"], true, "{}", s.log());
    let got = untagged.wait_for(1, Duration::from_secs(30));
    assert_eq!(got[0]["tls"], false, "no TLSA records: as before");
    let show = show_after_attempt(&s, &ids[1]);
    assert!(
        show.contains("matches none of the host's TLSA records"),
        "{show}\n{}",
        s.log()
    );
    let show = show_after_attempt(&s, &ids[2]);
    assert!(show.contains("its TLSA records (DANE)"), "{show}");
    assert!(wrong.received().is_empty() && plain.received().is_empty());
}
