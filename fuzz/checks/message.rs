//! A submitted message as `prepare` reads it: the header facts for the sender
//! and hop checks and the Delivered-To: marks, then the trace and missing
//! headers put on top of it. The input is
//! HELO name NUL recipient NUL message. Checks: no panic; when the sender check
//! accepts the message for the user named by its first From: address, there is
//! one From: and mail-parser also sees only that user as sender; re-encoding
//! long lines leaves no more long lines than before, and re-encoding its own
//! output changes nothing; the added headers are whole lines; client text
//! cannot break or start a header line.

use postern::policy::Verdict;
use postern::policy::sender::{Sender, check_sender_headers};
use postern::prepare::{Arrival, trace_headers};
use postern::smtp::address::Mailbox;
use postern::smtp::data::MAX_MESSAGE_LINE;
use postern::smtp::headers::{HeaderFacts, SenderHeader, header_section};
use postern::smtp::reencode::{reencode_long_lines, reencode_to_7bit};
use postern::spool::QueueId;

pub fn check(input: &[u8]) {
    let mut parts = input.splitn(3, |&b| b == 0);
    let (Some(helo), Some(rcpt), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
        return;
    };
    let (Ok(helo), Ok(rcpt)) = (std::str::from_utf8(helo), std::str::from_utf8(rcpt)) else {
        return;
    };
    check_sender(body);
    check_reencode(body);

    let id = QueueId::parse("01J0ABCDEFGHJK").expect("a valid queue id");
    let arrival = Arrival {
        helo,
        client_ip: [192, 0, 2, 7].into(),
        hostname: "mx.example.com",
        protocol: "ESMTPSA",
        tls: None,
        queue_id: &id,
        single_recipient: Some(rcpt),
        submission: true,
        delivered_to: &[],
        local_uid: None,
    };
    let added = trace_headers(&arrival, body);
    let added = String::from_utf8_lossy(&added);
    let Some(lines) = added.strip_suffix("\r\n") else {
        panic!("the added headers are not whole lines: {added:?}");
    };
    let mut received = 0;
    for line in lines.split("\r\n") {
        assert!(!line.contains(['\r', '\n']), "bare newline in {line:?}");
        received += usize::from(line.starts_with("Received: "));
        let known = ["Received: ", "\t", "Date: ", "Message-ID: "];
        assert!(known.iter().any(|h| line.starts_with(h)), "{line:?}");
    }
    assert_eq!(received, 1);
}

/// Sends the message as the owner of its first From: address: if that passes,
/// every reader must see that owner alone.
fn check_sender(message: &[u8]) {
    let facts = HeaderFacts::scan(header_section(message));
    assert!(facts.received <= message.len());
    let Some(user) = facts
        .fields(SenderHeader::From)
        .find_map(|f| f.mailboxes.as_ref().ok()?.first())
        .and_then(|m| Mailbox::parse(&m.address, true).ok())
        .map(|m| m.canonical())
    else {
        return;
    };
    if check_sender_headers(&Sender::Account(&user), &facts) != Verdict::Accept {
        return;
    }
    assert_eq!(facts.fields(SenderHeader::From).count(), 1);
    let parsed = mail_parser::MessageParser::default().parse_headers(message);
    let Some(parsed) = parsed else {
        return;
    };
    for list in [parsed.from(), parsed.sender()].into_iter().flatten() {
        for a in list.iter() {
            let address = a
                .address()
                .map(|x| Mailbox::parse(x, true).map(|m| m.canonical()));
            assert!(
                matches!(&address, Some(Ok(x)) if *x == user),
                "{user} passed but mail-parser shows {a:?}"
            );
        }
    }
}

fn check_reencode(message: &[u8]) {
    if let Some(out) = reencode_to_7bit(message) {
        assert_eq!(
            reencode_to_7bit(&out),
            None,
            "a second 7-bit pass changed {out:?}"
        );
    }
    let Some(out) = reencode_long_lines(message) else {
        return;
    };
    let long = |m: &[u8]| {
        m.split(|&b| b == b'\n')
            .filter(|l| l.strip_suffix(b"\r").unwrap_or(l).len() > MAX_MESSAGE_LINE)
            .count()
    };
    assert!(long(&out) < long(message), "no long line went");
    assert_eq!(
        reencode_long_lines(&out),
        None,
        "a second pass changed {out:?}"
    );
}
