//! Notices when this machine cannot reach port 25 of the outside world: TCP
//! connections to port 25 of several unrelated domains fail (refused or timed
//! out) within a window while DNS answers and nothing on port 25 succeeds.
//!
//! While it is blocked, MX-bound mail goes through `[fallback_relay]` (the
//! router asks [`Port25Monitor::is_blocked`]); no message is held back to
//! find out when the block ends. Instead `Outbound::probe_port25` knocks on
//! port 25 of a few MX hosts seen lately (connect, greeting, QUIT) every
//! [`PROBE_EVERY`]; one that answers ends the block. Every change is sent on
//! a watch channel: the scheduler makes the mail that waits for port 25 due
//! again at once, and connections to port 25 still being tried when the
//! block is noticed give up (`Outbound::open`), so no message waits out a
//! connect timeout or a retry interval for a path known to be closed.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// How far back failures count.
const WINDOW: Duration = Duration::from_secs(600);
/// Distinct domains that must fail within the window.
const DISTINCT_DOMAINS: usize = 3;
/// While blocked, how often port 25 is probed.
pub const PROBE_EVERY: Duration = Duration::from_secs(30);
/// The longest a probe waits for a connection or a greeting: a dropped SYN
/// must not delay the next probe past the interval.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(15);
/// MX servers remembered for probes: the last that failed, and the last that
/// answered before the block (they show a block that is not one: three dead
/// domains in a row).
const REMEMBERED: usize = 4;

#[derive(Default)]
struct State {
    failures: VecDeque<(Instant, String)>,
    failed: VecDeque<SocketAddr>,
    answered: VecDeque<SocketAddr>,
}

pub struct Port25Monitor {
    state: Mutex<State>,
    /// Since when port 25 is blocked (`None`: it is not); every change is
    /// sent, and only changes. Written under `state`'s lock.
    blocked: watch::Sender<Option<Instant>>,
    /// `[fallback_relay]` as `host:port` when MX-bound mail takes it while
    /// port 25 is blocked: what the log says. A reload may set or change it.
    fallback: std::sync::RwLock<Option<String>>,
}

/// Keeps `addr` as the most recent of at most `REMEMBERED`, once.
fn remember(list: &mut VecDeque<SocketAddr>, addr: SocketAddr) {
    list.retain(|a| *a != addr);
    list.push_front(addr);
    list.truncate(REMEMBERED);
}

impl Port25Monitor {
    /// `fallback`: where MX-bound mail goes while port 25 is blocked, if
    /// anywhere.
    pub fn new(fallback: Option<String>) -> Port25Monitor {
        Port25Monitor {
            state: Mutex::default(),
            blocked: watch::Sender::new(None),
            fallback: std::sync::RwLock::new(fallback),
        }
    }

    /// `[fallback_relay]` after a reload. A connection to port 25 already
    /// waiting when one is newly set finds out at its own timeout.
    pub fn set_fallback(&self, fallback: Option<String>) {
        *self.fallback.write().unwrap_or_else(|p| p.into_inner()) = fallback;
    }

    fn fallback(&self) -> Option<String> {
        self.fallback
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn has_fallback(&self) -> bool {
        self.fallback
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_blocked(&self) -> bool {
        self.blocked.borrow().is_some()
    }

    /// Whether MX-bound mail goes through `[fallback_relay]` now.
    pub fn detouring(&self) -> bool {
        self.has_fallback() && self.is_blocked()
    }

    /// Every change of [`Port25Monitor::is_blocked`], from now on.
    /// (`Some`: since when it is blocked.)
    pub fn subscribe(&self) -> watch::Receiver<Option<Instant>> {
        self.blocked.subscribe()
    }

    /// Resolves once MX-bound mail takes `[fallback_relay]`: at once if it
    /// does already; never without a fallback relay. Cancel safe.
    pub async fn detour_begins(&self) {
        if !self.has_fallback() {
            return std::future::pending().await;
        }
        let mut changes = self.blocked.subscribe();
        if changes.wait_for(Option::is_some).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Where to knock to learn whether the block is over.
    pub fn probe_targets(&self) -> Vec<SocketAddr> {
        let s = self.state();
        s.failed.iter().chain(&s.answered).copied().collect()
    }

    /// A TCP connection to port 25 of `addr`, an MX of `domain`, failed.
    pub fn record_failure(&self, domain: &str, addr: SocketAddr) {
        let mut s = self.state();
        let now = Instant::now();
        remember(&mut s.failed, addr);
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
        if self.is_blocked() || distinct < DISTINCT_DOMAINS {
            return;
        }
        // Sent under the lock: a success taking the block back meanwhile
        // must not be overtaken by this news of it.
        self.blocked.send_replace(Some(now));
        drop(s);
        let port = addr.port();
        let minutes = WINDOW.as_secs() / 60;
        match self.fallback() {
            Some(fallback) => tracing::warn!(
                event = "port25_blocked",
                domains = distinct,
                fallback = %fallback,
                "outbound port {port} appears to be blocked: connections to {distinct} unrelated mail \
                 servers failed in the last {minutes} minutes; mail for MX hosts goes through \
                 [fallback_relay] {fallback} until port {port} answers again (probed every {} s)",
                PROBE_EVERY.as_secs()
            ),
            None => tracing::warn!(
                event = "port25_blocked",
                domains = distinct,
                "outbound port {port} appears to be blocked: connections to {distinct} unrelated mail \
                 servers failed in the last {minutes} minutes; set [fallback_relay] (or [relay]) to \
                 send through a relay on another port"
            ),
        }
    }

    /// A TCP connection to port 25 of `addr` succeeded (a delivery, or a
    /// probe): whatever was blocking is gone.
    pub fn record_success(&self, addr: SocketAddr) {
        let mut s = self.state();
        remember(&mut s.answered, addr);
        s.failures.clear();
        // Sent only when it changes: successes are every delivery's, and
        // the scheduler wakes for each change.
        let mut since = None;
        self.blocked.send_if_modified(|blocked| {
            since = blocked.take();
            since.is_some()
        });
        if let Some(since) = since {
            drop(s);
            tracing::info!(
                event = "port25_unblocked",
                blocked_for_s = since.elapsed().as_secs(),
                addr = %addr,
                "outbound port {} works again; delivering directly",
                addr.port()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, last], 25))
    }

    #[test]
    fn blocked_after_three_domains_and_cleared_by_a_success() {
        let m = Port25Monitor::new(Some("fb.example:2525".into()));
        let changes = m.subscribe();
        m.record_success(addr(9));
        m.record_failure("a.example", addr(1));
        m.record_failure("a.example", addr(1));
        m.record_failure("b.example", addr(2));
        assert!(!m.is_blocked(), "two domains are not enough");
        assert!(!changes.has_changed().expect("open"));
        m.record_failure("c.example", addr(3));
        assert!(m.is_blocked() && m.detouring());
        assert!(changes.has_changed().expect("open"));
        assert_eq!(
            m.probe_targets(),
            [addr(3), addr(2), addr(1), addr(9)],
            "the failed hosts, latest first, then the one that answered"
        );
        m.record_success(addr(2));
        assert!(!m.is_blocked() && !m.detouring());
    }

    #[test]
    fn probe_targets_are_bounded() {
        let m = Port25Monitor::new(None);
        for n in 0..20 {
            m.record_failure(&format!("d{n}.example"), addr(n));
            m.record_success(addr(100 + n));
        }
        assert_eq!(m.probe_targets().len(), 2 * REMEMBERED);
        assert!(!m.detouring(), "no fallback relay: nothing to detour to");
    }

    #[tokio::test]
    async fn the_detour_begins_with_the_block_and_only_with_a_fallback() {
        let m = std::sync::Arc::new(Port25Monitor::new(Some("fb.example:2525".into())));
        let waiting = tokio::spawn({
            let m = std::sync::Arc::clone(&m);
            async move { m.detour_begins().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        for (n, d) in ["a", "b", "c"].iter().enumerate() {
            m.record_failure(d, addr(n as u8));
        }
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the block ends the wait")
            .expect("task");
        let none = Port25Monitor::new(None);
        for (n, d) in ["a", "b", "c"].iter().enumerate() {
            none.record_failure(d, addr(n as u8));
        }
        assert!(
            tokio::time::timeout(Duration::from_millis(50), none.detour_begins())
                .await
                .is_err(),
            "without a fallback relay, connections to port 25 are never given up"
        );
    }
}
