//! Delivery out of the spool with real parts: a DNS server the test runs,
//! receivers written with aiosmtpd (and a second Postern), on 127.0.0.x.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::common::*;

pub(crate) const WAIT: Duration = Duration::from_secs(30);

pub(crate) fn ip(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

pub(crate) fn at(last: u8, port: u16) -> SocketAddr {
    SocketAddr::new(ip(last), port)
}

/// A delivering server that asks `dns` and reaches MX hosts on `port`.
pub(crate) fn sender(dns: &TestDns, port: u16, extra: &str) -> TestServer {
    TestServer::delivering(&format!(
        "trusted_networks = [\"127.0.0.1/32\"]\n[delivery]\nmx_port = {port}\n{}retry_min = 1\nretry_max = 2\ntimeout = 5\nconnect_timeout = 3\n{extra}",
        dns.config()
    ))
}

/// Sends one message through the server's MTA port as a trusted client.
pub(crate) fn send(s: &TestServer, from: &str, to: &[&str], body: &str) -> String {
    let (mut c, _) = Raw::connect(s.addr("mta"));
    c.cmd("EHLO client.test");
    assert_eq!(code(&c.cmd(&format!("MAIL FROM:<{from}>"))), 250);
    for rcpt in to {
        let r = c.cmd(&format!("RCPT TO:<{rcpt}>"));
        assert_eq!(code(&r), 250, "{rcpt}: {r}");
    }
    assert_eq!(code(&c.cmd("DATA")), 354);
    c.send(body.replace('\n', "\r\n").as_bytes());
    c.send(b".\r\n");
    let r = c.reply();
    assert!(r.starts_with("250 "), "{r}");
    queued_id(&r).expect("id")
}

/// Waits until the queue holds exactly `n` messages.
pub(crate) fn wait_queue(s: &TestServer, n: usize) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let q = s.queue();
        if q.len() == n {
            return q;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "queue has {} messages, not {n}:\n{}",
            q.len(),
            s.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the server's log contains `needle`.
pub(crate) fn wait_log(s: &TestServer, needle: &str) {
    let deadline = std::time::Instant::now() + WAIT;
    while !s.log().contains(needle) {
        assert!(
            std::time::Instant::now() < deadline,
            "no {needle:?} in the log:\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `queue show` of message `id` once its first attempt is recorded. The
/// `deferred` log line comes as the outcome is made, before its commit, so
/// the log alone does not say the spool has it yet.
pub(crate) fn show_after_attempt(s: &TestServer, id: &str) -> String {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let show = s.cli_ok(&["queue", "show", id]);
        if !show.contains(", 0 attempts)") || std::time::Instant::now() > deadline {
            return show;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Messages delivered into a local Maildir, oldest first.
fn maildir(s: &TestServer, domain: &str, user: &str) -> Vec<String> {
    let dir = s
        .data_dir()
        .join("mail")
        .join(domain)
        .join(user)
        .join("new");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
        .iter()
        .map(|p| std::fs::read_to_string(p).expect("read"))
        .collect()
}

pub(crate) fn wait_maildir(s: &TestServer, domain: &str, user: &str, n: usize) -> Vec<String> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let m = maildir(s, domain, user);
        if m.len() >= n {
            return m;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{user}@{domain} has {} of {n} messages:\n{}",
            m.len(),
            s.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Parses a DSN with Python's email package and prints the fields the tests check.
const PARSE_DSN: &str = r#"
import email, sys
from email import policy
m = email.message_from_string(open(sys.argv[1]).read(), policy=policy.default)
print("type:", m.get_content_type(), m.get_param("report-type"))
print("from:", m["From"]); print("subject:", m["Subject"]); print("return-path:", m["Return-Path"])
parts = list(m.iter_parts())
print("parts:", ",".join(p.get_content_type() for p in parts))
print("text:", parts[0].get_content().replace("\n", " "))
status = parts[1]
for block in status.get_payload():
    for k, v in block.items():
        print("field:", k + ":", v)
"#;

pub(crate) fn parse_dsn(s: &TestServer, text: &str) -> String {
    let path = s.dir.path().join("dsn.eml");
    std::fs::write(&path, text).expect("write dsn");
    let out = python(PARSE_DSN, &[path.to_str().expect("path")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn delivers_to_the_preferred_mx_over_starttls_and_keeps_the_body_exact() {
    let dns = TestDns::start();
    let port = free_port();
    let certs = tempfile::tempdir().expect("dir");
    let (cert, key) = self_signed(certs.path(), &["mx1.remote.example"]);
    dns.mx("remote.example", 20, "mx2.remote.example");
    dns.mx("remote.example", 10, "mx1.remote.example");
    dns.ip("mx1.remote.example", ip(2));
    dns.ip("mx2.remote.example", ip(3));
    let preferred = Peer::start(
        at(2, port),
        &[
            "--cert",
            cert.to_str().expect("p"),
            "--key",
            key.to_str().expect("p"),
        ],
    );
    let other = Peer::start(at(3, port), &[]);
    let s = sender(&dns, port, "");
    send(
        &s,
        "app@example.com",
        &["bob@remote.example"],
        "Subject: hi\n\n..dot line\nlast line\n",
    );
    let got = preferred.wait_for(1, WAIT);
    assert_eq!(got[0]["mail_from"], "app@example.com");
    assert_eq!(got[0]["rcpt_tos"][0], "bob@remote.example");
    assert_eq!(got[0]["tls"], true, "opportunistic STARTTLS was used");
    let data = got[0]["data"].as_str().expect("data");
    // The receiver unstuffs what Postern stuffed: the line is as the client meant it.
    assert!(
        data.ends_with("Subject: hi\r\n\r\n.dot line\r\nlast line\r\n"),
        "{data:?}"
    );
    assert!(data.starts_with("Received: from client.test"), "{data}");
    assert!(other.received().is_empty());
    wait_queue(&s, 0);
    assert!(s.log().contains("event=\"delivered\""));
}

#[test]
fn tries_every_host_then_the_domains_own_address() {
    let dns = TestDns::start();
    let port = free_port();
    // mx1 refuses (nothing listens on 127.0.0.4), mx2 answers.
    dns.mx("remote.example", 10, "mx1.remote.example");
    dns.mx("remote.example", 20, "mx2.remote.example");
    dns.ip("mx1.remote.example", ip(4));
    dns.ip("mx2.remote.example", ip(5));
    // noMX.example has no MX record, only an address: RFC 5321 §5.1.
    dns.ip("nomx.example", ip(6));
    let second = Peer::start(at(5, port), &[]);
    let implicit = Peer::start(at(6, port), &[]);
    let s = sender(&dns, port, "");
    send(
        &s,
        "app@example.com",
        &["bob@remote.example"],
        "Subject: a\n\nx\n",
    );
    send(
        &s,
        "app@example.com",
        &["carol@nomx.example"],
        "Subject: b\n\nx\n",
    );
    assert_eq!(
        second.wait_for(1, WAIT)[0]["rcpt_tos"][0],
        "bob@remote.example"
    );
    assert_eq!(
        implicit.wait_for(1, WAIT)[0]["rcpt_tos"][0],
        "carol@nomx.example"
    );
}

#[test]
fn null_mx_and_missing_domains_fail_at_once() {
    let dns = TestDns::start();
    dns.null_mx("nomail.example");
    let s = sender(&dns, free_port(), "");
    send(
        &s,
        "alice@example.com",
        &["x@nomail.example"],
        "Subject: n\n\nx\n",
    );
    send(
        &s,
        "alice@example.com",
        &["x@missing.example"],
        "Subject: m\n\nx\n",
    );
    let dsns = wait_maildir(&s, "example.com", "alice", 2);
    let all = dsns.join("\n");
    assert!(
        all.contains("does not accept mail (it publishes a null MX, RFC 7505)"),
        "{all}"
    );
    assert!(
        all.contains("the domain missing.example does not exist"),
        "{all}"
    );
    wait_queue(&s, 0);
}

#[test]
fn deferred_mail_is_retried_and_queue_retry_makes_it_due_now() {
    let dns = TestDns::start();
    let port = free_port();
    dns.mx("remote.example", 10, "mx.remote.example");
    dns.ip("mx.remote.example", ip(8));
    let s = sender(&dns, port, "");
    let id = send(
        &s,
        "app@example.com",
        &["bob@remote.example"],
        "Subject: later\n\nx\n",
    );
    // Nothing listens yet: the attempt fails and is deferred.
    let show = show_after_attempt(&s, &id);
    assert!(
        show.contains("could be reached") && show.contains("1 attempts"),
        "{show}"
    );
    let peer = Peer::start(at(8, port), &[]);
    assert!(s.cli_ok(&["queue", "retry", &id]).contains("due now"));
    peer.wait_for(1, WAIT);
    wait_queue(&s, 0);
}

#[test]
fn a_connection_cut_during_data_is_tried_again() {
    let dns = TestDns::start();
    let port = free_port();
    dns.mx("remote.example", 10, "mx.remote.example");
    dns.ip("mx.remote.example", ip(10));
    let dropper = Peer::start(at(10, port), &["--mode", "drop-data"]);
    let s = sender(&dns, port, "");
    send(
        &s,
        "app@example.com",
        &["bob@remote.example"],
        "Subject: cut\n\nx\n",
    );
    wait_log(&s, "event=\"deferred\"");
    drop(dropper);
    let peer = Peer::start(at(10, port), &[]);
    peer.wait_for(1, WAIT);
    wait_queue(&s, 0);
}

#[test]
fn size_and_smtputf8_limits_of_the_receiver_bounce_plainly() {
    let dns = TestDns::start();
    let port = free_port();
    dns.mx("small.example", 10, "mx.small.example");
    dns.ip("mx.small.example", ip(11));
    dns.mx("ascii.example", 10, "mx.ascii.example");
    dns.ip("mx.ascii.example", ip(12));
    let _small = Peer::start(at(11, port), &["--size", "300"]);
    let _ascii = Peer::start(at(12, port), &["--no-utf8"]);
    let s = sender(&dns, port, "");
    send(
        &s,
        "alice@example.com",
        &["x@small.example"],
        &format!("Subject: big\n\n{}\n", "y".repeat(600)),
    );
    let (mut c, _) = Raw::connect(s.addr("mta"));
    c.cmd("EHLO client.test");
    assert_eq!(code(&c.cmd("MAIL FROM:<alice@example.com> SMTPUTF8")), 250);
    assert_eq!(code(&c.cmd("RCPT TO:<jörg@ascii.example>")), 250);
    c.cmd("DATA");
    c.send(b"Subject: utf8\r\n\r\nx\r\n.\r\n");
    assert!(c.reply().starts_with("250"));
    let all = wait_maildir(&s, "example.com", "alice", 2).join("\n");
    assert!(
        all.contains("is larger than mx.small.example accepts (300 octets)"),
        "{all}"
    );
    assert!(
        all.contains(
            "needs SMTPUTF8 (international addresses), which mx.ascii.example does not support"
        ),
        "{all}"
    );
}

#[test]
fn smarthost_with_required_starttls_and_auth() {
    let dns = TestDns::start();
    let port = free_port();
    let certs = tempfile::tempdir().expect("dir");
    let (cert, key) = self_signed(certs.path(), &["relay.test"]);
    dns.ip("relay.test", ip(13));
    let relay = Peer::start(
        at(13, port),
        &[
            "--cert",
            cert.to_str().expect("p"),
            "--key",
            key.to_str().expect("p"),
            "--require-tls",
            "--auth",
            "relayuser:relaypw",
        ],
    );
    let pw = certs.path().join("relay-password");
    std::fs::write(&pw, "relaypw\n").expect("write");
    let s = sender(
        &dns,
        free_port(),
        &format!(
            "[relay]\nhost = \"relay.test\"\nport = {port}\ntls = \"starttls\"\ntls_verify = false\nusername = \"relayuser\"\npassword_file = \"{}\"\n",
            pw.display()
        ),
    );
    relayed_after_auth(&s, &relay, true);
}

/// Sends a message through `s` and checks that `relay` got it, after AUTH as
/// relayuser, over TLS or not as `tls` says.
fn relayed_after_auth(s: &TestServer, relay: &Peer, tls: bool) {
    send(
        s,
        "app@example.com",
        &["bob@anywhere.example"],
        "Subject: relayed\n\nx\n",
    );
    let got = relay.wait_for(1, WAIT);
    assert_eq!(got[0]["tls"], tls);
    assert!(
        got[0]["auth"].as_str().expect("auth").contains("relayuser"),
        "{}",
        got[0]
    );
    assert_eq!(got[0]["rcpt_tos"][0], "bob@anywhere.example");
}

/// Issue #9 item 12: a relay reached without TLS gets the password only when
/// `allow_plaintext_auth` says the link is private; a `starttls` relay that
/// does not offer STARTTLS gets no AUTH and no mail.
#[test]
fn relay_auth_in_clear_only_when_allowed() {
    let dns = TestDns::start();
    let port = free_port();
    let dir = tempfile::tempdir().expect("dir");
    let pw = dir.path().join("relay-password");
    std::fs::write(&pw, "relaypw\n").expect("write");
    let auth = format!(
        "username = \"relayuser\"\npassword_file = \"{}\"\n",
        pw.display()
    );
    let plain = Peer::start(at(61, port), &["--auth", "relayuser:relaypw"]);
    let s = sender(
        &dns,
        free_port(),
        &format!(
            "[relay]\nhost = \"127.0.0.61\"\nport = {port}\ntls = \"none\"\nallow_plaintext_auth = true\n{auth}"
        ),
    );
    relayed_after_auth(&s, &plain, false);

    let no_starttls = Peer::start(at(62, port), &["--auth", "relayuser:relaypw"]);
    let s = sender(
        &dns,
        free_port(),
        &format!("[relay]\nhost = \"127.0.0.62\"\nport = {port}\ntls = \"starttls\"\n{auth}"),
    );
    send(
        &s,
        "app@example.com",
        &["bob@anywhere.example"],
        "Subject: kept\n\nx\n",
    );
    wait_log(&s, "does not offer STARTTLS, which this relay requires");
    assert!(no_starttls.received().is_empty());
    assert_eq!(wait_queue(&s, 1)[0]["recipients"][0]["status"], "queued");
}

#[test]
fn routes_by_recipient_domain_and_by_sender_domain() {
    let dns = TestDns::start();
    let port = free_port();
    let by_rcpt = Peer::start(at(14, port), &[]);
    let by_sender = Peer::start(at(15, port), &[]);
    let s = sender(
        &dns,
        free_port(),
        &format!(
            "[[route]]\ndomain = \"org.example\"\nhost = \"127.0.0.14\"\nport = {port}\ntls = \"none\"\n\
             [[route]]\nsender_domain = \"customer.example\"\nhost = \"127.0.0.15\"\nport = {port}\ntls = \"none\"\n"
        ),
    );
    send(
        &s,
        "a@customer.example",
        &["x@org.example"],
        "Subject: 1\n\nx\n",
    );
    send(
        &s,
        "a@customer.example",
        &["y@else.example"],
        "Subject: 2\n\nx\n",
    );
    assert_eq!(by_rcpt.wait_for(1, WAIT)[0]["rcpt_tos"][0], "x@org.example");
    assert_eq!(
        by_sender.wait_for(1, WAIT)[0]["rcpt_tos"][0],
        "y@else.example"
    );
}

#[test]
fn local_mailboxes_aliases_and_catch_all() {
    let dns = TestDns::start();
    let port = free_port();
    dns.mx("remote.example", 10, "mx.remote.example");
    dns.ip("mx.remote.example", ip(16));
    let peer = Peer::start(at(16, port), &[]);
    let s = sender(&dns, port, "");
    s.cli_ok(&[
        "alias",
        "add",
        "sales@example.com",
        "alice@example.com",
        "bob@remote.example",
    ]);
    s.cli_ok(&["alias", "add", "@example.com", "alice@example.com"]);
    assert!(
        s.cli_ok(&["alias", "list"])
            .contains("sales@example.com -> alice@example.com, bob@remote.example")
    );
    send(
        &s,
        "someone@else.example",
        &["sales@example.com"],
        "Subject: to sales\n\nx\n",
    );
    send(
        &s,
        "someone@else.example",
        &["anything@example.com"],
        "Subject: to anyone\n\nx\n",
    );
    let mails = wait_maildir(&s, "example.com", "alice", 2);
    assert!(
        mails.iter().any(|m| m.contains("Subject: to sales"))
            && mails.iter().any(|m| m.contains("Subject: to anyone"))
    );
    // The message the alias also forwards to another domain has an SRS
    // sender of the alias's domain, for every copy (they share one envelope,
    // as with postsrsd); the one only delivered here keeps its own.
    let to_sales = mails
        .iter()
        .find(|m| m.contains("Subject: to sales"))
        .expect("sales");
    assert!(
        to_sales.starts_with("Return-Path: <SRS0=")
            && to_sales.contains(
                "=else.example=someone@example.com>\r\nDelivered-To: alice@example.com\r\n"
            ),
        "{to_sales}"
    );
    let to_anyone = mails
        .iter()
        .find(|m| m.contains("Subject: to anyone"))
        .expect("anyone");
    assert!(
        to_anyone.starts_with(
            "Return-Path: <someone@else.example>\r\nDelivered-To: alice@example.com\r\n"
        ),
        "{to_anyone}"
    );
    let got = peer.wait_for(1, WAIT);
    let forwarded_from = got[0]["mail_from"].as_str().expect("sender");
    assert!(
        forwarded_from.starts_with("SRS0=")
            && forwarded_from.ends_with("=else.example=someone@example.com"),
        "{forwarded_from}"
    );
    assert_eq!(got[0]["rcpt_tos"][0], "bob@remote.example");
}

/// A second Postern as the MX of remote.example on 127.0.0.`last`:`port`,
/// hosting bob@remote.example and keeping what it accepts.
fn receiving_postern(dns: &TestDns, last: u8, port: u16) -> TestServer {
    dns.mx("remote.example", 10, "mx.remote.example");
    dns.ip("mx.remote.example", ip(last));
    let mut b = TestServer::configure(&format!(
        "hostname = \"mx.remote.example\"\ndata_dir = \"data\"\n[[listener]]\naddr = \"{}\"\nrole = \"mta\"\n[delivery]\nhold = true\n",
        at(last, port)
    ));
    b.cli_ok(&["domain", "add", "remote.example"]);
    b.cli_stdin_ok(
        &["user", "add", "bob@remote.example", "--password-stdin"],
        "pw",
    );
    b.spawn();
    b
}

#[test]
fn postern_to_postern_with_pipelining_tls_and_dsn_parameters() {
    let dns = TestDns::start();
    let port = free_port();
    let b = receiving_postern(&dns, 17, port);
    let a = sender(&dns, port, "");
    let (mut c, _) = Raw::connect(a.addr("mta"));
    c.cmd("EHLO client.test");
    assert_eq!(
        code(&c.cmd("MAIL FROM:<app@example.com> RET=HDRS ENVID=e-42")),
        250
    );
    assert_eq!(
        code(&c.cmd("RCPT TO:<bob@remote.example> NOTIFY=FAILURE ORCPT=rfc822;bob@remote.example")),
        250
    );
    c.cmd("DATA");
    c.send(b"Subject: a to b\r\n\r\nhello b\r\n.\r\n");
    assert!(c.reply().starts_with("250"));
    wait_queue(&a, 0);
    let q = wait_queue(&b, 1);
    assert_eq!(q[0]["sender"], "app@example.com");
    assert_eq!(q[0]["dsn"]["ret"], "HDRS");
    assert_eq!(q[0]["dsn"]["envid"], "e-42");
    assert_eq!(q[0]["recipients"][0]["notify"], "FAILURE");
    assert_eq!(q[0]["recipients"][0]["orcpt"], "rfc822;bob@remote.example");
    let body = b.queued_body(q[0]["id"].as_str().expect("id"));
    assert!(
        body.contains("with ESMTPS id") && body.ends_with("Subject: a to b\r\n\r\nhello b\r\n"),
        "{body}"
    );
}

/// RFC 2920 with a receiver that pipelines (another Postern): MAIL, RCPT and
/// DATA go in one group, each recipient keeps its own outcome, and a
/// transaction whose recipients were all refused leaves the connection fit
/// for the next message.
#[test]
fn pipelined_transactions_settle_each_recipient_and_keep_the_connection() {
    let dns = TestDns::start();
    let port = free_port();
    let b = receiving_postern(&dns, 41, port);
    let a = sender(&dns, port, "destination_concurrency = 1\n");
    send(
        &a,
        "alice@example.com",
        &["bob@remote.example", "nobody@remote.example"],
        "Subject: one\n\nfirst\n",
    );
    send(
        &a,
        "alice@example.com",
        &["ghost@remote.example"],
        "Subject: two\n\nsecond\n",
    );
    send(
        &a,
        "alice@example.com",
        &["bob@remote.example"],
        "Subject: three\n\nthird\n",
    );
    let q = wait_queue(&b, 2);
    let subjects: Vec<String> = q
        .iter()
        .map(|m| {
            assert_eq!(m["recipients"].as_array().map(Vec::len), Some(1), "{m}");
            assert_eq!(m["recipients"][0]["address"], "bob@remote.example");
            let body = b.queued_body(m["id"].as_str().expect("id"));
            body.lines()
                .find(|l| l.starts_with("Subject:"))
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert_eq!(subjects, ["Subject: one", "Subject: three"]);
    // Both refusals come back to alice, each in its own DSN.
    let dsns = wait_maildir(&a, "example.com", "alice", 2);
    let parsed: Vec<String> = dsns.iter().map(|d| parse_dsn(&a, d)).collect();
    for who in ["nobody", "ghost"] {
        let field = format!("field: Final-Recipient: rfc822; {who}@remote.example");
        assert!(
            parsed
                .iter()
                .any(|p| p.contains(&field) && p.contains("field: Action: failed")),
            "no DSN for {who}: {parsed:?}"
        );
    }
    wait_queue(&a, 0);
}

/// A receiver that answers a pipelined DATA with 354 although it refused every
/// recipient (RFC 2920 says it should not) gets an empty message, then RSET;
/// the recipient bounces with the RCPT refusal. The receiver is a few lines of
/// Python that log what they read.
#[test]
fn a_receiver_taking_data_without_recipients_gets_an_empty_message() {
    const RECEIVER: &str = r#"
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(4)
print("READY", flush=True)
c, _ = s.accept(); f = c.makefile("rb"); log = open(sys.argv[3], "w")
c.sendall(b"220 careless.test ESMTP\r\n")
for line in f:
    cmd = line.decode().strip(); log.write(cmd + "\n"); log.flush()
    verb = cmd.split(" ")[0].upper()
    if verb == "EHLO": c.sendall(b"250-careless.test\r\n250 PIPELINING\r\n")
    elif verb == "MAIL": c.sendall(b"250 ok\r\n")
    elif verb == "RCPT": c.sendall(b"550 5.1.1 no such user\r\n")
    elif verb == "DATA": c.sendall(b"354 go ahead anyway\r\n")
    elif cmd == ".": c.sendall(b"554 5.5.1 no valid recipients\r\n")
    elif verb == "RSET": c.sendall(b"250 reset\r\n")
    elif verb == "QUIT": c.sendall(b"221 bye\r\n"); break
    else: c.sendall(b"500 what\r\n")
"#;
    require_tool("python3");
    let dns = TestDns::start();
    let port = free_port();
    dns.mx("remote.example", 10, "mx.remote.example");
    dns.ip("mx.remote.example", ip(42));
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("commands");
    let mut receiver = std::process::Command::new("python3")
        .args(["-c", RECEIVER, "127.0.0.42", &port.to_string()])
        .arg(&log)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("receiver");
    let mut ready = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(receiver.stdout.take().expect("stdout")),
        &mut ready,
    )
    .expect("ready line");
    assert_eq!(ready.trim(), "READY");
    let a = sender(&dns, port, "");
    send(
        &a,
        "alice@example.com",
        &["ghost@remote.example"],
        "Subject: x\n\nbody\n",
    );
    let dsn = wait_maildir(&a, "example.com", "alice", 1);
    let parsed = parse_dsn(&a, &dsn[0]);
    assert!(
        parsed.contains("field: Diagnostic-Code: smtp; 550 5.1.1"),
        "{parsed}"
    );
    let commands = std::fs::read_to_string(&log).expect("command log");
    let after_data: Vec<&str> = commands
        .lines()
        .skip_while(|l| *l != "DATA")
        .skip(1)
        .take(2)
        .collect();
    assert_eq!(after_data, [".", "RSET"], "{commands}");
    assert!(!commands.contains("body"), "the body was sent: {commands}");
    let _ = receiver.kill();
    let _ = receiver.wait();
}

/// With every claim held by deliveries stuck on a receiver that never
/// answers, the scheduler waits instead of spinning.
#[test]
fn a_full_set_of_claims_does_not_make_the_scheduler_spin() {
    let dns = TestDns::start();
    let port = free_port();
    dns.mx("remote.example", 10, "mx.remote.example");
    dns.ip("mx.remote.example", ip(43));
    let _peer = Peer::start(at(43, port), &["--mode", "hang"]);
    // One delivery at a time, so forty claims fill the scheduler.
    let s = sender(&dns, port, "concurrency = 1\n");
    for n in 0..42 {
        send(
            &s,
            "app@example.com",
            &["bob@remote.example"],
            &format!("Subject: {n}\n\nx\n"),
        );
    }
    let cpu = || {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", s.pid())).expect("stat");
        let fields: Vec<u64> = stat
            .rsplit(") ")
            .next()
            .expect("fields")
            .split(' ')
            .skip(11)
            .take(2)
            .map(|f| f.parse().expect("ticks"))
            .collect();
        fields.iter().sum::<u64>()
    };
    std::thread::sleep(Duration::from_millis(500));
    let before = cpu();
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu() - before;
    // Clock ticks are 1/100 s: a spinning loop would use ~200 here.
    assert!(
        used < 40,
        "the server used {used} ticks of CPU in 2 s while waiting"
    );
}

#[test]
fn delivered_recipients_are_not_sent_again_after_a_restart() {
    let dns = TestDns::start();
    let port = free_port();
    dns.mx("remote.example", 10, "mx.remote.example");
    dns.ip("mx.remote.example", ip(18));
    let peer = Peer::start(at(18, port), &[]);
    let mut s = sender(&dns, port, "");
    let id = send(
        &s,
        "app@example.com",
        &["ok@remote.example", "defer@remote.example"],
        "Subject: once\n\nx\n",
    );
    peer.wait_for(1, WAIT);
    // Kill once the spool knows ok@ is delivered (a kill between the remote 250
    // and that record is the duplicate RFC 5321 §6.1 accepts).
    let deadline = std::time::Instant::now() + WAIT;
    while !s
        .cli_ok(&["queue", "show", &id])
        .contains("ok@remote.example (delivered")
    {
        assert!(std::time::Instant::now() < deadline, "{}", s.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    s.kill();
    s.spawn();
    // Give the restarted server a few retry rounds of the deferred recipient.
    let deadline = std::time::Instant::now() + Duration::from_secs(4);
    while std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let got = peer.received();
    assert_eq!(got.len(), 1, "ok@ was delivered once: {got:?}");
    assert_eq!(wait_queue(&s, 1)[0]["recipients"][1]["status"], "queued");
}

#[test]
fn a_blocked_port_25_is_noticed_and_mail_goes_through_the_fallback_relay() {
    let dns = TestDns::start();
    let port = free_port();
    for (domain, last) in [("a.example", 20u8), ("b.example", 21), ("c.example", 22)] {
        dns.mx(domain, 10, &format!("mx.{domain}"));
        dns.ip(&format!("mx.{domain}"), ip(last));
    }
    // Nothing listens on the MX port of those hosts: every connection is refused,
    // as when the network drops or rejects outbound port 25.
    let relay_port = free_port();
    let fallback = Peer::start(at(23, relay_port), &[]);
    let s = sender(
        &dns,
        port,
        &format!("[fallback_relay]\nhost = \"127.0.0.23\"\nport = {relay_port}\ntls = \"none\"\n"),
    );
    for domain in ["a.example", "b.example", "c.example"] {
        send(
            &s,
            "app@example.com",
            &[&format!("x@{domain}")],
            "Subject: blocked\n\nx\n",
        );
    }
    let got = fallback.wait_for(3, WAIT);
    assert_eq!(got.len(), 3);
    let log = s.log();
    assert!(
        log.contains(&format!("outbound port {port} appears to be blocked")),
        "{log}"
    );
    let list = s.cli_ok(&["queue", "list"]);
    assert!(
        list.contains(&format!(
            "note: outbound port {port} looks blocked (connections to several mail servers failed); \
             mail for MX hosts goes through [fallback_relay] 127.0.0.23:{relay_port}"
        )),
        "{list}"
    );
}

#[test]
fn ipv6_mx_hosts_are_reached() {
    let dns = TestDns::start();
    let port = free_port();
    dns.mx("six.example", 10, "mx.six.example");
    dns.ip("mx.six.example", "::1".parse().expect("ip"));
    let peer = Peer::start(SocketAddr::new("::1".parse().expect("ip"), port), &[]);
    let s = sender(&dns, port, "");
    send(
        &s,
        "app@example.com",
        &["x@six.example"],
        "Subject: v6\n\nx\n",
    );
    assert_eq!(peer.wait_for(1, WAIT)[0]["rcpt_tos"][0], "x@six.example");
}

#[test]
fn a_relay_certificate_is_verified_unless_told_otherwise() {
    let dns = TestDns::start();
    let port = free_port();
    let certs = tempfile::tempdir().expect("dir");
    let (cert, key) = self_signed(certs.path(), &["relay.test"]);
    dns.ip("relay.test", ip(24));
    let relay = Peer::start(
        at(24, port),
        &[
            "--cert",
            cert.to_str().expect("p"),
            "--key",
            key.to_str().expect("p"),
        ],
    );
    let s = sender(
        &dns,
        free_port(),
        &format!("[relay]\nhost = \"relay.test\"\nport = {port}\n"),
    );
    let id = send(
        &s,
        "app@example.com",
        &["bob@anywhere.example"],
        "Subject: verify\n\nx\n",
    );
    let show = show_after_attempt(&s, &id);
    assert!(
        show.contains("STARTTLS failed") && show.to_lowercase().contains("certificate"),
        "{show}"
    );
    assert!(
        relay.received().is_empty(),
        "nothing goes to a relay whose certificate does not verify"
    );
}

#[test]
fn one_connection_carries_several_messages_to_the_same_server() {
    let dns = TestDns::start();
    let port = free_port();
    dns.mx("remote.example", 10, "mx.remote.example");
    dns.ip("mx.remote.example", ip(19));
    let peer = Peer::start(at(19, port), &[]);
    let s = sender(&dns, port, "destination_concurrency = 1\n");
    for n in 0..4 {
        send(
            &s,
            "app@example.com",
            &["bob@remote.example"],
            &format!("Subject: {n}\n\nx\n"),
        );
    }
    let got = peer.wait_for(4, WAIT);
    let ports: std::collections::HashSet<u64> = got
        .iter()
        .map(|m| m["peer_port"].as_u64().expect("port"))
        .collect();
    assert!(
        ports.len() < 4,
        "four messages used {} connections: {ports:?}",
        ports.len()
    );
}

/// Sends one message to each of `rcpts` over one SMTP session (Python's
/// smtplib) from inside namespace `ns`; prints how many went.
const SMTPLIB_SEND_EACH: &str = r#"
import smtplib, sys
host, port, rcpts = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
with smtplib.SMTP(host, port, timeout=20) as s:
    for r in rcpts:
        s.sendmail("app@example.com", [r], "Subject: to %s\r\n\r\nx\r\n" % r)
print("SENT", len(rcpts))
"#;

/// Issue #16, the realistic case: this server sits in a network whose
/// provider blocks outbound port 25 (nftables in the "ISP" namespace, with
/// `rule`), while port 2525 to a relay still works. Six MX hosts beyond the
/// ISP (recipients are address literals, so no DNS is needed inside the
/// namespaces) get five messages each, with the default timings
/// (connect_timeout 30 s, first retry after 5 minutes). Every message must
/// reach the fallback relay within 60 s of being sent, none may be held back
/// as a probe, and within 60 s of the block being lifted new mail goes direct.
fn the_fallback_relay_stands_in_for_a_blocked_port_25(rule: &str) {
    use crate::common::netlab::Lab;
    let lab = Lab::new();
    let hosts: Vec<String> = (3..=8).map(|n| format!("10.77.1.{n}")).collect();
    for host in &hosts {
        lab.sh(&lab.server, &format!("ip addr add {host}/24 dev in0"));
    }
    let mxs: Vec<Peer> = hosts
        .iter()
        .map(|h| {
            Peer::start_in(
                Some(&lab.server),
                format!("{h}:25").parse().expect("addr"),
                &[],
            )
        })
        .collect();
    let relay = Peer::start_in(
        Some(&lab.server),
        "10.77.1.2:2525".parse().expect("addr"),
        &[],
    );
    lab.isp_rules(&[rule], &[]);
    let mut s = TestServer::configure(
        "hostname = \"mx.test.example\"\ndata_dir = \"data\"\ntrusted_networks = [\"127.0.0.1/32\"]\n\
         [[listener]]\naddr = \"127.0.0.1:0\"\nrole = \"mta\"\n[http]\naddr = \"127.0.0.1:0\"\n\
         [fallback_relay]\nhost = \"10.77.1.2\"\nport = 2525\ntls = \"none\"\n",
    );
    s.spawn_in(Some(&lab.client));
    let port = s.port("mta").to_string();
    let send = |rcpts: &[String]| {
        let out = run_with_stdin(
            std::process::Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &lab.client,
                    "python3",
                    "-c",
                    SMTPLIB_SEND_EACH,
                ])
                .args(["127.0.0.1", &port])
                .args(rcpts),
            "",
        );
        assert!(text(&out).starts_with("SENT"), "{}", text(&out));
    };
    let rcpts: Vec<String> = (0..5)
        .flat_map(|n| hosts.iter().map(move |h| format!("m{n}@[{h}]")))
        .collect();
    let first_sent = Instant::now();
    send(&rcpts);
    // Every message was sent after `first_sent`: all there by then + 60 s
    // means each within 60 s of its sending.
    while relay.received().len() < 30 && first_sent.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let got = relay.received();
    let log = s.log();
    assert_eq!(got.len(), 30, "within 60 s: {log}");
    let mut through: Vec<&str> = got
        .iter()
        .map(|m| m["rcpt_tos"][0].as_str().expect("rcpt"))
        .collect();
    through.sort_unstable();
    through.dedup();
    assert_eq!(through.len(), 30, "each once: {through:?}");
    assert!(mxs.iter().all(|mx| mx.received().is_empty()));
    assert!(
        log.contains("mail for MX hosts goes through [fallback_relay] 10.77.1.2:2525"),
        "{log}"
    );
    let list = s.cli_ok(&["queue", "list"]);
    assert!(
        list.contains("goes through [fallback_relay] 10.77.1.2:2525"),
        "the queue says the fallback is in use, not to set it: {list}"
    );
    let metrics = run_with_stdin(
        std::process::Command::new("ip").args([
            "netns",
            "exec",
            &lab.client,
            "curl",
            "-sf",
            &format!("http://{}/metrics", s.http_addrs()[0]),
        ]),
        "",
    );
    let metrics = text(&metrics);
    assert!(
        metrics.contains("postern_delivered_by_path_total{path=\"fallback\"} 30")
            && metrics.contains("postern_delivered_by_path_total{path=\"direct\"} 0"),
        "{metrics}"
    );

    lab.isp_rules(&[], &[]);
    let lifted = Instant::now();
    while !s.log().contains("port25_unblocked") {
        assert!(
            lifted.elapsed() < Duration::from_secs(60),
            "port 25 is open again, and the server does not know: {}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    send(&[format!("after@[{}]", hosts[0])]);
    let direct = mxs[0].wait_for(1, Duration::from_secs(20));
    assert_eq!(direct.len(), 1, "new mail goes direct again: {}", s.log());
    assert_eq!(relay.received().len(), 30);
}

#[test]
fn a_provider_that_drops_port_25_is_detoured_within_a_minute() {
    the_fallback_relay_stands_in_for_a_blocked_port_25("tcp dport 25 drop");
}

#[test]
fn a_provider_that_resets_port_25_is_detoured_within_a_minute() {
    the_fallback_relay_stands_in_for_a_blocked_port_25("tcp dport 25 reject with tcp reset");
}

#[test]
fn a_server_that_never_answers_is_left_behind_for_the_next_mx() {
    let dns = TestDns::start();
    let port = free_port();
    dns.mx("remote.example", 10, "mx1.remote.example");
    dns.mx("remote.example", 20, "mx2.remote.example");
    dns.ip("mx1.remote.example", ip(25));
    dns.ip("mx2.remote.example", ip(26));
    let _hang = Peer::start(at(25, port), &["--mode", "hang"]);
    let second = Peer::start(at(26, port), &[]);
    // timeout = 5 in `sender`: the hung greeting costs five seconds, then mx2.
    let s = sender(&dns, port, "");
    send(
        &s,
        "app@example.com",
        &["bob@remote.example"],
        "Subject: hang\n\nx\n",
    );
    assert_eq!(
        second.wait_for(1, WAIT)[0]["rcpt_tos"][0],
        "bob@remote.example"
    );
    assert!(s.log().contains("no greeting"), "{}", s.log());
}
