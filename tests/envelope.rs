//! Issue #9, the envelope: who a session is after AUTH, which recipients are
//! ours (also under the server's own host name), duplicate recipients, and the
//! DSN parameters ENVID and ORCPT as clients encode them.

use crate::common::*;
use crate::delivery::wait_maildir;

/// EHLO and MAIL on the MTA port as a trusted client; the MAIL reply.
fn mail(s: &TestServer, from: &str) -> (Raw, String) {
    let (mut c, _) = Raw::connect(s.addr("mta"));
    c.cmd("EHLO client.test");
    let r = c.cmd(&format!("MAIL FROM:{from}"));
    (c, r)
}

fn data(c: &mut Raw) -> String {
    assert_eq!(code(&c.cmd("DATA")), 354);
    c.send(b"Subject: envelope\r\n\r\nx\r\n.\r\n");
    c.reply()
}

#[test]
fn issue_9_auth_in_any_case_with_a_trailing_dot_sends_as_the_account() {
    let s = TestServer::start("");
    let out = swaks(
        s.addr("submission"),
        &[
            "--tls",
            "--auth",
            "PLAIN",
            "--auth-user",
            "Alice@Example.COM.",
            "--auth-password",
            PASSWORD,
            "--from",
            "alice@example.com",
            "--to",
            "bob@remote.example",
            "--header",
            "From: Alice <alice@example.com>",
        ],
    );
    let t = text(&out);
    assert!(
        out.status.success() && t.contains("250 2.0.0 Ok: queued as"),
        "{t}"
    );
    let q = s.queue();
    assert_eq!(q[0]["auth_user"], "alice@example.com", "{q:?}");
    assert!(s.log().contains("event=\"auth_ok\" user=alice@example.com"));
}

#[test]
fn issue_9_accounts_under_the_servers_own_host_name_receive_mail() {
    let s = TestServer::delivering("");
    s.cli_ok(&["domain", "add", "mx.test.example"]);
    s.cli_stdin_ok(
        &["user", "add", "bob@mx.test.example", "--password-stdin"],
        "pw",
    );
    s.cli_ok(&[
        "alias",
        "add",
        "team@mx.test.example",
        "bob@mx.test.example",
    ]);
    // The store's domain list is cached for a second.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (mut c, r) = mail(&s, "<someone@remote.example>");
    assert_eq!(code(&r), 250);
    for rcpt in ["Bob@MX.test.example.", "team@mx.test.example", "postmaster"] {
        let r = c.cmd(&format!("RCPT TO:<{rcpt}>"));
        assert_eq!(code(&r), 250, "{rcpt}: {r}");
    }
    let r = c.cmd("RCPT TO:<nobody@mx.test.example>");
    assert!(r.starts_with("550 5.1.1"), "{r}");
    assert!(data(&mut c).starts_with("250 "));
    wait_maildir(&s, "mx.test.example", "bob", 1);
    // bob by name and through the alias: one copy.
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(wait_maildir(&s, "mx.test.example", "bob", 1).len(), 1);
}

#[test]
fn issue_9_a_recipient_named_twice_is_stored_once() {
    let s = TestServer::start("trusted_networks = [\"127.0.0.1/32\"]\n");
    s.cli_ok(&["alias", "add", "sales@example.com", "alice@example.com"]);
    let (mut c, r) = mail(&s, "<someone@remote.example>");
    assert_eq!(code(&r), 250);
    for rcpt in [
        "alice@example.com",
        "Alice@EXAMPLE.com.",
        "sales@example.com",
        "bob@remote.example",
        "bob@REMOTE.example",
        // A remote server may tell local parts apart by case (RFC 5321 §2.4).
        "Bob@remote.example",
    ] {
        let r = c.cmd(&format!("RCPT TO:<{rcpt}>"));
        assert_eq!(code(&r), 250, "{rcpt}: {r}");
    }
    assert!(data(&mut c).starts_with("250 "));
    let q = s.queue();
    let rcpts: Vec<&str> = q[0]["recipients"]
        .as_array()
        .expect("recipients")
        .iter()
        .map(|r| r["address"].as_str().expect("address"))
        .collect();
    assert_eq!(
        rcpts,
        [
            "alice@example.com",
            "bob@remote.example",
            "Bob@remote.example"
        ]
    );
}

#[test]
fn issue_9_the_recipient_limit_counts_distinct_recipients() {
    let s =
        TestServer::start("trusted_networks = [\"127.0.0.1/32\"]\n[limits]\nmax_recipients = 2\n");
    let (mut c, _) = mail(&s, "<someone@remote.example>");
    for rcpt in ["a@remote.example", "a@remote.example", "b@remote.example"] {
        assert_eq!(code(&c.cmd(&format!("RCPT TO:<{rcpt}>"))), 250, "{rcpt}");
    }
    assert_eq!(code(&c.cmd("RCPT TO:<c@remote.example>")), 452);
}

#[test]
fn issue_9_envid_and_orcpt_are_decoded_and_controls_refused() {
    let s = TestServer::start("");
    for bad in [
        "ENVID=e+0D+0ABcc:+20victim@example.org",
        "ENVID=e+00",
        "ENVID=e+1B[2J",
        "ENVID=e+ZZ",
        "ENVID=e+4",
    ] {
        let (_, r) = mail(&s, &format!("<someone@remote.example> {bad}"));
        assert!(r.starts_with("501 5.5.4 "), "{bad}: {r}");
    }
    let (mut c, r) = mail(&s, "<someone@remote.example>");
    assert_eq!(code(&r), 250);
    for bad in [
        "ORCPT=rfc822;alice@example.com+0D+0AX-Evil:+201",
        "ORCPT=rfc822;alice+7F@example.com",
        "ORCPT=rfc822;alice+Z@example.com",
    ] {
        let r = c.cmd(&format!("RCPT TO:<alice@example.com> {bad}"));
        assert!(r.starts_with("501 5.5.4 "), "{bad}: {r}");
    }
    let (mut c, r) = mail(&s, "<someone@remote.example> ENVID=a+2Bb+3Dc+20d");
    assert_eq!(code(&r), 250, "{r}");
    let r = c.cmd("RCPT TO:<alice@example.com> ORCPT=rfc822;Alice+2Bx@example.com");
    assert_eq!(code(&r), 250, "{r}");
    assert!(data(&mut c).starts_with("250 "));
    let q = s.queue();
    assert_eq!(q[0]["dsn"]["envid"], "a+b=c d");
    assert_eq!(q[0]["recipients"][0]["orcpt"], "rfc822;Alice+x@example.com");
}

/// An alias may reach 1000 addresses; one more defers the message with a
/// reason instead of making 1001 copies.
#[test]
fn issue_9_an_alias_expands_to_at_most_1000_addresses() {
    let s = TestServer::start("");
    let targets: Vec<String> = (0..1000).map(|i| format!("t{i}@remote.example")).collect();
    let mut args = vec!["alias", "add", "big@example.com"];
    args.extend(targets.iter().map(String::as_str));
    s.cli_ok(&args);
    let (mut c, _) = mail(&s, "<someone@remote.example>");
    assert_eq!(code(&c.cmd("RCPT TO:<big@example.com>")), 250);
    assert!(data(&mut c).starts_with("250 "));
    assert_eq!(
        s.queue()[0]["recipients"].as_array().map(Vec::len),
        Some(1000)
    );
    s.cli_ok(&["alias", "add", "big@example.com", "one.more@remote.example"]);
    let (mut c, _) = mail(&s, "<someone@remote.example>");
    assert_eq!(code(&c.cmd("RCPT TO:<big@example.com>")), 250);
    let r = data(&mut c);
    assert!(
        r.starts_with("451 4.3.0 <big@example.com>: alias expands to more than 1000 addresses"),
        "{r}"
    );
    assert!(s.log().contains("event=\"alias_too_large\""));
}
