//! The envelope being built between MAIL and the end of DATA/BDAT, kept apart
//! from the session (OpenSMTPD's smtp_tx) so RSET, EHLO and STARTTLS reset it by
//! dropping one value.

use std::collections::HashSet;

use super::incoming::IncomingBody;
use super::io::BodyPace;
use crate::smtp::address::Mailbox;
use crate::spool::{DsnEnvelope, NewRecipient};

pub struct Transaction {
    /// `None` is the null reverse-path `<>`.
    pub sender: Option<Mailbox>,
    pub smtputf8: bool,
    /// RFC 8689 REQUIRETLS, given at MAIL over TLS.
    pub requiretls: bool,
    pub dsn: DsnEnvelope,
    pub recipients: Vec<NewRecipient>,
    /// `Mailbox::recipient_key` of each recipient, to keep a duplicate out.
    pub recipient_keys: HashSet<String>,
    /// How many recipients the authenticated user never wrote to before.
    pub first_time: u64,
    /// BDAT chunks received so far, and the pace the whole body must keep
    /// (not each chunk: one octet per BDAT would reset it); `None` until the
    /// first BDAT.
    pub chunks: Option<(IncomingBody, BodyPace)>,
    /// The `transaction` span (a child of the session's): records the queue
    /// id once there is one, and closes with the transaction, so the next
    /// one in the session starts without it.
    pub span: tracing::Span,
}

impl Transaction {
    pub fn sender_text(&self) -> String {
        self.sender
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default()
    }
}

/// What EHLO or HELO said.
#[derive(Debug, Clone)]
pub struct Greeting {
    pub name: String,
    pub extended: bool,
}
