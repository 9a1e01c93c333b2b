//! Queued messages for the scheduler's unit tests.

use crate::spool::{DsnEnvelope, QueueId, QueuedMessage, QueuedRecipient, RecipientStatus};

/// A message from `sender` accepted at `created` (Unix seconds), its
/// recipients due then, with no attempt made yet.
pub fn message(sender: &str, created: i64, recipients: &[&str]) -> QueuedMessage {
    QueuedMessage {
        id: QueueId::generate(),
        created,
        sender: sender.into(),
        size: 10,
        auth_user: None,
        smtputf8: false,
        requiretls: false,
        tls_policy_waived: false,
        dsn: DsnEnvelope::default(),
        recipients: recipients
            .iter()
            .enumerate()
            .map(|(idx, address)| QueuedRecipient {
                idx: idx as u32,
                address: address.to_string(),
                orcpt: None,
                notify: None,
                status: RecipientStatus::Queued,
                attempts: 0,
                next_attempt: created,
                last_reply: None,
                last_kind: None,
                held: false,
            })
            .collect(),
    }
}
