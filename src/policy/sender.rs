//! A submitter may send only as an address it may use: the envelope sender
//! (MAIL FROM) and every mailbox in the header From: (and Sender:,
//! Resent-From:, Resent-Sender:), as a mail reader would show them. An
//! authenticated account may use its own address; a local Unix user
//! (`postern sendmail`) the addresses its `[[sendmail]]` entry allows.

use super::Verdict;
use crate::smtp::address::{Mailbox, normalize_domain};
use crate::smtp::headers::{HeaderFacts, MAX_SENDER_FIELDS, SenderHeader};
use crate::smtp::mailbox_list::MailboxListError;
use crate::smtp::reply::Reply;

/// Who submits a message, and so which addresses it may send as.
#[derive(Debug, Clone, Copy)]
pub enum Sender<'a> {
    /// An account that logged in with AUTH: its canonical address, the only
    /// one it owns.
    Account(&'a str),
    /// A local Unix user through `postern sendmail`: the addresses `allowed`
    /// matches (for root and the server's own user, every hosted domain the
    /// message names).
    Local {
        user: &'a str,
        uid: u32,
        allowed: &'a [SenderPattern],
    },
}

impl Sender<'_> {
    /// Whether this submitter may use `address`.
    pub fn may_use(&self, address: &Mailbox) -> bool {
        match self {
            Sender::Account(user) => address.canonical() == *user,
            Sender::Local { allowed, .. } => allowed.iter().any(|p| p.matches(address)),
        }
    }

    /// How the submitter is named in logs, replies and the queue: the
    /// account's address, or the Unix user's name (which has no `@`, so the
    /// two never meet).
    pub fn name(&self) -> &str {
        match self {
            Sender::Account(user) => user,
            Sender::Local { user, .. } => user,
        }
    }

    /// The end of a refusal: why `address` is not this submitter's to use.
    fn not_allowed(&self) -> String {
        match self {
            Sender::Account(user) => format!("not owned by user {user}"),
            Sender::Local { user, .. } => {
                format!("not among the senders allowed to Unix user {user}")
            }
        }
    }
}

/// One entry of a `[[sendmail]]` table's `senders`: an address, or every
/// address of a domain (`*@domain`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SenderPattern {
    /// A canonical address (lower-cased).
    Address(String),
    /// A domain, lower-cased: `*@domain`.
    Domain(String),
}

impl SenderPattern {
    /// Reads `*@domain` or `local@domain`; the error says what is wrong.
    pub fn parse(text: &str) -> Result<SenderPattern, String> {
        match text.strip_prefix("*@") {
            Some(domain) => normalize_domain(domain)
                .map(SenderPattern::Domain)
                .ok_or_else(|| format!("{domain:?} is not a domain name")),
            None if text.contains('*') => Err(
                "a pattern is an address or *@domain; * stands only for a whole local part"
                    .to_string(),
            ),
            None => Mailbox::parse(text, true)
                .map(|m| SenderPattern::Address(m.canonical()))
                .map_err(|e| e.to_string()),
        }
    }

    fn matches(&self, address: &Mailbox) -> bool {
        match self {
            SenderPattern::Address(a) => address.canonical() == *a,
            SenderPattern::Domain(d) => address.domain == *d,
        }
    }
}

/// MAIL FROM of a submitter; `None` is the null sender `<>`, which a client
/// may use for its own notifications.
pub fn check_envelope_sender(sender: &Sender<'_>, address: Option<&Mailbox>) -> Verdict {
    match address {
        Some(m) if !sender.may_use(m) => Verdict::Reject(Reply::new(
            550,
            (7, 1),
            format!("<{m}>: Sender address rejected: {}", sender.not_allowed()),
        )),
        _ => Verdict::Accept,
    }
}

/// The sender headers of a message a submitter sent (RFC 5322 §3.6):
/// exactly one From:, and every mailbox in From:, Sender:, Resent-From: and
/// Resent-Sender: one it may use, with no name beside it that shows another
/// address. Whatever mail readers could read in two ways is refused.
pub fn check_sender_headers(sender: &Sender<'_>, facts: &HeaderFacts) -> Verdict {
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
                return reject(match other_address(sender, shown) {
                    Some(other) => looks_like(name, &other),
                    None => format!("{name}: display name has an @ outside quotes"),
                });
            }
            Err(e) => return reject(format!("{name}: header has no usable address: {e}")),
        };
        for mailbox in mailboxes {
            let allowed = Mailbox::parse(&mailbox.address, true).is_ok_and(|m| sender.may_use(&m));
            if !allowed {
                return reject(format!(
                    "header {name}: <{}> is {}",
                    printable(&mailbox.address),
                    sender.not_allowed()
                ));
            }
            if let Some(other) = mailbox.shown.iter().find_map(|s| other_address(sender, s)) {
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

/// The first thing in `shown` that reads as an address `sender` may not use:
/// any at sign must belong to one of its own addresses. Look-alike at signs
/// count, and spaces around an at sign do not hide it.
fn other_address(sender: &Sender<'_>, shown: &str) -> Option<String> {
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
        .find(|t| !Mailbox::parse(t, true).is_ok_and(|m| sender.may_use(&m)))
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

    const ALICE: Sender<'static> = Sender::Account("alice@example.com");

    #[test]
    fn only_own_envelope_sender() {
        assert_eq!(
            check_envelope_sender(&ALICE, Some(&mb("Alice@EXAMPLE.com"))),
            Verdict::Accept
        );
        assert_eq!(check_envelope_sender(&ALICE, None), Verdict::Accept);
        let Verdict::Reject(r) = check_envelope_sender(&ALICE, Some(&mb("bob@example.com"))) else {
            panic!("bob's address must be refused");
        };
        assert!(r.text.contains("<bob@example.com>") && r.code == 550);
    }

    /// The reply for a header section sent by alice@example.com: `None` if accepted.
    fn verdict(header: &str) -> Option<String> {
        match check_sender_headers(&ALICE, &HeaderFacts::scan(header.as_bytes())) {
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
            if check_sender_headers(&ALICE, &facts) == Verdict::Accept {
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

    fn patterns(texts: &[&str]) -> Vec<SenderPattern> {
        texts
            .iter()
            .map(|t| SenderPattern::parse(t).expect("pattern"))
            .collect()
    }

    #[test]
    fn patterns_are_an_address_or_a_whole_domain() {
        assert_eq!(
            SenderPattern::parse("Info@Customer2.Example."),
            Ok(SenderPattern::Address("info@customer2.example".into()))
        );
        assert_eq!(
            SenderPattern::parse("*@Customer1.example"),
            Ok(SenderPattern::Domain("customer1.example".into()))
        );
        for bad in [
            "*",
            "*@",
            "info*@x.example",
            "*@*.x.example",
            "x",
            "@x.example",
            "a@-x",
        ] {
            assert!(SenderPattern::parse(bad).is_err(), "{bad}");
        }
    }

    /// A Unix user with `[[sendmail]]` patterns: the same header checks as an
    /// account, against what its patterns match.
    #[test]
    fn a_local_user_may_send_as_its_patterns_only() {
        let allowed = patterns(&["*@customer1.example", "info@customer2.example"]);
        let web1 = Sender::Local {
            user: "web1",
            uid: 1001,
            allowed: &allowed,
        };
        for ok in [
            "shop@customer1.example",
            "Anyone@CUSTOMER1.example",
            "info@customer2.example",
        ] {
            assert_eq!(
                check_envelope_sender(&web1, Some(&mb(ok))),
                Verdict::Accept,
                "{ok}"
            );
        }
        for refused in [
            "sales@customer2.example",
            "x@sub.customer1.example",
            "x@customer1.example.evil",
        ] {
            let Verdict::Reject(r) = check_envelope_sender(&web1, Some(&mb(refused))) else {
                panic!("{refused} must be refused");
            };
            assert!(
                r.text
                    .contains("not among the senders allowed to Unix user web1"),
                "{}",
                r.text
            );
        }
        let headers = |h: &str| check_sender_headers(&web1, &HeaderFacts::scan(h.as_bytes()));
        assert_eq!(
            headers("From: Shop <shop@customer1.example>\r\nSender: info@customer2.example\r\n"),
            Verdict::Accept
        );
        for refused in [
            "From: sales@customer2.example\r\n",
            "From: \"boss@bank.example\" <shop@customer1.example>\r\n",
            "Subject: no sender\r\n",
        ] {
            assert_ne!(headers(refused), Verdict::Accept, "{refused}");
        }
        assert_eq!(web1.name(), "web1");
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
