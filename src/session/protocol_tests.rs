//! RFC 5321 and its extensions, driven through the session harness
//! (`script.rs`): replies for bad input and out of sequence, pipelining,
//! RSET, BDAT, DSN and SMTPUTF8 parameters, every limit at the limit, and
//! the hand-off to `prepare` and the spool.

use base64::Engine;

use super::script::Script;
use crate::config::ListenerRole;
use crate::context::testing::{PASSWORD, TestContext};
use crate::spool::{LIST_PAGE, ListFilter, QueueId, QueuedMessage};

fn code(reply: &str) -> u16 {
    reply.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// The queue id of "250 2.0.0 Ok: queued as ID".
fn queued_id(reply: &str) -> QueueId {
    reply
        .split("queued as ")
        .nth(1)
        .and_then(|s| QueueId::parse(s.trim()))
        .unwrap_or_else(|| panic!("not queued: {reply:?}"))
}

/// A session on port 25 after EHLO.
async fn mta_session(t: &TestContext) -> Script {
    let mut c = Script::connect(&t.ctx, ListenerRole::Mta).await;
    c.send("EHLO peer.test").await;
    c.expect(250).await;
    c
}

/// Every message in the spool.
async fn all_queued(t: &TestContext) -> Vec<QueuedMessage> {
    t.ctx
        .queue
        .spool()
        .pages(ListFilter::default(), None, LIST_PAGE)
        .all()
        .await
        .expect("list")
}

async fn queued(t: &TestContext, id: &QueueId) -> (QueuedMessage, String) {
    let spool = t.ctx.queue.spool();
    let message = spool.get(id).await.expect("spool").expect("queued");
    let body = spool.body(id).await.expect("spool").expect("body");
    (message, String::from_utf8(body).expect("UTF-8"))
}

#[tokio::test]
async fn ehlo_announces_the_extensions() {
    let t = TestContext::start("").await;
    let mut c = Script::connect(&t.ctx, ListenerRole::Mta).await;
    let ehlo = c.cmd("EHLO peer.test").await;
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
    assert!(
        c.cmd("HELO peer.test")
            .await
            .starts_with("250 mx.test.example")
    );
}

#[tokio::test]
async fn errors_get_the_right_codes() {
    let t = TestContext::start("").await;
    let mut c = Script::connect(&t.ctx, ListenerRole::Mta).await;
    for (line, reply) in [
        ("MAIL FROM:<a@remote.example>", "503 5.5.1"),
        ("EHLO peer.test", "250"),
        ("XYZZY", "500 5.5.1"),
        ("RCPT TO:<alice@example.com>", "503 5.5.1"),
        ("DATA", "503 5.5.1"),
        ("MAIL FROM:<a@remote.example> FOO=BAR", "555 5.5.4"),
        ("MAIL FROM:<not an address>", "501 "),
        ("MAIL FROM:<a@remote.example>", "250"),
        ("MAIL FROM:<a@remote.example>", "503 5.5.1"),
        ("RCPT TO:<alice@example.com> FOO=BAR", "555 5.5.4"),
        // DATA without recipients.
        ("DATA", "554 5.5.1"),
        ("VRFY alice", "252 "),
        ("NOOP", "250 2.0.0"),
        ("RSET", "250 2.0.0"),
        ("QUIT", "221 2.0.0"),
    ] {
        let got = c.cmd(line).await;
        assert!(got.starts_with(reply), "{line}: {got}");
    }
    assert!(c.closed().await);
}

#[tokio::test]
async fn rset_ends_the_transaction() {
    let t = TestContext::start("").await;
    let mut c = mta_session(&t).await;
    assert_eq!(code(&c.cmd("MAIL FROM:<a@remote.example>").await), 250);
    assert_eq!(code(&c.cmd("RCPT TO:<alice@example.com>").await), 250);
    assert!(c.cmd("RSET").await.starts_with("250 2.0.0"));
    assert!(
        c.cmd("RCPT TO:<alice@example.com>")
            .await
            .starts_with("503 5.5.1")
    );
    assert!(c.cmd("DATA").await.starts_with("503 5.5.1"));
    // A new transaction, not a nested one, with only its own recipients.
    assert_eq!(code(&c.cmd("MAIL FROM:<b@remote.example>").await), 250);
    assert_eq!(code(&c.cmd("RCPT TO:<postmaster>").await), 250);
    assert_eq!(code(&c.cmd("DATA").await), 354);
    c.send_raw(b"Subject: after RSET\r\n\r\nx\r\n.\r\n").await;
    let (message, _) = queued(&t, &queued_id(&c.expect(250).await)).await;
    assert_eq!(message.sender, "b@remote.example");
    let rcpts: Vec<&str> = message
        .recipients
        .iter()
        .map(|r| r.address.as_str())
        .collect();
    assert_eq!(rcpts, ["postmaster@mx.test.example"]);
}

#[tokio::test]
async fn pipelined_commands_get_their_replies_in_order() {
    let t = TestContext::start("").await;
    let mut c = Script::connect(&t.ctx, ListenerRole::Mta).await;
    c.send_raw(b"EHLO peer.test\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.com>\r\nRCPT TO:<nobody@example.com>\r\nDATA\r\n").await;
    c.expect(250).await;
    assert!(c.reply().await.starts_with("250 2.1.0"));
    assert!(c.reply().await.starts_with("250 2.1.5"));
    assert!(c.reply().await.starts_with("550 5.1.1"));
    assert!(c.reply().await.starts_with("354 "));
    c.send_raw(b"Subject: p\r\n\r\nbody\r\n.\r\nQUIT\r\n").await;
    assert!(c.reply().await.starts_with("250 2.0.0 Ok: queued as"));
    assert!(c.reply().await.starts_with("221"));
}

#[tokio::test]
async fn recipients_limit_at_the_limit() {
    let t =
        TestContext::start("trusted_networks = [\"192.0.2.1\"]\n[limits]\nmax_recipients = 3\n")
            .await;
    let mut c = mta_session(&t).await;
    c.cmd("MAIL FROM:<a@remote.example>").await;
    for i in 0..3 {
        let rcpt = format!("RCPT TO:<r{i}@remote.example>");
        assert_eq!(code(&c.cmd(&rcpt).await), 250);
    }
    assert!(
        c.cmd("RCPT TO:<r3@remote.example>")
            .await
            .starts_with("452 4.5.3")
    );
}

#[tokio::test]
async fn size_declared_and_actual_at_the_limit() {
    let t = TestContext::start("[limits]\nmax_message_size = 2000\n").await;
    let mut c = mta_session(&t).await;
    assert!(
        c.cmd("MAIL FROM:<a@remote.example> SIZE=2001")
            .await
            .starts_with("552 5.3.4")
    );
    assert_eq!(
        code(&c.cmd("MAIL FROM:<a@remote.example> SIZE=2000").await),
        250
    );
    c.cmd("RCPT TO:<alice@example.com>").await;
    c.cmd("DATA").await;
    // Exactly 2000 octets of body (after unstuffing) is accepted...
    let line = format!("{}\r\n", "x".repeat(98));
    c.send_raw(line.repeat(20).as_bytes()).await;
    c.send_raw(b".\r\n").await;
    assert!(c.reply().await.starts_with("250 2.0.0"));
    // ...and one more is not.
    c.cmd("MAIL FROM:<a@remote.example>").await;
    c.cmd("RCPT TO:<alice@example.com>").await;
    c.cmd("DATA").await;
    c.send_raw(line.repeat(20).as_bytes()).await;
    c.send_raw(b"y\r\n.\r\n").await;
    let r = c.reply().await;
    assert!(r.starts_with("552 5.3.4"), "{r}");
    assert_eq!(all_queued(&t).await.len(), 1);
}

#[tokio::test]
async fn command_line_length_at_the_limit() {
    let t = TestContext::start("").await;
    let mut c = mta_session(&t).await;
    // 512 octets with CRLF is the RFC 5321 minimum: accepted.
    let noop = format!("NOOP {}", "x".repeat(512 - 7));
    assert_eq!(noop.len() + 2, 512);
    assert!(c.cmd(&noop).await.starts_with("250"));
    let long = format!("NOOP {}", "x".repeat(512 - 6));
    assert!(c.cmd(&long).await.starts_with("500 5.5.6"));
    // A very long line is consumed whole; its tail is not run as a command.
    let huge = format!("NOOP {}QUIT", "x".repeat(20_000));
    assert!(c.cmd(&huge).await.starts_with("500 5.5.6"));
    assert!(c.cmd("NOOP").await.starts_with("250"));
}

#[tokio::test]
async fn too_many_errors_end_the_session() {
    let t = TestContext::start("[limits]\nmax_errors = 3\n").await;
    let mut c = Script::connect(&t.ctx, ListenerRole::Mta).await;
    for _ in 0..3 {
        assert!(c.cmd("BOGUS").await.starts_with("500"));
    }
    let last = c.reply().await;
    assert!(last.starts_with("421 4.7.0"), "{last}");
    assert!(c.closed().await);
}

#[tokio::test]
async fn idle_clients_are_timed_out() {
    let t = TestContext::start("[limits]\ncommand_timeout = 1\n").await;
    let mut c = Script::connect(&t.ctx, ListenerRole::Mta).await;
    assert!(c.reply().await.starts_with("421 4.4.2"));
    assert!(c.closed().await);
}

#[tokio::test]
async fn bdat_chunks_make_one_message() {
    let t = TestContext::start("").await;
    let mut c = mta_session(&t).await;
    c.cmd("MAIL FROM:<a@remote.example>").await;
    c.cmd("RCPT TO:<alice@example.com>").await;
    c.send_raw(b"BDAT 15\r\nSubject: bdat\r\n").await;
    assert!(c.reply().await.starts_with("250 2.0.0 15 octets"));
    c.send_raw(b"BDAT 9 LAST\r\n\r\n.body\r\n").await;
    let r = c.reply().await;
    assert!(r.starts_with("250 2.0.0 Ok: queued as"), "{r}");
    let (_, body) = queued(&t, &queued_id(&r)).await;
    assert!(body.ends_with("Subject: bdat\r\n\r\n.body\r\n"), "{body:?}");
    // A refused BDAT still consumes its chunk: the chunk is never run as commands.
    c.send_raw(b"BDAT 6 LAST\r\nQUIT\r\n").await;
    assert!(c.reply().await.starts_with("503 5.5.1"));
    assert!(c.cmd("NOOP").await.starts_with("250"));
}

#[tokio::test]
async fn dsn_parameters_are_stored() {
    let t = TestContext::start("").await;
    let mut c = mta_session(&t).await;
    let mail = c
        .cmd("MAIL FROM:<a@remote.example> RET=HDRS ENVID=abc123")
        .await;
    assert_eq!(code(&mail), 250);
    let rcpt = c
        .cmd("RCPT TO:<alice@example.com> NOTIFY=FAILURE,DELAY ORCPT=rfc822;alice@example.com")
        .await;
    assert_eq!(code(&rcpt), 250);
    c.cmd("DATA").await;
    c.send_raw(b"Subject: dsn\r\n\r\nx\r\n.\r\n").await;
    let (m, _) = queued(&t, &queued_id(&c.reply().await)).await;
    assert_eq!(m.dsn.ret.as_deref(), Some("HDRS"));
    assert_eq!(m.dsn.envid.as_deref(), Some("abc123"));
    assert_eq!(m.recipients[0].notify.as_deref(), Some("FAILURE,DELAY"));
    assert_eq!(
        m.recipients[0].orcpt.as_deref(),
        Some("rfc822;alice@example.com")
    );
}

#[tokio::test]
async fn utf8_addresses_need_smtputf8_and_8bit_bodies_pass() {
    let t = TestContext::start("trusted_networks = [\"192.0.2.1\"]\n").await;
    let mut c = mta_session(&t).await;
    assert!(
        c.cmd("MAIL FROM:<jörg@bücher.example>")
            .await
            .starts_with("501 5.1.7")
    );
    let mail = c
        .cmd("MAIL FROM:<jörg@bücher.example> SMTPUTF8 BODY=8BITMIME")
        .await;
    assert_eq!(code(&mail), 250);
    assert_eq!(code(&c.cmd("RCPT TO:<zoë@exämple.example>").await), 250);
    c.cmd("DATA").await;
    c.send_raw("Subject: ünïcode\r\n\r\nGrüße\r\n.\r\n".as_bytes())
        .await;
    let (m, body) = queued(&t, &queued_id(&c.reply().await)).await;
    assert!(m.smtputf8);
    assert_eq!(m.recipients[0].address, "zoë@exämple.example");
    assert!(body.contains("Grüße"));
}

/// The whole hand-off to `prepare`: a submitted message is checked against
/// its user, and gets the trace headers with the protocol label.
#[tokio::test]
async fn a_submitted_message_is_checked_and_prepared() {
    let t = TestContext::start("").await;
    let mut c = Script::encrypted(&t.ctx, ListenerRole::Submission).await;
    assert!(c.cmd("EHLO laptop").await.contains("AUTH PLAIN LOGIN"));
    let plain = base64::engine::general_purpose::STANDARD
        .encode(format!("\0alice@example.com\0{PASSWORD}"));
    c.send(&format!("AUTH PLAIN {plain}")).await;
    c.expect(235).await;
    for (from, reply) in [
        ("bob@example.com", "550 5.7.1"),
        ("Alice <alice@example.com>", "250 2.0.0"),
    ] {
        c.cmd("MAIL FROM:<alice@example.com>").await;
        c.cmd("RCPT TO:<bob@remote.example>").await;
        c.cmd("DATA").await;
        c.send_raw(format!("From: {from}\r\nSubject: s\r\n\r\nhi\r\n.\r\n").as_bytes())
            .await;
        let got = c.reply().await;
        assert!(got.starts_with(reply), "From: {from}: {got}");
    }
    let (queued, body) = match all_queued(&t).await.as_slice() {
        [only] => queued(&t, &only.id).await,
        other => panic!("{} queued", other.len()),
    };
    assert_eq!(queued.auth_user.as_deref(), Some("alice@example.com"));
    assert!(
        body.starts_with(
            "Received: from laptop ([192.0.2.1])\r\n\tby mx.test.example (Postern) with ESMTPSA id "
        ),
        "{body}"
    );
    for added in ["\r\nDate: ", "\r\nMessage-ID: <"] {
        assert!(body.contains(added), "{added} missing: {body}");
    }
}
