//! What a header section may say (issue #9, items 2 and 5): a submitted
//! message names only its user as sender, as mail readers show it (Python's
//! `email` package is the reader asked here), and a message that has made 50
//! hops is refused.

use postern::policy::Verdict;
use postern::policy::sender::{Sender, check_sender_headers};
use postern::smtp::headers::{HeaderFacts, header_section};

use crate::common::*;

const ALICE: &str = "alice@example.com";

/// What Python's email package shows as the sender headers of each message
/// (base64 in a JSON list in the file named first), in both its policies, with and without
/// decoding encoded words: per header, how many occurrences, and every address
/// and display name it can find.
const PYTHON_VIEW: &str = r#"
import base64, email, json, sys
from email import policy
from email.header import decode_header, make_header
from email.utils import getaddresses
def pairs(values):
    try:
        return getaddresses(values)
    except Exception as e:
        return [("error " + str(e), "error")]
out = []
for raw in json.load(open(sys.argv[1])):
    raw = base64.b64decode(raw)
    new = email.message_from_bytes(raw, policy=policy.default)
    old = email.message_from_bytes(raw)
    view = {}
    for name in ("from", "sender", "resent-from", "resent-sender"):
        found = []
        try:
            fields = new.get_all(name) or []
        except Exception as e:
            fields = []
            found.append(("error " + str(e), "error"))
        for h in fields:
            try:
                found += [(a.display_name, a.addr_spec) for a in h.addresses]
                found += pairs([str(h)])
            except Exception as e:
                found.append(("error " + str(e), "error"))
        raw_fields = old.get_all(name) or []
        for h in raw_fields:
            s = str(h)
            try:
                decoded = str(make_header(decode_header(s)))
            except Exception:
                decoded = s
            found += pairs([s]) + pairs([decoded])
        view[name] = {"count": max(len(fields), len(raw_fields)), "mailboxes": found}
    out.append(view)
# Undecodable bytes come back as lone surrogates: show them as "?".
sys.stdout.buffer.write(json.dumps(out, ensure_ascii=False).encode("utf-8", "replace"))
"#;

fn python_views(messages: &[Vec<u8>]) -> Vec<serde_json::Value> {
    use base64::Engine;
    let encoded: Vec<String> = messages
        .iter()
        .map(|m| base64::engine::general_purpose::STANDARD.encode(m))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("messages.json");
    std::fs::write(&path, serde_json::to_string(&encoded).unwrap()).unwrap();
    let out = python(PYTHON_VIEW, &[path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Whether a name shown beside an address could read as anyone but alice.
fn names_someone_else(name: &str) -> bool {
    let lower = name.to_lowercase();
    lower.contains('@') && lower.replace(ALICE, "").contains('@')
        || lower.contains('\u{ff20}')
        || lower.contains(" @ ")
}

/// Python's view shows alice, and only alice, as the sender.
fn python_shows_only_alice(view: &serde_json::Value) -> Result<(), String> {
    if view["from"]["count"] != 1 {
        return Err(format!("{} From: headers", view["from"]["count"]));
    }
    for name in ["from", "sender", "resent-from", "resent-sender"] {
        for pair in view[name]["mailboxes"].as_array().unwrap() {
            let (shown, address) = (pair[0].as_str().unwrap(), pair[1].as_str().unwrap());
            if !address.eq_ignore_ascii_case(ALICE) || names_someone_else(shown) {
                return Err(format!("{name}: {shown:?} <{address}>"));
            }
        }
    }
    Ok(())
}

/// Ours: accepted for alice, or the reply text.
fn ours(message: &[u8]) -> Result<(), String> {
    match check_sender_headers(
        &Sender::Account(ALICE),
        &HeaderFacts::scan(header_section(message)),
    ) {
        Verdict::Accept => Ok(()),
        Verdict::Reject(r) => Err(r.text),
    }
}

/// mail-parser (the parser the team used before) agrees when we accept.
fn mail_parser_shows_only_alice(message: &[u8]) -> bool {
    let Some(m) = mail_parser::MessageParser::default().parse_headers(message) else {
        return false;
    };
    [m.from(), m.sender()].into_iter().flatten().all(|list| {
        list.iter().all(|a| {
            a.address().is_some_and(|x| x.eq_ignore_ascii_case(ALICE))
                && !a.name().is_some_and(names_someone_else)
        })
    })
}

fn message(header: &[u8]) -> Vec<u8> {
    [header, b"To: x@remote.example\r\n\r\nbody\r\n"].concat()
}

/// Tricky header sections, each with our expected reply (`None`: accepted).
const TABLE: &[(&[u8], Option<&str>)] = &[
    (b"From: alice@example.com\r\n", None),
    (
        b"From: Alice <alice@example.com>\r\nSender: alice@example.com\r\n",
        None,
    ),
    (b"From: \"Liddell, Alice\" <Alice@Example.com>\r\n", None),
    (
        b"From: =?utf-8?q?Alice_Liddell?= <alice@example.com>\r\n",
        None,
    ),
    (b"From: alice@example.com (Alice)\r\n", None),
    (b"FROM: Alice\r\n <alice@example.com>\r\n", None),
    (b"From: J\xc3\xb6rg <alice@example.com>\r\n", None),
    // The bug: mail-parser took the last From:, readers show the first.
    (
        b"From: bob@example.com\r\nFrom: alice@example.com\r\n",
        Some("more than one From: header"),
    ),
    (
        b"From: alice@example.com\r\nSubject: x\r\nfrom: bob@example.com\r\n",
        Some("more than one From: header"),
    ),
    (
        b"From: alice@example.com\r\nFrom : bob@example.com\r\n",
        Some("more than one From: header"),
    ),
    (
        b"From : bob@example.com\r\n",
        Some("space before the colon"),
    ),
    (
        b"From : alice@example.com\r\n",
        Some("space before the colon"),
    ),
    (
        b"From: alice@example.com\r\nX Bad: 1\r\nFrom: bob@example.com\r\n",
        Some("line 2 of the header section"),
    ),
    (
        b"Subject: x\r\nnot a header\r\nFrom: alice@example.com\r\n",
        Some("line 2 of the header section"),
    ),
    (
        b" From: bob@example.com\r\nFrom: alice@example.com\r\n",
        Some("line 1 of the header section"),
    ),
    (
        b"From: alice@example.com\r\n bob@example.com\r\n",
        Some("no usable address"),
    ),
    (
        b"From: alice@example.com,\r\n bob@example.com\r\n",
        Some("<bob@example.com> is not owned"),
    ),
    (
        b"From: Bob <bob@example.com>\r\n",
        Some("<bob@example.com> is not owned"),
    ),
    (
        b"From: bob@example.com <alice@example.com>\r\n",
        Some("display name looks like another address"),
    ),
    (
        b"From: \"bob@example.com\" <alice@example.com>\r\n",
        Some("display name looks like another address"),
    ),
    (
        b"From: \"bob @ example.com\" <alice@example.com>\r\n",
        Some("display name looks like another address"),
    ),
    (
        b"From: =?utf-8?b?Ym9iQGV4YW1wbGUuY29t?= <alice@example.com>\r\n",
        Some("display name looks like another address"),
    ),
    (
        b"From: =?utf-8?q?bob=40example=2Ecom?= <alice@example.com>\r\n",
        Some("display name looks like another address"),
    ),
    (
        b"From: =?utf-8?q?bob=40example=2Ecom?=\r\n",
        Some("no usable address"),
    ),
    (
        b"From: alice@example.com (bob@example.com)\r\n",
        Some("display name looks like another address"),
    ),
    (b"From: undisclosed-recipients:;\r\n", Some("group syntax")),
    (
        b"From: team: alice@example.com, bob@example.com;\r\n",
        Some("group syntax"),
    ),
    (b"From:\r\n", Some("names no address")),
    (
        b"From: bob@example.com\0 <alice@example.com>\r\n",
        Some("control character"),
    ),
    (
        b"From: \xff\xfe <alice@example.com>\r\n",
        Some("not valid UTF-8"),
    ),
    (
        b"From: alice@example.com\r\nSender: bob@example.com\r\n",
        Some("header Sender: <bob@example.com>"),
    ),
    (
        b"From: alice@example.com\r\nResent-From: bob@example.com\r\n",
        Some("header Resent-From: <bob@example.com>"),
    ),
    (
        b"From: alice@example.com\r\nRESENT-SENDER: Bob <bob@example.com>\r\n",
        Some("header Resent-Sender: <bob@example.com>"),
    ),
    (
        b"From: alice@example.com\rFrom: bob@example.com\r\n",
        Some("line 1 of the header section"),
    ),
    (
        b"From: alice@example.com\nFrom: bob@example.com\n",
        Some("more than one From: header"),
    ),
    (b"Subject: no sender\r\n", Some("it has no From: header")),
];

#[test]
fn tricky_sender_headers_against_pythons_view() {
    let messages: Vec<Vec<u8>> = TABLE.iter().map(|(h, _)| message(h)).collect();
    let views = python_views(&messages);
    for ((header, expected), (message, view)) in TABLE.iter().zip(messages.iter().zip(&views)) {
        let shown = String::from_utf8_lossy(header);
        let got = ours(message);
        match (expected, &got) {
            (None, Ok(())) => {}
            (Some(why), Err(text)) if text.contains(why) => {}
            _ => panic!("{shown:?}: expected {expected:?}, got {got:?}"),
        }
        if got.is_ok() {
            assert_eq!(python_shows_only_alice(view), Ok(()), "{shown:?}: {view}");
            assert!(mail_parser_shows_only_alice(message), "{shown:?}");
        }
    }
    // The original bug, seen by both parsers: mail-parser says alice, Python bob.
    let two = message(TABLE[7].0);
    assert!(mail_parser_shows_only_alice(&two));
    assert_eq!(views[7]["from"]["mailboxes"][0][1], "bob@example.com");
}

/// Every combination of a few hostile pieces: whenever we accept, Python shows
/// only alice.
#[test]
fn combined_header_pieces_never_fool_us() {
    let names = [
        "From",
        "from",
        "FROM",
        "From ",
        " From",
        "Sender",
        "Resent-From",
        "Resent-Sender",
        "X-From",
    ];
    let values: &[&[u8]] = &[
        b" alice@example.com",
        b" bob@example.com",
        b" Alice <alice@example.com>",
        b" bob@example.com <alice@example.com>",
        b" \"bob@example.com\" <alice@example.com>",
        b" =?utf-8?b?Ym9iQGV4YW1wbGUuY29t?= <alice@example.com>",
        b" =?utf-8?q?bob=40example=2Ecom?=",
        b" alice@example.com (bob@example.com)",
        b" undisclosed:;",
        b" alice@example.com, bob@example.com",
        b" <alice@example.com>\r\n bob@example.com",
        b" alice@example.com\r\n\t(folded)",
        b" \"alice\"@example.com",
        b" alice@example.com\0",
        b" Al\xe9 <alice@example.com>",
        b" alice(c)@example.com",
    ];
    let between: &[&[u8]] = &[b"", b"Subject: hi\r\n", b"junk\r\n", b" cont\r\n", b"\r\n"];
    let seconds: &[&[u8]] = &[
        b"",
        b"From: bob@example.com\r\n",
        b"From: alice@example.com\r\n",
        b"Sender: bob@example.com\r\n",
        b"from:bob@example.com\r\n",
    ];
    let mut messages = Vec::new();
    for name in names {
        for value in values {
            for gap in between {
                for second in seconds {
                    messages.push(message(
                        &[name.as_bytes(), b":", value, b"\r\n", gap, second].concat(),
                    ));
                }
            }
        }
    }
    let views = python_views(&messages);
    let mut accepted = 0;
    for (message, view) in messages.iter().zip(&views) {
        if ours(message).is_ok() {
            accepted += 1;
            let shown = String::from_utf8_lossy(message);
            assert_eq!(python_shows_only_alice(view), Ok(()), "{shown:?}: {view}");
            assert!(mail_parser_shows_only_alice(message), "{shown:?}");
        }
    }
    assert!(
        accepted > 50,
        "only {accepted} of {} accepted",
        messages.len()
    );
}

#[test]
fn submitted_mail_with_a_second_from_is_refused() {
    let s = TestServer::start("");
    for (body, reply) in [
        (
            "From: bob@example.com\nFrom: alice@example.com\nSubject: x\n\nhi\n",
            "550 5.7.1 Message rejected: more than one From: header",
        ),
        (
            "From: alice@example.com\nSender: Bob <bob@example.com>\n\nhi\n",
            "550 5.7.1 Message rejected: header Sender: <bob@example.com> is not owned by user alice@example.com",
        ),
        (
            "From: =?utf-8?b?Ym9iQGV4YW1wbGUuY29t?= <alice@example.com>\n\nhi\n",
            "550 5.7.1 Message rejected: From: display name looks like another address (bob@example.com)",
        ),
        (
            "From: undisclosed-recipients:;\n\nhi\n",
            "550 5.7.1 Message rejected: From: header has no usable address",
        ),
    ] {
        let r = alice_submits(s.addr("submission"), body);
        assert!(r.starts_with(reply), "{body:?}: {r}");
    }
    let out = swaks(
        s.addr("submission"),
        &[
            "--tls",
            "--auth",
            "PLAIN",
            "--auth-user",
            ALICE,
            "--auth-password",
            PASSWORD,
            "--from",
            ALICE,
            "--to",
            "x@remote.example",
            "--header",
            "From: \"bob@example.com\" <alice@example.com>",
        ],
    );
    assert!(
        text(&out)
            .contains("550 5.7.1 Message rejected: From: display name looks like another address"),
        "{}",
        text(&out)
    );
    assert!(s.queue().is_empty());
    let r = alice_submits(
        s.addr("submission"),
        "From: \"Liddell, Alice\" <alice@example.com>\nSender: alice@example.com\n\nhi\n",
    );
    assert!(r.starts_with("250 "), "{r}");
}

/// A message from `from` with `hops` Received: lines.
fn with_hops(hops: usize, from: &str) -> String {
    let mut m = String::new();
    for i in 0..hops {
        m.push_str(&format!(
            "Received: from relay{i}.example by relay{}.example; Mon, 1 Jan 2024 00:00:00 +0000\n",
            i + 1
        ));
    }
    m.push_str(&format!("From: {from}\nSubject: loop\n\nround and round\n"));
    m
}

#[test]
fn a_message_that_made_50_hops_is_refused_on_every_port() {
    let s = TestServer::start("");
    for (hops, expected) in [(49, "250 2.0.0"), (50, "554 5.4.6 Too many hops")] {
        let (mut c, _) = Raw::connect(s.addr("mta"));
        c.cmd("EHLO peer.test");
        assert_eq!(code(&c.cmd("MAIL FROM:<someone@remote.example>")), 250);
        assert_eq!(code(&c.cmd("RCPT TO:<alice@example.com>")), 250);
        assert_eq!(code(&c.cmd("DATA")), 354);
        c.send(
            with_hops(hops, "someone@remote.example")
                .replace('\n', "\r\n")
                .as_bytes(),
        );
        let r = c.cmd(".");
        assert!(r.starts_with(expected), "mta, {hops} hops: {r}");
        let r = alice_submits(s.addr("submission"), &with_hops(hops, "alice@example.com"));
        assert!(r.starts_with(expected), "submission, {hops} hops: {r}");
    }
    assert_eq!(s.queue().len(), 2);
}
