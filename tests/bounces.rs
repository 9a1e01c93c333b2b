//! What the sender is told when delivery fails: one DSN per round with each
//! recipient's reason in plain words (chosen by the kind of failure, not its
//! wording), the expiry notice, the reason for long lines, and what `postern
//! queue show` says meanwhile. The delivery setup is `delivery.rs`'s.

use crate::common::*;
use crate::delivery::{WAIT, at, ip, parse_dsn, send, sender, show_after_attempt, wait_maildir};

#[test]
fn each_recipient_gets_its_own_outcome_and_failures_one_dsn() {
    let dns = TestDns::start();
    let port = free_port();
    dns.mx("remote.example", 10, "mx.remote.example");
    dns.ip("mx.remote.example", ip(7));
    let peer = Peer::start(at(7, port), &[]);
    let s = sender(&dns, port, "");
    let id = send(
        &s,
        "alice@example.com",
        &[
            "ok@remote.example",
            "defer@remote.example",
            "reject@remote.example",
        ],
        "Subject: three\n\nbody\n",
    );
    assert_eq!(
        peer.wait_for(1, WAIT)[0]["rcpt_tos"],
        serde_json::json!(["ok@remote.example"])
    );
    // The refusal comes back to alice as one DSN, delivered to her mailbox.
    let dsn = wait_maildir(&s, "example.com", "alice", 1);
    let parsed = parse_dsn(&s, &dsn[0]);
    assert!(
        parsed.contains("type: multipart/report delivery-status"),
        "{parsed}"
    );
    assert!(parsed.contains("return-path: <>"), "{parsed}");
    assert!(
        parsed.contains("subject: Undelivered Mail Returned to Sender"),
        "{parsed}"
    );
    assert!(
        parsed.contains("parts: text/plain,message/delivery-status,message/rfc822"),
        "{parsed}"
    );
    assert!(
        parsed.contains(
            "<reject@remote.example>: the receiving server said the mailbox does not exist."
        ),
        "{parsed}"
    );
    assert!(
        parsed.contains("field: Final-Recipient: rfc822; reject@remote.example"),
        "{parsed}"
    );
    assert!(
        parsed.contains("field: Action: failed") && parsed.contains("field: Status: 5.1.1"),
        "{parsed}"
    );
    assert!(
        parsed.contains("field: Diagnostic-Code: smtp; 550 5.1.1"),
        "{parsed}"
    );
    assert!(
        !parsed.contains("ok@remote.example") && !parsed.contains("defer@"),
        "only the failed recipient: {parsed}"
    );
    // The deferred one waits in the queue with its reason.
    let m: serde_json::Value =
        serde_json::from_str(&s.cli_ok(&["queue", "show", &id, "--json"])).expect("json");
    let rcpts = m["recipients"].as_array().expect("array");
    let deferred = rcpts
        .iter()
        .find(|r| r["address"] == "defer@remote.example")
        .expect("deferred recipient");
    assert_eq!(deferred["status"], "queued");
    assert!(deferred["attempts"].as_u64() >= Some(1));
    assert!(
        deferred["last_reply"]
            .as_str()
            .expect("reply")
            .contains("451 4.2.0 Try again later"),
        "{deferred}"
    );
    assert!(
        rcpts
            .iter()
            .all(|r| r["address"] == "defer@remote.example" || r["status"] != "queued")
    );
}

/// Issue #9 item 8: a remote server's reply is shown escaped in the log and
/// in `postern queue show`.
#[test]
fn a_remote_reply_with_terminal_escapes_is_shown_escaped() {
    let dns = TestDns::start();
    let port = free_port();
    dns.mx("remote.example", 10, "mx.remote.example");
    dns.ip("mx.remote.example", ip(63));
    let _peer = Peer::start(at(63, port), &[]);
    let s = sender(&dns, port, "");
    let id = send(
        &s,
        "app@example.com",
        &["escape@remote.example"],
        "Subject: x\n\nx\n",
    );
    let escaped = r"451 4.2.0 \x1b[31mred\x1b[0m\x07\x7f\u{9b}2J try later";
    let show = show_after_attempt(&s, &id);
    assert!(show.contains(escaped), "{show}");
    // The kind of failure, stored with the outcome, in plain words.
    assert!(
        show.contains("why:      the other server refused it at"),
        "{show}"
    );
    let log = s.log();
    assert!(log.contains(escaped), "{log}");
    for text in [show, log] {
        assert!(
            !text.contains(['\x1b', '\x07', '\x7f', '\u{9b}']),
            "{text:?}"
        );
    }
}

#[test]
fn a_message_that_outlives_its_lifetime_bounces_with_the_reason() {
    let dns = TestDns::start();
    dns.mx("remote.example", 10, "mx.remote.example");
    dns.ip("mx.remote.example", ip(9));
    let port = free_port();
    let s = sender(&dns, port, "max_lifetime = 3\n");
    send(
        &s,
        "alice@example.com",
        &["bob@remote.example"],
        "Subject: old\n\nx\n",
    );
    let dsn = wait_maildir(&s, "example.com", "alice", 1);
    let parsed = parse_dsn(&s, &dsn[0]);
    assert!(parsed.contains("field: Status: 4.4.7"), "{parsed}");
    assert!(
        parsed.contains("no server of remote.example could be reached on port"),
        "{parsed}"
    );
    assert!(
        parsed.contains(&format!("outbound port {port} may be blocked")),
        "{parsed}"
    );
    assert!(s.log().contains("event=\"expired\""));
}

/// Issue #10 item 2: the DSN explains by the kind of failure stored with the
/// outcome. An MX that answers, if only with 421, is not a blocked port, though
/// no server of the domain took the message.
#[test]
fn an_mx_that_answers_421_until_expiry_is_not_called_a_blocked_port() {
    let dns = TestDns::start();
    let port = free_port();
    dns.mx("remote.example", 10, "mx.remote.example");
    dns.ip("mx.remote.example", ip(64));
    let _peer = BrokenPeer::start(at(64, port), "421");
    let s = sender(&dns, port, "max_lifetime = 4\n");
    let id = send(
        &s,
        "alice@example.com",
        &["bob@remote.example"],
        "Subject: old\n\nx\n",
    );
    let show = show_after_attempt(&s, &id);
    assert!(
        show.contains("why:      the other server refused it at the greeting"),
        "{show}"
    );
    let dsn = wait_maildir(&s, "example.com", "alice", 1);
    let parsed = parse_dsn(&s, &dsn[0]);
    assert!(parsed.contains("field: Status: 4.4.7"), "{parsed}");
    assert!(parsed.contains("421 4.3.2"), "{parsed}");
    assert!(!parsed.contains("may be blocked"), "{parsed}");
    assert!(s.log().contains("kind=reply@greeting"), "{}", s.log());
}

#[test]
fn long_lines_go_out_reencoded_or_bounce_with_the_reason() {
    let dns = TestDns::start();
    let port = free_port();
    dns.mx("remote.example", 10, "mx.remote.example");
    dns.ip("mx.remote.example", ip(13));
    // aiosmtpd refuses lines over 1001 octets (RFC 5321's limit with a
    // stuffing dot), as some real servers do.
    let peer = Peer::start(at(13, port), &[]);
    let s = sender(&dns, port, "");
    let line = "0123456789 ".repeat(500);
    // Submitted mail is re-encoded before it is queued, so the receiver takes it.
    let r = alice_submits(
        s.addr("submission"),
        &format!("From: alice@example.com\nSubject: wide\n\n{line}\n"),
    );
    assert!(r.starts_with("250 "), "{r}");
    let got = peer.wait_for(1, WAIT);
    let data = got[0]["data"].as_str().expect("data");
    assert!(
        data.contains("Content-Transfer-Encoding: quoted-printable")
            && data
                .split_once("\r\n\r\n")
                .is_some_and(|(_, body)| body.lines().all(|l| l.len() <= 76)),
        "{data}"
    );
    // Mail from another server goes on as it came; the refusal comes back
    // to the sender in plain words.
    send(
        &s,
        "alice@example.com",
        &["bob@remote.example"],
        &format!("Subject: wide\n\n{line}\n"),
    );
    let dsn = wait_maildir(&s, "example.com", "alice", 1);
    let parsed = parse_dsn(&s, &dsn[0]);
    assert!(
        parsed.contains("<bob@remote.example>: the message had lines longer than 998 characters, which the receiving server refused."),
        "{parsed}"
    );
    assert!(
        parsed.contains("field: Diagnostic-Code: smtp; 500 Line too long"),
        "{parsed}"
    );
}
