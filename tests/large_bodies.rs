//! Large messages: a body past the session's memory threshold goes to disk
//! while it arrives; it must be stored byte for byte, over DATA and BDAT, at
//! the size limit, and leave nothing behind when it is refused.

use crate::common::*;

/// A body of about `size` octets of numbered lines, ending in CRLF.
fn body(size: usize) -> String {
    let mut text = String::from("Subject: large\r\n\r\n");
    let mut n = 0;
    while text.len() < size {
        text.push_str(&format!(
            "line {n:08} of a large message, with some text\r\n"
        ));
        n += 1;
    }
    text
}

/// The stored message without the headers the server added on top.
fn stored_after_trace(s: &TestServer, id: &str) -> String {
    let stored = s.queued_body(id);
    let at = stored
        .find("Subject: large")
        .expect("the message's own header");
    stored[at..].to_string()
}

/// Equal texts, or a short report of where they part (they are megabytes).
fn assert_same(got: &str, want: &str) {
    if got != want {
        let at = got
            .bytes()
            .zip(want.bytes())
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(want.len()));
        let window = |t: &str| {
            t.get(at.saturating_sub(40)..(at + 40).min(t.len()))
                .unwrap_or("")
                .to_string()
        };
        panic!(
            "stored {} octets, sent {}; they part at {at}: {:?} / {:?}",
            got.len(),
            want.len(),
            window(got),
            window(want)
        );
    }
}

fn segment_files(s: &TestServer) -> usize {
    std::fs::read_dir(s.data_dir().join("spool/bodies")).map_or(0, |d| d.count())
}

#[test]
fn a_large_message_over_data_is_stored_byte_for_byte() {
    let s = TestServer::start("");
    let large = body(3 << 20);
    let file = s.dir.path().join("large.eml");
    // swaks ends the data with CRLF itself.
    std::fs::write(&file, large.strip_suffix("\r\n").expect("CRLF")).expect("write");
    let out = swaks(
        s.addr("mta"),
        &[
            "--from",
            "a@remote.example",
            "--to",
            "alice@example.com",
            "--data",
            file.to_str().expect("path"),
            "--suppress-data",
        ],
    );
    let log = text(&out);
    let reply = log
        .lines()
        .find(|l| l.contains("queued as"))
        .unwrap_or_else(|| panic!("not queued: {log}"));
    let id = queued_id(reply).expect("id");
    assert_same(&stored_after_trace(&s, &id), &large);
}

#[test]
fn a_large_message_over_bdat_is_stored_byte_for_byte() {
    let s = TestServer::start("");
    let text = body(700 << 10);
    let mut c = Raw::to_alice(s.addr("mta"), "peer.test");
    let chunks: Vec<&[u8]> = text.as_bytes().chunks(200 << 10).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let last = if i + 1 == chunks.len() { " LAST" } else { "" };
        c.send(format!("BDAT {}{last}\r\n", chunk.len()).as_bytes());
        c.send(chunk);
        let r = c.reply();
        assert_eq!(code(&r), 250, "{r}");
        if !last.is_empty() {
            let id = queued_id(&r).expect("id");
            assert_same(&stored_after_trace(&s, &id), &text);
        }
    }
}

#[test]
fn a_spilled_message_at_the_size_limit_and_one_past_it() {
    const MAX: usize = 1 << 20;
    let s = TestServer::start(&format!("[limits]\nmax_message_size = {MAX}\n"));
    let (mut c, _) = Raw::connect(s.addr("mta"));
    c.cmd("EHLO peer.test");
    let mut exactly = body(MAX - 200);
    let pad = MAX - exactly.len() - 2;
    exactly.push_str(&"y".repeat(pad));
    exactly.push_str("\r\n");
    assert_eq!(exactly.len(), MAX);
    for (text, expect) in [(exactly.clone() + "z\r\n", 552), (exactly.clone(), 250)] {
        c.cmd("MAIL FROM:<a@remote.example>");
        c.cmd("RCPT TO:<alice@example.com>");
        assert_eq!(code(&c.cmd("DATA")), 354);
        c.send(text.as_bytes());
        c.send(b".\r\n");
        let r = c.reply();
        assert_eq!(code(&r), expect, "{r}");
        if expect == 552 {
            assert_eq!(segment_files(&s), 0, "the refused body's file is gone");
        } else {
            assert_same(
                &stored_after_trace(&s, &queued_id(&r).expect("id")),
                &exactly,
            );
        }
    }
}

#[test]
fn a_client_that_leaves_in_the_middle_of_a_large_body_leaves_nothing() {
    let s = TestServer::start("");
    let mut c = Raw::to_alice(s.addr("mta"), "peer.test");
    assert_eq!(code(&c.cmd("DATA")), 354);
    c.send(body(1 << 20).as_bytes());
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(segment_files(&s), 1, "the body went to disk");
    drop(c);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while segment_files(&s) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the spill file stayed"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(s.queue().is_empty());
}

#[test]
fn a_header_section_larger_than_what_a_session_holds_is_refused() {
    let s = TestServer::start("");
    let mut c = Raw::to_alice(s.addr("mta"), "peer.test");
    assert_eq!(code(&c.cmd("DATA")), 354);
    // The header checks read what is held in memory: 256 KiB of it.
    let filler = format!("X-Filler: {}\r\n", "f".repeat(70));
    c.send(filler.repeat((300 << 10) / filler.len()).as_bytes());
    c.send(b"From: a@remote.example\r\n\r\nbody\r\n.\r\n");
    let r = c.reply();
    assert!(
        r.starts_with("552 5.3.4 Message header section exceeds"),
        "{r}"
    );
    assert_eq!(segment_files(&s), 0);
}
