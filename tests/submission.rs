//! Sending as a mail client would: every submission port and mode, with swaks,
//! smtplib and curl; what the stored message looks like.

use crate::common::*;

const BODY: &str = "From: alice@example.com\nTo: bob@remote.example\nSubject: hello\n\nHi Bob.\n";

#[test]
fn swaks_starttls_auth_plain_on_submission() {
    let s = TestServer::start("");
    let out = swaks(
        s.addr("submission"),
        &[&["--tls"], &alice_to_bob("PLAIN")[..]].concat(),
    );
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let line = t
        .lines()
        .find(|l| l.contains("queued as"))
        .expect("queued reply");
    assert!(line.contains("250 2.0.0 Ok: queued as "), "{line}");
    let id = queued_id(line).expect("id");
    let q = s.queue();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0]["id"], id.as_str());
    assert_eq!(q[0]["sender"], "alice@example.com");
    assert_eq!(q[0]["auth_user"], "alice@example.com");
    assert_eq!(q[0]["recipients"][0]["address"], "bob@remote.example");
    let body = s.queued_body(&id);
    assert!(
        body.contains("with ESMTPSA id ") && body.contains(&id),
        "{body}"
    );
    assert!(body.contains("(using TLSv1.3 with cipher "), "{body}");
    // The log follows the message by its id, within the session's span.
    let log = s.log();
    let queued = log
        .lines()
        .find(|l| l.contains("event=\"queued\"") && l.contains(&id))
        .expect("queued log line");
    assert!(queued.contains("sid=S"), "{queued}");
}

#[test]
fn smtplib_implicit_tls_auth_login_and_headers_added() {
    let s = TestServer::start("");
    let body = "From: alice@example.com\nTo: bob@remote.example\nSubject: no date\n\nHi.\n";
    let r = smtplib_send(
        "ssl",
        s.addr("submissions"),
        Some(("alice@example.com", PASSWORD)),
        "alice@example.com",
        "bob@remote.example",
        body,
    );
    assert!(r.starts_with("250 2.0.0 Ok: queued as "), "{r}");
    let stored = s.queued_body(&queued_id(&r).expect("id"));
    // RFC 6409 §8: the submission server adds what the client left out.
    assert!(
        stored.contains("\r\nDate: ") && stored.contains("\r\nMessage-ID: <"),
        "{stored}"
    );
}

#[test]
fn curl_starttls_and_smtps() {
    let s = TestServer::start("");
    for (scheme, role) in [("smtp", "submission"), ("smtps", "submissions")] {
        let out = curl_send(
            scheme,
            s.addr(role),
            "alice@example.com",
            PASSWORD,
            "alice@example.com",
            "bob@remote.example",
            BODY,
        );
        let t = text(&out);
        assert!(out.status.success(), "{scheme}: {t}");
        assert!(t.contains("250 2.0.0 Ok: queued as"), "{scheme}: {t}");
    }
    assert_eq!(s.queue().len(), 2);
}

#[test]
fn mail_before_auth_is_refused_and_auth_is_not_offered_in_plaintext() {
    let s = TestServer::start("");
    let (mut c, greeting) = Raw::connect(s.addr("submission"));
    assert!(
        greeting.starts_with("220 mx.test.example ESMTP"),
        "{greeting}"
    );
    let ehlo = c.cmd("EHLO client.test");
    assert!(
        ehlo.contains("STARTTLS") && !ehlo.contains("AUTH"),
        "{ehlo}"
    );
    assert_eq!(
        code(&c.cmd("AUTH PLAIN AGFsaWNlQGV4YW1wbGUuY29tAHNlY3JldA==")),
        538
    );
    let mail = c.cmd("MAIL FROM:<alice@example.com>");
    assert!(mail.starts_with("530 5.7.0"), "{mail}");
    // After TLS but before AUTH it is still 530.
    let r = swaks(
        s.addr("submission"),
        &[
            "--tls",
            "--from",
            "alice@example.com",
            "--to",
            "bob@remote.example",
            "--quit-after",
            "MAIL",
        ],
    );
    assert!(
        text(&r).contains("530 5.7.0 Authentication required"),
        "{}",
        text(&r)
    );
}

#[test]
fn a_user_sends_only_as_itself() {
    let s = TestServer::start("");
    let auth = [
        "--tls",
        "--auth",
        "PLAIN",
        "--auth-user",
        "alice@example.com",
        "--auth-password",
        PASSWORD,
    ];
    let envelope = swaks(
        s.addr("submission"),
        &[
            &auth[..],
            &["--from", "bob@example.com", "--to", "x@remote.example"],
        ]
        .concat(),
    );
    let t = text(&envelope);
    assert!(t.contains("550 5.7.1 <bob@example.com>: Sender address rejected: not owned by user alice@example.com"), "{t}");
    let header = swaks(
        s.addr("submission"),
        &[
            &auth[..],
            &[
                "--from",
                "alice@example.com",
                "--to",
                "x@remote.example",
                "--header",
                "From: Bob <bob@example.com>",
            ],
        ]
        .concat(),
    );
    let t = text(&header);
    assert!(t.contains("550 5.7.1 Message rejected: header From: <bob@example.com> is not owned by user alice@example.com"), "{t}");
    assert!(s.queue().is_empty());
}

#[test]
fn accounts_added_while_running_work_at_once() {
    let s = TestServer::start("");
    let carol_sends = |password: &str| {
        smtplib_send(
            "starttls",
            s.addr("submission"),
            Some(("carol@example.com", password)),
            "carol@example.com",
            "x@remote.example",
            "From: carol@example.com\n\nhi\n",
        )
    };
    s.cli_stdin_ok(
        &["user", "add", "carol@example.com", "--password-stdin"],
        "carol-pw",
    );
    let r = carol_sends("carol-pw");
    assert!(r.starts_with("250 "), "{r}");
    s.cli_stdin_ok(
        &["user", "passwd", "carol@example.com", "--password-stdin"],
        "new-pw",
    );
    let r = carol_sends("carol-pw");
    assert!(r.starts_with("535 "), "{r}");
    s.cli_ok(&["user", "del", "carol@example.com"]);
    let r = carol_sends("new-pw");
    assert!(r.starts_with("535 "), "{r}");
}
