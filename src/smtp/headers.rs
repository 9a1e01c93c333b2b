//! The header section of a message, read once at the end of DATA for the checks
//! that need it: who the message says it is from (From:, Sender:, Resent-From:,
//! Resent-Sender:, every occurrence), how many Received: lines it carries, and
//! the Delivered-To: marks forwarding servers leave against loops.
//! Works on the header bytes alone, so the body never has to be in memory.

use std::ops::Range;

use super::mailbox_list::{self, HeaderMailbox, MailboxListError};

/// The header fields whose mailboxes say who sent a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SenderHeader {
    From,
    Sender,
    ResentFrom,
    ResentSender,
}

impl SenderHeader {
    const ALL: [SenderHeader; 4] = [
        SenderHeader::From,
        SenderHeader::Sender,
        SenderHeader::ResentFrom,
        SenderHeader::ResentSender,
    ];

    /// The field name as RFC 5322 §3.6.2 and §3.6.6 spell it.
    pub fn name(self) -> &'static str {
        match self {
            SenderHeader::From => "From",
            SenderHeader::Sender => "Sender",
            SenderHeader::ResentFrom => "Resent-From",
            SenderHeader::ResentSender => "Resent-Sender",
        }
    }

    fn of(name: &[u8]) -> Option<SenderHeader> {
        SenderHeader::ALL
            .into_iter()
            .find(|h| name.eq_ignore_ascii_case(h.name().as_bytes()))
    }
}

/// One occurrence of a sender header field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderField {
    pub header: SenderHeader,
    /// Whitespace between the name and the colon: obsolete syntax (RFC 5322
    /// §4.5) that some mail readers honour and others ignore.
    pub space_before_colon: bool,
    /// The mailboxes it names, or why it names none that can be trusted.
    pub mailboxes: Result<Vec<HeaderMailbox>, MailboxListError>,
}

/// Sender fields kept by `HeaderFacts::scan`; more are only counted, so a
/// hostile header section costs no more memory than this many fields.
pub const MAX_SENDER_FIELDS: usize = 32;

/// What the end-of-data checks need to know about a header section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderFacts {
    /// The sender header fields, in order, up to `MAX_SENDER_FIELDS`.
    pub senders: Vec<SenderField>,
    /// Sender header fields past `MAX_SENDER_FIELDS`, not read.
    pub senders_left_out: usize,
    /// Received: fields: one per hop the message has made (a loop shows as many).
    pub received: usize,
    /// The addresses of its Delivered-To: fields, lower-cased, without angle
    /// brackets: where forwarding servers (Postfix's local, us) passed it on.
    pub delivered_to: Vec<String>,
    /// A `TLS-Required: No` field (RFC 8689 §3): the sender asks that
    /// the recipients' TLS policies (MTA-STS, DANE) not hold the message up.
    pub tls_required_no: bool,
    /// The first line (from 1) that is neither a header field nor the
    /// continuation of one. Readers disagree on where such a header section
    /// ends, so the fields after it may or may not be shown.
    pub malformed_line: Option<usize>,
}

impl HeaderFacts {
    /// Reads a header section (see [`header_section`]) in one pass.
    pub fn scan(header: &[u8]) -> HeaderFacts {
        let mut facts = HeaderFacts::default();
        for entry in entries(header) {
            match entry {
                Entry::Malformed { line } => {
                    facts.malformed_line.get_or_insert(line);
                }
                Entry::Field(field) => {
                    if field.name.eq_ignore_ascii_case(b"Received") {
                        facts.received += 1;
                    } else if field.name.eq_ignore_ascii_case(b"Delivered-To") {
                        let value = field.value();
                        let text = String::from_utf8_lossy(&value);
                        let text = text.trim();
                        let text = text.strip_prefix('<').unwrap_or(text);
                        facts
                            .delivered_to
                            .push(text.strip_suffix('>').unwrap_or(text).to_lowercase());
                    } else if field.name.eq_ignore_ascii_case(b"TLS-Required") {
                        // §3: "No" is the only value defined.
                        facts.tls_required_no |=
                            field.value().trim_ascii().eq_ignore_ascii_case(b"No");
                    } else if let Some(header) = SenderHeader::of(field.name) {
                        if facts.senders.len() == MAX_SENDER_FIELDS {
                            facts.senders_left_out += 1;
                            continue;
                        }
                        facts.senders.push(SenderField {
                            header,
                            space_before_colon: field.space_before_colon,
                            mailboxes: mailbox_list::parse(&field.value()),
                        });
                    }
                }
            }
        }
        facts
    }

    /// The occurrences of one sender header.
    pub fn fields(&self, header: SenderHeader) -> impl Iterator<Item = &SenderField> {
        self.senders.iter().filter(move |f| f.header == header)
    }
}

/// The header section of `message`: everything before the first empty line
/// (the whole message when there is none), line ends included. An "empty
/// line" made by a lone CR does not end it: not every reader sees a line there,
/// and what follows is checked (and found malformed) rather than skipped.
pub fn header_section(message: &[u8]) -> &[u8] {
    &message[..split(message).0]
}

/// Whether `message` holds the end of its header section (an empty line), so
/// that `header_section` is the whole section and not a cut-off start.
pub fn header_section_ends(message: &[u8]) -> bool {
    split(message).0 < message.len()
}

/// Where the header section of `message` ends, and where its body starts
/// (after the empty line; the end of the message when there is none).
pub(crate) fn split(message: &[u8]) -> (usize, usize) {
    lines(message)
        .find(|l| l.content.is_empty() && !l.lone_cr)
        .map_or((message.len(), message.len()), |l| {
            (l.content.start, l.next)
        })
}

/// One line: its text and where the next line starts.
#[derive(Debug, Clone)]
pub(crate) struct Line {
    pub content: Range<usize>,
    pub next: usize,
    /// Ended by a CR alone, which some readers take for a line end and others
    /// do not.
    pub lone_cr: bool,
}

/// The lines of `bytes`. CRLF, a lone CR and a lone LF each end a line, as in
/// Python's email parser: a line end that any reader sees is a line end here.
pub(crate) fn lines(bytes: &[u8]) -> impl Iterator<Item = Line> + '_ {
    let mut pos = 0;
    std::iter::from_fn(move || {
        if pos >= bytes.len() {
            return None;
        }
        let start = pos;
        let line = match memchr::memchr2(b'\r', b'\n', &bytes[start..]) {
            None => Line {
                content: start..bytes.len(),
                next: bytes.len(),
                lone_cr: false,
            },
            Some(i) => {
                let end = start + i;
                let cr = bytes[end] == b'\r';
                let crlf = cr && bytes.get(end + 1) == Some(&b'\n');
                Line {
                    content: start..end,
                    next: end + if crlf { 2 } else { 1 },
                    lone_cr: cr && !crlf,
                }
            }
        };
        pos = line.next;
        Some(line)
    })
}

/// A header field: its name and where it lies, continuation lines included.
#[derive(Debug, Clone)]
pub(crate) struct Field<'a> {
    header: &'a [u8],
    /// The name without the whitespace before the colon.
    pub name: &'a [u8],
    pub space_before_colon: bool,
    /// From the name to the end of the last continuation line's line end.
    pub raw: Range<usize>,
    value_start: usize,
}

impl Field<'_> {
    /// The value after the colon, unfolded (RFC 5322 §2.2.3: line ends removed,
    /// the whitespace that follows them kept).
    pub fn value(&self) -> Vec<u8> {
        self.header[self.value_start..self.raw.end]
            .iter()
            .copied()
            .filter(|&b| b != b'\r' && b != b'\n')
            .collect()
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Entry<'a> {
    Field(Field<'a>),
    Malformed { line: usize },
}

/// The fields of a header section, each with its continuation lines, and the
/// lines that are neither (RFC 5322 §2.2: a name of printable ASCII other than
/// the colon, then the colon; §4.5 allows whitespace before the colon).
pub(crate) fn entries(header: &[u8]) -> impl Iterator<Item = Entry<'_>> + '_ {
    let mut lines = lines(header).enumerate().peekable();
    std::iter::from_fn(move || {
        let (number, line) = lines.next()?;
        let text = &header[line.content.clone()];
        let field = field_start(header, text, line.content.start).filter(|_| !line.lone_cr);
        let Some(field) = field else {
            return Some(Entry::Malformed { line: number + 1 });
        };
        let mut end = line.next;
        while let Some((_, next)) = lines.next_if(|(_, l)| {
            matches!(header.get(l.content.start), Some(b' ' | b'\t')) && !l.lone_cr
        }) {
            end = next.next;
        }
        Some(Entry::Field(Field {
            raw: field.raw.start..end,
            ..field
        }))
    })
}

/// The field whose first line is `text` (at `start` in `header`), if it is one.
fn field_start<'a>(header: &'a [u8], text: &'a [u8], start: usize) -> Option<Field<'a>> {
    let colon = memchr::memchr(b':', text)?;
    let spaced = &text[..colon];
    let name = spaced.trim_ascii_end();
    let ftext = |b: &u8| (33..=126).contains(b);
    if name.is_empty()
        || !name.iter().all(ftext)
        || !spaced[name.len()..]
            .iter()
            .all(|&b| b == b' ' || b == b'\t')
    {
        return None;
    }
    Some(Field {
        header,
        name,
        space_before_colon: spaced.len() != name.len(),
        raw: start..start,
        value_start: start + colon + 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addresses(f: &SenderField) -> Vec<&str> {
        f.mailboxes
            .as_ref()
            .map(|m| m.iter().map(|m| m.address.as_str()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn header_section_ends_at_the_first_empty_line() {
        assert_eq!(
            header_section(b"A: 1\r\nB: 2\r\n\r\nbody\r\n"),
            b"A: 1\r\nB: 2\r\n"
        );
        assert_eq!(header_section(b"A: 1\n\nbody"), b"A: 1\n");
        assert_eq!(header_section(b"\r\nbody"), b"");
        assert_eq!(header_section(b"A: 1\r\n"), b"A: 1\r\n");
        // A lone CR is a line end for some readers and not for others: it
        // never ends the header section, and its line is malformed.
        let message = b"A: 1\r\n\rFrom: b@x\r\n\r\nbody";
        assert_eq!(header_section(message), b"A: 1\r\n\rFrom: b@x\r\n");
        assert_eq!(
            HeaderFacts::scan(header_section(message)).malformed_line,
            Some(2)
        );
    }

    #[test]
    fn every_sender_field_is_found_in_any_case_and_folded() {
        let facts = HeaderFacts::scan(
            b"FROM: a@x.org\r\nSubject: s\r\nfrom: Bob\r\n <b@y.org>\r\nSender :s@z.org\r\nRESENT-from: r@x.org\r\nResent-Sender: t@x.org\r\n",
        );
        let names: Vec<_> = facts.senders.iter().map(|f| f.header).collect();
        use SenderHeader::*;
        assert_eq!(names, [From, From, Sender, ResentFrom, ResentSender]);
        assert_eq!(addresses(&facts.senders[1]), ["b@y.org"]);
        assert!(facts.senders[2].space_before_colon && !facts.senders[0].space_before_colon);
        assert_eq!(facts.fields(From).count(), 2);
        assert_eq!(facts.malformed_line, None);
    }

    #[test]
    fn sender_fields_past_the_cap_are_only_counted() {
        let at = "Sender: a@x.org\r\n".repeat(MAX_SENDER_FIELDS);
        let facts = HeaderFacts::scan(at.as_bytes());
        assert_eq!(
            (facts.senders.len(), facts.senders_left_out),
            (MAX_SENDER_FIELDS, 0)
        );
        let over = format!("{at}From: b@x.org\r\n");
        let facts = HeaderFacts::scan(over.as_bytes());
        assert_eq!(
            (facts.senders.len(), facts.senders_left_out),
            (MAX_SENDER_FIELDS, 1)
        );
    }

    #[test]
    fn received_lines_are_counted() {
        let mut header = Vec::new();
        for _ in 0..50 {
            header.extend_from_slice(
                b"Received: from a\r\n\tby b; Mon, 1 Jan 2024 00:00:00 +0000\r\n",
            );
        }
        header.extend_from_slice(b"received : x\r\nX-Received: not one\r\n");
        assert_eq!(HeaderFacts::scan(&header).received, 51);
    }

    #[test]
    fn tls_required_no_is_found_in_any_case_and_only_with_no() {
        let no = |header: &[u8]| HeaderFacts::scan(header).tls_required_no;
        assert!(no(b"Subject: x\r\nTLS-Required: No\r\n"));
        assert!(no(b"tls-required:\r\n  no \r\n"));
        assert!(!no(b"TLS-Required: Yes\r\n"));
        assert!(!no(b"X-TLS-Required: No\r\n"));
        assert!(!no(b"Subject: TLS-Required: No\r\n"));
    }

    #[test]
    fn lines_that_are_not_fields_are_reported() {
        for (header, line) in [
            (&b"From: a@x\r\nnot a field\r\nFrom: b@x\r\n"[..], 2),
            (b" From: b@x\r\n", 1),
            (b"Subject: s\r\nX Y: z\r\n", 2),
            (b"From\0: a@x\r\n", 1),
            (b"Fr\xc3\xb6m: a@x\r\n", 1),
            (b": a@x\r\n", 1),
            (b"From alice@x Mon Jan 1 00:00:00 2024\r\n", 1),
            (b"From: a@x\r\n (c)\rX: bob@y\r\n", 2),
            (b"From: a@x\rX: 1\r\n", 1),
        ] {
            assert_eq!(
                HeaderFacts::scan(header).malformed_line,
                Some(line),
                "{}",
                String::from_utf8_lossy(header)
            );
        }
    }

    #[test]
    fn field_ranges_cover_their_continuations() {
        let header = b"A: 1\r\n 2\r\nB: 3\r\n";
        let fields: Vec<_> = entries(header)
            .filter_map(|e| match e {
                Entry::Field(f) => Some((f.raw.clone(), f.value())),
                Entry::Malformed { .. } => None,
            })
            .collect();
        assert_eq!(
            fields,
            [(0..10, b" 1 2".to_vec()), (10..16, b" 3".to_vec())]
        );
    }
}
