//! What the spool keeps about a message besides its body: the envelope as the
//! session accepted it (with the DSN parameters of RFC 3461, kept for bounces),
//! and one record per recipient with its delivery state.

use serde::Serialize;

use super::QueueId;

/// An accepted message, ready to be made durable.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// Empty for the null reverse-path `<>`.
    pub sender: String,
    pub recipients: Vec<NewRecipient>,
    pub dsn: DsnEnvelope,
    /// The authenticated user who submitted it, if any.
    pub auth_user: Option<String>,
    pub smtputf8: bool,
    /// Shared, not copied, between the spool's writer and the hand-off to the
    /// scheduler.
    pub body: bytes::Bytes,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct DsnEnvelope {
    /// RET=FULL or RET=HDRS, as given.
    pub ret: Option<String>,
    pub envid: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecipient {
    pub address: String,
    /// RFC 3461 ORCPT, as given (`rfc822;addr`).
    pub orcpt: Option<String>,
    /// NOTIFY=, as a comma-separated list of SUCCESS, FAILURE, DELAY or NEVER.
    pub notify: Option<String>,
}

/// Where a recipient stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RecipientStatus {
    Queued,
    Delivered,
    Failed,
}

impl RecipientStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RecipientStatus::Queued => "queued",
            RecipientStatus::Delivered => "delivered",
            RecipientStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<RecipientStatus> {
        match s {
            "queued" => Some(RecipientStatus::Queued),
            "delivered" => Some(RecipientStatus::Delivered),
            "failed" => Some(RecipientStatus::Failed),
            _ => None,
        }
    }
}

/// A recipient as stored, with its delivery state.
#[derive(Debug, Clone, Serialize)]
pub struct QueuedRecipient {
    /// Position in the message's recipient list; names it in `record`.
    pub idx: u32,
    pub address: String,
    pub orcpt: Option<String>,
    pub notify: Option<String>,
    pub status: RecipientStatus,
    pub attempts: u32,
    /// Unix seconds.
    pub next_attempt: i64,
    pub last_reply: Option<String>,
}

/// A message as stored, without its body.
#[derive(Debug, Clone, Serialize)]
pub struct QueuedMessage {
    pub id: QueueId,
    /// Unix seconds when it was accepted.
    pub created: i64,
    pub sender: String,
    pub size: u64,
    pub auth_user: Option<String>,
    pub smtputf8: bool,
    pub dsn: DsnEnvelope,
    pub recipients: Vec<QueuedRecipient>,
}

impl QueuedMessage {
    /// One word for the whole message: queued while any recipient is pending.
    pub fn state(&self) -> &'static str {
        if self
            .recipients
            .iter()
            .any(|r| r.status == RecipientStatus::Queued)
        {
            if self.recipients.iter().any(|r| r.attempts > 0) {
                "deferred"
            } else {
                "queued"
            }
        } else {
            "done"
        }
    }
}

impl serde::Serialize for QueueId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}
