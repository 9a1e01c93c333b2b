//! DANE (RFC 7672) against a real DNSSEC-signed zone served by BIND
//! (common/signed_dns.rs): MX hosts with signed TLSA records get mail only
//! over TLS whose certificate matches them; a host without TLSA records
//! gets it as before. Records an attacker on the path changed after
//! signing (a TLSA for its own key, an MX pointing to itself) get no mail.

use std::path::Path;
use std::time::Duration;

use crate::common::https::{HttpsServer, tls_report_totals};
use crate::common::signed_dns::SignedZone;
use crate::common::*;
use crate::delivery::{send, show_after_attempt};

/// The SHA-256 of what openssl's `pipeline` (given the PEM file) prints.
fn sha256_of(pem: &Path, pipeline: &str) -> String {
    require_tool("openssl");
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl x509 -in '{}' {pipeline} | openssl dgst -sha256 -hex",
            pem.display()
        ))
        .output()
        .expect("openssl");
    let text = String::from_utf8_lossy(&out.stdout);
    text.rsplit(' ').next().expect("digest").trim().to_string()
}

/// The SHA-256 of a certificate's public key (TLSA 3 1 1).
fn spki_sha256(cert: &Path) -> String {
    sha256_of(cert, "-pubkey -noout | openssl pkey -pubin -outform DER")
}

/// The SHA-256 of a whole certificate (TLSA 2 0 1 for a CA).
fn cert_sha256(cert: &Path) -> String {
    sha256_of(cert, "-outform DER")
}

/// A receiver on 127.0.0.`last` presenting `cert` (a PEM chain) and `key`.
fn peer_with(last: u8, port: u16, cert: &Path, key: &Path) -> Peer {
    Peer::start(
        format!("127.0.0.{last}:{port}").parse().expect("addr"),
        &[
            "--cert",
            cert.to_str().expect("path"),
            "--key",
            key.to_str().expect("path"),
        ],
    )
}

/// A receiver with a self-signed certificate for `name`, and its key's digest.
fn tls_peer(last: u8, port: u16, name: &str) -> (Peer, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("dir");
    let (cert, key) = self_signed(dir.path(), &[name]);
    (peer_with(last, port, &cert, &key), spki_sha256(&cert), dir)
}

/// A server resolving through `zone` and delivering to MX port `port`, and
/// the queue ids of one message sent to each of `domains` (under dane.test).
/// TLS reports go out every 3 s, over HTTPS to servers with certificates
/// from `reports_ca` when given.
fn send_to_each(
    zone: &SignedZone,
    port: u16,
    reports_ca: Option<&Path>,
    domains: &[&str],
) -> (TestServer, Vec<String>) {
    let mut s = TestServer::configure(&TestServer::config_for(&format!(
        "trusted_networks = [\"127.0.0.1/32\"]\n[delivery]\nmx_port = {port}\n{}retry_min = 60\n\
         retry_max = 120\ntimeout = 5\nconnect_timeout = 3\ntls_reports = true\n\
         tls_report_interval = 3\n",
        zone.delivery_config()
    )));
    if let Some(ca) = reports_ca {
        s.env
            .push(("SSL_CERT_FILE".into(), ca.to_str().expect("ca").into()));
    }
    s.add_alice();
    s.spawn();
    let ids = domains
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
    (s, ids)
}

/// `postern queue show` of message `id`, after its first attempt, says `why`.
fn says_why(s: &TestServer, id: &str, why: &str) {
    let show = show_after_attempt(s, id);
    assert!(show.contains(why), "{show}\n{}", s.log());
}

#[test]
fn mx_hosts_with_signed_tlsa_records_get_mail_only_over_matching_tls() {
    let port = free_port();
    let (good, good_key, _g) = tls_peer(71, port, "mx-good.dane.test");
    let (wrong, _, _w) = tls_peer(72, port, "mx-wrong.dane.test");
    let plain = Peer::start(format!("127.0.0.73:{port}").parse().expect("addr"), &[]);
    let untagged = Peer::start(format!("127.0.0.74:{port}").parse().expect("addr"), &[]);
    // The TLS reports of every domain go to an HTTPS server.
    let reports_dir = tempfile::tempdir().expect("dir");
    let (reports_ca, reports_cert, reports_key) =
        ca_signed(reports_dir.path(), &["tlsrpt.dane.test"]);
    let https_port = free_port();
    let _reports = HttpsServer::start(
        format!("127.0.0.80:{https_port}").parse().expect("addr"),
        &reports_cert,
        &reports_key,
        reports_dir.path(),
    );
    let mut records = String::from("tlsrpt A 127.0.0.80\n");
    for (name, last, tlsa) in [
        ("good", 71, true),
        ("wrong", 72, true),
        ("plain", 73, true),
        ("none", 74, false),
    ] {
        records.push_str(&format!(
            "{name} MX 10 mx-{name}\nmx-{name} A 127.0.0.{last}\n\
             _smtp._tls.{name} TXT \"v=TLSRPTv1; rua=https://tlsrpt.dane.test:{https_port}/r\"\n"
        ));
        if tlsa {
            // Every host is told to present the good host's key.
            records.push_str(&format!("_{port}._tcp.mx-{name} TLSA 3 1 1 {good_key}\n"));
        }
    }
    // No MX records: the domain is its own host, under its own TLSA
    // records (RFC 7672 §2.2.1), which name another key than it presents.
    let (implicit, _, _i) = tls_peer(81, port, "implicit.dane.test");
    records.push_str(&format!(
        "implicit A 127.0.0.81\n_{port}._tcp.implicit TLSA 3 1 1 {good_key}\n"
    ));
    let zone = SignedZone::start("dane.test", &records);
    let (s, ids) = send_to_each(
        &zone,
        port,
        Some(&reports_ca),
        &["good", "wrong", "plain", "none", "implicit"],
    );
    let got = good.wait_for(1, Duration::from_secs(30));
    assert_eq!(got[0]["tls"], true, "{}", s.log());
    let got = untagged.wait_for(1, Duration::from_secs(30));
    assert_eq!(got[0]["tls"], false, "no TLSA records: as before");
    says_why(&s, &ids[1], "matches none of the host's TLSA records");
    says_why(&s, &ids[2], "its TLSA records (DANE)");
    says_why(&s, &ids[4], "matches none of the host's TLSA records");
    assert!(
        wrong.received().is_empty()
            && plain.received().is_empty()
            && implicit.received().is_empty()
    );
    // "TLS-Required: No" (RFC 8689 §3): the TLSA records are not applied.
    send(
        &s,
        "app@example.com",
        &["x@plain.dane.test"],
        "TLS-Required: No\nSubject: waived\n\nx\n",
    );
    let got = plain.wait_for(1, Duration::from_secs(30));
    assert!(
        got[0]["data"]
            .as_str()
            .expect("data")
            .contains("Subject: waived")
    );
    assert_eq!(got[0]["tls"], false, "no STARTTLS offered");
    // The TLS reports (RFC 8460), POSTed: each host's sessions under its
    // TLSA records; the waived message's session is left out.
    let wanted = [
        "good.dane.test tlsa success>=1 failures=[]",
        "wrong.dane.test tlsa success=0 failures=['validation-failure mx-wrong.dane.test']",
        "plain.dane.test tlsa success=0 failures=['starttls-not-supported mx-plain.dane.test']",
        "none.dane.test no-policy-found success=0 failures=['starttls-not-supported mx-none.dane.test']",
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let read = tls_report_totals(&[], reports_dir.path());
        if wanted.iter().all(|w| read.contains(w)) {
            assert_eq!(read.lines().count(), wanted.len(), "{read}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{read}\n{}", s.log());
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A receiver presenting a certificate for `name` issued by a CA made for
/// it, the CA certificate sent along; and the CA certificate.
fn ca_peer(last: u8, port: u16, name: &str) -> (Peer, std::path::PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("dir");
    let (ca, cert, key) = ca_signed(dir.path(), &[name]);
    let chain = dir.path().join("chain.pem");
    let text =
        std::fs::read_to_string(&cert).expect("cert") + &std::fs::read_to_string(&ca).expect("ca");
    std::fs::write(&chain, text).expect("write chain");
    (peer_with(last, port, &chain, &key), ca, dir)
}

#[test]
fn dane_ta_checks_the_chain_and_name_and_forged_records_get_no_mail() {
    let port = free_port();
    let (ta, ta_ca, _t) = ca_peer(75, port, "mx-ta.dane.test");
    let (misnamed, misnamed_ca, _m) = ca_peer(76, port, "elsewhere.example");
    let (forged, forged_key, _f) = tls_peer(77, port, "mx-forged.dane.test");
    let rightful = Peer::start(format!("127.0.0.78:{port}").parse().expect("addr"), &[]);
    let attacker = Peer::start(format!("127.0.0.79:{port}").parse().expect("addr"), &[]);
    let zeros = "0".repeat(64);
    let records = format!(
        "ta MX 10 mx-ta\nmx-ta A 127.0.0.75\n_{port}._tcp.mx-ta TLSA 2 0 1 {ta}\n\
         misnamed MX 10 mx-misnamed\nmx-misnamed A 127.0.0.76\n\
         _{port}._tcp.mx-misnamed TLSA 2 0 1 {misnamed}\n\
         forged MX 10 mx-forged\nmx-forged A 127.0.0.77\n_{port}._tcp.mx-forged TLSA 3 1 1 {zeros}\n\
         forgedmx MX 10 mx-rightful\nmx-rightful A 127.0.0.78\nmx-attacker A 127.0.0.79\n",
        ta = cert_sha256(&ta_ca),
        misnamed = cert_sha256(&misnamed_ca),
    );
    // The attacker's TLSA names its own key; its MX names its own host.
    let tlsa_owner = format!("_{port}._tcp.mx-forged");
    let forged_tlsa = format!("3 1 1 {forged_key}");
    let zone = SignedZone::start_forged(
        "dane.test",
        &records,
        &[
            (&tlsa_owner, "TLSA", &forged_tlsa),
            ("forgedmx", "MX", "10 mx-attacker.dane.test."),
        ],
    );
    let (s, ids) = send_to_each(&zone, port, None, &["ta", "misnamed", "forged", "forgedmx"]);
    let got = ta.wait_for(1, Duration::from_secs(30));
    assert_eq!(got[0]["tls"], true, "{}", s.log());
    says_why(&s, &ids[1], "not valid for name \"mx-misnamed.dane.test\"");
    says_why(
        &s,
        &ids[2],
        "the TLSA records of mx-forged.dane.test: the answer does not validate (DNSSEC)",
    );
    says_why(
        &s,
        &ids[3],
        "the MX records of forgedmx.dane.test: the answer does not validate (DNSSEC)",
    );
    for (peer, what) in [
        (&misnamed, "a name the certificate is not for"),
        (&forged, "a forged TLSA record"),
        (&attacker, "a forged MX record"),
        (&rightful, "an MX it was not named by"),
    ] {
        assert!(peer.received().is_empty(), "{what}: mail delivered");
    }
}
