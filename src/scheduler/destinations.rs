//! What the scheduler knows of each destination (`Destination::key`): how
//! many deliveries may go to it at once, and whether it is down.
//!
//! A destination whose servers never answer costs a whole connect timeout
//! per attempt, and mail to it keeps coming. Two rules keep that cost on the
//! destination itself (the third, that waiting for a server takes no
//! delivery slot, is the scheduler's order: destination, reach, then slot):
//! - slow start (Postfix's, in one step): a destination gets one delivery at
//!   a time until it has been reached once, then `destination_concurrency`
//!   (local mailboxes at once); so an unknown destination that is dead ties
//!   up one connection attempt, not one per message;
//! - dead destinations (Postfix's queue manager throttles them likewise):
//!   when none of a destination's servers could be used, it is taken to be
//!   down for `retry_min`, and its mail is deferred without trying, at once,
//!   instead of each message waiting out the same timeout in turn.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};

use crate::failure::{DeliveryFailure, Severity};
use crate::outbound::{Outbound, Reached};
use crate::router::Destination;

pub struct Destinations {
    known: Mutex<Known>,
    /// `destination_concurrency`.
    limit: usize,
    /// How long a destination that could not be reached is taken to be down.
    down_for: Duration,
}

#[derive(Default)]
struct Known {
    by_key: HashMap<String, Arc<State>>,
    /// How many there were after the last sweep: the next sweep comes when
    /// the count has doubled, so sweeping costs O(1) per delivery.
    swept: usize,
}

struct State {
    slots: Arc<Semaphore>,
    health: Mutex<Health>,
}

struct Health {
    /// The slots' number: 1 until the destination was reached.
    capacity: usize,
    /// Down until then, after this failure.
    down: Option<(Instant, DeliveryFailure)>,
}

impl State {
    fn health(&self) -> MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether nothing would be lost by forgetting it: no delivery holds or
    /// waits for it (only the map has it) and it is not down.
    fn idle(self: &Arc<Self>, now: Instant) -> bool {
        Arc::strong_count(self) == 1 && self.health().down.as_ref().is_none_or(|(t, _)| *t <= now)
    }
}

/// One delivery's place at a destination, held until the delivery ends.
pub struct Slot {
    state: Arc<State>,
    /// Never an error: the semaphore is never closed.
    _permit: Result<OwnedSemaphorePermit, AcquireError>,
    limit: usize,
    down_for: Duration,
}

impl Destinations {
    pub fn new(limit: usize, down_for: Duration) -> Destinations {
        Destinations {
            known: Mutex::default(),
            limit: limit.max(1),
            down_for,
        }
    }

    /// Waits for a delivery slot at destination `key`. Cancel safe.
    pub async fn enter(&self, key: &str) -> Slot {
        let state = self.state(key);
        let permit = Arc::clone(&state.slots).acquire_owned().await;
        Slot {
            state,
            _permit: permit,
            limit: self.limit,
            down_for: self.down_for,
        }
    }

    fn state(&self, key: &str) -> Arc<State> {
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        if known.by_key.len() >= 2 * known.swept.max(64) {
            // Idle destinations are forgotten, so the map holds those in use
            // or down, not every domain ever seen.
            let now = Instant::now();
            known.by_key.retain(|_, state| !state.idle(now));
            known.swept = known.by_key.len();
        }
        let state = known.by_key.entry(key.to_string()).or_insert_with(|| {
            Arc::new(State {
                slots: Arc::new(Semaphore::new(1)),
                health: Mutex::new(Health {
                    capacity: 1,
                    down: None,
                }),
            })
        });
        Arc::clone(state)
    }

    /// Forgets which destinations are down for a failure `which` picks: the
    /// next delivery to each tries its servers again.
    pub fn forget_down(&self, which: impl Fn(&DeliveryFailure) -> bool) {
        let known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        for state in known.by_key.values() {
            let mut health = state.health();
            if health.down.as_ref().is_some_and(|(_, f)| which(f)) {
                health.down = None;
            }
        }
    }

    #[cfg(test)]
    fn known(&self) -> usize {
        self.known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .by_key
            .len()
    }
}

impl Slot {
    /// Reaches `destination` (never `Local`) through `outbound`, unless it
    /// is down: then its failure comes back at once, marked as not tried.
    /// What happens counts for the destination: reached, it takes its full
    /// concurrency; unusable for a reason that may pass, it is down for a
    /// while.
    pub async fn reach(
        &self,
        outbound: &Outbound,
        destination: &Destination,
    ) -> Result<Reached, DeliveryFailure> {
        if let Some(failure) = self.down() {
            return Err(failure);
        }
        let reached = outbound.reach(destination).await;
        match &reached {
            Ok(_) => self.up(),
            Err(f) if f.severity == Severity::Transient => {
                self.state.health().down = Some((Instant::now() + self.down_for, f.clone()));
            }
            Err(_) => {}
        }
        reached
    }

    /// The destination is up: it takes its full concurrency from now on.
    /// Local mailboxes are from the start: there is nothing to probe.
    pub fn up(&self) {
        let mut health = self.state.health();
        health.down = None;
        if health.capacity < self.limit {
            self.state.slots.add_permits(self.limit - health.capacity);
            health.capacity = self.limit;
        }
    }

    /// The failure to defer with, while the destination is down.
    fn down(&self) -> Option<DeliveryFailure> {
        let health = self.state.health();
        let (until, failure) = health.down.as_ref()?;
        let now = Instant::now();
        if *until <= now {
            return None;
        }
        let since = self.down_for.saturating_sub(until.duration_since(now));
        let mut f = failure.clone();
        f.text = format!(
            "not tried: the destination failed {} s ago and is left alone for {} s ({})",
            since.as_secs(),
            self.down_for.as_secs(),
            failure.text
        );
        Some(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::dns::Dns;
    use crate::failure::FailureKind;

    /// Delivery to 127.0.0.1:`port`, where nothing listens, or where
    /// `listener` accepts.
    fn outbound(port: u16) -> Outbound {
        let text = format!(
            "hostname = \"mx.test.example\"\n[delivery]\nmx_port = {port}\nconnect_timeout = 2\ntimeout = 2\n"
        );
        let config = Arc::new(Config::from_text(&text, None).expect("config"));
        Outbound::new(config.into(), Dns::new(&[]).expect("dns"), None).expect("outbound")
    }

    fn closed_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port()
    }

    fn literal() -> Destination {
        Destination::Mx("[127.0.0.1]".into())
    }

    #[tokio::test]
    async fn a_destination_known_to_be_up_takes_its_limit_at_once() {
        let d = Destinations::new(2, Duration::from_secs(60));
        let first = d.enter("local").await;
        first.up();
        let second = tokio::time::timeout(Duration::from_millis(100), d.enter("local"));
        let _second = second.await.expect("a second slot");
        let third = tokio::time::timeout(Duration::from_millis(100), d.enter("local"));
        assert!(third.await.is_err(), "no slot beyond the limit");
    }

    #[tokio::test]
    async fn an_unreached_destination_takes_one_delivery_at_a_time() {
        let d = Destinations::new(4, Duration::from_secs(60));
        let first = d.enter("mx:a.example").await;
        let second = tokio::time::timeout(Duration::from_millis(100), d.enter("mx:a.example"));
        assert!(second.await.is_err(), "a second slot before a success");
        let other = tokio::time::timeout(Duration::from_millis(100), d.enter("mx:b.example"));
        assert!(other.await.is_ok(), "another destination has its own slots");
        drop(first);
        let _again = d.enter("mx:a.example").await;
    }

    #[tokio::test]
    async fn a_reached_destination_opens_to_its_limit() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
            while let Ok((s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (r, mut w) = s.into_split();
                    let _ = w.write_all(b"220 peer ESMTP\r\n").await;
                    let mut lines = BufReader::new(r).lines();
                    while let Ok(Some(_)) = lines.next_line().await {
                        let _ = w.write_all(b"250 peer\r\n").await;
                    }
                });
            }
        });
        let out = outbound(port);
        let d = Destinations::new(4, Duration::from_secs(60));
        let first = d.enter("mx:[127.0.0.1]").await;
        let reached = first.reach(&out, &literal()).await.expect("reached");
        out.keep(reached);
        let mut slots = vec![first];
        for _ in 1..4 {
            let next = tokio::time::timeout(Duration::from_secs(1), d.enter("mx:[127.0.0.1]"));
            slots.push(next.await.expect("a slot up to the limit"));
        }
        let fifth = tokio::time::timeout(Duration::from_millis(100), d.enter("mx:[127.0.0.1]"));
        assert!(fifth.await.is_err(), "no slot beyond the limit");
    }

    /// Destinations taken to be down for `down_for`, and the failure that
    /// put the address literal among them: its one server refused.
    async fn refused(out: &Outbound, down_for: Duration) -> (Destinations, DeliveryFailure) {
        let d = Destinations::new(4, down_for);
        let slot = d.enter("mx:[127.0.0.1]").await;
        let first = slot.reach(out, &literal()).await.err().expect("refused");
        assert!(
            matches!(first.kind, FailureKind::Unreachable { .. }),
            "{first:?}"
        );
        (d, first)
    }

    #[tokio::test]
    async fn an_unreachable_destination_is_down_and_deferred_without_trying() {
        let out = outbound(closed_port());
        let (d, first) = refused(&out, Duration::from_secs(60)).await;
        let slot = d.enter("mx:[127.0.0.1]").await;
        let started = Instant::now();
        let again = slot.reach(&out, &literal()).await.err().expect("down");
        assert!(started.elapsed() < Duration::from_millis(50));
        assert_eq!(
            (again.kind, again.severity),
            (first.kind, Severity::Transient)
        );
        assert!(
            again
                .text
                .starts_with("not tried: the destination failed 0 s ago"),
            "{}",
            again.text
        );
        assert!(
            again.text.ends_with(&format!("({})", first.text)),
            "{}",
            again.text
        );
        d.forget_down(|_| true);
        let tried = slot.reach(&out, &literal()).await.err().expect("refused");
        assert_eq!(tried.text, first.text, "tried again once forgotten");
    }

    #[tokio::test]
    async fn a_destination_is_down_for_a_while_only() {
        let out = outbound(closed_port());
        let (d, first) = refused(&out, Duration::from_millis(200)).await;
        tokio::time::sleep(Duration::from_millis(250)).await;
        let slot = d.enter("mx:[127.0.0.1]").await;
        let again = slot.reach(&out, &literal()).await.err().expect("refused");
        assert_eq!(again.text, first.text, "tried again once the time is up");
    }

    #[tokio::test]
    async fn idle_destinations_are_forgotten_and_down_ones_kept() {
        let out = outbound(closed_port());
        let (d, _) = refused(&out, Duration::from_secs(60)).await;
        for n in 0..200 {
            drop(d.enter(&format!("mx:d{n}.example")).await);
        }
        assert!(d.known() < 130, "{} known", d.known());
        let slot = d.enter("mx:[127.0.0.1]").await;
        assert!(slot.down().is_some(), "the down destination was kept");
    }
}
