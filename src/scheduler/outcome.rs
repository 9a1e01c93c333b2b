//! Turns the results of one delivery round into spool updates: delivered,
//! deferred to a later attempt, or failed (permanently, or because the message
//! outlived `max_lifetime`) — and the failures into one DSN.

use crate::config::Config;
use crate::dsn::{self, FailedRecipient};
use crate::outbound::RecipientResult;
use crate::outbound::failure::Severity;
use crate::spool::{NewMessage, QueuedMessage, RecipientStatus, RecipientUpdate};

use super::backoff;

/// The spool updates for a round and the bounce it causes, if any.
pub struct Applied {
    pub updates: Vec<RecipientUpdate>,
    pub bounce: Option<NewMessage>,
}

pub fn apply(
    config: &Config,
    message: &QueuedMessage,
    body: &[u8],
    results: &[RecipientResult],
    now: i64,
) -> Applied {
    let lifetime = config.delivery.max_lifetime.as_secs() as i64;
    let expired = now - message.created >= lifetime;
    let mut updates = Vec::with_capacity(results.len());
    let mut failed = Vec::new();
    for (idx, result) in results {
        let Some(rcpt) = message.recipients.iter().find(|r| r.idx == *idx) else {
            continue;
        };
        let (status, next_attempt, reply) = match result {
            Ok(reply) => {
                tracing::info!(event = "delivered", qid = %message.id, rcpt = %rcpt.address, reply = %reply);
                (RecipientStatus::Delivered, now, reply.clone())
            }
            Err(f) if f.severity == Severity::Permanent || expired => {
                let event = if f.severity == Severity::Permanent {
                    "bounced"
                } else {
                    "expired"
                };
                tracing::info!(event, qid = %message.id, rcpt = %rcpt.address, reason = %f);
                failed.push(FailedRecipient {
                    recipient: rcpt,
                    text: &f.text,
                    reply: f.reply.as_deref(),
                    expired: f.severity != Severity::Permanent,
                });
                (RecipientStatus::Failed, now, f.text.clone())
            }
            Err(f) => {
                let jitter = rand::random::<f64>() * 2.0 - 1.0;
                let wait = backoff::delay(
                    rcpt.attempts + 1,
                    config.delivery.retry_min,
                    config.delivery.retry_max,
                    jitter,
                );
                let next = (now + wait.as_secs() as i64)
                    .min(message.created + lifetime)
                    .max(now + 1);
                tracing::info!(event = "deferred", qid = %message.id, rcpt = %rcpt.address, next_attempt = next, reason = %f);
                (RecipientStatus::Queued, next, f.text.clone())
            }
        };
        let counted = match (status, result) {
            (RecipientStatus::Delivered, _) => "delivered",
            (RecipientStatus::Queued, _) => "deferred",
            (_, Err(f)) if f.severity == Severity::Permanent => "bounced",
            _ => "expired",
        };
        metrics::counter!("postern_deliveries_total", "result" => counted).increment(1);
        updates.push(RecipientUpdate {
            idx: *idx,
            status,
            next_attempt,
            reply,
        });
    }
    let days = (lifetime / 86_400).max(1) as u64;
    let bounce = if failed.is_empty() {
        None
    } else {
        dsn::bounce(&config.hostname, message, body, &failed, days)
    };
    Applied { updates, bounce }
}
