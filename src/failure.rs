//! What a failed delivery means, in types every layer shares: how bad it is
//! (try again or bounce), what kind of failure it was (`FailureKind`, with the
//! stage of the dialogue where that matters), and the words for the log. The
//! outbound client and local delivery make failures; the scheduler stores the
//! kind with the outcome; the DSN and `postern queue show` choose their
//! explanation by kind, never by the wording of a message.
//!
//! How far a failure reaches is decided by where it happens, not by a field:
//! a failure before a connection can carry the message (`outbound::client::
//! open`, or a transaction that breaks before any recipient is settled) makes
//! `outbound` try the next address and MX host; a refusal of the transaction,
//! or a break after the body was sent, is the result of every recipient on
//! that connection; a refused RCPT is that recipient's alone.

use std::fmt;
use std::net::SocketAddr;

use serde::{Serialize, Serializer};
use smtp_proto::Response;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// 4xx, timeouts, refused connections: try again later.
    Transient,
    /// 5xx and conditions that cannot change: bounce.
    Permanent,
}

/// Where in an SMTP dialogue with another server something failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Connect,
    TlsHandshake,
    Greeting,
    Ehlo,
    StartTls,
    Auth,
    Mail,
    Rcpt,
    Data,
}

const STAGES: [(Stage, &str, &str); 9] = [
    (Stage::Connect, "connect", "connecting"),
    (Stage::TlsHandshake, "tls", "the TLS handshake"),
    (Stage::Greeting, "greeting", "the greeting"),
    (Stage::Ehlo, "ehlo", "EHLO"),
    (Stage::StartTls, "starttls", "STARTTLS"),
    (Stage::Auth, "auth", "AUTH"),
    (Stage::Mail, "mail", "MAIL FROM"),
    (Stage::Rcpt, "rcpt", "RCPT TO"),
    (Stage::Data, "data", "DATA"),
];

impl Stage {
    /// The stage's name as stored.
    fn token(self) -> &'static str {
        STAGES.iter().find(|(s, ..)| *s == self).map_or("", |e| e.1)
    }

    fn from_token(token: &str) -> Option<Stage> {
        STAGES.iter().find(|e| e.1 == token).map(|e| e.0)
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(STAGES.iter().find(|(s, ..)| s == self).map_or("", |e| e.2))
    }
}

/// What kind of failure a delivery attempt met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// No server of the destination could be reached on `port`: every
    /// connection was refused or timed out, or no address was found.
    Unreachable { port: u16 },
    /// A DNS lookup failed, or the domain does not exist or takes no mail.
    Dns,
    /// The other server did not answer in time.
    Timeout { stage: Stage },
    /// TLS could not be set up (handshake, or STARTTLS missing where required).
    Tls,
    /// The connection broke (reset, closed, garbled).
    Broken { stage: Stage },
    /// A refusal of another kind than those below.
    Reply { stage: Stage },
    /// The recipient's mailbox does not exist (RFC 3463 X.1.1).
    NoSuchMailbox,
    /// The recipient's mailbox is full (X.2.2).
    MailboxFull,
    /// The message is larger than the other server takes (X.3.4, X.2.3, SIZE).
    TooLarge,
    /// Refused by the other server's policy: spam, authentication, reputation (X.7.x).
    Policy { stage: Stage },
    /// The other server lacks an extension the message needs (SMTPUTF8).
    Unsupported,
    /// A failure on this server's side: the spool, the store, a local
    /// mailbox, the relay's password file.
    Local,
}

impl FailureKind {
    /// The kind as stored with an outcome: `unreachable:25`, `reply@rcpt`, `tls`, …
    pub fn token(&self) -> String {
        match self {
            FailureKind::Unreachable { port } => format!("unreachable:{port}"),
            FailureKind::Dns => "dns".into(),
            FailureKind::Timeout { stage } => format!("timeout@{}", stage.token()),
            FailureKind::Tls => "tls".into(),
            FailureKind::Broken { stage } => format!("broken@{}", stage.token()),
            FailureKind::Reply { stage } => format!("reply@{}", stage.token()),
            FailureKind::NoSuchMailbox => "no_such_mailbox".into(),
            FailureKind::MailboxFull => "mailbox_full".into(),
            FailureKind::TooLarge => "too_large".into(),
            FailureKind::Policy { stage } => format!("policy@{}", stage.token()),
            FailureKind::Unsupported => "unsupported".into(),
            FailureKind::Local => "local".into(),
        }
    }

    /// The kind a stored token names; `None` for anything else.
    pub fn from_token(token: &str) -> Option<FailureKind> {
        if let Some(port) = token.strip_prefix("unreachable:") {
            return port
                .parse()
                .ok()
                .map(|port| FailureKind::Unreachable { port });
        }
        if let Some((kind, stage)) = token.split_once('@') {
            let stage = Stage::from_token(stage)?;
            return match kind {
                "timeout" => Some(FailureKind::Timeout { stage }),
                "broken" => Some(FailureKind::Broken { stage }),
                "reply" => Some(FailureKind::Reply { stage }),
                "policy" => Some(FailureKind::Policy { stage }),
                _ => None,
            };
        }
        match token {
            "dns" => Some(FailureKind::Dns),
            "tls" => Some(FailureKind::Tls),
            "no_such_mailbox" => Some(FailureKind::NoSuchMailbox),
            "mailbox_full" => Some(FailureKind::MailboxFull),
            "too_large" => Some(FailureKind::TooLarge),
            "unsupported" => Some(FailureKind::Unsupported),
            "local" => Some(FailureKind::Local),
            _ => None,
        }
    }

    /// What the kind means, in a few plain words (`postern queue show`).
    pub fn describe(&self) -> String {
        match self {
            FailureKind::Unreachable { port } => format!(
                "no server of the destination could be reached on port {port}{}",
                if *port == 25 {
                    " (if none ever can, this network may block port 25: see [fallback_relay])"
                } else {
                    ""
                }
            ),
            FailureKind::Dns => {
                "the destination's DNS could not be read, or its domain takes no mail".into()
            }
            FailureKind::Timeout { stage } => {
                format!("the other server did not answer in time ({stage})")
            }
            FailureKind::Tls => "TLS with the other server could not be set up".into(),
            FailureKind::Broken { stage } => format!("the connection broke during {stage}"),
            FailureKind::Reply { stage } => format!("the other server refused it at {stage}"),
            FailureKind::NoSuchMailbox => "the mailbox does not exist".into(),
            FailureKind::MailboxFull => "the mailbox is full".into(),
            FailureKind::TooLarge => "the message is larger than the other server takes".into(),
            FailureKind::Policy { stage } => {
                format!("the other server's policy refused it at {stage}")
            }
            FailureKind::Unsupported => {
                "the other server lacks an extension the message needs".into()
            }
            FailureKind::Local => "a failure on this server (see its log)".into(),
        }
    }

    /// The kind of a negative reply at `stage`, by its enhanced status code
    /// (RFC 3463) where it has one, else by the words servers commonly use.
    pub fn of_reply(stage: Stage, reply: &Response<String>) -> FailureKind {
        let [_, subject, detail] = reply.esc;
        match (subject, detail) {
            (1, 1) => return FailureKind::NoSuchMailbox,
            (2, 2) => return FailureKind::MailboxFull,
            (3, 4) | (2, 3) => return FailureKind::TooLarge,
            (7, _) => return FailureKind::Policy { stage },
            (0, 0) => {}
            _ => return FailureKind::Reply { stage },
        }
        let text = reply.message.to_ascii_lowercase();
        let says = |words: &[&str]| words.iter().any(|w| text.contains(w));
        if stage == Stage::Rcpt && says(&["user unknown", "no such user", "does not exist"]) {
            FailureKind::NoSuchMailbox
        } else if says(&["quota", "mailbox full"]) {
            FailureKind::MailboxFull
        } else {
            FailureKind::Reply { stage }
        }
    }
}

impl Serialize for FailureKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.token())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryFailure {
    pub severity: Severity,
    pub kind: FailureKind,
    /// What happened, for the log, `postern queue` and the DSN.
    pub text: String,
    /// The remote server's reply, when it gave one (`550 5.1.1 ...`).
    pub reply: Option<String>,
}

impl DeliveryFailure {
    pub fn new(severity: Severity, kind: FailureKind, text: impl Into<String>) -> DeliveryFailure {
        DeliveryFailure {
            severity,
            kind,
            text: text.into(),
            reply: None,
        }
    }

    /// A failure on this server's side; it may be gone on the next attempt.
    pub fn local(text: impl Into<String>) -> DeliveryFailure {
        DeliveryFailure::new(Severity::Transient, FailureKind::Local, text)
    }

    /// A negative reply from `host` at `stage`.
    pub fn from_reply(host: &str, stage: Stage, reply: &Response<String>) -> DeliveryFailure {
        let severity = if reply.code >= 500 {
            Severity::Permanent
        } else {
            Severity::Transient
        };
        let text = render(reply);
        DeliveryFailure {
            severity,
            kind: FailureKind::of_reply(stage, reply),
            text: format!("{host} said after {stage}: {text}"),
            reply: Some(text),
        }
    }

    /// Any mail-send error at `stage`; replies keep their code, everything
    /// else (I/O, TLS, timeouts) is a transient failure.
    pub fn from_client_error(host: &str, stage: Stage, e: &mail_send::Error) -> DeliveryFailure {
        match e {
            mail_send::Error::UnexpectedReply(reply)
            | mail_send::Error::AuthenticationFailed(reply) => {
                DeliveryFailure::from_reply(host, stage, reply)
            }
            mail_send::Error::Timeout => DeliveryFailure::new(
                Severity::Transient,
                FailureKind::Timeout { stage },
                format!("{host}: timed out during {stage}"),
            ),
            other => {
                use mail_send::Error as E;
                let kind = match (stage, other) {
                    (Stage::TlsHandshake | Stage::StartTls, _)
                    | (_, E::Tls(_) | E::InvalidTLSName | E::MissingStartTls) => FailureKind::Tls,
                    (_, E::Io(_) | E::UnparseableReply) => FailureKind::Broken { stage },
                    // No AUTH mechanism in common, no credentials, bad SASL:
                    // the relay will not take us as we are.
                    _ => FailureKind::Policy { stage },
                };
                DeliveryFailure::new(
                    Severity::Transient,
                    kind,
                    format!("{host}: {stage} failed: {other}"),
                )
            }
        }
    }

    /// The TCP connection to `addr` could not be made.
    pub fn unreachable(host: &str, addr: SocketAddr, e: &mail_send::Error) -> DeliveryFailure {
        let kind = FailureKind::Unreachable { port: addr.port() };
        let text = match e {
            mail_send::Error::Timeout => format!("{host}: timed out during connecting to {addr}"),
            other => format!("{host}: connecting to {addr} failed: {other}"),
        };
        DeliveryFailure::new(Severity::Transient, kind, text)
    }
}

impl fmt::Display for DeliveryFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// `550 5.1.1 text` in one line.
pub fn render(reply: &Response<String>) -> String {
    let text = reply.message.replace(['\r', '\n'], " ");
    if reply.esc[0] == 0 {
        format!("{} {}", reply.code, text.trim())
    } else {
        format!(
            "{} {}.{}.{} {}",
            reply.code,
            reply.esc[0],
            reply.esc[1],
            reply.esc[2],
            text.trim()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(code: u16, esc: [u8; 3], text: &str) -> Response<String> {
        Response {
            code,
            esc,
            message: text.to_string(),
        }
    }

    #[test]
    fn every_kind_reads_back_from_its_token() {
        let mut kinds = vec![
            FailureKind::Unreachable { port: 587 },
            FailureKind::Dns,
            FailureKind::Tls,
            FailureKind::NoSuchMailbox,
            FailureKind::MailboxFull,
            FailureKind::TooLarge,
            FailureKind::Unsupported,
            FailureKind::Local,
        ];
        for (stage, ..) in STAGES {
            kinds.extend([
                FailureKind::Timeout { stage },
                FailureKind::Broken { stage },
                FailureKind::Reply { stage },
                FailureKind::Policy { stage },
            ]);
        }
        for kind in kinds {
            assert_eq!(
                FailureKind::from_token(&kind.token()),
                Some(kind),
                "{kind:?}"
            );
        }
        for junk in [
            "",
            "reply",
            "reply@",
            "reply@nowhere",
            "unreachable:x",
            "later",
        ] {
            assert_eq!(FailureKind::from_token(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn replies_are_classified_by_enhanced_code_then_by_words() {
        let rcpt = |code, esc, text| FailureKind::of_reply(Stage::Rcpt, &reply(code, esc, text));
        assert_eq!(rcpt(550, [5, 1, 1], "whatever"), FailureKind::NoSuchMailbox);
        assert_eq!(rcpt(552, [5, 2, 2], "over"), FailureKind::MailboxFull);
        assert_eq!(rcpt(552, [5, 3, 4], "big"), FailureKind::TooLarge);
        assert_eq!(
            rcpt(550, [5, 7, 1], "user unknown"),
            FailureKind::Policy { stage: Stage::Rcpt }
        );
        assert_eq!(
            rcpt(550, [0, 0, 0], "User unknown"),
            FailureKind::NoSuchMailbox
        );
        assert_eq!(rcpt(452, [0, 0, 0], "over quota"), FailureKind::MailboxFull);
        assert_eq!(
            rcpt(451, [4, 3, 0], "try later"),
            FailureKind::Reply { stage: Stage::Rcpt }
        );
        // "does not exist" after DATA is about something else than a mailbox.
        assert_eq!(
            FailureKind::of_reply(Stage::Data, &reply(554, [0, 0, 0], "does not exist")),
            FailureKind::Reply { stage: Stage::Data }
        );
    }
}
