//! What a program writes on sendmail's standard input, made into a message:
//! lines ended by LF or CRLF become CRLF lines, a line of a single dot ends
//! the message unless `-i` (or `-oi`) says it is text, and with `-t` the
//! recipients come from To:, Cc: and Bcc:, and Bcc: is taken out.

use std::io::BufRead;

use mail_parser::HeaderValue;
use mail_parser::parsers::MessageStream;

use crate::smtp::headers::{Entry, Field, entries, header_section};

/// Whether a line holding a single dot ends the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dots {
    /// sendmail's default: the dot line ends it, and is not part of it.
    EndMessage,
    /// `-i`/`-oi`: a dot line is text; the message ends at end of input.
    AreText,
    /// SMTP's DATA (`-bs`): the dot line ends it, and the first dot of any
    /// other line that starts with one is stuffing (RFC 5321 §4.5.2).
    Stuffed,
}

/// A message read from standard input.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Input {
    /// The message with CRLF line ends; only its first `limit` octets when
    /// it is longer (then `size` says how long it was).
    pub message: Vec<u8>,
    /// Its length in octets with CRLF line ends, kept or not.
    pub size: u64,
}

impl Input {
    /// Whether the whole message is held (it was within the limit).
    pub fn is_whole(&self) -> bool {
        self.message.len() as u64 == self.size
    }
}

/// Reads a message from `input`, keeping at most `limit` octets of it: past
/// that the rest is read and counted, so the server can say how large it
/// was, but not held.
pub fn read_message(input: &mut impl BufRead, dots: Dots, limit: u64) -> std::io::Result<Input> {
    let mut out = Input::default();
    // The line being read, and how much of it there was beyond what is kept.
    let mut line = Vec::new();
    let mut dropped = 0u64;
    loop {
        let chunk = input.fill_buf()?;
        if chunk.is_empty() {
            break;
        }
        let (take, ends) = match memchr::memchr(b'\n', chunk) {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        let room = (limit + 2).saturating_sub(line.len() as u64) as usize;
        let kept = take.min(room);
        line.extend_from_slice(&chunk[..kept]);
        dropped += (take - kept) as u64;
        input.consume(take);
        if ends {
            if end_line(&mut out, &line, dropped, dots, limit) {
                return Ok(out);
            }
            line.clear();
            dropped = 0;
        }
    }
    // A last line without a line end gets one: a message on disk ends in CRLF.
    if !line.is_empty() || dropped > 0 {
        end_line(&mut out, &line, dropped, dots, limit);
    }
    Ok(out)
}

/// Adds one line (with its LF, CRLF or no end) to `out`; true when it was
/// the dot line that ends the message.
fn end_line(out: &mut Input, line: &[u8], dropped: u64, dots: Dots, limit: u64) -> bool {
    let text = line.strip_suffix(b"\n").unwrap_or(line);
    let text = text.strip_suffix(b"\r").unwrap_or(text);
    if dots != Dots::AreText && text == b"." && dropped == 0 {
        return true;
    }
    let text = match dots {
        Dots::Stuffed => text.strip_prefix(b".").unwrap_or(text),
        _ => text,
    };
    out.size += text.len() as u64 + dropped + 2;
    if out.size <= limit {
        out.message.extend_from_slice(text);
        out.message.extend_from_slice(b"\r\n");
    }
    false
}

/// `-t`: the addresses of the message's To:, Cc: and Bcc: fields, and the
/// message without its Bcc: fields (which would show the blind copies to
/// every recipient).
pub fn extract_recipients(message: &[u8]) -> (Vec<String>, Vec<u8>) {
    let header = header_section(message);
    let mut recipients = Vec::new();
    let mut kept = Vec::with_capacity(message.len());
    let mut at = 0;
    for entry in entries(header) {
        let Entry::Field(field) = entry else {
            continue;
        };
        let bcc = field.name.eq_ignore_ascii_case(b"Bcc");
        if bcc || field.name.eq_ignore_ascii_case(b"To") || field.name.eq_ignore_ascii_case(b"Cc") {
            recipients.extend(
                addresses(&field)
                    .iter()
                    .filter_map(|(_, address)| address.clone()),
            );
        }
        if bcc {
            kept.extend_from_slice(&message[at..field.raw.start]);
            at = field.raw.end;
        }
    }
    kept.extend_from_slice(&message[at..]);
    (recipients, kept)
}

/// The (display name, address) pairs an address field names, as mail-parser
/// reads them; none when it names none.
pub(super) fn addresses(field: &Field<'_>) -> Vec<(Option<String>, Option<String>)> {
    let mut value = field.value();
    value.extend_from_slice(b"\r\n");
    match MessageStream::new(&value).parse_address() {
        HeaderValue::Address(list) => list
            .iter()
            .map(|a| {
                (
                    a.name().map(str::to_string),
                    a.address().map(str::to_string),
                )
            })
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str, dots: Dots, limit: u64) -> Input {
        read_message(&mut text.as_bytes(), dots, limit).expect("read")
    }

    #[test]
    fn lines_end_in_crlf_and_a_lone_dot_ends_the_message_unless_i() {
        let text = "Subject: x\n\nline\r\n.\nafter\n";
        let ended = read(text, Dots::EndMessage, 1000);
        assert_eq!(ended.message, b"Subject: x\r\n\r\nline\r\n");
        assert!(ended.is_whole());
        let all = read(text, Dots::AreText, 1000);
        assert_eq!(all.message, b"Subject: x\r\n\r\nline\r\n.\r\nafter\r\n");
        // A dot with more on its line is text either way; so is ".\r" + "x".
        let text = "a\n..\n. \n.x\nlast";
        for dots in [Dots::EndMessage, Dots::AreText] {
            assert_eq!(
                read(text, dots, 1000).message,
                b"a\r\n..\r\n. \r\n.x\r\nlast\r\n"
            );
        }
        assert_eq!(read("", Dots::AreText, 1000), Input::default());
        let smtp = read("..a\r\n.\r\n..\r\n", Dots::Stuffed, 1000);
        assert_eq!(smtp.message, b".a\r\n");
    }

    /// The limit is on the message as it is sent (CRLF line ends): at the
    /// limit it is whole, one octet more and only its size is known.
    #[test]
    fn a_message_at_the_limit_is_whole_and_one_octet_more_is_counted_only() {
        let text = "0123456789\n".repeat(10);
        let at = read(&text, Dots::AreText, 120);
        assert!(at.is_whole() && at.size == 120);
        let over = read(&text, Dots::AreText, 119);
        assert!(!over.is_whole());
        assert_eq!(over.size, 120);
        assert!(over.message.len() <= 119);
        let one_long_line = "x".repeat(10_000);
        let over = read(&one_long_line, Dots::EndMessage, 100);
        assert_eq!((over.size, over.message.len()), (10_002, 0));
    }

    #[test]
    fn t_takes_to_cc_and_bcc_and_removes_bcc() {
        let message = b"From: a@x.example\r\nTo: B <b@y.example>, c@y.example\r\n\
            cc: Group: d@z.example;\r\nBCC: e@z.example,\r\n f@z.example\r\n\
            Subject: Bcc: g@z.example\r\nbcc:\r\n\r\nTo: h@z.example\r\n";
        let (recipients, kept) = extract_recipients(message);
        assert_eq!(
            recipients,
            [
                "b@y.example",
                "c@y.example",
                "d@z.example",
                "e@z.example",
                "f@z.example"
            ]
        );
        assert_eq!(
            String::from_utf8_lossy(&kept),
            "From: a@x.example\r\nTo: B <b@y.example>, c@y.example\r\n\
             cc: Group: d@z.example;\r\nSubject: Bcc: g@z.example\r\n\r\nTo: h@z.example\r\n"
        );
        let (none, same) = extract_recipients(b"Subject: x\r\n\r\nbody\r\n");
        assert!(none.is_empty());
        assert_eq!(same, b"Subject: x\r\n\r\nbody\r\n");
    }

    proptest::proptest! {
        /// Whatever comes in: every line ends in CRLF, nothing past the limit
        /// is held, and -t never adds a byte.
        #[test]
        fn any_input_makes_crlf_lines(input in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400), limit in 0u64..300) {
            let read = read_message(&mut input.as_slice(), Dots::EndMessage, limit).expect("read");
            proptest::prop_assert!(read.message.len() as u64 <= limit);
            proptest::prop_assert!(read.message.is_empty() || read.message.ends_with(b"\r\n"));
            proptest::prop_assert!(!read.message.split(|&b| b == b'\n').any(|l| l.contains(&b'\n')));
            let (_, kept) = extract_recipients(&read.message);
            proptest::prop_assert!(kept.len() <= read.message.len());
        }
    }
}
