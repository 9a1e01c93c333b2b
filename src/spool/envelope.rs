//! What the spool keeps about a message besides its body: the envelope as the
//! session accepted it (with the DSN parameters of RFC 3461, kept for bounces),
//! and one record per recipient with its delivery state; and the counts of
//! `postern queue list --summary`.

use serde::{Deserialize, Serialize};

use super::QueueId;
use crate::failure::FailureKind;

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
    /// RFC 8689 REQUIRETLS: every hop over TLS with a verified certificate.
    pub requiretls: bool,
    /// RFC 8689 §3 "TLS-Required: No": the recipient domains' TLS
    /// policies (MTA-STS, DANE) are not applied. Never with `requiretls`,
    /// which wins.
    pub tls_policy_waived: bool,
    /// Queued held (its sender's outgoing mail is on hold): kept, not
    /// delivered until released.
    pub held: bool,
    /// Shared, not copied, between the spool's writer and the hand-off to the
    /// scheduler.
    pub body: bytes::Bytes,
}

impl NewMessage {
    /// A message this server writes itself (a notice, a report): no DSN
    /// parameters, no submitting user, delivered at once.
    pub fn generated(sender: String, recipients: &[&str], body: Vec<u8>) -> NewMessage {
        NewMessage {
            sender,
            recipients: recipients
                .iter()
                .map(|address| NewRecipient {
                    address: address.to_string(),
                    orcpt: None,
                    notify: None,
                })
                .collect(),
            dsn: DsnEnvelope::default(),
            auth_user: None,
            smtputf8: false,
            requiretls: false,
            tls_policy_waived: false,
            held: false,
            body: body.into(),
        }
    }
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
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
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
    /// What kind of failure the last attempt met, if it failed.
    pub last_kind: Option<FailureKind>,
    /// Kept from delivery by `postern queue hold` until released.
    pub held: bool,
}

/// The new state of one recipient after a delivery attempt.
#[derive(Debug, Clone)]
pub struct RecipientUpdate {
    pub idx: u32,
    pub status: RecipientStatus,
    pub next_attempt: i64,
    pub reply: String,
    /// What kind of failure the attempt met; `None` when it did not fail.
    pub kind: Option<FailureKind>,
}

/// A message as stored, without its body.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct QueuedMessage {
    pub id: QueueId,
    /// Unix seconds when it was accepted.
    pub created: i64,
    pub sender: String,
    pub size: u64,
    pub auth_user: Option<String>,
    pub smtputf8: bool,
    pub requiretls: bool,
    pub tls_policy_waived: bool,
    pub dsn: DsnEnvelope,
    pub recipients: Vec<QueuedRecipient>,
}

impl QueuedMessage {
    /// A message as `put` stores it, `now`: every recipient queued and due.
    /// The one place this state is built: the spool writes its rows from it,
    /// and the scheduler delivers a fresh message from it.
    pub fn accepted(id: QueueId, message: &NewMessage, size: u64, now: i64) -> QueuedMessage {
        QueuedMessage {
            id,
            created: now,
            sender: message.sender.clone(),
            size,
            auth_user: message.auth_user.clone(),
            smtputf8: message.smtputf8,
            requiretls: message.requiretls,
            tls_policy_waived: message.tls_policy_waived,
            dsn: message.dsn.clone(),
            recipients: (0..)
                .zip(&message.recipients)
                .map(|(idx, r)| QueuedRecipient {
                    idx,
                    address: r.address.clone(),
                    orcpt: r.orcpt.clone(),
                    notify: r.notify.clone(),
                    status: RecipientStatus::Queued,
                    attempts: 0,
                    next_attempt: now,
                    last_reply: None,
                    last_kind: None,
                    held: message.held,
                })
                .collect(),
        }
    }

    /// One word for the whole message: queued while any recipient is pending
    /// (held, deferred once tried), else done.
    pub fn state(&self) -> &'static str {
        let mut pending = self
            .recipients
            .iter()
            .filter(|r| r.status == RecipientStatus::Queued)
            .peekable();
        if pending.peek().is_some() {
            if pending.any(|r| r.held) {
                "held"
            } else if self.recipients.iter().any(|r| r.attempts > 0) {
                "deferred"
            } else {
                "queued"
            }
        } else {
            "done"
        }
    }
}

/// What `postern queue list --state` selects: a message in one of the states
/// [`QueuedMessage::state`] names for a message still to deliver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageState {
    /// No recipient held, none tried yet.
    Queued,
    /// No recipient held, one tried before (and still some to deliver).
    Deferred,
    /// A recipient still to deliver is held.
    Held,
}

impl MessageState {
    /// The word [`QueuedMessage::state`] gives a message in this state.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageState::Queued => "queued",
            MessageState::Deferred => "deferred",
            MessageState::Held => "held",
        }
    }
}

/// Which messages `list` returns; the default is every one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    pub state: Option<MessageState>,
    /// Messages with a recipient still to deliver at this domain, as
    /// [`recipient_domain`] writes it (the caller's case does not matter).
    pub domain: Option<String>,
    /// Messages this account submitted (`auth_user`, as stored).
    pub user: Option<String>,
}

/// The domain of a recipient address as the queue counts destinations:
/// after the last `@` (a quoted local part may hold one), lower case.
pub fn recipient_domain(address: &str) -> String {
    address
        .rsplit_once('@')
        .map_or("", |(_, domain)| domain)
        .to_lowercase()
}

/// The queue in numbers, for `postern queue list --summary`: recipients
/// count by state and destination, since each recipient is delivered (and
/// waits) on its own.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Summary {
    pub messages: u64,
    /// Unix seconds when the oldest message was accepted.
    pub oldest: Option<i64>,
    /// Recipients not yet tried.
    pub queued: u64,
    /// Recipients tried and waiting for their next attempt.
    pub deferred: u64,
    /// Recipients kept by `postern queue hold`.
    pub held: u64,
    /// Recipients still to deliver by domain, most first.
    pub destinations: Vec<DomainCount>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DomainCount {
    pub domain: String,
    pub recipients: u64,
}

/// Deferred recipients of one destination domain whose last attempt met
/// one kind of failure (`FailureKind` token, `unreachable:25`; none when
/// unknown), for the dashboard's stuck mail.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StuckGroup {
    pub domain: String,
    pub kind: Option<String>,
    pub recipients: u64,
}

impl serde::Serialize for QueueId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for QueueId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        QueueId::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("{s:?} is not a queue id")))
    }
}
