//! Notices when this machine cannot reach port 25 of the outside world: TCP
//! connections to port 25 of several unrelated domains fail (refused or timed
//! out) within a window while DNS answers and nothing on port 25 succeeds. Then
//! MX-bound mail goes through `[fallback_relay]`, and now and then one delivery
//! goes direct as a probe; its success ends the block.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How far back failures count.
const WINDOW: Duration = Duration::from_secs(600);
/// Distinct domains that must fail within the window.
const DISTINCT_DOMAINS: usize = 3;
/// While blocked, how often one MX delivery is let through as a probe.
const PROBE_EVERY: Duration = Duration::from_secs(300);

#[derive(Default)]
struct State {
    failures: VecDeque<(Instant, String)>,
    blocked_since: Option<Instant>,
    last_probe: Option<Instant>,
}

#[derive(Default)]
pub struct Port25Monitor {
    state: Mutex<State>,
}

impl Port25Monitor {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_blocked(&self) -> bool {
        self.state().blocked_since.is_some()
    }

    /// Whether an MX delivery should go direct now: always when not blocked;
    /// when blocked, once per probe interval.
    pub fn try_direct(&self) -> bool {
        let mut s = self.state();
        if s.blocked_since.is_none() {
            return true;
        }
        let now = Instant::now();
        if s.last_probe
            .is_none_or(|t| now.duration_since(t) >= PROBE_EVERY)
        {
            s.last_probe = Some(now);
            return true;
        }
        false
    }

    /// Lets the next `try_direct` be a probe, as if the interval had passed.
    #[cfg(test)]
    pub fn make_probe_due(&self) {
        self.state().last_probe = None;
    }

    /// A TCP connection to port 25 of an MX of `domain` failed.
    pub fn record_failure(&self, domain: &str, port: u16) {
        let mut s = self.state();
        let now = Instant::now();
        s.failures.push_back((now, domain.to_string()));
        while s
            .failures
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > WINDOW)
        {
            s.failures.pop_front();
        }
        let distinct = s
            .failures
            .iter()
            .map(|(_, d)| d.as_str())
            .collect::<HashSet<&str>>()
            .len();
        if s.blocked_since.is_none() && distinct >= DISTINCT_DOMAINS {
            s.blocked_since = Some(now);
            s.last_probe = Some(now);
            tracing::warn!(
                event = "port25_blocked",
                domains = distinct,
                "outbound port {port} appears to be blocked: connections to {} unrelated mail servers failed in the last {} minutes; \
                 set [fallback_relay] (or [relay]) to send through a relay on another port",
                distinct,
                WINDOW.as_secs() / 60
            );
        }
    }

    /// A TCP connection to port 25 succeeded: whatever was blocking is gone.
    pub fn record_success(&self) {
        let mut s = self.state();
        s.failures.clear();
        if s.blocked_since.take().is_some() {
            tracing::info!(
                event = "port25_unblocked",
                "outbound port 25 works again; delivering directly"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocked_after_three_domains_and_cleared_by_a_success() {
        let m = Port25Monitor::default();
        m.record_failure("a.example", 25);
        m.record_failure("a.example", 25);
        m.record_failure("b.example", 25);
        assert!(!m.is_blocked(), "two domains are not enough");
        m.record_failure("c.example", 25);
        assert!(m.is_blocked());
        assert!(
            !m.try_direct(),
            "the probe interval starts when the block is noticed"
        );
        m.record_success();
        assert!(!m.is_blocked() && m.try_direct());
    }
}
