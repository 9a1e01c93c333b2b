//! What one user may send: messages per hour and recipients per day, over
//! sliding windows, so that a stolen password sends a few hundred messages
//! before the host hears of it, not a hundred thousand. Counted in memory
//! (a restart starts again: a thief cannot restart the server), per
//! authenticated account or local Unix user.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use crate::smtp::reply::Reply;

const HOUR: i64 = 3600;
const DAY: i64 = 86_400;

/// The limits that apply to one user now.
#[derive(Debug, Clone, Copy)]
pub struct Allowance {
    pub messages_per_hour: u64,
    pub recipients_per_day: u64,
}

/// Every user's messages of the last day: when, and to how many.
#[derive(Default)]
pub struct SendingLog {
    sent: Mutex<HashMap<String, VecDeque<(i64, u64)>>>,
}

impl SendingLog {
    /// Refuses a new message when the user's last hour is full.
    pub fn check_message(&self, user: &str, allowance: Allowance, now: i64) -> Result<(), Reply> {
        let mut sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        let Some(log) = sent.get_mut(user) else {
            return Ok(());
        };
        forget_before(log, now - DAY);
        let in_hour: Vec<i64> = log
            .iter()
            .filter(|(at, _)| *at > now - HOUR)
            .map(|(at, _)| *at)
            .collect();
        if in_hour.len() as u64 >= allowance.messages_per_hour {
            let frees = in_hour[in_hour.len() - allowance.messages_per_hour as usize] + HOUR;
            return Err(limited(
                "messages_per_hour",
                format!(
                    "{user} has sent {} messages in the last hour, the most allowed; \
                     the next may go at {}",
                    in_hour.len(),
                    clock(frees)
                ),
            ));
        }
        Ok(())
    }

    /// Refuses one more recipient (the message already has `pending`) when
    /// the user's last day is full.
    pub fn check_recipient(
        &self,
        user: &str,
        allowance: Allowance,
        pending: u64,
        now: i64,
    ) -> Result<(), Reply> {
        let mut sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        let log = sent.entry(user.to_string()).or_default();
        forget_before(log, now - DAY);
        let in_day: u64 = log.iter().map(|(_, n)| n).sum();
        if in_day + pending >= allowance.recipients_per_day {
            // The day frees room as its oldest messages leave it.
            let frees = log.front().map_or(now, |(at, _)| at + DAY);
            return Err(limited(
                "recipients_per_day",
                format!(
                    "{user} has sent to {} recipients in the last 24 hours, the most allowed; \
                     more may go at {}",
                    in_day + pending,
                    clock(frees)
                ),
            ));
        }
        Ok(())
    }

    /// Counts a message the user sent (queued) to `recipients`.
    pub fn record(&self, user: &str, recipients: u64, now: i64) {
        let mut sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        let log = sent.entry(user.to_string()).or_default();
        forget_before(log, now - DAY);
        log.push_back((now, recipients));
    }
}

fn forget_before(log: &mut VecDeque<(i64, u64)>, cutoff: i64) {
    while log.front().is_some_and(|(at, _)| *at <= cutoff) {
        log.pop_front();
    }
}

fn limited(limit: &'static str, text: String) -> Reply {
    metrics::counter!("postern_sending_limited_total", "limit" => limit).increment(1);
    tracing::warn!(event = "sending_limited", limit, reason = %text);
    Reply::new(451, (7, 0), text)
}

/// `HH:MM UTC` of a Unix time.
fn clock(at: i64) -> String {
    let seconds = at.rem_euclid(DAY);
    format!("{:02}:{:02} UTC", seconds / 3600, seconds % 3600 / 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALLOW: Allowance = Allowance {
        messages_per_hour: 3,
        recipients_per_day: 5,
    };

    #[test]
    fn messages_per_hour_at_the_limit_and_after_the_hour() {
        let log = SendingLog::default();
        let t0 = 1_796_000_000;
        for i in 0..3 {
            log.check_message("a@x", ALLOW, t0 + i)
                .expect("under the limit");
            log.record("a@x", 1, t0 + i);
        }
        let refused = log.check_message("a@x", ALLOW, t0 + 10).expect_err("full");
        assert_eq!(refused.code, 451);
        assert!(
            refused
                .to_string()
                .contains("has sent 3 messages in the last hour"),
            "{refused}"
        );
        assert!(refused.to_string().contains(&clock(t0 + HOUR)), "{refused}");
        log.check_message("a@x", ALLOW, t0 + HOUR)
            .expect("the first left the hour");
        log.check_message("b@x", ALLOW, t0 + 10)
            .expect("another user");
    }

    #[test]
    fn recipients_per_day_count_what_the_message_already_has() {
        let log = SendingLog::default();
        let t0 = 1_796_000_000;
        log.record("a@x", 3, t0);
        log.check_recipient("a@x", ALLOW, 1, t0 + 5)
            .expect("the 5th");
        let refused = log
            .check_recipient("a@x", ALLOW, 2, t0 + 5)
            .expect_err("a 6th");
        assert!(refused.to_string().contains("to 5 recipients"), "{refused}");
        log.check_recipient("a@x", ALLOW, 2, t0 + DAY + 1)
            .expect("a day later");
    }
}
