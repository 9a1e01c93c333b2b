//! Text parts re-encoded as quoted-printable (RFC 2045 §6.7), whose lines are
//! at most 76 ASCII characters: a part with a line over 998 octets (RFC 5322
//! §2.1.1), so that no server on the way refuses it for that, and, to make a
//! message 7-bit (RFC 6152 §3: for a server without 8BITMIME), a part with
//! 8-bit octets. `prepare` calls it on submitted mail before anything signs
//! it, `outbound` on unsigned mail for such a server; the multipart
//! structure, the boundaries and every other part stay byte for byte.

use std::ops::Range;

use super::data::MAX_MESSAGE_LINE;
use super::headers::{Entry, entries, lines, split};

/// Nesting deeper than this is left as it is: no real message goes there, and
/// a hostile one must not cost more.
const MAX_DEPTH: usize = 32;

/// RFC 2045 §6.7 (5): encoded lines are at most 76 characters; 75 leaves room
/// for the `=` of a soft line break.
const QP_LINE: usize = 75;

/// The message with every text part that has over-long lines, and that is
/// 7bit, 8bit or has no Content-Transfer-Encoding, made quoted-printable;
/// `None` when there is no such part. Base64 and quoted-printable parts are
/// already short-lined. Long lines in other parts (an attachment declared
/// 7bit or 8bit) are left: they are rare, and changing them could change what
/// the receiving program reads.
pub fn reencode_long_lines(message: &[u8]) -> Option<Vec<u8>> {
    entity(message, Default::Text, true, 0, Reason::LongLines)
}

/// The message with every text part that is not 7-bit (8-bit octets, or a
/// line over 998 octets) made quoted-printable, as `reencode_long_lines`
/// does; `None` when there is none. 8-bit octets elsewhere (header fields,
/// other parts) are left: no encoding of a part can change them.
pub fn reencode_to_7bit(message: &[u8]) -> Option<Vec<u8>> {
    entity(message, Default::Text, true, 0, Reason::EightBit)
}

/// Which text parts are re-encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    LongLines,
    /// Not 7-bit: 8-bit octets or long lines.
    EightBit,
}

impl Reason {
    fn applies(self, body: &[u8]) -> bool {
        let long = || lines(body).any(|l| l.content.len() > MAX_MESSAGE_LINE);
        match self {
            Reason::LongLines => long(),
            Reason::EightBit => !body.is_ascii() || long(),
        }
    }
}

/// What an entity with no Content-Type is (RFC 2046 §5.1.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Default {
    Text,
    Message,
}

/// The headers of one MIME entity that matter here.
struct Head {
    /// Type and subtype, lower-cased; `None` without a usable Content-Type.
    content_type: Option<(String, String)>,
    boundary: Option<Vec<u8>>,
    /// 7bit, 8bit or none: text that may be re-encoded, and a multipart or
    /// message that may be looked into.
    plain_encoding: bool,
    /// Where the Content-Transfer-Encoding fields lie, to drop them.
    encoding_fields: Vec<Range<usize>>,
    mime_version: bool,
}

fn head(header: &[u8]) -> Head {
    let mut h = Head {
        content_type: None,
        boundary: None,
        plain_encoding: true,
        encoding_fields: Vec::new(),
        mime_version: false,
    };
    let mut seen_type = false;
    for entry in entries(header) {
        let Entry::Field(field) = entry else { continue };
        if field.name.eq_ignore_ascii_case(b"Content-Type") && !seen_type {
            // Readers take the first Content-Type.
            seen_type = true;
            let value = field.value();
            h.content_type = media_type(&value);
            h.boundary = parameter(&value, b"boundary");
        } else if field
            .name
            .eq_ignore_ascii_case(b"Content-Transfer-Encoding")
        {
            if h.encoding_fields.is_empty() {
                let value = field.value();
                let value = value.trim_ascii();
                h.plain_encoding =
                    value.eq_ignore_ascii_case(b"7bit") || value.eq_ignore_ascii_case(b"8bit");
            }
            h.encoding_fields.push(field.raw.clone());
        } else if field.name.eq_ignore_ascii_case(b"MIME-Version") {
            h.mime_version = true;
        }
    }
    h
}

/// `type/subtype` of a Content-Type value, lower-cased.
fn media_type(value: &[u8]) -> Option<(String, String)> {
    let end = memchr::memchr(b';', value).unwrap_or(value.len());
    let text = std::str::from_utf8(&value[..end])
        .ok()?
        .trim()
        .to_ascii_lowercase();
    let (t, s) = text.split_once('/')?;
    let token = |x: &str| {
        !x.is_empty()
            && x.bytes()
                .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?=".contains(&b))
    };
    (token(t) && token(s)).then(|| (t.to_string(), s.to_string()))
}

/// The value of parameter `name` (RFC 2045 §5.1), unquoted.
fn parameter(value: &[u8], name: &[u8]) -> Option<Vec<u8>> {
    let mut rest = &value[memchr::memchr(b';', value)? + 1..];
    loop {
        rest = rest.trim_ascii_start();
        let eq = memchr::memchr(b'=', rest)?;
        let key = rest[..eq].trim_ascii();
        rest = rest[eq + 1..].trim_ascii_start();
        let mut found = Vec::new();
        if rest.first() == Some(&b'"') {
            let mut i = 1;
            while i < rest.len() && rest[i] != b'"' {
                if rest[i] == b'\\' {
                    i += 1;
                }
                if let Some(&b) = rest.get(i) {
                    found.push(b);
                }
                i += 1;
            }
            rest = rest.get(i + 1..).unwrap_or_default();
        } else {
            let end = rest
                .iter()
                .position(|&b| b == b';' || b.is_ascii_whitespace())
                .unwrap_or(rest.len());
            found.extend_from_slice(&rest[..end]);
            rest = &rest[end..];
        }
        if key.eq_ignore_ascii_case(name) {
            return Some(found);
        }
        rest = &rest[memchr::memchr(b';', rest)? + 1..];
    }
}

/// One entity (a message or a body part); `top` when it is a message, whose
/// header must then say MIME-Version if anything inside changed.
fn entity(
    bytes: &[u8],
    default: Default,
    top: bool,
    depth: usize,
    reason: Reason,
) -> Option<Vec<u8>> {
    if depth > MAX_DEPTH {
        return None;
    }
    let (header_end, body_start) = split(bytes);
    let h = head(&bytes[..header_end]);
    let body = &bytes[body_start..];
    let kind = match (&h.content_type, default) {
        (Some((t, s)), _) => (t.as_str(), s.as_str()),
        (None, Default::Text) => ("text", "plain"),
        (None, Default::Message) => ("message", "rfc822"),
    };
    let mut added = Vec::new();
    let mut dropped: &[Range<usize>] = &[];
    let new_body = match kind {
        _ if !h.plain_encoding => return None,
        ("multipart", sub) => {
            let part_default = if sub == "digest" {
                Default::Message
            } else {
                Default::Text
            };
            multipart(body, h.boundary.as_deref()?, part_default, depth, reason)?
        }
        ("message", "rfc822" | "global") => entity(body, Default::Text, true, depth + 1, reason)?,
        ("text", _) if reason.applies(body) => {
            dropped = &h.encoding_fields;
            added.extend_from_slice(b"Content-Transfer-Encoding: quoted-printable\r\n");
            if h.content_type.is_none() && !body.is_ascii() && std::str::from_utf8(body).is_ok() {
                // Without a Content-Type the charset is US-ASCII (RFC 2045
                // §5.2); once encoded, 8-bit text needs its charset said.
                added.extend_from_slice(b"Content-Type: text/plain; charset=utf-8\r\n");
            }
            quoted_printable(body)
        }
        _ => return None,
    };
    if top && !h.mime_version {
        added.extend_from_slice(b"MIME-Version: 1.0\r\n");
    }
    let mut out = Vec::with_capacity(header_end + added.len() + new_body.len() + 2);
    let mut pos = 0;
    for field in dropped {
        out.extend_from_slice(&bytes[pos..field.start]);
        pos = field.end;
    }
    out.extend_from_slice(&bytes[pos..header_end]);
    out.extend_from_slice(&added);
    out.extend_from_slice(&bytes[header_end..body_start]);
    out.extend_from_slice(&new_body);
    Some(out)
}

/// A multipart body with its changed parts replaced (RFC 2046 §5.1.1): a part
/// runs from after its delimiter line to the line end before the next one,
/// which belongs to the delimiter. Preamble and epilogue stay as they are.
fn multipart(
    body: &[u8],
    boundary: &[u8],
    default: Default,
    depth: usize,
    reason: Reason,
) -> Option<Vec<u8>> {
    if boundary.is_empty() {
        return None;
    }
    let mut edits: Vec<(Range<usize>, Vec<u8>)> = Vec::new();
    let mut part_start: Option<usize> = None;
    let mut previous_end = 0;
    let edit = |range: Range<usize>, edits: &mut Vec<(Range<usize>, Vec<u8>)>| {
        if let Some(new) = entity(&body[range.clone()], default, false, depth + 1, reason) {
            edits.push((range, new));
        }
    };
    for line in lines(body) {
        let text = &body[line.content.clone()];
        let Some(after) = text
            .strip_prefix(b"--")
            .and_then(|t| t.strip_prefix(boundary))
        else {
            previous_end = line.content.end;
            continue;
        };
        let close = after.starts_with(b"--");
        let after = if close { &after[2..] } else { after };
        if !after.iter().all(|&b| b == b' ' || b == b'\t') {
            previous_end = line.content.end;
            continue;
        }
        if let Some(start) = part_start {
            edit(start..previous_end.max(start), &mut edits);
        }
        if close {
            part_start = None;
            break;
        }
        part_start = Some(line.next);
        previous_end = line.next;
    }
    if let Some(start) = part_start {
        // No closing delimiter: the last part runs to the end.
        edit(start..body.len(), &mut edits);
    }
    if edits.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() + body.len() / 8);
    let mut pos = 0;
    for (range, new) in edits {
        out.extend_from_slice(&body[pos..range.start]);
        out.extend_from_slice(&new);
        pos = range.end;
    }
    out.extend_from_slice(&body[pos..]);
    Some(out)
}

/// RFC 2045 §6.7: CRLF stays a line break; everything else that is not
/// printable ASCII, `=`, and whitespace at the end of a line are encoded.
/// Output lines are at most 76 characters, and none starts with `-`, so no
/// encoded line can ever read as a multipart boundary.
fn quoted_printable(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + text.len() / 8 + 8);
    let mut lines = memchr::memmem::find_iter(text, b"\r\n");
    let mut start = 0;
    loop {
        let end = lines.next();
        let line = &text[start..end.unwrap_or(text.len())];
        let mut column = 0;
        for (i, &b) in line.iter().enumerate() {
            let last = i + 1 == line.len();
            let mut width = encoded_width(b, column, last);
            if column + width > QP_LINE {
                out.extend_from_slice(b"=\r\n");
                column = 0;
                width = encoded_width(b, column, last);
            }
            if width == 1 {
                out.push(b);
            } else {
                out.extend_from_slice(format!("={b:02X}").as_bytes());
            }
            column += width;
        }
        match end {
            Some(end) => {
                out.extend_from_slice(b"\r\n");
                start = end + 2;
            }
            None => return out,
        }
    }
}

/// 1 if `b` can stand for itself at `column`, else 3 (`=XX`).
fn encoded_width(b: u8, column: usize, last_in_line: bool) -> usize {
    let literal = match b {
        b' ' | b'\t' => !last_in_line,
        b'-' => column > 0,
        b'=' => false,
        33..=126 => true,
        _ => false,
    };
    if literal { 1 } else { 3 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_parser::{MessageParser, MimeHeaders};
    use proptest::prelude::*;

    fn long(n: usize) -> String {
        "0123456789 =é-".chars().cycle().take(n).collect()
    }

    /// Decodes quoted-printable as RFC 2045 §6.7 says, for checking.
    fn decode_qp(text: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < text.len() {
            match text[i] {
                b'=' if text[i + 1..].starts_with(b"\r\n") => i += 3,
                b'=' => {
                    let hex = std::str::from_utf8(&text[i + 1..i + 3]).expect("hex");
                    out.push(u8::from_str_radix(hex, 16).expect("hex"));
                    i += 3;
                }
                b => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        out
    }

    #[test]
    fn to_7bit_encodes_8bit_text_parts_and_leaves_the_rest() {
        let message = "From: a@b.example\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
            --b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nDer B\u{e4}r.\r\n\
            --b\r\nContent-Type: text/plain\r\n\r\nplain\r\n\
            --b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\u{ff}\r\n\
            --b--\r\n";
        let out = String::from_utf8(reencode_to_7bit(message.as_bytes()).expect("changed"))
            .expect("utf8");
        assert!(
            out.contains("Content-Transfer-Encoding: quoted-printable\r\n\r\nDer B=C3=A4r."),
            "{out}"
        );
        assert!(
            out.contains("Content-Type: text/plain\r\n\r\nplain\r\n"),
            "{out}"
        );
        assert!(
            out.contains("8bit\r\n\r\n\u{ff}\r\n"),
            "the attachment stays: {out}"
        );
        assert_eq!(reencode_to_7bit(out.as_bytes()), None);
        assert_eq!(reencode_to_7bit(b"Subject: x\r\n\r\nascii\r\n"), None);
        // Long lines are not 7-bit either.
        assert!(reencode_long_lines(message.as_bytes()).is_none());
    }

    #[test]
    fn quoted_printable_round_trips_with_short_lines() {
        for text in [
            long(5000),
            format!("{}  \r\n\r\n-- \r\n{}\r\n", long(1200), "-".repeat(2000)),
            "a\rb\nc\0 \t\r\n".repeat(300),
            String::new(),
        ] {
            let qp = quoted_printable(text.as_bytes());
            assert_eq!(decode_qp(&qp), text.as_bytes());
            for line in qp.split(|&b| b == b'\n') {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                assert!(
                    line.len() <= 76 && !line.starts_with(b"-"),
                    "{:?}",
                    String::from_utf8_lossy(line)
                );
                assert!(!line.ends_with(b" ") && !line.ends_with(b"\t"));
                assert!(line.iter().all(|b| (32..=126).contains(b) || *b == b'\t'));
            }
        }
    }

    #[test]
    fn a_plain_message_with_a_long_line_is_encoded() {
        let text = long(3000);
        let message = format!("From: a@x.org\r\nSubject: s\r\n\r\nhi\r\n{text}\r\nbye\r\n");
        let out = reencode_long_lines(message.as_bytes()).expect("changed");
        let parsed = MessageParser::default().parse(&out).expect("parses");
        assert_eq!(
            parsed.body_text(0).as_deref(),
            Some(format!("hi\r\n{text}\r\nbye\r\n").as_str())
        );
        let out = String::from_utf8(out).expect("ascii");
        assert!(out.starts_with("From: a@x.org\r\nSubject: s\r\nContent-Transfer-Encoding: quoted-printable\r\nContent-Type: text/plain; charset=utf-8\r\nMIME-Version: 1.0\r\n\r\nhi\r\n"), "{out}");
        assert!(out.lines().all(|l| l.len() <= 76));
        // At the limit: 998 octets is fine, and nothing changes.
        let at = format!("Subject: s\r\n\r\n{}\r\n", "x".repeat(998));
        assert_eq!(reencode_long_lines(at.as_bytes()), None);
        let over = format!("Subject: s\r\n\r\n{}\r\n", "x".repeat(999));
        assert!(reencode_long_lines(over.as_bytes()).is_some());
    }

    #[test]
    fn only_long_text_parts_change_and_the_structure_stays() {
        let html = format!("<p>{}</p>", "word ".repeat(400));
        let message = format!(
            "From: a@x.org\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"outer b\"\r\n\r\npreamble\r\n\
             --outer b\r\nContent-Type: multipart/alternative; boundary=inner\r\n\r\n\
             --inner\r\nContent-Type: text/plain\r\n\r\nshort\r\n\
             --inner\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{html}\r\n\
             --inner--\r\n\
             --outer b\r\nContent-Type: application/octet-stream\r\n\r\n{}\r\n\
             --outer b\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\naGk=\r\n\
             --outer b--\r\nepilogue {}\r\n",
            "y".repeat(1500),
            "z".repeat(1200),
        );
        let out = reencode_long_lines(message.as_bytes()).expect("changed");
        let text = String::from_utf8(out.clone()).expect("ascii");
        assert_eq!(
            text.matches("Content-Transfer-Encoding: quoted-printable")
                .count(),
            1,
            "{text}"
        );
        assert!(!text.contains("Content-Transfer-Encoding: 8bit"));
        assert_eq!(text.matches("MIME-Version").count(), 1);
        for kept in [
            "preamble\r\n--outer b\r\n",
            "\r\n--inner\r\nContent-Type: text/plain\r\n\r\nshort\r\n--inner\r\n",
            &"y".repeat(1500),
            "aGk=\r\n--outer b--\r\nepilogue ",
        ] {
            assert!(text.contains(kept), "{kept:?} in {text}");
        }
        // mail-parser reads the same parts, with the same decoded contents.
        let before = MessageParser::default()
            .parse(message.as_bytes())
            .expect("parses");
        let after = MessageParser::default().parse(&out).expect("parses");
        assert_eq!(before.parts.len(), after.parts.len());
        for (b, a) in before.parts.iter().zip(&after.parts) {
            assert_eq!(b.contents(), a.contents());
            assert_eq!(b.content_type(), a.content_type());
        }
        assert_eq!(after.body_html(0).as_deref(), Some(html.as_str()));
    }

    #[test]
    fn what_is_left_alone() {
        let line = "x".repeat(2000);
        for message in [
            format!("Subject: s\r\nContent-Transfer-Encoding: base64\r\n\r\n{line}\r\n"),
            format!("Subject: s\r\nContent-Transfer-Encoding: binary\r\n\r\n{line}\r\n"),
            format!("Subject: s\r\nContent-Type: image/png\r\n\r\n{line}\r\n"),
            format!("Subject: {line}\r\n\r\nshort\r\n"),
            format!("Content-Type: multipart/mixed\r\n\r\n--b\r\n\r\n{line}\r\n--b--\r\n"),
            format!(
                "Content-Type: multipart/digest; boundary=b\r\n\r\n--b\r\n\r\n{line}\r\n--b--\r\n"
            ),
            "Subject: s\r\n\r\nshort\r\n".to_string(),
        ] {
            assert_eq!(reencode_long_lines(message.as_bytes()), None, "{message}");
        }
    }

    #[test]
    fn an_attached_message_is_looked_into() {
        let line = "x".repeat(2000);
        let message = format!(
            "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\n{line}\r\n--b--\r\n"
        );
        let out = String::from_utf8(reencode_long_lines(message.as_bytes()).expect("changed"))
            .expect("ascii");
        assert!(out.contains("Subject: inner\r\nContent-Transfer-Encoding: quoted-printable\r\nMIME-Version: 1.0\r\n\r\n"), "{out}");
        assert_eq!(out.matches("MIME-Version").count(), 2);
    }

    #[test]
    fn parameters() {
        assert_eq!(
            parameter(
                b" multipart/mixed; a=1; BOUNDARY=\"x\\\"y; z\"",
                b"boundary"
            ),
            Some(b"x\"y; z".to_vec())
        );
        assert_eq!(
            parameter(b" multipart/mixed;boundary=abc ;x=1", b"boundary"),
            Some(b"abc".to_vec())
        );
        assert_eq!(parameter(b" multipart/mixed", b"boundary"), None);
        assert_eq!(
            media_type(b" Text/HTML ; charset=x"),
            Some(("text".into(), "html".into()))
        );
        assert_eq!(media_type(b" text"), None);
    }

    fn line_lengths(bytes: &[u8]) -> impl Iterator<Item = usize> + '_ {
        lines(bytes).map(|l| l.content.len())
    }

    proptest! {
        #[test]
        fn text_survives_and_lines_get_short(
            lines in proptest::collection::vec(proptest::collection::vec(prop_oneof![
                // Mostly long lines; now and then a lone CR or LF.
                400 => any::<u8>().prop_map(|b| if b == b'\r' || b == b'\n' { b'x' } else { b }),
                1 => Just(b'\r'),
                1 => Just(b'\n'),
            ], 0..2500), 1..5),
            multipart in any::<bool>(),
        ) {
            let text: Vec<u8> = lines.iter().flat_map(|l| l.iter().copied().chain(*b"\r\n")).collect();
            let (head, tail): (&[u8], &[u8]) = if multipart {
                (b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"=_b\"\r\n\r\n--=_b\r\nContent-Type: text/plain\r\n\r\n", b"\r\n--=_b--\r\n")
            } else {
                (b"Subject: s\r\n\r\n", b"")
            };
            let message = [head, &text, tail].concat();
            let Some(out) = reencode_long_lines(&message) else {
                // Nothing changed: there was no long line (a lone CR or LF
                // splits a line, as some readers see it).
                prop_assert!(line_lengths(&text).all(|n| n <= MAX_MESSAGE_LINE));
                return Ok(());
            };
            let part = if multipart {
                memchr::memmem::find(&out, b"--=_b\r\n").expect("delimiter") + 7
            } else {
                0
            };
            let start = part + split(&out[part..]).1;
            let end = out.len() - tail.len();
            prop_assert_eq!(decode_qp(&out[start..end]), text);
            prop_assert!(line_lengths(&out).all(|n| n <= 76), "{:?}", String::from_utf8_lossy(&out));
            prop_assert!(MessageParser::default().parse(&out).is_some());
        }
    }
}
