//! SMTP smuggling (CVE-2023-51764 and siblings): only <CRLF>.<CRLF> ends DATA,
//! bare CR and LF never reach the spool, lines past `max_text_line` are refused.

use crate::common::*;

fn data(s: &TestServer, body: &[u8]) -> (Raw, String) {
    let (mut c, _) = Raw::connect(s.addr("mta"));
    c.cmd("EHLO peer.test");
    c.cmd("MAIL FROM:<a@remote.example>");
    assert_eq!(code(&c.cmd("RCPT TO:<alice@example.com>")), 250);
    assert_eq!(code(&c.cmd("DATA")), 354);
    c.send(body);
    let r = c.reply();
    (c, r)
}

#[test]
fn smuggled_end_of_data_does_not_end_data() {
    let s = TestServer::start("");
    for end in ["\n.\n", "\r\n.\n", "\n.\r\n", "\r.\r\n", "\r\n.\r"] {
        let smuggled = format!(
            "Subject: outer\r\n\r\nx{end}MAIL FROM:<evil@remote.example>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\nSubject: smuggled\r\n\r\n.\r\n"
        );
        let (mut c, r) = data(&s, smuggled.as_bytes());
        // One reply for the whole thing: the inner commands were body, and the
        // message with a bare CR or LF is refused.
        assert!(
            r.starts_with("550 5.6.0 Message rejected: bare"),
            "{end:?}: {r}"
        );
        assert!(
            c.cmd("NOOP").starts_with("250"),
            "{end:?}: session stays in sync"
        );
    }
    assert!(s.queue().is_empty(), "nothing smuggled was queued");
}

#[test]
fn bare_lf_is_normalised_when_configured() {
    let s = TestServer::start("[smtp]\nbare_newlines = \"normalize\"\n");
    // ".<LF>" and a dot line after a bare LF are content, never the end.
    let (_, r) = data(
        &s,
        b"Subject: lf\n\nline one\nline two\r\n.\n.\r\nlast\r\n.\r\n",
    );
    assert!(r.starts_with("250 2.0.0"), "{r}");
    let body = s.queued_body(&queued_id(&r).expect("id"));
    assert!(
        body.ends_with("Subject: lf\r\n\r\nline one\r\nline two\r\n\r\n.\r\nlast\r\n"),
        "{body:?}"
    );
    assert!(
        !body.replace("\r\n", "").contains('\n'),
        "no bare LF stored"
    );
    // A bare CR is refused even then.
    let (_, r) = data(&s, b"Subject: cr\r\n\r\na\rb\r\n.\r\n");
    assert!(r.starts_with("550 5.6.0"), "{r}");
}

#[test]
fn text_lines_at_the_limit() {
    // The default bound (65536 octets with the CRLF) and a configured one; the
    // refusal names the limit in force.
    for (extra, limit) in [("", 65_536), ("[limits]\nmax_text_line = 2000\n", 2000)] {
        let s = TestServer::start(extra);
        let ok = format!("Subject: long\r\n\r\n{}\r\n.\r\n", "x".repeat(limit - 2));
        let r = data(&s, ok.as_bytes()).1;
        assert!(r.starts_with("250 2.0.0"), "{limit}: {r}");
        let long = format!("Subject: long\r\n\r\n{}\r\n.\r\n", "x".repeat(limit - 1));
        let r = data(&s, long.as_bytes()).1;
        assert!(
            r.starts_with(&format!(
                "550 5.6.0 Message rejected: a line is longer than {limit} octets"
            )),
            "{r}"
        );
    }
}
