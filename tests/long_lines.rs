//! Lines longer than 998 octets (issue #9, item 14): accepted up to
//! `max_text_line`; kept byte for byte from other servers; in submitted mail,
//! text parts re-encoded as quoted-printable, which Python's email package and
//! mail-parser both read back as the text that was sent.

use crate::common::*;

/// Every leaf part as Python's email package reads it: content type, the
/// decoded octets (base64, line ends as LF) and, for text, the decoded text
/// and any defect found. One JSON list per file named.
const PYTHON_PARTS: &str = r#"
import base64, email, json, sys
from email import policy
out = []
for path in sys.argv[1:]:
    m = email.message_from_bytes(open(path, "rb").read(), policy=policy.default)
    leaves = []
    for part in m.walk():
        if part.is_multipart():
            continue
        payload = (part.get_payload(decode=True) or b"").replace(b"\r\n", b"\n")
        text = part.get_content().replace("\r\n", "\n") if part.get_content_maintype() == "text" else None
        leaves.append({
            "type": part.get_content_type(),
            "octets": base64.b64encode(payload).decode(),
            "text": text,
            "defects": [type(d).__name__ for d in part.defects],
        })
    out.append(leaves)
print(json.dumps(out))
"#;

fn python_parts(s: &TestServer, messages: &[&[u8]]) -> Vec<serde_json::Value> {
    let paths: Vec<String> = messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let path = s.dir.path().join(format!("message-{i}.eml"));
            std::fs::write(&path, m).unwrap();
            path.to_str().unwrap().to_string()
        })
        .collect();
    let args: Vec<&str> = paths.iter().map(String::as_str).collect();
    let out = python(PYTHON_PARTS, &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn long_text(n: usize) -> String {
    "Grüße = soft-break test\t"
        .chars()
        .cycle()
        .take(n)
        .collect()
}

fn plain_message() -> String {
    format!(
        "From: alice@example.com\r\nTo: bob@remote.example\r\nSubject: plain\r\n\r\nfirst\r\n{}\r\n-- \r\nlast \r\n",
        long_text(5000)
    )
}

fn multipart_message() -> String {
    format!(
        "From: alice@example.com\r\nTo: bob@remote.example\r\nSubject: mixed\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"outer\"\r\n\r\nThis is a MIME message.\r\n\
         --outer\r\nContent-Type: multipart/alternative; boundary=\"inner\"\r\n\r\n\
         --inner\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nshort text\r\n\
         --inner\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n<p>{}</p>\r\n\
         --inner--\r\n\
         --outer\r\nContent-Type: text/csv; charset=utf-8\r\nContent-Disposition: attachment; filename=a.csv\r\n\r\n{}\r\n\
         --outer\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAAECAwQF\r\n\
         --outer--\r\n",
        long_text(3000),
        "1,2,3,".repeat(400),
    )
}

#[test]
fn submitted_text_with_long_lines_is_sent_as_quoted_printable() {
    let s = TestServer::start("");
    let sent = [plain_message(), multipart_message()];
    let mut stored = Vec::new();
    for message in &sent {
        let r = alice_submits(s.addr("submission"), &message.replace("\r\n", "\n"));
        assert!(r.starts_with("250 "), "{r}");
        stored.push(s.queued_body(&queued_id(&r).unwrap()));
    }
    for body in &stored {
        assert!(body.lines().all(|l| l.len() <= 998), "{body}");
        assert!(
            body.contains("\r\nContent-Transfer-Encoding: quoted-printable\r\n"),
            "{body}"
        );
        assert_eq!(body.matches("MIME-Version: 1.0").count(), 1, "{body}");
    }
    // Only the two long text parts of the multipart message changed.
    assert_eq!(
        stored[1].matches("quoted-printable").count(),
        2,
        "{}",
        stored[1]
    );
    assert!(!stored[1].contains("8bit") && stored[1].contains("AAECAwQF\r\n--outer--\r\n"));

    let bytes: Vec<&[u8]> = sent.iter().chain(&stored).map(|m| m.as_bytes()).collect();
    let views = python_parts(&s, &bytes);
    for (before, after) in views[..2].iter().zip(&views[2..]) {
        let (before, after) = (before.as_array().unwrap(), after.as_array().unwrap());
        assert_eq!(before.len(), after.len());
        for (b, a) in before.iter().zip(after) {
            assert_eq!(b["type"], a["type"]);
            assert_eq!(
                b["octets"], a["octets"],
                "{} decodes to what was sent",
                a["type"]
            );
            assert_eq!(a["defects"], serde_json::json!([]), "{a}");
            if let Some(text) = a["text"].as_str() {
                use base64::Engine;
                let octets = base64::engine::general_purpose::STANDARD
                    .decode(b["octets"].as_str().unwrap())
                    .unwrap();
                assert_eq!(text, String::from_utf8(octets).unwrap());
            }
        }
    }
    // mail-parser reads the same parts with the same contents.
    for (sent, stored) in sent.iter().zip(&stored) {
        let before = mail_parser::MessageParser::default()
            .parse(sent.as_bytes())
            .unwrap();
        let after = mail_parser::MessageParser::default()
            .parse(stored.as_bytes())
            .unwrap();
        assert_eq!(before.parts.len(), after.parts.len());
        for (b, a) in before.parts.iter().zip(&after.parts).skip(1) {
            assert_eq!(
                String::from_utf8_lossy(b.contents()).replace("\r\n", "\n"),
                String::from_utf8_lossy(a.contents()).replace("\r\n", "\n")
            );
        }
    }
}

#[test]
fn mail_from_other_servers_keeps_long_lines_byte_for_byte() {
    let s = TestServer::start("");
    let body = format!(
        "From: someone@remote.example\r\nSubject: wide\r\n\r\n{}\r\nend\r\n",
        long_text(5000)
    );
    let (mut c, _) = Raw::connect(s.addr("mta"));
    c.cmd("EHLO peer.test");
    assert_eq!(code(&c.cmd("MAIL FROM:<someone@remote.example>")), 250);
    assert_eq!(code(&c.cmd("RCPT TO:<alice@example.com>")), 250);
    assert_eq!(code(&c.cmd("DATA")), 354);
    c.send(body.as_bytes());
    let r = c.cmd(".");
    assert!(r.starts_with("250 2.0.0"), "{r}");
    let stored = s.queued_body(&queued_id(&r).unwrap());
    assert!(stored.ends_with(&body), "{stored}");
}

#[test]
fn a_large_submitted_message_with_long_lines_is_reencoded_from_disk() {
    let s = TestServer::start("");
    // Past the 256 KiB a session holds in memory: the body is on disk when it
    // is re-encoded.
    let mut lines = String::new();
    while lines.len() < 600 << 10 {
        lines.push_str(&long_text(3000));
        lines.push_str("\r\nshort line\r\n");
    }
    let sent = format!(
        "From: alice@example.com\r\nTo: bob@remote.example\r\nSubject: large\r\n\r\n{lines}"
    );
    let file = s.dir.path().join("large.eml");
    // swaks ends the data with CRLF itself.
    std::fs::write(&file, sent.strip_suffix("\r\n").unwrap()).unwrap();
    let mut args = alice_to_bob("PLAIN");
    args.retain(|a| *a != "--header" && *a != "From: alice@example.com");
    args.extend(["--tls", "--data", file.to_str().unwrap(), "--suppress-data"]);
    let out = swaks(s.addr("submission"), &args);
    let log = text(&out);
    let id = log
        .lines()
        .find_map(queued_id)
        .unwrap_or_else(|| panic!("not queued: {log}"));
    let stored = s.queued_body(&id);
    assert!(stored.lines().all(|l| l.len() <= 998));
    assert!(stored.contains("\r\nContent-Transfer-Encoding: quoted-printable\r\n"));
    let views = python_parts(&s, &[sent.as_bytes(), stored.as_bytes()]);
    assert_eq!(
        views[0][0]["octets"], views[1][0]["octets"],
        "decodes to what was sent"
    );
}
