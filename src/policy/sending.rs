//! What one user may send: messages per hour, recipients per day and
//! first-time recipients per day, over sliding windows, so that a stolen
//! password sends a few hundred messages before the host hears of it, not a
//! hundred thousand; and when a user's last hour is a burst against their
//! own history. Counted in memory (a restart starts again: a thief cannot
//! restart the server), per authenticated account or local Unix user.

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
    pub new_recipients_per_day: u64,
}

/// A user's last hour is a burst, and their outgoing mail is held, when one
/// of its counts is above `factor` times the user's busiest hour of the last
/// 7 days and above its floor here (a user without history meets the floor).
#[derive(Debug, Clone, PartialEq)]
pub struct Burst {
    pub factor: u64,
    pub messages_per_hour: u64,
    pub new_recipients_per_hour: u64,
    pub bounces_per_hour: u64,
}

/// What a user sent in one hour (or the most of each in several).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HourCounts {
    pub messages: u64,
    pub new_recipients: u64,
    pub bounces: u64,
}

/// One message a user sent: when, to how many, how many of them first-time.
#[derive(Debug, Clone, Copy)]
struct Sent {
    at: i64,
    recipients: u64,
    new: u64,
}

#[derive(Default)]
struct UserLog {
    sent: VecDeque<Sent>,
    bounces: VecDeque<i64>,
}

impl UserLog {
    /// Drops what left the day before `now`.
    fn trimmed(&mut self, now: i64) -> &mut UserLog {
        while self.sent.front().is_some_and(|s| s.at <= now - DAY) {
            self.sent.pop_front();
        }
        while self.bounces.front().is_some_and(|at| *at <= now - HOUR) {
            self.bounces.pop_front();
        }
        self
    }
}

/// Every user's messages of the last day and bounces of the last hour.
#[derive(Default)]
pub struct SendingLog {
    users: Mutex<HashMap<String, UserLog>>,
}

impl SendingLog {
    fn with_user<T>(&self, user: &str, now: i64, f: impl FnOnce(&mut UserLog) -> T) -> T {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        // Looked up before inserting: most checks are of users already known.
        match users.get_mut(user) {
            Some(log) => f(log.trimmed(now)),
            None => f(users.entry(user.to_string()).or_default()),
        }
    }

    /// Refuses a new message when the user's last hour is full.
    pub fn check_message(&self, user: &str, allowance: Allowance, now: i64) -> Result<(), Reply> {
        let in_hour: Vec<i64> = self.with_user(user, now, |log| {
            log.sent
                .iter()
                .filter(|s| s.at > now - HOUR)
                .map(|s| s.at)
                .collect()
        });
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
        self.check_day(user, now, pending, allowance.recipients_per_day, |s| {
            s.recipients
        })
        .map_err(|(count, frees)| {
            limited(
                "recipients_per_day",
                format!(
                    "{user} has sent to {count} recipients in the last 24 hours, the most \
                         allowed; more may go at {frees}"
                ),
            )
        })
    }

    /// Refuses one more first-time recipient (the message already has
    /// `pending` of them) when the user's last day has had its share.
    pub fn check_new_recipient(
        &self,
        user: &str,
        allowance: Allowance,
        pending: u64,
        now: i64,
    ) -> Result<(), Reply> {
        self.check_day(user, now, pending, allowance.new_recipients_per_day, |s| {
            s.new
        })
        .map_err(|(count, frees)| {
            limited(
                "new_recipients_per_day",
                format!(
                    "{user} has sent to {count} new recipients in the last 24 hours, the \
                         most allowed; more may go at {frees}, and those written to before \
                         may be sent to meanwhile"
                ),
            )
        })
    }

    /// Whether the user's last day, counted by `counted`, leaves room for
    /// one more after `pending`; if not, the count and when room comes.
    fn check_day(
        &self,
        user: &str,
        now: i64,
        pending: u64,
        limit: u64,
        counted: impl Fn(&Sent) -> u64,
    ) -> Result<(), (u64, String)> {
        let (in_day, frees) = self.with_user(user, now, |log| {
            // The day frees room as its oldest counted messages leave it.
            let mut counted_sent = log.sent.iter().filter(|s| counted(s) > 0).peekable();
            let frees = counted_sent.peek().map_or(now, |s| s.at + DAY);
            (counted_sent.map(&counted).sum::<u64>(), frees)
        });
        if in_day + pending >= limit {
            return Err((in_day + pending, clock(frees)));
        }
        Ok(())
    }

    /// Counts a message the user sent (queued) to `recipients`, `new` of
    /// them first-time.
    pub fn record(&self, user: &str, recipients: u64, new: u64, now: i64) {
        self.with_user(user, now, |log| {
            log.sent.push_back(Sent {
                at: now,
                recipients,
                new,
            })
        });
    }

    /// Counts a bounce of the user's mail.
    pub fn record_bounce(&self, user: &str, now: i64) {
        self.with_user(user, now, |log| log.bounces.push_back(now));
    }

    /// What the user sent in the last hour, and the bounces it brought,
    /// after `since` (when the user's last hold ended: what was judged
    /// then is not judged again).
    pub fn last_hour(&self, user: &str, now: i64, since: i64) -> HourCounts {
        self.with_user(user, now, |log| log.last_hour(now, since))
    }

    /// Counts a message the user is about to send to `recipients`, `new` of
    /// them first-time, unless `judge` finds the last hour with it (see
    /// `last_hour`) a burst: then returns why, and counts nothing. Judged
    /// and counted at once, so that parallel sessions cannot each slip
    /// under the threshold with the same count.
    pub fn admit(
        &self,
        user: &str,
        (recipients, new): (u64, u64),
        (now, since): (i64, i64),
        judge: impl FnOnce(HourCounts) -> Option<String>,
    ) -> Option<String> {
        self.with_user(user, now, |log| {
            let mut hour = log.last_hour(now, since);
            hour.messages += 1;
            hour.new_recipients += new;
            let burst = judge(hour);
            if burst.is_none() {
                log.sent.push_back(Sent {
                    at: now,
                    recipients,
                    new,
                });
            }
            burst
        })
    }
}

impl UserLog {
    fn last_hour(&self, now: i64, since: i64) -> HourCounts {
        let after = (now - HOUR).max(since);
        let in_hour = self.sent.iter().filter(|s| s.at > after);
        let (messages, new_recipients) = in_hour.fold((0, 0), |(m, n), s| (m + 1, n + s.new));
        HourCounts {
            messages,
            new_recipients,
            bounces: self.bounces.iter().filter(|at| **at > since).count() as u64,
        }
    }
}

/// Why `hour` (a user's last hour) is a burst against `normal` (their
/// busiest hour of the last week), if it is: a count above `factor` times
/// its normal, and above its floor (a new user has no history).
pub fn burst(hour: HourCounts, normal: HourCounts, thresholds: &Burst) -> Option<String> {
    let measures = [
        (
            "messages",
            hour.messages,
            normal.messages,
            thresholds.messages_per_hour,
        ),
        (
            "first-time recipients",
            hour.new_recipients,
            normal.new_recipients,
            thresholds.new_recipients_per_hour,
        ),
        (
            "bounces",
            hour.bounces,
            normal.bounces,
            thresholds.bounces_per_hour,
        ),
    ];
    measures.into_iter().find_map(|(what, now, normal, floor)| {
        let threshold = floor.max(normal.saturating_mul(thresholds.factor));
        (now > threshold).then(|| {
            format!(
                "{now} {what} in the last hour, over the threshold of {threshold} \
                 ({} times the busiest hour of the last 7 days, {normal}, and at least {floor})",
                thresholds.factor
            )
        })
    })
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
        new_recipients_per_day: 4,
    };

    #[test]
    fn messages_per_hour_at_the_limit_and_after_the_hour() {
        let log = SendingLog::default();
        let t0 = 1_796_000_000;
        for i in 0..3 {
            log.check_message("a@x", ALLOW, t0 + i)
                .expect("under the limit");
            log.record("a@x", 1, 0, t0 + i);
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
        log.record("a@x", 3, 3, t0);
        log.check_recipient("a@x", ALLOW, 1, t0 + 5)
            .expect("the 5th");
        let refused = log
            .check_recipient("a@x", ALLOW, 2, t0 + 5)
            .expect_err("a 6th");
        assert!(refused.to_string().contains("to 5 recipients"), "{refused}");
        log.check_recipient("a@x", ALLOW, 2, t0 + DAY + 1)
            .expect("a day later");
    }

    #[test]
    fn new_recipients_per_day_count_only_first_time_ones() {
        let log = SendingLog::default();
        let t0 = 1_796_000_000;
        log.record("a@x", 5, 2, t0);
        log.check_new_recipient("a@x", ALLOW, 1, t0 + 5)
            .expect("the 4th new one");
        let refused = log
            .check_new_recipient("a@x", ALLOW, 2, t0 + 5)
            .expect_err("a 5th");
        assert!(
            refused.to_string().contains("to 4 new recipients"),
            "{refused}"
        );
        log.check_new_recipient("a@x", ALLOW, 2, t0 + DAY + 1)
            .expect("a day later");
    }

    #[test]
    fn the_last_hour_and_a_burst_against_the_users_own_normal() {
        let log = SendingLog::default();
        let t0 = 1_796_000_000;
        log.record("a@x", 3, 2, t0 - HOUR);
        log.record("a@x", 10, 10, t0);
        log.record_bounce("a@x", t0 - HOUR);
        log.record_bounce("a@x", t0);
        let hour = log.last_hour("a@x", t0 + 1, 0);
        assert_eq!(
            hour,
            HourCounts {
                messages: 1,
                new_recipients: 10,
                bounces: 1
            }
        );
        let thresholds = Burst {
            factor: 5,
            messages_per_hour: 100,
            new_recipients_per_hour: 8,
            bounces_per_hour: 20,
        };
        // No history: the floor decides.
        let why = burst(hour, HourCounts::default(), &thresholds).expect("a burst");
        assert!(
            why.starts_with("10 first-time recipients in the last hour, over the threshold of 8"),
            "{why}"
        );
        // Ten is no burst for a user who reached two an hour this week.
        let normal = HourCounts {
            messages: 1,
            new_recipients: 2,
            bounces: 0,
        };
        assert_eq!(burst(hour, normal, &thresholds), None);
        let at_threshold = HourCounts {
            new_recipients: 8,
            ..hour
        };
        assert_eq!(
            burst(at_threshold, HourCounts::default(), &thresholds),
            None
        );
    }

    #[test]
    fn a_burst_is_judged_and_counted_at_once_and_not_again_after_its_hold_ends() {
        let log = SendingLog::default();
        let t0 = 1_796_000_000;
        let thresholds = Burst {
            factor: 10,
            messages_per_hour: 100,
            new_recipients_per_hour: 25,
            bounces_per_hour: 20,
        };
        let judge = |hour| burst(hour, HourCounts::default(), &thresholds);
        for i in 0..2 {
            assert_eq!(log.admit("a@x", (10, 10), (t0 + i, 0), judge), None);
        }
        assert!(log.admit("a@x", (10, 10), (t0 + 2, 0), judge).is_some());
        assert_eq!(
            log.last_hour("a@x", t0 + 3, 0).new_recipients,
            20,
            "the burst was not counted"
        );
        // The hold ended at t0 + 5: the twenty before it are not judged again.
        assert_eq!(log.admit("a@x", (10, 10), (t0 + 6, t0 + 5), judge), None);
        assert_eq!(log.last_hour("a@x", t0 + 7, t0 + 5).new_recipients, 10);
    }

    #[test]
    fn the_day_frees_room_when_its_oldest_counted_message_leaves() {
        let log = SendingLog::default();
        let t0 = 1_796_000_000;
        log.record("a@x", 1, 0, t0);
        log.record("a@x", 4, 4, t0 + 3600);
        let refused = log
            .check_new_recipient("a@x", ALLOW, 0, t0 + 7200)
            .expect_err("four new ones");
        assert!(
            refused.to_string().contains(&clock(t0 + 3600 + DAY)),
            "{refused}"
        );
    }
}
