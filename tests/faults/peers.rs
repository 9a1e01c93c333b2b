//! The relay failing: nobody listening, 421 at the greeting, hanging after
//! the end of DATA, hanging up in the middle of the body. Every message stays
//! queued (no bounce), and each arrives once when the relay is back.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::common::*;

const MESSAGES: usize = 6;

/// Sends `MESSAGES` messages with load tokens, one of them large enough to be
/// spilled to disk while it arrives.
fn send_all(s: &TestServer) {
    let (mut c, _) = Raw::connect(s.addr("mta"));
    c.cmd("EHLO client.test");
    for i in 0..MESSAGES {
        assert_eq!(code(&c.cmd("MAIL FROM:<a@remote.example>")), 250);
        assert_eq!(code(&c.cmd("RCPT TO:<bob@remote.example>")), 250);
        assert_eq!(code(&c.cmd("DATA")), 354);
        let filler = "filler line\r\n".repeat(if i == 0 { 30_000 } else { 10 });
        c.send(format!("Subject: tok-peer-{i}\r\n\r\n{filler}.\r\n").as_bytes());
        assert_eq!(code(&c.reply()), 250);
    }
}

/// Waits until every queued recipient has had `attempts` tries.
fn wait_attempts(s: &TestServer, attempts: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let queue = s.queue();
        assert_eq!(queue.len(), MESSAGES, "a message left the queue: {queue:?}");
        let tried = queue.iter().all(|m| {
            m["recipients"].as_array().is_some_and(|r| {
                r.iter()
                    .all(|r| r["attempts"].as_u64() >= Some(attempts) && r["status"] == "queued")
            })
        });
        if tried {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not tried {attempts} times: {queue:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn survives_a_broken_relay(mode: Option<&str>, attempts: u64) {
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let broken = mode.map(|m| BrokenPeer::start(addr, m));
    let s = TestServer::delivering(&format!(
        "trusted_networks = [\"127.0.0.1/32\"]\n[relay]\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\n\
         [delivery]\nretry_min = 1\nretry_max = 2\ntimeout = 2\nconnect_timeout = 2\ndestination_concurrency = {MESSAGES}\n"
    ));
    send_all(&s);
    wait_attempts(&s, attempts);
    drop(broken);
    let sink = Peer::start(addr, &[]);
    let received = sink.wait_for(MESSAGES, Duration::from_secs(60));
    s.wait_until_queue_empty(Duration::from_secs(30));
    let tokens = tokens_in(received.iter().map(|m| m["data"].as_str().unwrap_or("")));
    assert_eq!(tokens.len(), MESSAGES, "{tokens:?}");
    assert!(
        tokens.values().all(|n| *n == 1),
        "a message arrived twice: {tokens:?}"
    );
    assert!(
        received
            .iter()
            .all(|m| m["mail_from"] == "a@remote.example"),
        "a bounce was sent instead"
    );
}

#[test]
fn a_relay_that_refuses_connections() {
    survives_a_broken_relay(None, 2);
}

#[test]
fn a_relay_that_answers_421_at_the_greeting() {
    survives_a_broken_relay(Some("421"), 2);
}

#[test]
fn a_relay_that_hangs_after_the_end_of_data() {
    survives_a_broken_relay(Some("hang-after-data"), 1);
}

#[test]
fn a_relay_that_hangs_up_in_the_middle_of_the_body() {
    survives_a_broken_relay(Some("drop-mid-body"), 2);
}
