//! Issue #9, aliases that forward and the bounces they cause: a message that
//! comes back is stopped, a failed forward bounces with the headers only, a
//! recipient named twice gets one copy, and a hostile reply cannot reach the
//! DSN raw.

use std::time::Duration;

use crate::common::*;
use crate::delivery::{WAIT, at, ip, parse_dsn, send, sender, wait_log, wait_maildir};

/// A delivering Postern named mx.`domain`, the MX of `domain`, listening for
/// mail on 127.0.0.`last`:`port` and hosting `domain`, and with `alice` also
/// example.com with alice@example.com.
fn postern_for(dns: &TestDns, domain: &str, last: u8, port: u16, alice: bool) -> TestServer {
    let host = format!("mx.{domain}");
    dns.mx(domain, 10, &host);
    dns.ip(&host, ip(last));
    let mut s = TestServer::configure(&format!(
        "hostname = \"{host}\"\ndata_dir = \"data\"\n[[listener]]\naddr = \"{}\"\nrole = \"mta\"\n\
         [delivery]\nmx_port = {port}\n{}retry_min = 1\nretry_max = 2\ntimeout = 5\nconnect_timeout = 3\n",
        at(last, port),
        dns.config()
    ));
    s.cli_ok(&["domain", "add", domain]);
    if alice {
        s.cli_ok(&["domain", "add", "example.com"]);
        s.cli_stdin_ok(
            &["user", "add", "alice@example.com", "--password-stdin"],
            "pw",
        );
    }
    s.spawn();
    s
}

fn count(s: &TestServer, needle: &str) -> usize {
    s.log().matches(needle).count()
}

/// Two Posterns whose aliases name each other: A forwards x@a.test to
/// y@b.test, B forwards it back; A sees its own Delivered-To mark, refuses
/// the copy with 554 5.4.6, and B bounces once, with the headers only.
#[test]
fn issue_9_two_servers_forwarding_to_each_other_stop_after_one_round_trip() {
    let dns = TestDns::start();
    let port = free_port();
    let a = postern_for(&dns, "a.test", 30, port, true);
    let b = postern_for(&dns, "b.test", 31, port, false);
    dns.mx("example.com", 10, "mx.a.test");
    a.cli_ok(&["alias", "add", "x@a.test", "y@b.test"]);
    b.cli_ok(&["alias", "add", "y@b.test", "x@a.test"]);
    let (mut c, _) = Raw::connect(at(30, port));
    c.cmd("EHLO client.test");
    assert_eq!(code(&c.cmd("MAIL FROM:<alice@example.com>")), 250);
    assert_eq!(code(&c.cmd("RCPT TO:<x@a.test>")), 250);
    assert_eq!(code(&c.cmd("DATA")), 354);
    c.send(b"Subject: round trip\r\n\r\nsecret body\r\n.\r\n");
    assert!(c.reply().starts_with("250 "));
    // B's bounce for the refused copy reaches alice, on A.
    let dsn = wait_maildir(&a, "example.com", "alice", 1);
    let parsed = parse_dsn(&a, &dsn[0]);
    assert!(
        parsed.contains(
            "field: Diagnostic-Code: smtp; 554 5.4.6 mail forwarding loop for <x@a.test>"
        ),
        "{parsed}"
    );
    assert!(
        parsed.contains("parts: text/plain,message/delivery-status,text/rfc822-headers")
            && !dsn[0].contains("secret body"),
        "{}",
        dsn[0]
    );
    assert!(
        dsn[0].contains("Delivered-To: y@b.test\r\nReceived: ")
            && dsn[0].contains("Delivered-To: x@a.test\r\nReceived: "),
        "{}",
        dsn[0]
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(count(&a, "reason=\"forwarding loop\""), 1, "{}", a.log());
    // A queued the message and the bounce; B the forward only.
    assert_eq!(count(&a, "event=\"queued\""), 2, "{}", a.log());
    assert_eq!(count(&b, "event=\"queued\""), 1, "{}", b.log());
    assert_eq!(count(&b, "event=\"dsn_queued\""), 1, "{}", b.log());
}

/// A forwarding server that is not Postern sends the message straight back.
#[test]
fn issue_9_a_message_an_outside_server_sends_back_is_refused() {
    let dns = TestDns::start();
    let port = free_port();
    dns.mx("peer.test", 10, "mx.peer.test");
    dns.ip("mx.peer.test", ip(32));
    let a = postern_for(&dns, "a.test", 33, port, true);
    let returning = format!("127.0.0.33,{port},x@a.test");
    let peer = Peer::start(at(32, port), &["--return-to", &returning]);
    a.cli_ok(&["alias", "add", "x@a.test", "z@peer.test"]);
    let (mut c, _) = Raw::connect(at(33, port));
    c.cmd("EHLO client.test");
    assert_eq!(code(&c.cmd("MAIL FROM:<alice@example.com>")), 250);
    assert_eq!(code(&c.cmd("RCPT TO:<x@a.test>")), 250);
    assert_eq!(code(&c.cmd("DATA")), 354);
    c.send(b"Subject: sent back\r\n\r\nx\r\n.\r\n");
    assert!(c.reply().starts_with("250 "));
    let got = peer.wait_for(1, WAIT);
    assert_eq!(got[0]["rcpt_tos"][0], "z@peer.test");
    // Below the ARC set of the forward and the results of the sender
    // checks, which go first.
    let data = got[0]["data"].as_str().expect("data");
    assert!(
        data.starts_with("ARC-Seal: i=1; a=rsa-sha256; s=postern; d=a.test; cv=none;")
            && data.contains("\r\nAuthentication-Results: mx.a.test;")
            && data.contains("\r\nDelivered-To: x@a.test\r\nReceived: "),
        "{}",
        got[0]["data"]
    );
    assert_eq!(got[0]["returned"], 554, "{}", got[0]);
    assert!(
        got[0]["reply"]
            .as_str()
            .expect("reply")
            .contains("5.4.6 mail forwarding loop for <x@a.test>"),
        "{}",
        got[0]
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(peer.received().len(), 1);
}

/// Anonymous mail to an alias that forwards elsewhere: when the forward is
/// refused, the bounce carries the headers only (no backscatter of the body).
#[test]
fn issue_9_a_failed_forward_of_anonymous_mail_bounces_with_headers_only() {
    let dns = TestDns::start();
    let port = free_port();
    dns.mx("remote.example", 10, "mx.remote.example");
    dns.ip("mx.remote.example", ip(34));
    let _peer = Peer::start(at(34, port), &[]);
    let s = sender(&dns, port, "");
    s.cli_ok(&["alias", "add", "fwd@example.com", "reject@remote.example"]);
    send(
        &s,
        "alice@example.com",
        &["fwd@example.com"],
        "Subject: to be forwarded\n\nthe body\n",
    );
    let dsn = wait_maildir(&s, "example.com", "alice", 1);
    let parsed = parse_dsn(&s, &dsn[0]);
    assert!(
        parsed.contains("parts: text/plain,message/delivery-status,text/rfc822-headers"),
        "{parsed}"
    );
    assert!(
        dsn[0].contains("Subject: to be forwarded") && !dsn[0].contains("the body"),
        "{}",
        dsn[0]
    );
    assert!(
        parsed.contains("field: Original-Recipient: rfc822; fwd@example.com"),
        "{parsed}"
    );
}

/// One address named twice (the domain in another case) reaches the next
/// server once; a remote reply full of controls reaches the DSN as text.
#[test]
fn issue_9_a_duplicate_recipient_gets_one_copy_and_a_hostile_reply_is_defused() {
    let dns = TestDns::start();
    let port = free_port();
    dns.mx("remote.example", 10, "mx.remote.example");
    dns.ip("mx.remote.example", ip(35));
    let peer = Peer::start(at(35, port), &[]);
    let s = sender(&dns, port, "");
    send(
        &s,
        "alice@example.com",
        &[
            "bob@remote.example",
            "bob@Remote.Example",
            "hostile@remote.example",
        ],
        "Subject: twice\n\nx\n",
    );
    let got = peer.wait_for(1, WAIT);
    assert_eq!(
        got[0]["rcpt_tos"],
        serde_json::json!(["bob@remote.example"])
    );
    let dsn = wait_maildir(&s, "example.com", "alice", 1);
    let status = dsn[0]
        .split("Content-Type: message/delivery-status")
        .nth(1)
        .and_then(|rest| rest.split("\r\n--").next())
        .expect("status part");
    assert!(
        !status.contains(|c: char| c.is_control() && c != '\r' && c != '\n'),
        "{status:?}"
    );
    assert!(
        status.contains("Diagnostic-Code: smtp; 550 5.1.1 no ]0;owned  such user\r\n"),
        "{status:?}"
    );
    wait_log(&s, "event=\"delivered\"");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(peer.received().len(), 1);
}

/// One sender gets at most 20 DSNs an hour: the 21st bounce is dropped,
/// logged and counted in /metrics.
#[test]
fn issue_9_bounces_to_one_sender_stop_at_the_hourly_cap() {
    let dns = TestDns::start();
    dns.null_mx("nomail.example");
    let s = sender(&dns, free_port(), "[http]\naddr = \"127.0.0.1:0\"\n");
    for i in 0..21 {
        send(
            &s,
            "alice@example.com",
            &["x@nomail.example"],
            &format!("Subject: fails {i}\n\nx\n"),
        );
    }
    wait_log(&s, "event=\"dsn_suppressed\"");
    wait_maildir(&s, "example.com", "alice", 20);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(wait_maildir(&s, "example.com", "alice", 20).len(), 20);
    assert_eq!(count(&s, "event=\"dsn_suppressed\""), 1);
    require_tool("curl");
    let out = std::process::Command::new("curl")
        .args(["-s", "--max-time", "20"])
        .arg(format!("http://{}/metrics", s.http_addrs()[0]))
        .output()
        .expect("curl");
    let metrics = String::from_utf8_lossy(&out.stdout);
    assert!(
        metrics.contains("postern_dsn_suppressed_total 1"),
        "{metrics}"
    );
}

/// SRS: a message from outside that an alias forwards to another domain
/// leaves with an SRS address of the alias's domain as its sender (the next
/// server's SPF check then asks about a domain this server sends for); a
/// bounce to that address comes back to the original sender; a made-up SRS
/// address is refused.
#[test]
fn a_forward_goes_out_with_an_srs_sender_whose_bounce_finds_the_original() {
    let dns = TestDns::start();
    let port = free_port();
    let a = postern_for(&dns, "a.test", 34, port, false);
    dns.mx("peer.test", 10, "mx.peer.test");
    dns.ip("mx.peer.test", ip(35));
    dns.mx("remote.example", 10, "mx.remote.example");
    dns.ip("mx.remote.example", ip(36));
    let next = Peer::start(at(35, port), &[]);
    let home = Peer::start(at(36, port), &[]);
    a.cli_ok(&["alias", "add", "x@a.test", "z@peer.test"]);
    let (mut c, _) = Raw::connect(at(34, port));
    c.cmd("EHLO client.test");
    assert_eq!(code(&c.cmd("MAIL FROM:<carol@remote.example>")), 250);
    assert_eq!(code(&c.cmd("RCPT TO:<x@a.test>")), 250);
    assert_eq!(code(&c.cmd("DATA")), 354);
    c.send(b"From: carol@remote.example\r\nSubject: forwarded\r\n\r\nhi\r\n.\r\n");
    assert!(c.reply().starts_with("250 "));
    let got = next.wait_for(1, WAIT);
    let srs = got[0]["mail_from"].as_str().expect("sender").to_string();
    assert!(
        srs.starts_with("SRS0=") && srs.ends_with("=remote.example=carol@a.test"),
        "{srs}"
    );

    // The next server bounces it: the bounce reaches carol.
    let (mut c, _) = Raw::connect(at(34, port));
    c.cmd("EHLO mx.peer.test");
    assert_eq!(code(&c.cmd("MAIL FROM:<>")), 250);
    let r = c.cmd(&format!("RCPT TO:<{srs}>"));
    assert_eq!(code(&r), 250, "{r}");
    let forged = srs.replacen("SRS0=", "SRS0=x", 1);
    let r = c.cmd(&format!("RCPT TO:<{forged}>"));
    assert!(r.starts_with("550 5.1.1"), "{r}");
    assert!(r.contains("invalid SRS address"), "{r}");
    assert_eq!(code(&c.cmd("DATA")), 354);
    c.send(b"From: MAILER-DAEMON@peer.test\r\nSubject: Undelivered Mail\r\n\r\nz@peer.test: no such user\r\n.\r\n");
    assert!(c.reply().starts_with("250 "));
    let bounced = home.wait_for(1, WAIT);
    assert_eq!(bounced[0]["rcpt_tos"][0], "carol@remote.example");
    assert_eq!(bounced[0]["mail_from"], "<>");
    // The key is kept: what was sent before a restart still comes back.
    assert!(a.data_dir().join("srs.key").exists());
}
