//! `Reply`: an SMTP reply with its enhanced status code (RFC 3463), rendered as
//! one or more lines. Named constructors keep the wording of common replies in
//! one place so that they stay standard and greppable.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An RFC 3463 enhanced status code such as 5.1.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnhancedCode(pub u8, pub u16, pub u16);

impl fmt::Display for EnhancedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// Serialized for `postern sendmail`, which hears the server's refusals over
/// its socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    pub code: u16,
    pub enhanced: Option<EnhancedCode>,
    /// Lines of text; more than one renders as a multi-line reply.
    pub text: String,
}

impl Reply {
    pub fn new(code: u16, enhanced: (u16, u16), text: impl Into<String>) -> Reply {
        // The class of the enhanced code always matches the reply's first digit.
        let class = (code / 100) as u8;
        Reply {
            code,
            enhanced: Some(EnhancedCode(class, enhanced.0, enhanced.1)),
            text: text.into(),
        }
    }

    /// A reply without an enhanced code: the greeting and EHLO (RFC 2034 §3).
    pub fn plain(code: u16, text: impl Into<String>) -> Reply {
        Reply {
            code,
            enhanced: None,
            text: text.into(),
        }
    }

    pub fn is_positive(&self) -> bool {
        self.code < 400
    }

    /// Writes the reply in wire form, CRLF after every line.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let lines: Vec<&str> = if self.text.is_empty() {
            vec![""]
        } else {
            self.text.lines().collect()
        };
        for (i, line) in lines.iter().enumerate() {
            let sep = if i + 1 == lines.len() { ' ' } else { '-' };
            let line = line.trim_end_matches('\r');
            match self.enhanced {
                Some(e) => {
                    out.extend_from_slice(format!("{}{sep}{e} {line}\r\n", self.code).as_bytes())
                }
                None => out.extend_from_slice(format!("{}{sep}{line}\r\n", self.code).as_bytes()),
            }
        }
    }

    pub fn ok() -> Reply {
        Reply::new(250, (0, 0), "Ok")
    }
    pub fn bad_sequence(text: impl Into<String>) -> Reply {
        Reply::new(503, (5, 1), text)
    }
    pub fn unknown_command() -> Reply {
        Reply::new(500, (5, 1), "Error: command not recognized")
    }
    pub fn syntax(text: impl Into<String>) -> Reply {
        Reply::new(501, (5, 4), text)
    }
    pub fn line_too_long() -> Reply {
        Reply::new(500, (5, 6), "Error: line too long")
    }
    pub fn too_many_errors() -> Reply {
        Reply::new(421, (7, 0), "Error: too many errors, closing connection")
    }
    pub fn timeout(hostname: &str) -> Reply {
        Reply::new(
            421,
            (4, 2),
            format!("{hostname} Error: timeout exceeded, closing connection"),
        )
    }
    pub fn shutting_down(hostname: &str) -> Reply {
        Reply::new(
            421,
            (3, 0),
            format!("{hostname} Service shutting down, closing connection"),
        )
    }
    pub fn local_error() -> Reply {
        Reply::new(
            451,
            (3, 0),
            "Error: local error in processing, try again later",
        )
    }
    /// The spool could not make the message durable (Postfix's wording).
    pub fn queue_write_error() -> Reply {
        Reply::new(
            451,
            (3, 0),
            "Error: queue file write error, try again later",
        )
    }
    /// RFC 3463 X.3.1: the spool's disk is too full to take the message.
    pub fn insufficient_storage() -> Reply {
        Reply::new(452, (3, 1), "Insufficient system storage")
    }
    pub fn auth_required() -> Reply {
        Reply::new(530, (7, 0), "Authentication required")
    }
    pub fn tls_required() -> Reply {
        Reply::new(530, (7, 0), "Must issue a STARTTLS command first")
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.enhanced {
            Some(e) => write!(f, "{} {e} {}", self.code, self.text.replace('\n', " / ")),
            None => write!(f, "{} {}", self.code, self.text.replace('\n', " / ")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(r: &Reply) -> String {
        let mut out = Vec::new();
        r.write_to(&mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    #[test]
    fn renders_single_and_multi_line() {
        assert_eq!(wire(&Reply::ok()), "250 2.0.0 Ok\r\n");
        assert_eq!(
            wire(&Reply::new(550, (1, 1), "a\nb")),
            "550-5.1.1 a\r\n550 5.1.1 b\r\n"
        );
        assert_eq!(wire(&Reply::plain(220, "x ESMTP")), "220 x ESMTP\r\n");
        assert_eq!(wire(&Reply::plain(250, "")), "250 \r\n");
    }
}
