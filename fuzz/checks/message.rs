//! A submitted message as `prepare` reads it: the From: addresses for the sender
//! policy and the Delivered-To: marks, then the trace and missing headers put
//! on top. The input is HELO name NUL recipient NUL message. Checks: no panic;
//! the message follows the added lines byte for byte; client text cannot break
//! or start a header line.

use postern::prepare::{Arrival, delivered_to, finish, header_from_addresses};
use postern::spool::QueueId;

pub fn check(input: &[u8]) {
    let mut parts = input.splitn(3, |&b| b == 0);
    let (Some(helo), Some(rcpt), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
        return;
    };
    let (Ok(helo), Ok(rcpt)) = (std::str::from_utf8(helo), std::str::from_utf8(rcpt)) else {
        return;
    };
    let _ = header_from_addresses(body);

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
    };
    let _ = delivered_to(body);
    let out = finish(&arrival, body);
    let added = out.strip_suffix(body).map(String::from_utf8_lossy);
    let Some(lines) = added.as_deref().and_then(|a| a.strip_suffix("\r\n")) else {
        panic!("the message does not follow whole added lines: {out:?}");
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
