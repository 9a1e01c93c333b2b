//! Turns the results of one delivery round into spool updates: delivered,
//! deferred to a later attempt, or failed (permanently, or because the message
//! outlived `max_lifetime`) — and the failures into one DSN.

use crate::config::Config;
use crate::dsn::{self, FailedRecipient};
use crate::failure::{FailureKind, Severity};
use crate::flow::Flow;
use crate::outbound::RecipientResult;
use crate::spool::{NewMessage, QueuedMessage, RecipientStatus, RecipientUpdate};

use super::backoff;

/// The spool updates for a round and the bounce it causes, if any.
pub struct Applied {
    pub updates: Vec<RecipientUpdate>,
    pub bounce: Option<NewMessage>,
}

/// `detoured`: the recipients whose MX could not be reached because port 25
/// is blocked, now that `[fallback_relay]` takes such mail: due again at
/// once rather than after a retry interval. (Only those that went to an MX:
/// a relay on port 25 that fails is retried as ever.)
pub fn apply(
    config: &Config,
    message: &QueuedMessage,
    body: &[u8],
    results: &[RecipientResult],
    now: i64,
    detoured: &[u32],
) -> Applied {
    let port25 = FailureKind::Unreachable {
        port: config.delivery.mx_port,
    };
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
                tracing::info!(event, qid = %message.id, rcpt = %rcpt.address, kind = %f.kind.token(), reason = %f);
                failed.push(FailedRecipient {
                    recipient: rcpt,
                    kind: f.kind,
                    text: &f.text,
                    reply: f.reply.as_deref(),
                    expired: f.severity != Severity::Permanent,
                });
                (RecipientStatus::Failed, now, f.text.clone())
            }
            Err(f) if f.kind == port25 && detoured.contains(idx) => {
                tracing::info!(event = "deferred", qid = %message.id, rcpt = %rcpt.address, next_attempt = now, kind = %f.kind.token(), reason = %f, "port 25 is blocked: the fallback relay takes it now");
                (RecipientStatus::Queued, now, f.text.clone())
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
                tracing::info!(event = "deferred", qid = %message.id, rcpt = %rcpt.address, next_attempt = next, kind = %f.kind.token(), reason = %f);
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
        crate::flow::count(match status {
            RecipientStatus::Delivered => Flow::Delivered,
            RecipientStatus::Queued => Flow::Deferred,
            // Failed for good, or expired: a bounce either way.
            _ => Flow::Bounced,
        });
        if status == RecipientStatus::Delivered {
            metrics::histogram!("postern_delivery_seconds").record((now - message.created) as f64);
        }
        updates.push(RecipientUpdate {
            idx: *idx,
            status,
            next_attempt,
            reply,
            kind: result.as_ref().err().map(|f| f.kind),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failure::{DeliveryFailure, Stage};
    use crate::scheduler::testing;

    const NOW: i64 = 1_000_000;
    const LIFETIME: i64 = 86_400;

    fn config() -> Config {
        let text = format!(
            "hostname = \"mx.test.example\"\n[delivery]\nretry_min = 300\nretry_max = 3600\nmax_lifetime = {LIFETIME}\n"
        );
        Config::from_text(&text, None).expect("config")
    }

    /// A message from `sender` accepted at `created`, with one recipient
    /// `r<idx>@remote.example` per entry of `attempts` (the attempts each has
    /// had).
    fn message(sender: &str, created: i64, attempts: &[u32]) -> QueuedMessage {
        let addresses: Vec<String> = (0..attempts.len())
            .map(|idx| format!("r{idx}@remote.example"))
            .collect();
        let addresses: Vec<&str> = addresses.iter().map(String::as_str).collect();
        let mut m = testing::message(sender, created, &addresses);
        for (r, &attempts) in m.recipients.iter_mut().zip(attempts) {
            r.attempts = attempts;
        }
        m
    }

    fn failed(severity: Severity, text: &str) -> Result<String, DeliveryFailure> {
        let stage = Stage::Rcpt;
        Err(DeliveryFailure::new(
            severity,
            FailureKind::Reply { stage },
            text,
        ))
    }

    fn run(message: &QueuedMessage, results: &[RecipientResult]) -> Applied {
        run_with(message, results, &[])
    }

    fn run_with(message: &QueuedMessage, results: &[RecipientResult], detoured: &[u32]) -> Applied {
        apply(
            &config(),
            message,
            b"Subject: x\r\n\r\nhi\r\n",
            results,
            NOW,
            detoured,
        )
    }

    /// Issue #16: while the fallback relay stands in for a blocked port 25,
    /// a recipient whose MX could not be reached on port 25 is due at once
    /// (the next round routes it to the relay); other failures wait as
    /// ever, and so does a recipient that went to a relay on port 25 (the
    /// fallback itself, say: retried at once, it would spin).
    #[test]
    fn an_unreachable_port_25_is_due_at_once_during_the_detour() {
        let m = message("app@example.com", NOW - 60, &[0, 0, 0]);
        let unreachable = |port| {
            Err(DeliveryFailure::new(
                Severity::Transient,
                FailureKind::Unreachable { port },
                "timed out during connecting",
            ))
        };
        let results = [
            (0, unreachable(25)),
            (1, unreachable(2525)),
            (2, unreachable(25)),
        ];
        let waits = |detoured: &[u32]| -> Vec<i64> {
            run_with(&m, &results, detoured)
                .updates
                .iter()
                .map(|u| u.next_attempt - NOW)
                .collect()
        };
        // 0 and 1 went to an MX; 2 to a relay on port 25.
        let detoured = waits(&[0, 1]);
        assert_eq!(detoured[0], 0, "{detoured:?}");
        assert!(detoured[1] >= 270 && detoured[2] >= 270, "{detoured:?}");
        assert!(waits(&[]).iter().all(|w| *w >= 270));
        let rcpt = run_with(&m, &[(0, failed(Severity::Transient, "451"))], &[0]);
        assert!(rcpt.updates[0].next_attempt - NOW >= 270);
    }

    #[test]
    fn delivered_is_final_and_bounces_nothing() {
        let m = message("app@example.com", NOW - 60, &[0]);
        let applied = run(&m, &[(0, Ok("250 2.0.0 Ok".into()))]);
        let [u] = applied.updates.as_slice() else {
            panic!("one update");
        };
        assert_eq!(
            (u.idx, u.status, u.next_attempt, u.reply.as_str()),
            (0, RecipientStatus::Delivered, NOW, "250 2.0.0 Ok")
        );
        assert!(applied.bounce.is_none());
    }

    #[test]
    fn a_transient_failure_is_deferred_with_backoff_within_the_lifetime() {
        // retry_min 300 s, doubling per attempt, ±10% jitter.
        let m = message("app@example.com", NOW - 60, &[0, 3]);
        let results = [
            (0, failed(Severity::Transient, "451 try later")),
            (1, failed(Severity::Transient, "timed out")),
        ];
        let applied = run(&m, &results);
        assert!(applied.bounce.is_none());
        let waits: Vec<i64> = applied
            .updates
            .iter()
            .map(|u| u.next_attempt - NOW)
            .collect();
        assert!((270..=330).contains(&waits[0]), "{waits:?}");
        assert!((2160..=2640).contains(&waits[1]), "{waits:?}");
        for u in &applied.updates {
            assert_eq!(u.status, RecipientStatus::Queued);
        }
        assert_eq!(applied.updates[1].reply, "timed out");
        // The last retry falls at the end of the lifetime, not after it.
        let m = message("app@example.com", NOW - LIFETIME + 100, &[3]);
        let applied = run(&m, &[(0, failed(Severity::Transient, "451"))]);
        assert_eq!(applied.updates[0].next_attempt, NOW + 100);
    }

    #[test]
    fn a_permanent_failure_bounces_once_to_the_sender() {
        let m = message("app@example.com", NOW - 60, &[0, 0, 0]);
        let results = [
            (0, failed(Severity::Permanent, "550 5.1.1 no such user")),
            (1, Ok("250 ok".into())),
            (2, failed(Severity::Permanent, "554 5.7.1 refused")),
        ];
        let applied = run(&m, &results);
        let statuses: Vec<RecipientStatus> = applied.updates.iter().map(|u| u.status).collect();
        assert_eq!(
            statuses,
            [
                RecipientStatus::Failed,
                RecipientStatus::Delivered,
                RecipientStatus::Failed
            ]
        );
        let bounce = applied.bounce.expect("a DSN");
        assert_eq!(bounce.sender, "", "a DSN has the null sender");
        assert_eq!(bounce.recipients.len(), 1);
        assert_eq!(bounce.recipients[0].address, "app@example.com");
        let text = String::from_utf8_lossy(&bounce.body);
        assert!(
            text.contains("r0@remote.example") && text.contains("r2@remote.example"),
            "{text}"
        );
        assert!(!text.contains("r1@remote.example"), "{text}");
        // Never a bounce to the null sender.
        let m = message("", NOW - 60, &[0]);
        let applied = run(&m, &[(0, failed(Severity::Permanent, "550"))]);
        assert_eq!(applied.updates[0].status, RecipientStatus::Failed);
        assert!(applied.bounce.is_none());
    }

    #[test]
    fn a_transient_failure_past_the_lifetime_expires() {
        let m = message("app@example.com", NOW - LIFETIME, &[9]);
        let applied = run(&m, &[(0, failed(Severity::Transient, "451 still down"))]);
        let u = &applied.updates[0];
        assert_eq!((u.status, u.next_attempt), (RecipientStatus::Failed, NOW));
        let bounce = applied.bounce.expect("a DSN");
        let text = String::from_utf8_lossy(&bounce.body);
        assert!(text.contains("4.4.7"), "delivery time expired: {text}");
        // A result for a recipient the message does not have changes nothing.
        let applied = run(&m, &[(7, Ok("250".into()))]);
        assert!(applied.updates.is_empty() && applied.bounce.is_none());
    }
}
