//! RFC 5321 and its extensions on the wire: replies for bad input, pipelining,
//! BDAT, DSN and SMTPUTF8 parameters, and every limit at the limit.

use std::time::Duration;

use crate::common::*;

/// A session on port 25 after EHLO, with a valid sender.
fn mta_session(s: &TestServer) -> Raw {
    let (mut c, _) = Raw::connect(s.addr("mta"));
    assert_eq!(code(&c.cmd("EHLO peer.test")), 250);
    c
}

#[test]
fn ehlo_announces_the_extensions() {
    let s = TestServer::start("");
    let (mut c, _) = Raw::connect(s.addr("mta"));
    let ehlo = c.cmd("EHLO peer.test");
    for ext in [
        "PIPELINING",
        "SIZE 26214400",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "STARTTLS",
        "CHUNKING",
        "DSN",
    ] {
        assert!(
            ehlo.contains(&format!("250-{ext}\r\n")) || ehlo.contains(&format!("250 {ext}\r\n")),
            "{ext} missing: {ehlo}"
        );
    }
    assert!(c.cmd("HELO peer.test").starts_with("250 mx.test.example"));
}

#[test]
fn errors_get_the_right_codes() {
    let s = TestServer::start("");
    let (mut c, _) = Raw::connect(s.addr("mta"));
    assert!(
        c.cmd("MAIL FROM:<a@remote.example>")
            .starts_with("503 5.5.1")
    );
    c.cmd("EHLO peer.test");
    assert!(c.cmd("XYZZY").starts_with("500 5.5.1"));
    assert!(
        c.cmd("RCPT TO:<alice@example.com>")
            .starts_with("503 5.5.1")
    );
    assert!(c.cmd("DATA").starts_with("503 5.5.1"));
    assert!(
        c.cmd("MAIL FROM:<a@remote.example> FOO=BAR")
            .starts_with("555 5.5.4")
    );
    assert!(c.cmd("MAIL FROM:<not an address>").starts_with("501 "));
    assert_eq!(code(&c.cmd("MAIL FROM:<a@remote.example>")), 250);
    assert!(
        c.cmd("MAIL FROM:<a@remote.example>")
            .starts_with("503 5.5.1")
    );
    assert!(
        c.cmd("RCPT TO:<alice@example.com> FOO=BAR")
            .starts_with("555 5.5.4")
    );
    assert!(
        c.cmd("DATA").starts_with("554 5.5.1"),
        "DATA without recipients"
    );
    assert!(c.cmd("VRFY alice").starts_with("252 "));
    assert!(c.cmd("NOOP").starts_with("250 2.0.0"));
    assert!(c.cmd("RSET").starts_with("250 2.0.0"));
    assert!(c.cmd("QUIT").starts_with("221 2.0.0"));
    assert!(c.closed());
}

#[test]
fn pipelined_commands_get_their_replies_in_order() {
    let s = TestServer::start("");
    let (mut c, _) = Raw::connect(s.addr("mta"));
    c.send(b"EHLO peer.test\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.com>\r\nRCPT TO:<nobody@example.com>\r\nDATA\r\n");
    assert_eq!(code(&c.reply()), 250);
    assert!(c.reply().starts_with("250 2.1.0"));
    assert!(c.reply().starts_with("250 2.1.5"));
    assert!(c.reply().starts_with("550 5.1.1"));
    assert!(c.reply().starts_with("354 "));
    c.send(b"Subject: p\r\n\r\nbody\r\n.\r\nQUIT\r\n");
    assert!(c.reply().starts_with("250 2.0.0 Ok: queued as"));
    assert!(c.reply().starts_with("221"));
}

#[test]
fn recipients_limit_at_the_limit() {
    let s = TestServer::start("trusted_networks = [\"127.0.0.1\"]\n[limits]\nmax_recipients = 3\n");
    let mut c = mta_session(&s);
    c.cmd("MAIL FROM:<a@remote.example>");
    for i in 0..3 {
        assert_eq!(code(&c.cmd(&format!("RCPT TO:<r{i}@remote.example>"))), 250);
    }
    assert!(
        c.cmd("RCPT TO:<r3@remote.example>")
            .starts_with("452 4.5.3")
    );
}

#[test]
fn size_declared_and_actual_at_the_limit() {
    let s = TestServer::start("[limits]\nmax_message_size = 2000\n");
    let mut c = mta_session(&s);
    assert!(
        c.cmd("MAIL FROM:<a@remote.example> SIZE=2001")
            .starts_with("552 5.3.4")
    );
    assert_eq!(code(&c.cmd("MAIL FROM:<a@remote.example> SIZE=2000")), 250);
    c.cmd("RCPT TO:<alice@example.com>");
    c.cmd("DATA");
    // Exactly 2000 octets of body (after unstuffing) is accepted...
    let line = format!("{}\r\n", "x".repeat(98));
    c.send(line.repeat(20).as_bytes());
    c.send(b".\r\n");
    assert!(c.reply().starts_with("250 2.0.0"));
    // ...and one more is not.
    c.cmd("MAIL FROM:<a@remote.example>");
    c.cmd("RCPT TO:<alice@example.com>");
    c.cmd("DATA");
    c.send(line.repeat(20).as_bytes());
    c.send(b"y\r\n.\r\n");
    let r = c.reply();
    assert!(r.starts_with("552 5.3.4"), "{r}");
    assert_eq!(s.queue().len(), 1);
}

#[test]
fn command_line_length_at_the_limit() {
    let s = TestServer::start("");
    let mut c = mta_session(&s);
    // 512 octets with CRLF is the RFC 5321 minimum: accepted.
    let noop = format!("NOOP {}", "x".repeat(512 - 7));
    assert_eq!(noop.len() + 2, 512);
    assert!(c.cmd(&noop).starts_with("250"));
    let long = format!("NOOP {}", "x".repeat(512 - 6));
    assert!(c.cmd(&long).starts_with("500 5.5.6"));
    // A very long line is consumed whole; its tail is not run as a command.
    let huge = format!("NOOP {}QUIT", "x".repeat(20_000));
    assert!(c.cmd(&huge).starts_with("500 5.5.6"));
    assert!(c.cmd("NOOP").starts_with("250"));
}

#[test]
fn too_many_errors_end_the_session() {
    let s = TestServer::start("[limits]\nmax_errors = 3\n");
    let (mut c, _) = Raw::connect(s.addr("mta"));
    assert!(c.cmd("BOGUS").starts_with("500"));
    assert!(c.cmd("BOGUS").starts_with("500"));
    assert!(c.cmd("BOGUS").starts_with("500"));
    let last = c.reply();
    assert!(last.starts_with("421 4.7.0"), "{last}");
    assert!(c.closed());
}

#[test]
fn idle_clients_are_timed_out() {
    let s = TestServer::start("[limits]\ncommand_timeout = 1\n");
    let (mut c, _) = Raw::connect(s.addr("mta"));
    std::thread::sleep(Duration::from_millis(1500));
    assert!(c.reply().starts_with("421 4.4.2"));
    assert!(c.closed());
}

#[test]
fn connections_per_client_at_the_limit() {
    let s = TestServer::start("[limits]\nmax_connections_per_ip = 2\n");
    let (_a, ga) = Raw::connect(s.addr("mta"));
    let (_b, gb) = Raw::connect(s.addr("submission"));
    let (_c, gc) = Raw::connect(s.addr("mta"));
    assert!(ga.starts_with("220") && gb.starts_with("220"));
    assert!(gc.starts_with("421 4.7.0"), "{gc}");
    drop(_a);
    std::thread::sleep(Duration::from_millis(200));
    let (_d, gd) = Raw::connect(s.addr("mta"));
    assert!(gd.starts_with("220"), "a freed slot is reusable: {gd}");
}

#[test]
fn bdat_chunks_make_one_message() {
    let s = TestServer::start("");
    let mut c = mta_session(&s);
    c.cmd("MAIL FROM:<a@remote.example>");
    c.cmd("RCPT TO:<alice@example.com>");
    c.send(b"BDAT 15\r\nSubject: bdat\r\n");
    assert!(c.reply().starts_with("250 2.0.0 15 octets"));
    c.send(b"BDAT 9 LAST\r\n\r\n.body\r\n");
    let r = c.reply();
    assert!(r.starts_with("250 2.0.0 Ok: queued as"), "{r}");
    let body = s.queued_body(&queued_id(&r).expect("id"));
    assert!(body.ends_with("Subject: bdat\r\n\r\n.body\r\n"), "{body:?}");
    // A refused BDAT still consumes its chunk: the chunk is never run as commands.
    c.send(b"BDAT 6 LAST\r\nQUIT\r\n");
    assert!(c.reply().starts_with("503 5.5.1"));
    assert!(c.cmd("NOOP").starts_with("250"));
}

#[test]
fn dsn_parameters_are_stored() {
    let s = TestServer::start("");
    let mut c = mta_session(&s);
    assert_eq!(
        code(&c.cmd("MAIL FROM:<a@remote.example> RET=HDRS ENVID=abc123")),
        250
    );
    assert_eq!(
        code(&c.cmd(
            "RCPT TO:<alice@example.com> NOTIFY=FAILURE,DELAY ORCPT=rfc822;alice@example.com"
        )),
        250
    );
    c.cmd("DATA");
    c.send(b"Subject: dsn\r\n\r\nx\r\n.\r\n");
    let id = queued_id(&c.reply()).expect("id");
    let m: serde_json::Value =
        serde_json::from_str(&s.cli_ok(&["queue", "show", &id, "--json"])).expect("json");
    assert_eq!(m["dsn"]["ret"], "HDRS");
    assert_eq!(m["dsn"]["envid"], "abc123");
    assert_eq!(m["recipients"][0]["notify"], "FAILURE,DELAY");
    assert_eq!(m["recipients"][0]["orcpt"], "rfc822;alice@example.com");
}

#[test]
fn utf8_addresses_need_smtputf8_and_8bit_bodies_pass() {
    let s = TestServer::start("trusted_networks = [\"127.0.0.1\"]\n");
    let mut c = mta_session(&s);
    assert!(
        c.cmd("MAIL FROM:<jörg@bücher.example>")
            .starts_with("501 5.1.7")
    );
    assert_eq!(
        code(&c.cmd("MAIL FROM:<jörg@bücher.example> SMTPUTF8 BODY=8BITMIME")),
        250
    );
    assert_eq!(code(&c.cmd("RCPT TO:<zoë@exämple.example>")), 250);
    c.cmd("DATA");
    c.send("Subject: ünïcode\r\n\r\nGrüße\r\n.\r\n".as_bytes());
    let id = queued_id(&c.reply()).expect("id");
    let m: serde_json::Value =
        serde_json::from_str(&s.cli_ok(&["queue", "show", &id, "--json"])).expect("json");
    assert_eq!(m["smtputf8"], true);
    assert_eq!(m["recipients"][0]["address"], "zoë@exämple.example");
    assert!(s.queued_body(&id).contains("Grüße"));
}

#[test]
fn port_echo_reports_the_ports_a_probe_token_reached() {
    let s = TestServer::start("");
    let token = "00112233445566778899aabbccddeeff";
    for role in ["mta", "submission"] {
        let (mut c, _) = Raw::connect(s.addr(role));
        assert_eq!(
            code(&c.cmd(&format!("EHLO check-{token}.postern.invalid"))),
            250
        );
    }
    let (mut c, _) = Raw::connect(s.addr("mta"));
    let mut ports = [s.port("mta"), s.port("submission")];
    ports.sort_unstable();
    let r = c.cmd(&format!("NOOP postern-echo {token}"));
    assert_eq!(
        r,
        format!(
            "250 2.0.0 Ok; postern-echo ports={},{}\r\n",
            ports[0], ports[1]
        )
    );
    let r = c.cmd("NOOP postern-echo ffffffffffffffffffffffffffffffff");
    assert_eq!(r, "250 2.0.0 Ok; postern-echo ports=none\r\n");
}

#[test]
fn connections_in_total_at_the_limit() {
    let s = TestServer::start("[limits]\nmax_connections = 2\n");
    let (_a, ga) = Raw::connect(s.addr("mta"));
    let (_b, gb) = Raw::connect(s.addr("submission"));
    assert!(ga.starts_with("220") && gb.starts_with("220"));
    let (_c, gc) = Raw::connect(s.addr("submissions"));
    assert!(gc.starts_with("421 4.7.0"), "{gc}");
}

/// Issue #9 item 13: trusted networks are exempt from the per-client cap (as
/// Postfix exempts mynetworks), but not from the total.
#[test]
fn trusted_networks_are_exempt_from_the_per_client_cap() {
    let s = TestServer::start(
        "trusted_networks = [\"127.0.0.1/32\"]\n[limits]\nmax_connections_per_ip = 3\nmax_connections = 10\n",
    );
    let held: Vec<(Raw, String)> = (0..10).map(|_| Raw::connect(s.addr("mta"))).collect();
    for (i, (_, greeting)) in held.iter().enumerate() {
        assert!(greeting.starts_with("220"), "connection {i}: {greeting}");
    }
    let (_over, g) = Raw::connect(s.addr("mta"));
    assert!(g.starts_with("421 4.7.0"), "the total cap still holds: {g}");

    let s = TestServer::start("[limits]\nmax_connections_per_ip = 3\n");
    let held: Vec<(Raw, String)> = (0..3).map(|_| Raw::connect(s.addr("mta"))).collect();
    assert!(held.iter().all(|(_, g)| g.starts_with("220")));
    let (_fourth, g) = Raw::connect(s.addr("mta"));
    assert!(g.starts_with("421 4.7.0"), "{g}");
}
