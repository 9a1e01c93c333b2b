//! Delivery status notifications (RFC 3464): when recipients fail for good or
//! their message outlives `max_lifetime`, one multipart/report goes from the
//! null sender to the envelope sender, with a plain-words explanation, the
//! machine-readable status per recipient, and the original headers or message
//! (per RET). A message from the null sender is never bounced.

mod budget;

pub use budget::{DsnBudget, MAX_DSN_PER_SENDER_PER_HOUR};

use mail_builder::MessageBuilder;
use mail_builder::headers::content_type::ContentType;
use mail_builder::mime::MimePart;
use mail_parser::DateTime;

use crate::failure::{FailureKind, Stage};
use crate::smtp::data::MAX_MESSAGE_LINE;
use crate::spool::{DsnEnvelope, NewMessage, NewRecipient, QueuedMessage, QueuedRecipient};

/// Above this size the DSN carries only the original headers.
const MAX_RETURNED_BODY: usize = 1 << 20;

/// One recipient that failed, and why.
pub struct FailedRecipient<'a> {
    pub recipient: &'a QueuedRecipient,
    /// What kind of failure it was: chooses the explanation.
    pub kind: FailureKind,
    /// What happened, as recorded (`... said after RCPT TO: 550 5.1.1 ...`).
    pub text: &'a str,
    /// The remote server's reply, if it gave one.
    pub reply: Option<&'a str>,
    /// The message outlived its lifetime (rather than a permanent refusal).
    pub expired: bool,
}

/// Whether the sender asked not to hear about this recipient's failure.
fn wants_failure_notice(r: &QueuedRecipient) -> bool {
    match &r.notify {
        None => true,
        Some(n) => n.split(',').any(|v| v.eq_ignore_ascii_case("FAILURE")),
    }
}

/// The enhanced status for the report: the remote's own, else 5.0.0, or 4.4.7
/// ("delivery time expired") for an expired message.
fn status_code(f: &FailedRecipient<'_>) -> String {
    if f.expired {
        return "4.4.7".to_string();
    }
    f.reply
        .and_then(|r| r.split_whitespace().nth(1))
        .filter(|c| c.split('.').count() == 3 && c.split('.').all(|p| p.parse::<u16>().is_ok()))
        .map_or_else(|| "5.0.0".to_string(), str::to_string)
}

/// What went wrong, in words a user understands, chosen by the kind of
/// failure.
pub fn explain(f: &FailedRecipient<'_>, lifetime_days: u64) -> String {
    if f.expired {
        if let FailureKind::Unreachable { port } = f.kind {
            return format!(
                "{} — for {lifetime_days} days. This server's outbound port {port} may be blocked by its network; \
                 the administrator can send through a relay ([relay] or [fallback_relay]).",
                f.text
            );
        }
        return format!(
            "it could not be delivered for {lifetime_days} days; the last error was: {}",
            f.text
        );
    }
    match f.kind {
        FailureKind::NoSuchMailbox => {
            "the receiving server said the mailbox does not exist.".to_string()
        }
        FailureKind::MailboxFull => "the receiving server said the mailbox is full.".to_string(),
        FailureKind::Policy { .. } => "the receiving server refused the message because of its policy (for example, it took it for spam).".to_string(),
        FailureKind::TooLarge if f.reply.is_some() => {
            "the receiving server said the message is too large.".to_string()
        }
        _ if f.reply.is_some() => "the receiving server refused the message.".to_string(),
        _ => format!("{}.", f.text),
    }
}

/// Text from outside (the client's ENVID and ORCPT, a remote server's reply,
/// addresses) as it may appear in the report: a CR or LF would start a field
/// of the sender's or the remote's choosing, and other controls reach a
/// reader's terminal; each becomes a space.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

const LONG_LINES: &str =
    "the message had lines longer than 998 characters, which the receiving server refused.";

/// Whether a line of `body` is longer than RFC 5322 §2.1.1 allows. Such mail
/// is accepted from other servers and kept byte for byte, and some next hops
/// refuse it.
fn has_long_lines(body: &[u8]) -> bool {
    body.split(|&b| b == b'\n')
        .any(|l| l.strip_suffix(b"\r").unwrap_or(l).len() > MAX_MESSAGE_LINE)
}

/// A refusal of the message itself at the end of DATA, other than for policy
/// unless the reply speaks of lines: for a message with long lines, the
/// likely reason.
fn refused_after_data(f: &FailedRecipient<'_>) -> bool {
    let speaks_of_lines = || {
        f.reply
            .is_some_and(|r| r.to_ascii_lowercase().contains("line"))
    };
    !f.expired
        && match f.kind {
            FailureKind::Reply { stage: Stage::Data } => true,
            FailureKind::Policy { stage: Stage::Data } => speaks_of_lines(),
            _ => false,
        }
}

/// Builds the DSN for `failed` recipients of `original`, or `None` when nobody
/// should get one (null sender, or NOTIFY without FAILURE for all of them).
pub fn bounce(
    hostname: &str,
    original: &QueuedMessage,
    original_body: &[u8],
    failed: &[FailedRecipient<'_>],
    lifetime_days: u64,
) -> Option<NewMessage> {
    if original.sender.is_empty() {
        return None;
    }
    let failed: Vec<&FailedRecipient<'_>> = failed
        .iter()
        .filter(|f| wants_failure_notice(f.recipient))
        .collect();
    if failed.is_empty() {
        return None;
    }
    let mut human = format!(
        "This is the mail system at {hostname}.\r\n\r\nYour message could not be delivered to {} of its recipients:\r\n\r\n",
        failed.len()
    );
    let long_lines = has_long_lines(original_body);
    for f in &failed {
        let why = if long_lines && refused_after_data(f) {
            LONG_LINES.to_string()
        } else {
            explain(f, lifetime_days)
        };
        human.push_str(&format!(
            "  <{}>: {}\r\n",
            printable(&f.recipient.address),
            printable(&why)
        ));
    }
    human.push_str("\r\nThe technical details and the original message's headers follow.\r\n");

    let mut status = format!(
        "Reporting-MTA: dns; {hostname}\r\nX-Postern-Queue-ID: {}\r\nArrival-Date: {}\r\n",
        original.id,
        DateTime::from_timestamp(original.created).to_rfc822()
    );
    if let Some(envid) = &original.dsn.envid {
        status.push_str(&format!("Original-Envelope-Id: {}\r\n", printable(envid)));
    }
    for f in &failed {
        status.push_str(&format!(
            "\r\nFinal-Recipient: rfc822; {}\r\n",
            printable(&f.recipient.address)
        ));
        if let Some(orcpt) = &f.recipient.orcpt {
            status.push_str(&format!(
                "Original-Recipient: {}\r\n",
                printable(&orcpt.replacen(';', "; ", 1))
            ));
        }
        status.push_str(&format!("Action: failed\r\nStatus: {}\r\n", status_code(f)));
        match f.reply {
            Some(reply) => {
                status.push_str(&format!("Diagnostic-Code: smtp; {}\r\n", printable(reply)))
            }
            None => status.push_str(&format!(
                "Diagnostic-Code: x-postern; {}\r\n",
                printable(f.text)
            )),
        }
    }

    let headers_only =
        original.dsn.ret.as_deref() == Some("HDRS") || original_body.len() > MAX_RETURNED_BODY;
    let returned = if headers_only {
        let end = original_body
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(original_body.len(), |p| p + 2);
        MimePart::new("text/rfc822-headers", &original_body[..end]).transfer_encoding("8bit")
    } else {
        MimePart::new("message/rfc822", original_body).transfer_encoding("8bit")
    };
    let report = MimePart::new(
        ContentType::new("multipart/report").attribute("report-type", "delivery-status"),
        vec![
            MimePart::new("text/plain", human.as_str()),
            MimePart::new("message/delivery-status", status.as_bytes()).transfer_encoding("7bit"),
            returned,
        ],
    );
    let body = MessageBuilder::new()
        .from((
            "Mail Delivery System",
            format!("MAILER-DAEMON@{hostname}").as_str(),
        ))
        .to(original.sender.as_str())
        .subject("Undelivered Mail Returned to Sender")
        .message_id(format!(
            "{}.{:08x}.dsn@{hostname}",
            original.id,
            rand::random::<u32>()
        ))
        .header(
            "Auto-Submitted",
            mail_builder::headers::raw::Raw::new("auto-replied"),
        )
        .body(report)
        .write_to_vec()
        .ok()?;
    Some(NewMessage {
        sender: String::new(),
        recipients: vec![NewRecipient {
            address: original.sender.clone(),
            orcpt: None,
            notify: None,
        }],
        dsn: DsnEnvelope::default(),
        auth_user: None,
        smtputf8: original.smtputf8,
        requiretls: false,
        tls_policy_waived: false,
        held: false,
        body: body.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::{QueueId, RecipientStatus};
    use mail_parser::{MessageParser, MimeHeaders};

    fn rcpt(address: &str, notify: Option<&str>) -> QueuedRecipient {
        QueuedRecipient {
            idx: 0,
            address: address.into(),
            orcpt: Some("rfc822;orig@example.org".into()),
            notify: notify.map(str::to_string),
            status: RecipientStatus::Queued,
            attempts: 1,
            next_attempt: 0,
            last_reply: None,
            last_kind: None,
            held: false,
        }
    }

    fn original(sender: &str, ret: Option<&str>) -> QueuedMessage {
        QueuedMessage {
            id: QueueId::generate(),
            created: 1_700_000_000,
            sender: sender.into(),
            size: 10,
            auth_user: None,
            smtputf8: false,
            requiretls: false,
            tls_policy_waived: false,
            dsn: DsnEnvelope {
                ret: ret.map(str::to_string),
                envid: Some("env-1".into()),
            },
            recipients: vec![],
        }
    }

    #[test]
    fn report_parses_and_carries_each_field() {
        let r = rcpt("bob@remote.example", None);
        let failed = [FailedRecipient {
            recipient: &r,
            kind: FailureKind::NoSuchMailbox,
            text: "mx.remote.example said after RCPT TO: 550 5.1.1 no such user",
            reply: Some("550 5.1.1 no such user"),
            expired: false,
        }];
        let body = b"Subject: original\r\nFrom: a@example.com\r\n\r\nthe body\r\n";
        let dsn = bounce(
            "mx.example.com",
            &original("a@example.com", None),
            body,
            &failed,
            5,
        )
        .expect("dsn");
        assert_eq!(dsn.sender, "");
        assert_eq!(dsn.recipients[0].address, "a@example.com");
        let parsed = MessageParser::default().parse(&dsn.body).expect("parses");
        assert_eq!(
            parsed.subject(),
            Some("Undelivered Mail Returned to Sender")
        );
        let ct = parsed.content_type().expect("content type");
        assert_eq!((ct.ctype(), ct.subtype()), ("multipart", Some("report")));
        assert_eq!(ct.attribute("report-type"), Some("delivery-status"));
        let human = parsed.body_text(0).expect("text part");
        assert!(
            human.contains("the receiving server said the mailbox does not exist"),
            "{human}"
        );
        let text = String::from_utf8_lossy(&dsn.body);
        assert!(
            text.contains("Message-ID: <") && text.contains(".dsn@mx.example.com>"),
            "{text}"
        );
        assert!(text.contains("Final-Recipient: rfc822; bob@remote.example\r\nOriginal-Recipient: rfc822; orig@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 no such user"), "{text}");
        assert!(text.contains("Original-Envelope-Id: env-1"));
        assert!(
            text.contains("Content-Type: message/rfc822") && text.contains("the body"),
            "{text}"
        );
    }

    /// Whatever the client and the remote server sent, the report's fields
    /// are whole lines of printable text and parse as the values given.
    #[test]
    fn hostile_text_cannot_add_fields_or_controls() {
        let mut r = rcpt("bob@remote.example", None);
        r.orcpt = Some("rfc822;orig@example.org\r\nX-Evil: orcpt".into());
        let mut message = original("a@example.com", None);
        message.dsn.envid = Some("env\r\nBcc: victim@example.org".into());
        let failed = [
            FailedRecipient {
                recipient: &r,
                kind: FailureKind::NoSuchMailbox,
                text: "mx said: 550 5.1.1 x",
                reply: Some("550 5.1.1 no\x1b]0;owned\x07 such\0user\r\nX-Evil: reply"),
                expired: false,
            },
            FailedRecipient {
                recipient: &r,
                kind: FailureKind::Local,
                text: "local\nX-Evil: text\x1b[2J",
                reply: None,
                expired: false,
            },
        ];
        let dsn = bounce(
            "mx.example.com",
            &message,
            b"Subject: o\r\n\r\nb\r\n",
            &failed,
            5,
        )
        .expect("dsn");
        let text = String::from_utf8_lossy(&dsn.body);
        for line in text.split("\r\n") {
            assert!(
                !line.contains(|c: char| c.is_control() && c != '\t'),
                "{line:?}"
            );
            assert!(
                !line.starts_with("X-Evil") && !line.starts_with("Bcc"),
                "{line:?}"
            );
        }
        assert!(
            text.contains("Original-Envelope-Id: env  Bcc: victim@example.org\r\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "Diagnostic-Code: smtp; 550 5.1.1 no ]0;owned  such user  X-Evil: reply\r\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("Original-Recipient: rfc822; orig@example.org  X-Evil: orcpt\r\n"),
            "{text}"
        );
        assert!(
            text.contains("Diagnostic-Code: x-postern; local X-Evil: text [2J\r\n"),
            "{text}"
        );
    }

    #[test]
    fn a_refused_message_with_long_lines_is_explained() {
        let r = rcpt("bob@remote.example", None);
        // The kind as outbound gives it for `reply` after `text`'s stage.
        let refused = |reply: &'static str, text: &'static str| FailedRecipient {
            recipient: &r,
            kind: {
                let (code, esc) = reply.split_at(4);
                let esc: Vec<u8> = esc
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .split('.')
                    .map(|n| n.parse().unwrap_or(0))
                    .collect();
                let stage = if text.contains("RCPT") {
                    Stage::Rcpt
                } else {
                    Stage::Data
                };
                let response = smtp_proto::Response {
                    code: code.trim().parse().expect("code"),
                    esc: [esc[0], esc[1], esc[2]],
                    message: String::new(),
                };
                FailureKind::of_reply(stage, &response)
            },
            text,
            reply: Some(reply),
            expired: false,
        };
        let human = |body: &[u8], f: FailedRecipient<'_>| {
            let dsn = bounce(
                "mx.example.com",
                &original("a@example.com", None),
                body,
                &[f],
                5,
            )
            .expect("dsn");
            let parsed = MessageParser::default().parse(&dsn.body).expect("parses");
            parsed.body_text(0).expect("text part").into_owned()
        };
        let long = format!("Subject: x\r\n\r\n{}\r\n", "y".repeat(999));
        let at_limit = format!("Subject: x\r\n\r\n{}\r\n", "y".repeat(998));
        let data = "mx.remote.example said after DATA: 554 5.6.0 Invalid message content";
        let words =
            "the message had lines longer than 998 characters, which the receiving server refused";
        assert!(
            human(
                long.as_bytes(),
                refused("554 5.6.0 Invalid message content", data)
            )
            .contains(words)
        );
        let short = human(
            at_limit.as_bytes(),
            refused("554 5.6.0 Invalid message content", data),
        );
        assert!(
            !short.contains(words) && short.contains("refused the message"),
            "{short}"
        );
        // A refusal for policy, or at RCPT, keeps its own words.
        let spam = human(
            long.as_bytes(),
            refused("550 5.7.1 Spam", "mx said after DATA: 550 5.7.1 Spam"),
        );
        assert!(spam.contains("because of its policy"), "{spam}");
        let lines = "mx said after DATA: 550 5.7.0 Line too long";
        assert!(human(long.as_bytes(), refused("550 5.7.0 Line too long", lines)).contains(words));
        let rcpt_refused = human(
            long.as_bytes(),
            refused(
                "550 5.1.1 no such user",
                "mx said after RCPT TO: 550 5.1.1 no such user",
            ),
        );
        assert!(
            rcpt_refused.contains("mailbox does not exist"),
            "{rcpt_refused}"
        );
    }

    #[test]
    fn ret_hdrs_expiry_and_who_gets_none() {
        let r = rcpt("bob@remote.example", None);
        let expired = [FailedRecipient {
            recipient: &r,
            kind: FailureKind::Unreachable { port: 25 },
            text: "no server of remote.example could be reached on port 25 (last error: refused)",
            reply: None,
            expired: true,
        }];
        let body = b"Subject: original\r\n\r\nsecret body\r\n";
        let dsn = bounce(
            "mx.example.com",
            &original("a@example.com", Some("HDRS")),
            body,
            &expired,
            5,
        )
        .expect("dsn");
        let text = String::from_utf8_lossy(&dsn.body);
        assert!(
            text.contains("text/rfc822-headers") && !text.contains("secret body"),
            "{text}"
        );
        assert!(text.contains("Status: 4.4.7"), "{text}");
        let parsed = MessageParser::default().parse(&dsn.body).expect("parses");
        let human = parsed.body_text(0).expect("text part");
        assert!(
            human.contains("for 5 days") && human.contains("outbound port 25 may be blocked"),
            "{human}"
        );
        assert!(
            bounce("mx", &original("", None), body, &expired, 5).is_none(),
            "never bounce a bounce"
        );
        let quiet = rcpt("bob@remote.example", Some("DELAY"));
        let f = [FailedRecipient {
            recipient: &quiet,
            kind: FailureKind::Local,
            text: "x",
            reply: None,
            expired: false,
        }];
        assert!(
            bounce("mx", &original("a@example.com", None), body, &f, 5).is_none(),
            "NOTIFY without FAILURE"
        );
    }

    #[test]
    fn the_explanation_follows_the_kind_not_the_words() {
        let r = rcpt("bob@remote.example", None);
        let failed = |kind, text, reply, expired| FailedRecipient {
            recipient: &r,
            kind,
            text,
            reply,
            expired,
        };
        // Servers answered, one of them slowly: not a blocked port, whatever
        // the text says.
        let slow = failed(
            FailureKind::Timeout { stage: Stage::Data },
            "no server of remote.example could be reached on port 25 (last error: timed out)",
            None,
            true,
        );
        assert!(!explain(&slow, 5).contains("may be blocked"));
        let blocked = failed(
            FailureKind::Unreachable { port: 2525 },
            "connection refused",
            None,
            true,
        );
        assert!(explain(&blocked, 5).contains("outbound port 2525 may be blocked"));
        // A mailbox that does not exist, in words no rule would recognise.
        let gone = failed(
            FailureKind::NoSuchMailbox,
            "mx said after RCPT TO: 550 nope",
            Some("550 nope"),
            false,
        );
        assert!(explain(&gone, 5).contains("mailbox does not exist"));
        let big = failed(
            FailureKind::TooLarge,
            "mx said after DATA: 552 5.3.4 too big",
            Some("552 5.3.4 too big"),
            false,
        );
        assert!(explain(&big, 5).contains("too large"));
    }
}
