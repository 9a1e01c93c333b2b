//! The SMTP client's byte layer for `postern check`: reads replies from any
//! stream with hard caps on size and time (a probe talks to whatever answers,
//! so a 20 MB greeting or binary noise must end in a verdict, not a hang), and
//! the pure parsers of what the server said (replies, EHLO, port echo, queue id).

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, timeout_at};

/// Longest reply line accepted. RFC 5321 §4.5.3.1.5 says 512 octets; real
/// banners stay far below, so 4 KiB is generous and still bounded.
pub const MAX_LINE: usize = 4096;
/// Most octets of one (multi-line) reply.
pub const MAX_REPLY: usize = 64 * 1024;

/// Anything the probe can read from and write to: TCP, or TLS over TCP.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One SMTP reply: its code and the text of each line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    /// The reply as one line: code and the lines joined by " / ".
    pub fn summary(&self) -> String {
        format!("{} {}", self.code, self.lines.join(" / "))
            .trim_end()
            .to_string()
    }

    /// The first word of the first line: the server's name in a greeting
    /// (RFC 5321 §4.2) or EHLO reply (§4.1.1.1).
    pub fn first_word(&self) -> Option<String> {
        let word = self.lines.first()?.split_whitespace().next()?;
        Some(word.trim_end_matches('.').to_ascii_lowercase())
    }

    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }
}

/// Why no reply could be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("no reply before the deadline")]
    Timeout,
    #[error("the connection was closed")]
    Closed,
    #[error("the answer is not SMTP: {sample:?}")]
    NotSmtp { sample: String },
    #[error("the reply is too long (over {0} octets)")]
    Oversized(usize),
    #[error("{0}")]
    Io(String),
}

/// What the first octets of a line say about it.
#[derive(Debug, PartialEq, Eq)]
enum LineStart {
    /// Too few octets to tell yet.
    Unknown,
    Smtp,
    Other,
}

fn line_start(bytes: &[u8]) -> LineStart {
    let digits = bytes.iter().take(3).all(u8::is_ascii_digit);
    match bytes.get(3) {
        _ if !digits => LineStart::Other,
        None => LineStart::Unknown,
        Some(b' ' | b'-' | b'\r' | b'\n') => LineStart::Smtp,
        Some(_) => LineStart::Other,
    }
}

/// A printable sample of unexpected bytes, for the report.
pub fn sample(bytes: &[u8]) -> String {
    bytes
        .iter()
        .take(60)
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '.'
            }
        })
        .collect()
}

/// Parses one complete reply line (without CRLF): code, whether more lines
/// follow, and the text.
pub fn parse_line(line: &[u8]) -> Option<(u16, bool, String)> {
    if line_start(line) == LineStart::Other || line.len() < 3 {
        return None;
    }
    let code = std::str::from_utf8(line.get(..3)?).ok()?.parse().ok()?;
    let more = line.get(3) == Some(&b'-');
    let text = String::from_utf8_lossy(line.get(4..).unwrap_or_default())
        .trim()
        .to_string();
    Some((code, more, text))
}

/// A connection with a read buffer, for the client side of SMTP.
pub struct Conn {
    io: Box<dyn Io>,
    buf: Vec<u8>,
}

impl Conn {
    pub fn new(io: Box<dyn Io>) -> Conn {
        Conn {
            io,
            buf: Vec::new(),
        }
    }

    /// Octets read but not yet consumed.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The stream, for a TLS handshake. RFC 3207 §6: anything the server sent
    /// before the handshake must be thrown away, never read as part of the
    /// TLS session; the caller checks `buffered()` first and refuses.
    pub fn into_inner(self) -> Box<dyn Io> {
        self.io
    }

    /// Sends one command line (CRLF added).
    pub async fn send(&mut self, line: &str, deadline: Instant) -> Result<(), WireError> {
        let mut bytes = Vec::with_capacity(line.len() + 2);
        bytes.extend_from_slice(line.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        self.send_raw(&bytes, deadline).await
    }

    pub async fn send_raw(&mut self, bytes: &[u8], deadline: Instant) -> Result<(), WireError> {
        let write = async {
            self.io.write_all(bytes).await?;
            self.io.flush().await
        };
        match timeout_at(deadline, write).await {
            Err(_) => Err(WireError::Timeout),
            Ok(Err(e)) => Err(WireError::Io(e.to_string())),
            Ok(Ok(())) => Ok(()),
        }
    }

    /// Reads one reply, multi-line or not, before `deadline`. Cancel safe
    /// only in the sense that partial input stays buffered.
    pub async fn read_reply(&mut self, deadline: Instant) -> Result<Reply, WireError> {
        let mut lines = Vec::new();
        let mut code = None;
        let mut total = 0usize;
        loop {
            while let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                let raw: Vec<u8> = self.buf.drain(..=end).collect();
                if raw.len() > MAX_LINE {
                    return Err(WireError::Oversized(MAX_LINE));
                }
                total += raw.len();
                let line = raw.strip_suffix(b"\n").unwrap_or(&raw);
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                let Some((c, more, text)) = parse_line(line) else {
                    return Err(WireError::NotSmtp {
                        sample: sample(&raw),
                    });
                };
                // RFC 5321 §4.2.1: every line of a reply carries the same code.
                if code.is_some_and(|first| first != c) {
                    return Err(WireError::NotSmtp {
                        sample: sample(&raw),
                    });
                }
                code = Some(c);
                lines.push(text);
                if total > MAX_REPLY {
                    return Err(WireError::Oversized(MAX_REPLY));
                }
                if !more {
                    return Ok(Reply { code: c, lines });
                }
            }
            // Say "not SMTP" as soon as the first octets show it, instead of
            // waiting for a newline that binary noise may never send.
            if line_start(&self.buf) == LineStart::Other {
                return Err(WireError::NotSmtp {
                    sample: sample(&self.buf),
                });
            }
            if self.buf.len() > MAX_LINE {
                return Err(WireError::Oversized(MAX_LINE));
            }
            self.fill(deadline).await?;
        }
    }

    /// Waits up to `wait` for the first octets, without consuming them:
    /// tells a silent port from one that speaks.
    pub async fn peek(&mut self, until: Instant) -> Result<bool, WireError> {
        if !self.buf.is_empty() {
            return Ok(true);
        }
        match self.fill(until).await {
            Ok(()) => Ok(true),
            Err(WireError::Timeout) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn fill(&mut self, deadline: Instant) -> Result<(), WireError> {
        let mut chunk = [0u8; 8192];
        match timeout_at(deadline, self.io.read(&mut chunk)).await {
            Err(_) => Err(WireError::Timeout),
            Ok(Err(e)) => Err(WireError::Io(e.to_string())),
            Ok(Ok(0)) => Err(WireError::Closed),
            Ok(Ok(n)) => {
                self.buf
                    .extend_from_slice(chunk.get(..n).unwrap_or_default());
                Ok(())
            }
        }
    }

    /// Sends a command and reads its reply.
    pub async fn command(&mut self, line: &str, deadline: Instant) -> Result<Reply, WireError> {
        self.send(line, deadline).await?;
        self.read_reply(deadline).await
    }
}

/// What an EHLO reply offers (RFC 5321 §4.1.1.1, one keyword per line).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ehlo {
    pub name: Option<String>,
    pub starttls: bool,
    pub auth: Vec<String>,
    /// SIZE (RFC 1870); `Some(0)` means no fixed limit.
    pub size: Option<u64>,
    pub keywords: Vec<String>,
}

pub fn parse_ehlo(reply: &Reply) -> Ehlo {
    let mut ehlo = Ehlo {
        name: reply.first_word(),
        ..Ehlo::default()
    };
    for line in reply.lines.iter().skip(1) {
        let mut words = line.split_whitespace();
        let Some(keyword) = words.next().map(str::to_ascii_uppercase) else {
            continue;
        };
        match keyword.as_str() {
            "STARTTLS" => ehlo.starttls = true,
            "AUTH" => ehlo.auth = words.map(str::to_ascii_uppercase).collect(),
            "SIZE" => ehlo.size = Some(words.next().and_then(|w| w.parse().ok()).unwrap_or(0)),
            _ => {}
        }
        ehlo.keywords.push(keyword);
    }
    ehlo
}

/// The ports in a port-echo answer (`250 2.0.0 Ok; postern-echo ports=25,587`
/// or `ports=none`); `None` when the server does not know the question.
pub fn parse_echo(reply: &Reply) -> Option<Vec<u16>> {
    if reply.code != 250 {
        return None;
    }
    let text = reply.lines.join(" ");
    let list = text.split("postern-echo ports=").nth(1)?;
    let list = list.split_whitespace().next().unwrap_or_default();
    if list == "none" {
        return Some(Vec::new());
    }
    list.split(',')
        .map(|p| p.trim_end_matches(['.', ';']).parse().ok())
        .collect()
}

/// The queue id in a reply to the end of DATA: Postern and Postfix say
/// "queued as ID", Exim says "id=ID"; otherwise nothing.
pub fn queue_id(reply: &Reply) -> Option<String> {
    let text = reply.lines.join(" ");
    let after = text
        .split_once("queued as ")
        .map(|(_, rest)| rest)
        .or_else(|| text.split_once("id=").map(|(_, rest)| rest))?;
    let id: String = after
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.')
        .collect();
    let id = id.trim_end_matches('.').to_string();
    (!id.is_empty()).then_some(id)
}

/// RFC 5321 §4.5.2: a line of the message that starts with "." gets one more.
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 8);
    let mut at_line_start = true;
    for &b in message {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// Milliseconds, for the report.
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(code: u16, lines: &[&str]) -> Reply {
        Reply {
            code,
            lines: lines.iter().map(ToString::to_string).collect(),
        }
    }

    async fn read(input: &[u8]) -> Result<Reply, WireError> {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let input = input.to_vec();
        // The writer runs beside the reader: a 20 MB input does not fit the pipe.
        tokio::spawn(async move {
            let _ = client.write_all(&input).await;
        });
        let mut conn = Conn::new(Box::new(server));
        conn.read_reply(Instant::now() + Duration::from_secs(2))
            .await
    }

    #[tokio::test]
    async fn replies_are_read_or_refused_with_a_reason() {
        let cases: Vec<(&[u8], Result<Reply, WireError>)> = vec![
            (
                b"220 mx.example.com ESMTP\r\n",
                Ok(reply(220, &["mx.example.com ESMTP"])),
            ),
            (
                b"250-mx\r\n250-SIZE 100\r\n250 AUTH PLAIN\r\n",
                Ok(reply(250, &["mx", "SIZE 100", "AUTH PLAIN"])),
            ),
            (b"250\n", Ok(reply(250, &[""]))),
            (
                b"HTTP/1.1 400 Bad Request\r\n",
                Err(WireError::NotSmtp {
                    sample: "HTTP/1.1 400 Bad Request..".into(),
                }),
            ),
            (
                b"SSH-2.0-OpenSSH_9.2",
                Err(WireError::NotSmtp {
                    sample: "SSH-2.0-OpenSSH_9.2".into(),
                }),
            ),
            (
                b"\x16\x03\x01\x00",
                Err(WireError::NotSmtp {
                    sample: "....".into(),
                }),
            ),
            (
                b"250-a\r\n220 b\r\n",
                Err(WireError::NotSmtp {
                    sample: "220 b..".into(),
                }),
            ),
            (b"220 unterminated", Err(WireError::Closed)),
            (b"", Err(WireError::Closed)),
        ];
        for (input, want) in cases {
            assert_eq!(read(input).await, want, "{}", sample(input));
        }
    }

    #[tokio::test]
    async fn a_huge_greeting_stops_at_the_cap() {
        let mut line = b"220 ".to_vec();
        line.extend(std::iter::repeat_n(b'x', 20 << 20));
        assert_eq!(read(&line).await, Err(WireError::Oversized(MAX_LINE)));
        let many = b"220-x\r\n".repeat(20_000);
        assert_eq!(read(&many).await, Err(WireError::Oversized(MAX_REPLY)));
        // At the limit: one line of MAX_LINE octets is still read.
        let mut at = b"220 ".to_vec();
        at.extend(std::iter::repeat_n(b'y', MAX_LINE - 6));
        at.extend_from_slice(b"\r\n");
        assert_eq!(read(&at).await.map(|r| r.code), Ok(220));
    }

    #[tokio::test]
    async fn silence_is_a_timeout() {
        let (_client, server) = tokio::io::duplex(64);
        let mut conn = Conn::new(Box::new(server));
        let got = conn
            .read_reply(Instant::now() + Duration::from_millis(50))
            .await;
        assert_eq!(got, Err(WireError::Timeout));
    }

    #[test]
    fn ehlo_keywords() {
        let e = parse_ehlo(&reply(
            250,
            &[
                "Mx.Example.com greets you",
                "PIPELINING",
                "SIZE 26214400",
                "STARTTLS",
                "auth plain LOGIN",
            ],
        ));
        assert_eq!(e.name.as_deref(), Some("mx.example.com"));
        assert!(e.starttls);
        assert_eq!(e.auth, vec!["PLAIN", "LOGIN"]);
        assert_eq!(e.size, Some(26_214_400));
        let bare = parse_ehlo(&reply(250, &["mx", "SIZE"]));
        assert_eq!(bare.size, Some(0));
        assert!(!bare.starttls && bare.auth.is_empty());
    }

    #[test]
    fn port_echo_answers() {
        let cases = [
            ("2.0.0 Ok; postern-echo ports=25,587", Some(vec![25, 587])),
            ("2.0.0 Ok; postern-echo ports=none", Some(vec![])),
            ("2.0.0 Ok; postern-echo ports=465.", Some(vec![465])),
            ("2.0.0 Ok", None),
            ("2.0.0 Ok; postern-echo ports=x", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_echo(&reply(250, &[text])), want, "{text}");
        }
        assert_eq!(parse_echo(&reply(502, &["postern-echo ports=25"])), None);
    }

    #[test]
    fn queue_ids() {
        let cases = [
            ("2.0.0 Ok: queued as 0ABCDEF1234567", Some("0ABCDEF1234567")),
            ("OK id=1tXyZ-000123-AB", Some("1tXyZ-000123-AB")),
            ("Ok", None),
        ];
        for (text, want) in cases {
            assert_eq!(queue_id(&reply(250, &[text])).as_deref(), want);
        }
    }

    #[test]
    fn dot_stuffing() {
        assert_eq!(dot_stuff(b"a\r\n.b\r\n"), b"a\r\n..b\r\n.\r\n");
        assert_eq!(dot_stuff(b".x"), b"..x\r\n.\r\n");
    }
}
