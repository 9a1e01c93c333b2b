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

/// The DSNs sent to each address in the last hour.
pub struct DsnBudget {
    per_hour: usize,
    sent: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl DsnBudget {
    pub fn new(per_hour: usize) -> DsnBudget {
        DsnBudget {
            per_hour,
            sent: Mutex::new(HashMap::new()),
        }
    }

    /// Whether one more DSN may go to `recipient` at `now`; a yes counts it.
    /// Addresses are compared in lower case, so that changing the case of a
    /// forged sender does not buy more bounces.
    pub fn allow(&self, recipient: &str, now: Instant) -> bool {
        let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        let recent = |t: &Instant| now.saturating_duration_since(*t) < HOUR;
        // DSNs are rare next to deliveries: a walk over every address is
        // cheap, and keeps only addresses with a DSN in the last hour.
        sent.retain(|_, times| times.back().is_some_and(recent));
        let times = sent.entry(recipient.to_lowercase()).or_default();
        while times.front().is_some_and(|t| !recent(t)) {
            times.pop_front();
        }
        if times.len() >= self.per_hour {
            return false;
        }
        times.push_back(now);
        true
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
            budget.sent.lock().expect("lock").len(),
            1,
            "quiet addresses are forgotten"
        );
    }
}
