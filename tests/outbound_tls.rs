//! TLS of outgoing mail to MX hosts: opportunistic STARTTLS, and what
//! happens when it fails.

use std::time::Duration;

use crate::common::*;
use crate::delivery::{at, ip, send, sender, wait_queue};

const WAIT: Duration = Duration::from_secs(30);

/// An MX whose STARTTLS handshake cannot succeed (it knows only ciphers
/// rustls refuses) gets the message in plaintext at once, on a second
/// connection, as Postfix does at security level "may"; the log says so.
#[test]
fn an_mx_whose_tls_handshake_fails_gets_the_mail_in_plaintext_at_once() {
    let dns = TestDns::start();
    let port = free_port();
    let certs = tempfile::tempdir().expect("dir");
    let (cert, key) = self_signed(certs.path(), &["mx1.remote.example"]);
    dns.mx("remote.example", 10, "mx1.remote.example");
    dns.ip("mx1.remote.example", ip(71));
    let old_server = Peer::start(
        at(71, port),
        &[
            "--cert",
            cert.to_str().expect("path"),
            "--key",
            key.to_str().expect("path"),
            "--legacy-tls",
        ],
    );
    let s = sender(&dns, port, "");
    send(
        &s,
        "app@example.com",
        &["bob@remote.example"],
        "Subject: hi\n\nhello\n",
    );
    let got = old_server.wait_for(1, WAIT);
    assert_eq!(got[0]["tls"], false);
    assert_eq!(got[0]["rcpt_tos"][0], "bob@remote.example");
    wait_queue(&s, 0);
    let log = s.log();
    assert!(
        log.contains("tls_fallback_plaintext") && log.contains("mx1.remote.example"),
        "{log}"
    );
    // Delivered on the first attempt: no retry waited for.
    assert!(!log.contains("event=\"deferred\""), "{log}");
}

/// A relay that must be reached over TLS (`tls = "starttls"`) is never sent
/// the message in plaintext when its handshake fails: it waits, and says why.
#[test]
fn a_relay_that_requires_tls_is_not_sent_plaintext_when_the_handshake_fails() {
    let certs = tempfile::tempdir().expect("dir");
    let (cert, key) = self_signed(certs.path(), &["relay.test"]);
    let relay = Peer::start(
        at(72, free_port()),
        &[
            "--cert",
            cert.to_str().expect("path"),
            "--key",
            key.to_str().expect("path"),
            "--legacy-tls",
        ],
    );
    let s = TestServer::delivering(&format!(
        "trusted_networks = [\"127.0.0.1/32\"]\n[relay]\nhost = \"{}\"\nport = {}\n\
         tls = \"starttls\"\ntls_verify = false\n[delivery]\nretry_min = 1\nretry_max = 2\n",
        relay.addr.ip(),
        relay.addr.port()
    ));
    send(
        &s,
        "app@example.com",
        &["bob@remote.example"],
        "Subject: hi\n\nhello\n",
    );
    let deadline = std::time::Instant::now() + WAIT;
    while !s.log().contains("event=\"deferred\"") {
        assert!(std::time::Instant::now() < deadline, "{}", s.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    assert!(relay.received().is_empty());
    assert!(!s.log().contains("tls_fallback_plaintext"), "{}", s.log());
    let queue = s.queue();
    assert_eq!(queue.len(), 1, "{queue:?}");
}
