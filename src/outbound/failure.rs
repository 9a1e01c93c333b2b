//! What a failed delivery step means: how bad (retry or give up) and how wide
//! (this host, this message, or one recipient) — Postfix's site/message/recipient
//! failure split. Every client error maps to it in `from_client_error`.

use std::fmt;

use smtp_proto::Response;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// 4xx, timeouts, refused connections: try again later.
    Transient,
    /// 5xx and conditions that cannot change: bounce.
    Permanent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Try the next host of the destination.
    Host,
    /// Applies to every recipient of the message on this destination.
    Message,
    /// Applies to one recipient.
    Recipient,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryFailure {
    pub severity: Severity,
    pub scope: Scope,
    /// What happened, for the log, `postern queue` and the DSN.
    pub text: String,
    /// The remote server's reply, when it gave one (`550 5.1.1 ...`).
    pub reply: Option<String>,
}

impl DeliveryFailure {
    pub fn new(severity: Severity, scope: Scope, text: impl Into<String>) -> DeliveryFailure {
        DeliveryFailure {
            severity,
            scope,
            text: text.into(),
            reply: None,
        }
    }

    /// A negative reply from `host` at some stage of the dialogue.
    pub fn from_reply(
        scope: Scope,
        host: &str,
        stage: &str,
        reply: &Response<String>,
    ) -> DeliveryFailure {
        let severity = if reply.code >= 500 {
            Severity::Permanent
        } else {
            Severity::Transient
        };
        let text = render(reply);
        DeliveryFailure {
            severity,
            scope,
            text: format!("{host} said after {stage}: {text}"),
            reply: Some(text),
        }
    }

    /// Any mail-send error at some stage; replies keep their code, everything else
    /// (I/O, TLS, timeouts) is a transient failure of this host.
    pub fn from_client_error(
        scope: Scope,
        host: &str,
        stage: &str,
        e: &mail_send::Error,
    ) -> DeliveryFailure {
        match e {
            mail_send::Error::UnexpectedReply(reply)
            | mail_send::Error::AuthenticationFailed(reply) => {
                DeliveryFailure::from_reply(scope, host, stage, reply)
            }
            mail_send::Error::Timeout => DeliveryFailure::new(
                Severity::Transient,
                Scope::Host,
                format!("{host}: timed out during {stage}"),
            ),
            other => DeliveryFailure::new(
                Severity::Transient,
                Scope::Host,
                format!("{host}: {stage} failed: {other}"),
            ),
        }
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
