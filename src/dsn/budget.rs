//! How many DSNs one envelope sender may receive: at most
//! `MAX_DSN_PER_SENDER_PER_HOUR` in any hour. Mail with a forged sender that
//! fails in bulk would otherwise turn into a flood of bounces at the victim
//! (backscatter); past the cap a bounce is dropped, logged and counted.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// DSNs one address may receive in any hour.
pub const MAX_DSN_PER_SENDER_PER_HOUR: usize = 20;

const HOUR: Duration = Duration::from_secs(3600);

/// How often addresses without a DSN in the last hour are forgotten: often
/// enough to bound the map, rarely enough that a flood of bounces to distinct
/// forged senders does not make each one walk all the others.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// The DSNs sent to each address in the last hour.
pub struct DsnBudget {
    per_hour: usize,
    sent: Mutex<Sent>,
}

struct Sent {
    by_address: HashMap<String, VecDeque<Instant>>,
    pruned: Option<Instant>,
}

impl DsnBudget {
    pub fn new(per_hour: usize) -> DsnBudget {
        DsnBudget {
            per_hour,
            sent: Mutex::new(Sent {
                by_address: HashMap::new(),
                pruned: None,
            }),
        }
    }

    /// Whether one more DSN may go to `recipient` at `now`; a yes counts it
    /// (see `refund` when the DSN is not queued after all). Addresses are
    /// compared in lower case, so that changing the case of a forged sender
    /// does not buy more bounces.
    pub fn allow(&self, recipient: &str, now: Instant) -> bool {
        let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        let recent = |t: &Instant| now.saturating_duration_since(*t) < HOUR;
        if sent
            .pruned
            .is_none_or(|at| now.saturating_duration_since(at) >= PRUNE_EVERY)
        {
            sent.by_address
                .retain(|_, times| times.back().is_some_and(recent));
            sent.pruned = Some(now);
        }
        let times = sent.by_address.entry(recipient.to_lowercase()).or_default();
        while times.front().is_some_and(|t| !recent(t)) {
            times.pop_front();
        }
        if times.len() >= self.per_hour {
            return false;
        }
        times.push_back(now);
        true
    }

    /// Gives back what `allow` counted at `at`: the DSN was not queued (the
    /// commit failed, and the failure will be bounced again on the retry).
    pub fn refund(&self, recipient: &str, at: Instant) {
        let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(times) = sent.by_address.get_mut(&recipient.to_lowercase())
            && let Some(i) = times.iter().rposition(|t| *t == at)
        {
            times.remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_the_limit_per_hour_and_not_one_more() {
        let budget = DsnBudget::new(MAX_DSN_PER_SENDER_PER_HOUR);
        let start = Instant::now();
        let minute = Duration::from_secs(60);
        for i in 0..MAX_DSN_PER_SENDER_PER_HOUR {
            assert!(
                budget.allow("victim@example.org", start + minute * i as u32),
                "{i}"
            );
        }
        let late = start + minute * 59;
        assert!(!budget.allow("Victim@Example.ORG", late), "one more");
        assert!(
            budget.allow("other@example.org", late),
            "others have their own"
        );
        // An hour after the first, one more fits; an hour after the last, all.
        assert!(budget.allow("victim@example.org", start + HOUR));
        assert!(!budget.allow("victim@example.org", start + HOUR));
        let all_old = start + HOUR * 2;
        for i in 0..MAX_DSN_PER_SENDER_PER_HOUR {
            assert!(budget.allow("victim@example.org", all_old), "{i}");
        }
        assert_eq!(
            budget.sent.lock().expect("lock").by_address.len(),
            1,
            "quiet addresses are forgotten"
        );
        // A DSN that was not queued after all does not count.
        let later = all_old + HOUR * 2;
        for _ in 0..MAX_DSN_PER_SENDER_PER_HOUR {
            assert!(budget.allow("x@example.org", later));
            budget.refund("x@example.org", later);
        }
        assert!(budget.allow("x@example.org", later));
    }
}
