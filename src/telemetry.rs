//! Logging setup (tracing) and the session id that ties one connection's lines
//! together; the queue id does the same for a message once assigned. Text from
//! outside (commands, user names, addresses, remote replies) is escaped on its
//! way to the log and to `postern queue`, so it cannot split or forge a line or
//! drive the operator's terminal.

use std::borrow::Cow;
use std::ffi::OsString;
use std::fmt::{self, Write as _};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;

/// Starts the log subscriber: human-readable lines on stderr, level from
/// `RUST_LOG` (default `info`), JSON when `POSTERN_LOG_FORMAT=json`; colours
/// only on a terminal.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR"),
        ));
    let _ = if std::env::var("POSTERN_LOG_FORMAT").as_deref() == Ok("json") {
        builder
            .with_writer(|| JsonSafe(std::io::stderr()))
            .json()
            .try_init()
    } else {
        builder
            .with_writer(std::io::stderr)
            .fmt_fields(EscapedFields)
            .try_init()
    };
}

/// ANSI colours only for a terminal, and never with `NO_COLOR` set
/// (no-color.org): a log file or the journal gets plain text.
fn colour(terminal: bool, no_color: Option<OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Characters shown as escapes: C0 and C1 controls and DEL (line breaks,
/// terminal escape sequences), and the Unicode line separators and
/// bidirectional overrides that can make a line read as something else.
fn must_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Writes `s` with every `must_escape` character as `\r`, `\n`, `\t`, `\xHH`
/// (other ASCII) or `\u{H}`, the notation tracing-subscriber uses for ESC.
fn write_escaped(out: &mut impl fmt::Write, s: &str) -> fmt::Result {
    let mut start = 0;
    for (i, c) in s.char_indices().filter(|&(_, c)| must_escape(c)) {
        out.write_str(&s[start..i])?;
        match c {
            '\r' => out.write_str("\\r")?,
            '\n' => out.write_str("\\n")?,
            '\t' => out.write_str("\\t")?,
            c if c.is_ascii() => write!(out, "\\x{:02x}", u32::from(c))?,
            c => write!(out, "\\u{{{:x}}}", u32::from(c))?,
        }
        start = i + c.len_utf8();
    }
    out.write_str(&s[start..])
}

/// Text from outside, safe to print for an operator (see `must_escape`).
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(must_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    // Writing to a String cannot fail.
    let _ = write_escaped(&mut out, s);
    Cow::Owned(out)
}

/// The human format's fields: `name=value`, space-separated, the message
/// bare. Every value goes through `write_escaped` (tracing-subscriber 0.3.23
/// escapes ESC, BEL, BS, FF, DEL and C1 in the message only, leaving CR and
/// LF, and every `%field` value, raw), and a value with a space, `=`, a quote
/// or a backslash is quoted: otherwise a user name such as
/// `x peer=203.0.113.9:1` would read as two fields to a log parser (fail2ban).
/// String fields keep the quotes they always had.
struct EscapedFields;

impl<'w> FormatFields<'w> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut visitor = FieldWriter {
            out: &mut writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct FieldWriter<'a, 'w> {
    out: &'a mut Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl FieldWriter<'_, '_> {
    fn write(&mut self, name: &str, value: &str, quote: bool) -> fmt::Result {
        if !std::mem::take(&mut self.first) {
            self.out.write_char(' ')?;
        }
        if name == "message" {
            return write_escaped(self.out, value);
        }
        write!(self.out, "{}=", name.trim_start_matches("r#"))?;
        if !quote && !value.is_empty() && !value.contains([' ', '=', '"', '\\']) {
            return write_escaped(self.out, value);
        }
        self.out.write_char('"')?;
        for part in value.split_inclusive(['"', '\\']) {
            match part.strip_suffix(['"', '\\']) {
                Some(head) => {
                    write_escaped(self.out, head)?;
                    self.out.write_char('\\')?;
                    self.out.write_str(&part[head.len()..])?;
                }
                None => write_escaped(self.out, part)?,
            }
        }
        self.out.write_char('"')
    }
}

impl tracing::field::Visit for FieldWriter<'_, '_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if self.result.is_ok() {
            self.result = self.write(field.name(), value, true);
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        if self.result.is_ok() {
            self.result = self.write(field.name(), &format!("{value:?}"), false);
        }
    }
}

/// The JSON format's output: serde_json escapes C0 controls in strings but
/// writes DEL, C1 and bidirectional overrides raw. Those can only occur inside
/// string values, where `\uXXXX` means the same, so each event's line is
/// rewritten with them escaped (tracing-subscriber writes one whole event per
/// `write`).
struct JsonSafe<W>(W);

impl<W: std::io::Write> std::io::Write for JsonSafe<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match std::str::from_utf8(buf) {
            Ok(text) if text.chars().any(|c| c > '\u{7e}' && must_escape(c)) => {
                let mut safe = String::with_capacity(text.len() + 16);
                for c in text.chars() {
                    if c > '\u{7e}' && must_escape(c) {
                        let _ = write!(safe, "\\u{:04x}", u32::from(c));
                    } else {
                        safe.push(c);
                    }
                }
                self.0.write_all(safe.as_bytes())?;
            }
            _ => self.0.write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// One connection's id: short, unique in this process, printable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionId(u64);

impl SessionId {
    pub fn next() -> SessionId {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        SessionId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "S{:06}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A user name, EHLO name or remote reply as an attacker would write it.
    const HOSTILE: &str = "a\r\nFAKE event=auth_ok\x1b[2J\x07\x7f\u{9b}31m\u{202e}x\tz";
    const ESCAPED: &str = r"a\r\nFAKE event=auth_ok\x1b[2J\x07\x7f\u{9b}31m\u{202e}x\tz";

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn log_hostile() {
        let span = tracing::info_span!("session", peer = %HOSTILE);
        let _entered = span.enter();
        tracing::info!(event = "auth_failed", user = %HOSTILE, "said {HOSTILE}");
        // A field of its own, as a log parser reads `key=value`.
        tracing::info!(event = "auth_failed", user = %"x peer=203.0.113.9:1 \"q\" \\", id = %"plain");
    }

    fn text(buffer: &Buffer) -> String {
        String::from_utf8(buffer.0.lock().expect("lock").clone()).expect("utf-8")
    }

    #[test]
    fn human_lines_escape_every_control_character() {
        let buffer = Buffer::default();
        let out = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || out.clone())
            .with_ansi(false)
            .fmt_fields(EscapedFields)
            .finish();
        tracing::subscriber::with_default(subscriber, log_hostile);
        let lines = text(&buffer);
        let (line, forged) = lines.trim_end().split_once('\n').expect("two lines");
        assert!(!line.chars().any(must_escape), "{line:?}");
        assert!(
            line.contains(&format!("session{{peer=\"{ESCAPED}\"}}")),
            "{line}"
        );
        assert!(line.contains(&format!("said {ESCAPED}")), "{line}");
        assert!(line.contains(&format!("user=\"{ESCAPED}\"")), "{line}");
        assert!(
            forged
                .ends_with(r#"event="auth_failed" user="x peer=203.0.113.9:1 \"q\" \\" id=plain"#),
            "{forged}"
        );
    }

    #[test]
    fn json_lines_escape_every_control_character_and_keep_the_value() {
        let buffer = Buffer::default();
        let out = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || JsonSafe(out.clone()))
            .json()
            .finish();
        tracing::subscriber::with_default(subscriber, log_hostile);
        let lines = text(&buffer);
        let line = lines.lines().next().expect("a line");
        assert!(
            !lines
                .trim_end()
                .chars()
                .any(|c| c != '\n' && must_escape(c)),
            "{lines:?}"
        );
        let v: serde_json::Value = serde_json::from_str(line).expect("json");
        assert_eq!(v["fields"]["user"], HOSTILE);
        assert_eq!(v["span"]["peer"], HOSTILE);
    }

    #[test]
    fn printable_leaves_plain_text_alone() {
        assert!(matches!(printable("alice@example.com"), Cow::Borrowed(_)));
        assert_eq!(printable("Grüße"), "Grüße");
        assert_eq!(printable(HOSTILE), ESCAPED);
    }

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some(OsString::new())));
        assert!(!colour(true, Some(OsString::from("1"))));
        assert!(!colour(false, None));
    }
}
