//! One grep on a queue id tells a message's life (issue #10 item 6): the
//! lines of a transaction carry its own queue id and no other's, and the
//! removal of a finished message is logged with it.

use crate::common::*;
use crate::delivery::{send, wait_log};

#[test]
fn issue_10_each_transaction_logs_under_its_own_queue_id() {
    let s = TestServer::start("");
    let (mut c, _) = Raw::connect(s.addr("mta"));
    assert_eq!(code(&c.cmd("EHLO peer.test")), 250);
    let mut ids = Vec::new();
    for subject in ["one", "two"] {
        assert_eq!(code(&c.cmd("MAIL FROM:<a@remote.example>")), 250);
        assert_eq!(code(&c.cmd("RCPT TO:<alice@example.com>")), 250);
        assert_eq!(code(&c.cmd("DATA")), 354);
        c.send(format!("Subject: {subject}\r\n\r\nx\r\n.\r\n").as_bytes());
        ids.push(queued_id(&c.reply()).expect("queued"));
    }
    assert!(c.cmd("QUIT").starts_with("221"));
    wait_log(&s, "event=\"disconnected\"");
    let log = s.log();
    let lines: Vec<&str> = log.lines().collect();
    for (id, other) in [(&ids[0], &ids[1]), (&ids[1], &ids[0])] {
        let queued = lines
            .iter()
            .position(|l| l.contains("event=\"queued\"") && l.contains(id.as_str()))
            .unwrap_or_else(|| panic!("no queued line for {id}:\n{log}"));
        assert!(
            lines[queued].contains(&format!("transaction{{qid={id}}}")),
            "the transaction's span carries its queue id: {}",
            lines[queued]
        );
        for line in lines.iter().filter(|l| l.contains(id.as_str())) {
            assert!(!line.contains(other.as_str()), "two queue ids: {line}");
        }
    }
    // After the first message is queued, nothing the session logs names it:
    // the second transaction and the end of the session have their own lines.
    let first_done = lines
        .iter()
        .position(|l| l.contains("event=\"queued\""))
        .expect("queued");
    for line in &lines[first_done + 1..] {
        assert!(!line.contains(ids[0].as_str()), "inherited: {line}");
    }
    let rcpt_lines: Vec<&&str> = lines.iter().filter(|l| l.contains("RCPT TO")).collect();
    assert_eq!(rcpt_lines.len(), 2, "{log}");
    assert!(
        rcpt_lines.iter().all(|l| l.contains(":transaction")),
        "a transaction's commands are logged in its span: {rcpt_lines:?}"
    );
}

#[test]
fn issue_10_the_removal_of_a_finished_message_is_logged() {
    let s = TestServer::delivering("trusted_networks = [\"127.0.0.1/32\"]\n");
    let id = send(
        &s,
        "app@example.com",
        &["alice@example.com"],
        "Subject: x\n\nhi\n",
    );
    wait_log(&s, &format!("event=\"removed\" qid={id}"));
}

/// Why a session ended is said in words, not as `Ok(())` or `Err(Eof)`.
#[test]
fn a_session_end_is_logged_in_words() {
    let s = TestServer::start("");
    let (mut c, _) = Raw::connect(s.addr("mta"));
    assert!(c.cmd("QUIT").starts_with("221"));
    wait_log(&s, "reason=\"closed after QUIT or a closing reply\"");
    let (c, _) = Raw::connect(s.addr("mta"));
    drop(c);
    wait_log(&s, "reason=\"the client closed the connection\"");
    let log = s.log();
    assert!(!log.contains("Ok(())") && !log.contains("Err("), "{log}");
}
