//! How much mail flowed, minute by minute, over the last day: messages
//! accepted, and recipients delivered, deferred and bounced, counted where
//! the metrics count them and written to the store once a minute (and at
//! shutdown), for the dashboard's chart. Counted in process-wide atomics,
//! as the metrics are: the places that count have no handle in common.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::clock::now_unix;
use crate::store::{FlowMinute, Store, StoreError};

/// Minutes kept: a day.
pub const MINUTES_KEPT: i64 = 24 * 60;

/// One kind of event the chart shows.
#[derive(Debug, Clone, Copy)]
pub enum Flow {
    Accepted,
    Delivered,
    Deferred,
    Bounced,
}

static COUNTS: [AtomicU64; 4] = [
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
];

/// Counts one event.
pub fn count(flow: Flow) {
    COUNTS[flow as usize].fetch_add(1, Ordering::Relaxed);
}

/// Counts taken for the store and not written yet (a write under way, or
/// one the store refused): `current` still shows them. Held to write to the
/// store (exclusive) and to read the store and the counts together
/// (shared): a write under way is then seen once, in the store or in the
/// counts, never in both or neither.
static UNWRITTEN: tokio::sync::RwLock<[u64; 4]> = tokio::sync::RwLock::const_new([0; 4]);

/// The last day's minutes as written, and the minute now being counted
/// (with every count not yet written).
pub async fn last_day(store: &Store) -> Result<(Vec<FlowMinute>, FlowMinute), StoreError> {
    let unwritten = UNWRITTEN.read().await;
    let now = current(&unwritten);
    let minutes = store.flow_since(now.minute - MINUTES_KEPT).await?;
    Ok((minutes, now))
}

/// The minute now being counted, with `unwritten`, the counts not yet in
/// the store.
fn current(unwritten: &[u64; 4]) -> FlowMinute {
    let [accepted, delivered, deferred, bounced] =
        [0, 1, 2, 3].map(|i| COUNTS[i].load(Ordering::SeqCst) + unwritten[i]);
    FlowMinute {
        minute: now_unix().div_euclid(60),
        accepted,
        delivered,
        deferred,
        bounced,
    }
}

/// Writes the counts to the store at every minute's end until `stop`, then
/// once more; a write the store refuses is added to the next.
pub async fn run(store: Store, stop: CancellationToken) {
    loop {
        let now = now_unix();
        let to_next_minute = 60 - now.rem_euclid(60);
        let stopping = tokio::select! {
            () = stop.cancelled() => true,
            () = tokio::time::sleep(Duration::from_secs(to_next_minute as u64)) => false,
        };
        // The minute that just ended (or, at shutdown, the current one).
        flush(&store, (now_unix() - 1).div_euclid(60)).await;
        if stopping {
            return;
        }
    }
}

/// Writes what was counted since the last call, and what the store refused
/// before, as `minute`'s. The counts wait in `UNWRITTEN` until the store has
/// them, so that `current` shows them meanwhile (the dashboard's last hour
/// read low while the store wrote, and for as long as it refused).
async fn flush(store: &Store, minute: i64) {
    let mut unwritten = UNWRITTEN.write().await;
    for (counted, unwritten) in COUNTS.iter().zip(unwritten.iter_mut()) {
        *unwritten += counted.swap(0, Ordering::SeqCst);
    }
    let [accepted, delivered, deferred, bounced] = *unwritten;
    let row = FlowMinute {
        minute,
        accepted,
        delivered,
        deferred,
        bounced,
    };
    match store.add_flow(&row, minute - MINUTES_KEPT).await {
        Ok(()) => *unwritten = [0; 4],
        Err(e) => tracing::error!(event = "store_error", error = %e, "cannot write the mail flow"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The counts are process-wide: the tests that take them run one at a time.
    static TAKING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    /// At shutdown the counts so far are written; the process-wide counts
    /// are shared with other tests, so only a floor is known.
    #[tokio::test]
    async fn the_counts_are_written_at_shutdown() {
        let _one_at_a_time = TAKING.lock().await;
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(dir.path()).await.expect("store");
        for _ in 0..3 {
            count(Flow::Bounced);
        }
        let stop = CancellationToken::new();
        stop.cancel();
        run(store.clone(), stop).await;
        let written = store.flow_since(0).await.expect("read");
        assert!(
            written.iter().map(|m| m.bounced).sum::<u64>() >= 3,
            "{written:?}"
        );
    }

    /// A store that refuses a write loses no count: it goes with the next,
    /// and the dashboard's current minute shows it meanwhile.
    #[tokio::test]
    async fn a_refused_write_is_added_to_the_next() {
        let _one_at_a_time = TAKING.lock().await;
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(dir.path()).await.expect("store");
        for _ in 0..2 {
            count(Flow::Deferred);
        }
        store.close().await;
        flush(&store, 100).await;
        let kept = *UNWRITTEN.read().await;
        assert!(kept[Flow::Deferred as usize] >= 2, "kept");
        assert!(current(&kept).deferred >= 2, "and shown");
        let reopened = Store::open(dir.path()).await.expect("store");
        flush(&reopened, 101).await;
        assert_eq!(*UNWRITTEN.read().await, [0; 4]);
        let written = reopened.flow_since(0).await.expect("read");
        assert!(
            written.iter().map(|m| m.deferred).sum::<u64>() >= 2,
            "{written:?}"
        );
    }
}
