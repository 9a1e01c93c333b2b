//! RFC 3461 §4 xtext, the encoding of the DSN parameters ENVID and ORCPT
//! (`+XX` stands for the octet XX), and the lookup of such a parameter as the
//! client wrote it. smtp-proto decodes xtext itself but forgivingly (a bad
//! `+XX` is dropped, `+0D` becomes a CR), so the session decodes the client's
//! own text again here, strictly, before anything is stored.

/// Why an ENVID or ORCPT value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XtextError {
    #[error("\"+\" is not followed by two hexadecimal digits")]
    BadHex,
    #[error("it contains a character that must be written as +XX")]
    Unencoded,
    #[error("it stands for a control or non-ASCII character")]
    NotPrintable,
    #[error("it is empty")]
    Empty,
}

/// Decodes xtext. The decoded text must be printable US-ASCII, space
/// included (Postfix's rule): it is written into DSN header fields, where a
/// CR, LF or other control would start a header of the client's choosing.
/// Hex digits may be in either case, as Postfix accepts them.
pub fn decode(text: &str) -> Result<String, XtextError> {
    if text.is_empty() {
        return Err(XtextError::Empty);
    }
    let mut out = String::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        let decoded = match b {
            b'+' => {
                let high = bytes.next().and_then(hex).ok_or(XtextError::BadHex)?;
                let low = bytes.next().and_then(hex).ok_or(XtextError::BadHex)?;
                high << 4 | low
            }
            // RFC 3461 §4: xchar is "!" to "~"; anything else must be encoded.
            b'!'..=b'~' => b,
            _ => return Err(XtextError::Unencoded),
        };
        if !(b' '..=b'~').contains(&decoded) {
            return Err(XtextError::NotPrintable);
        }
        out.push(char::from(decoded));
    }
    Ok(out)
}

/// Encodes text as xtext: `+`, `=`, space, controls and every octet of a
/// non-ASCII character become `+XX`.
pub fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
                char::from(b).to_string()
            } else {
                format!("+{b:02X}")
            }
        })
        .collect()
}

fn hex(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// The value of the ESMTP parameter `name` (any case) on a MAIL or RCPT line,
/// as the client wrote it. The path is skipped first, minding quoted local
/// parts, so that `<"x ENVID=y"@example.com>` names no parameter.
pub fn parameter<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let (_, rest) = line.split_once(':')?;
    let rest = rest.trim_start();
    let params = match rest.strip_prefix('<') {
        Some(path) => path.get(end_of_path(path)?..)?,
        None => rest.split_once(' ').map_or("", |(_, p)| p),
    };
    params.split_ascii_whitespace().find_map(|p| {
        let (key, value) = p.split_once('=')?;
        key.eq_ignore_ascii_case(name).then_some(value)
    })
}

/// The index just past the `>` that closes a path opened before `path`.
fn end_of_path(path: &str) -> Option<usize> {
    let (mut quoted, mut escaped) = (false, false);
    for (i, c) in path.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '>' if !quoted => return Some(i + 1),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decodes_hex_pairs_and_plain_characters() {
        assert_eq!(decode("QQ314159").as_deref(), Ok("QQ314159"));
        assert_eq!(decode("a+2Bb+3Dc+20d").as_deref(), Ok("a+b=c d"));
        assert_eq!(decode("a+2bb").as_deref(), Ok("a+b"), "lower-case hex");
        assert_eq!(decode("x=y").as_deref(), Ok("x=y"), "a bare = as Postfix");
        assert_eq!(decode("+7E").as_deref(), Ok("~"));
    }

    #[test]
    fn refuses_controls_and_malformed_text() {
        for (text, error) in [
            ("", XtextError::Empty),
            ("a+0Db", XtextError::NotPrintable),
            ("a+0A", XtextError::NotPrintable),
            ("+00", XtextError::NotPrintable),
            ("+09", XtextError::NotPrintable),
            ("+1B[31m", XtextError::NotPrintable),
            ("+7F", XtextError::NotPrintable),
            ("+C3+A9", XtextError::NotPrintable),
            ("a+", XtextError::BadHex),
            ("a+4", XtextError::BadHex),
            ("a+ZZ", XtextError::BadHex),
            ("a+G0", XtextError::BadHex),
            ("a\rb", XtextError::Unencoded),
            ("a b", XtextError::Unencoded),
            ("é", XtextError::Unencoded),
        ] {
            assert_eq!(decode(text), Err(error), "{text:?}");
        }
    }

    #[test]
    fn encodes_what_it_must() {
        assert_eq!(encode("a+b=c d"), "a+2Bb+3Dc+20d");
        assert_eq!(encode("plain@example.com"), "plain@example.com");
        assert_eq!(encode("\r\n"), "+0D+0A");
        assert_eq!(encode("é"), "+C3+A9");
    }

    #[test]
    fn finds_a_parameter_after_the_path() {
        let line = "MAIL FROM:<a@example.com> SIZE=10 envid=a+2Bb RET=HDRS\r\n";
        assert_eq!(parameter(line, "ENVID"), Some("a+2Bb"));
        assert_eq!(parameter(line, "ret"), Some("HDRS"));
        assert_eq!(parameter(line, "ORCPT"), None);
        assert_eq!(
            parameter("RCPT TO: <b@x> ORCPT=rfc822;b+40x\r\n", "ORCPT"),
            Some("rfc822;b+40x")
        );
        assert_eq!(parameter("MAIL FROM:<> ENVID=e", "ENVID"), Some("e"));
        assert_eq!(
            parameter("MAIL FROM:<\"x> ENVID=y\"@e.com> ENVID=z", "ENVID"),
            Some("z"),
            "a quoted > does not end the path"
        );
        assert_eq!(
            parameter("MAIL FROM:<\"x\\\" ENVID=y\"@e.com>", "ENVID"),
            None,
            "an escaped quote does not end the quoted part"
        );
        assert_eq!(parameter("MAIL FROM:<unclosed ENVID=x", "ENVID"), None);
        assert_eq!(parameter("MAIL FROM:a@b ENVID=x", "ENVID"), Some("x"));
    }

    proptest! {
        #[test]
        fn printable_ascii_round_trips(text in "[ -~]{1,100}") {
            prop_assert_eq!(decode(&encode(&text)), Ok(text));
        }

        #[test]
        fn anything_with_a_control_is_refused_after_encoding(
            head in "[ -~]{0,10}", control in "[\\x00-\\x1f\\x7f]", tail in "[ -~]{0,10}"
        ) {
            let text = format!("{head}{control}{tail}");
            prop_assert_eq!(decode(&encode(&text)), Err(XtextError::NotPrintable));
        }

        #[test]
        fn what_decodes_is_printable_and_round_trips(text in "\\PC{0,40}|[+0-9A-Fa-f!-~]{0,40}") {
            if let Ok(decoded) = decode(&text) {
                prop_assert!(decoded.bytes().all(|b| (b' '..=b'~').contains(&b)));
                prop_assert_eq!(decode(&encode(&decoded)), Ok(decoded));
            }
        }
    }
}
