//! An authenticated user may send only as an address it owns: the envelope
//! sender (MAIL FROM) and every mailbox in the header From: (and Sender:,
//! Resent-From:, Resent-Sender:), as a mail reader would show them.

use super::Verdict;
use crate::smtp::address::Mailbox;
use crate::smtp::headers::{HeaderFacts, MAX_SENDER_FIELDS, SenderHeader};
use crate::smtp::mailbox_list::MailboxListError;
use crate::smtp::reply::Reply;

/// Whether `user` (a canonical address) owns `address`.
fn owns(user: &str, address: &Mailbox) -> bool {
    address.canonical() == user
}

/// MAIL FROM of an authenticated user; `None` is the null sender `<>`, which a
/// client may use for its own notifications.
pub fn check_envelope_sender(user: &str, sender: Option<&Mailbox>) -> Verdict {
    match sender {
        Some(m) if !owns(user, m) => Verdict::Reject(Reply::new(
            550,
            (7, 1),
            format!("<{m}>: Sender address rejected: not owned by user {user}"),
        )),
        _ => Verdict::Accept,
    }
}

/// The sender headers of a message an authenticated user submitted (RFC 5322
/// §3.6): exactly one From:, and every mailbox in From:, Sender:, Resent-From:
/// and Resent-Sender: the user's own, with no name beside it that shows another
/// address. Whatever mail readers could read in two ways is refused.
pub fn check_sender_headers(user: &str, facts: &HeaderFacts) -> Verdict {
    let reject =
        |why: String| Verdict::Reject(Reply::new(550, (7, 1), format!("Message rejected: {why}")));
    if let Some(line) = facts.malformed_line {
        return reject(format!(
            "line {line} of the header section is not a header field"
        ));
    }
    if facts.senders_left_out > 0 {
        return reject(format!(
            "more than {MAX_SENDER_FIELDS} From:, Sender: and Resent- header fields"
        ));
    }
    match facts.fields(SenderHeader::From).count() {
        0 => return reject("it has no From: header".into()),
        1 => {}
        _ => return reject("more than one From: header (RFC 5322 §3.6)".into()),
    }
    for field in &facts.senders {
        let name = field.header.name();
        if field.space_before_colon {
            return reject(format!("a {name}: header has a space before the colon"));
        }
        let mailboxes = match &field.mailboxes {
            Ok(m) => m,
            Err(MailboxListError::UnquotedAt(shown)) => {
                return reject(match other_address(user, shown) {
                    Some(other) => looks_like(name, &other),
                    None => format!("{name}: display name has an @ outside quotes"),
                });
            }
            Err(e) => return reject(format!("{name}: header has no usable address: {e}")),
        };
        for mailbox in mailboxes {
            let owned = Mailbox::parse(&mailbox.address, true).is_ok_and(|m| owns(user, &m));
            if !owned {
                return reject(format!(
                    "header {name}: <{}> is not owned by user {user}",
                    printable(&mailbox.address)
                ));
            }
            if let Some(other) = mailbox.shown.iter().find_map(|s| other_address(user, s)) {
                return reject(looks_like(name, &other));
            }
        }
    }
    Verdict::Accept
}

fn looks_like(header: &str, other: &str) -> String {
    format!(
        "{header}: display name looks like another address ({})",
        printable(other)
    )
}

/// The first thing in `shown` that reads as an address `user` does not own:
/// any at sign must belong to one of the user's own addresses. Look-alike at
/// signs count, and spaces around an at sign do not hide it.
fn other_address(user: &str, shown: &str) -> Option<String> {
    let mut text = String::with_capacity(shown.len());
    for c in shown.chars() {
        match c {
            '@' | '\u{FF20}' | '\u{FE6B}' => {
                text.truncate(text.trim_end().len());
                text.push('@');
            }
            c if c.is_whitespace() && text.ends_with('@') => {}
            c => text.push(c),
        }
    }
    text.split(|c: char| c.is_whitespace() || "<>()[]\",;:'`".contains(c))
        .map(|t| t.trim_matches(|c: char| c.is_ascii_punctuation() && c != '@'))
        .filter(|t| t.contains('@'))
        .find(|t| !Mailbox::parse(t, true).is_ok_and(|m| owns(user, &m)))
        .map(str::to_string)
}

/// Client text made safe for a reply line: printable ASCII, and not too long.
fn printable(s: &str) -> String {
    s.chars()
        .take(100)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mb(s: &str) -> Mailbox {
        Mailbox::parse(s, false).expect("address")
    }

    #[test]
    fn only_own_envelope_sender() {
        assert_eq!(
            check_envelope_sender("alice@example.com", Some(&mb("Alice@EXAMPLE.com"))),
            Verdict::Accept
        );
        assert_eq!(
            check_envelope_sender("alice@example.com", None),
            Verdict::Accept
        );
        let Verdict::Reject(r) =
            check_envelope_sender("alice@example.com", Some(&mb("bob@example.com")))
        else {
            panic!("bob's address must be refused");
        };
        assert!(r.text.contains("<bob@example.com>") && r.code == 550);
    }

    /// The reply for a header section sent by alice@example.com: `None` if accepted.
    fn verdict(header: &str) -> Option<String> {
        match check_sender_headers("alice@example.com", &HeaderFacts::scan(header.as_bytes())) {
            Verdict::Accept => None,
            Verdict::Reject(r) => {
                assert_eq!(
                    (r.code, r.enhanced.map(|e| e.to_string())),
                    (550, Some("5.7.1".into()))
                );
                Some(r.text)
            }
        }
    }

    #[test]
    fn own_mailboxes_pass() {
        for header in [
            "From: alice@example.com\r\n",
            "From: Alice <Alice@Example.COM>\r\nSender: alice@example.com\r\n",
            "from: \"Liddell, Alice\" <alice@example.com>\r\n",
            "From: =?utf-8?q?Alice_Liddell?= <alice@example.com>\r\n",
            "From: \"alice@example.com\" <alice@example.com>\r\n",
            "From: Alice at home <alice@example.com>\r\n",
            "From: alice@example.com (Alice)\r\nResent-From: alice@example.com\r\nResent-Sender: <alice@example.com>\r\n",
            "Subject : obsolete but harmless\r\nFrom: alice@example.com\r\n",
            "From: Jörg <alice@example.com>\r\n",
        ] {
            assert_eq!(verdict(header), None, "{header}");
        }
    }

    #[test]
    fn every_way_of_showing_another_sender_is_refused() {
        for (header, why) in [
            ("Subject: none\r\n", "it has no From: header"),
            (
                "From: bob@example.com\r\nFrom: alice@example.com\r\n",
                "more than one From: header",
            ),
            (
                "From: alice@example.com\r\nX: 1\r\nFROM: bob@example.com\r\n",
                "more than one From: header",
            ),
            (
                "From : bob@example.com\r\nSubject: x\r\n",
                "space before the colon",
            ),
            (
                "From: alice@example.com\r\nFrom\t: bob@example.com\r\n",
                "more than one From: header",
            ),
            (
                "From : alice@example.com\r\n",
                "a From: header has a space before the colon",
            ),
            (
                "From: alice@example.com\r\nnot a header\r\n",
                "line 2 of the header section is not a header field",
            ),
            (
                " From: bob@example.com\r\nFrom: alice@example.com\r\n",
                "line 1 of the header section",
            ),
            (
                "From: Bob <bob@example.com>\r\n",
                "header From: <bob@example.com> is not owned by user alice@example.com",
            ),
            (
                "From: alice@example.com, bob@example.com\r\n",
                "<bob@example.com> is not owned",
            ),
            (
                "From: alice@example.com\r\n bob@example.com\r\n",
                "From: header has no usable address: it cannot be parsed",
            ),
            (
                "From: undisclosed-recipients:;\r\n",
                "From: header has no usable address: it uses group syntax",
            ),
            (
                "From: \r\n",
                "From: header has no usable address: it names no address",
            ),
            ("From: Alice\r\n", "From: header has no usable address"),
            (
                "From: alice@example.com\0\r\n",
                "it contains a control character",
            ),
            (
                "From: bob@example.com <alice@example.com>\r\n",
                "From: display name looks like another address (bob@example.com)",
            ),
            (
                "From: \"bob@example.com\" <alice@example.com>\r\n",
                "looks like another address (bob@example.com)",
            ),
            (
                "From: bob @ example.com <alice@example.com>\r\n",
                "looks like another address (bob@example.com)",
            ),
            (
                "From: bob\u{FF20}example.com <alice@example.com>\r\n",
                "looks like another address (bob@example.com)",
            ),
            (
                "From: =?utf-8?b?Ym9iQGV4YW1wbGUuY29t?= <alice@example.com>\r\n",
                "looks like another address (bob@example.com)",
            ),
            (
                "From: =?utf-8?q?=3Cbob=40example=2Ecom=3E?= <alice@example.com>\r\n",
                "looks like another address (bob@example.com)",
            ),
            (
                "From: alice@example.com (bob@example.com)\r\n",
                "looks like another address (bob@example.com)",
            ),
            (
                "From: alice@example.com\r\nSender: bob@example.com\r\n",
                "header Sender: <bob@example.com> is not owned",
            ),
            (
                "From: alice@example.com\r\nResent-From: bob@example.com\r\n",
                "header Resent-From: <bob@example.com>",
            ),
            (
                "From: alice@example.com\r\nresent-sender: bob@example.com\r\n",
                "header Resent-Sender: <bob@example.com>",
            ),
            (
                "From: \"bob\"@example.com\r\n",
                "<\"bob\"@example.com> is not owned",
            ),
            ("From: alice@example.com.evil\r\n", "is not owned"),
            (
                "From: alice@example.com <alice@example.com>\r\n",
                "From: display name has an @ outside quotes",
            ),
            (
                "From: \"@\" <alice@example.com>\r\n",
                "looks like another address (@)",
            ),
        ] {
            let got = verdict(header).unwrap_or_else(|| panic!("accepted: {header:?}"));
            assert!(got.contains(why), "{header:?}: {got}");
        }
    }

    const NAMES: &[&str] = &[
        "From:",
        "from :",
        "FROM:",
        " From:",
        "Sender:",
        "Resent-From:",
        "X:",
        "From",
    ];
    /// Pieces of field values that readers have been known to read apart.
    const PIECES: &[&str] = &[
        " alice@example.com",
        " bob@example.com",
        " Alice",
        " <alice@example.com>",
        " \"bob@example.com\"",
        " =?utf-8?q?bob=40example.com?=",
        " (bob@example.com)",
        " (",
        ")",
        "\"",
        ",",
        ";",
        ":",
        "@",
        "<",
        ">",
        " undisclosed:;",
        "\r\n ",
        "\r\n\t",
        "\n",
        "\r",
        "\0",
        "\u{FF20}",
        "é",
        "=?",
        "?=",
        ".",
    ];

    const CORES: &[&str] = &["", " alice@example.com", " <alice@example.com>"];

    proptest::proptest! {
        // Few random headers pass; enough cases make a few dozen that do.
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Whatever the pieces, a message that passes for alice shows only
        /// alice to mail-parser too.
        #[test]
        fn what_passes_shows_only_the_user(
            fields in proptest::collection::vec((
                0..NAMES.len(),
                proptest::collection::vec(0..PIECES.len(), 0..3),
                0..CORES.len(),
                proptest::collection::vec(0..PIECES.len(), 0..2),
            ), 1..4)
        ) {
            let text = |picks: &[usize]| picks.iter().map(|&i| PIECES[i]).collect::<String>();
            let header: String = fields
                .iter()
                .map(|(name, before, core, after)| {
                    format!("{}{}{}{}\r\n", NAMES[*name], text(before), CORES[*core], text(after))
                })
                .collect();
            let facts = HeaderFacts::scan(header.as_bytes());
            if check_sender_headers("alice@example.com", &facts) == Verdict::Accept {
                proptest::prop_assert_eq!(facts.fields(SenderHeader::From).count(), 1);
                let message = format!("{header}\r\nbody\r\n");
                let parsed = mail_parser::MessageParser::default().parse_headers(message.as_bytes());
                let parsed = parsed.expect("parses");
                for list in [parsed.from(), parsed.sender()].into_iter().flatten() {
                    for a in list.iter() {
                        let address = a.address().map(str::to_lowercase);
                        proptest::prop_assert_eq!(address.as_deref(), Some("alice@example.com"), "{:?}", header);
                    }
                }
            }
        }
    }

    #[test]
    fn sender_fields_at_the_limit() {
        let header = |n: usize| {
            let resent = "Resent-From: alice@example.com\r\n".repeat(n - 1);
            format!("From: alice@example.com\r\n{resent}")
        };
        assert_eq!(verdict(&header(MAX_SENDER_FIELDS)), None);
        let refused = verdict(&header(MAX_SENDER_FIELDS + 1)).expect("refused");
        assert!(
            refused.contains("more than 32 From:, Sender: and Resent-"),
            "{refused}"
        );
    }

    #[test]
    fn replies_carry_only_printable_ascii() {
        let got =
            verdict("From: Jörg\u{202e}@exämple.com <alice@example.com>\r\n").expect("refused");
        assert!(
            got.is_ascii() && !got.chars().any(|c| c.is_control()),
            "{got}"
        );
    }
}
