//! Port 25: mail from other servers for hosted domains only, and never an open
//! relay, whatever the address tricks.

use crate::common::*;

fn transaction(s: &TestServer, from: &str, rcpt: &str) -> String {
    let (mut c, _) = Raw::connect(s.addr("mta"));
    c.cmd("EHLO peer.test");
    let mail = c.cmd(&format!("MAIL FROM:{from}"));
    assert_eq!(code(&mail), 250, "{from}: {mail}");
    c.cmd(&format!("RCPT TO:{rcpt}"))
}

#[test]
fn hosted_mailboxes_are_accepted_and_unknown_ones_refused() {
    let s = TestServer::start("");
    let out = swaks(
        s.addr("mta"),
        &[
            "--from",
            "someone@remote.example",
            "--to",
            "Alice@EXAMPLE.com",
        ],
    );
    assert!(
        text(&out).contains("250 2.0.0 Ok: queued as"),
        "{}",
        text(&out)
    );
    let body = s.queued_body(s.queue()[0]["id"].as_str().expect("id"));
    assert!(
        body.contains("with ESMTP id ") && body.contains("for <Alice@example.com>"),
        "{body}"
    );
    let r = transaction(&s, "<someone@remote.example>", "<nobody@example.com>");
    assert!(
        r.starts_with("550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown"),
        "{r}"
    );
}

#[test]
fn postmaster_and_null_sender_are_accepted() {
    let s = TestServer::start("");
    assert_eq!(code(&transaction(&s, "<>", "<postmaster>")), 250);
    assert_eq!(code(&transaction(&s, "<>", "<PostMaster>")), 250);
    assert_eq!(
        code(&transaction(&s, "<>", "<postmaster@example.com>")),
        250
    );
    assert_eq!(code(&transaction(&s, "<>", "<alice@example.com>")), 250);
    assert_eq!(code(&transaction(&s, "<>", "<>")), 501);
}

#[test]
fn never_an_open_relay() {
    let s = TestServer::start("");
    let tricks = [
        "<bob@remote.example>",
        "<bob%remote.example@example.com>",
        "<\"bob@remote.example\"@example.com>",
        "<@example.com:bob@remote.example>",
        "<remote.example!bob@example.com>",
        "<bob@remote.example.>",
        "<BOB@REMOTE.EXAMPLE>",
        "<bob@remote.example@example.com>",
        "<bob@[127.0.0.1]>",
        "<\"bob%remote.example\"@example.com>",
        "<bob@example.com@remote.example>",
    ];
    for sender in ["<>", "<alice@example.com>", "<spoof@remote.example>"] {
        for rcpt in tricks {
            let r = transaction(&s, sender, rcpt);
            assert!(
                matches!(code(&r), 501 | 550 | 553 | 554),
                "{sender} -> {rcpt} was accepted: {r}"
            );
        }
    }
    assert!(s.queue().is_empty());
}

#[test]
fn trusted_networks_may_relay_without_auth() {
    let s = TestServer::start("trusted_networks = [\"127.0.0.0/8\"]\n");
    assert_eq!(
        code(&transaction(
            &s,
            "<app@example.com>",
            "<bob@remote.example>"
        )),
        250
    );
}

#[test]
fn authenticated_relay_on_port_25_after_tls() {
    let s = TestServer::start("");
    let ehlo = swaks(s.addr("mta"), &["--tls", "--quit-after", "EHLO"]);
    assert!(
        text(&ehlo).contains("250 AUTH PLAIN LOGIN"),
        "{}",
        text(&ehlo)
    );
    let out = swaks(
        s.addr("mta"),
        &[&["--tls"], &alice_to_bob("LOGIN")[..]].concat(),
    );
    assert!(
        text(&out).contains("250 2.0.0 Ok: queued as"),
        "{}",
        text(&out)
    );
}
