//! How much mail flowed, minute by minute, over the last day: messages
//! accepted, and recipients delivered, deferred and bounced, counted where
//! the metrics count them and written to the store once a minute (and at
//! shutdown), for the dashboard's chart. Counted in process-wide atomics,
//! as the metrics are: the places that count have no handle in common.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::clock::now_unix;
use crate::store::{FlowMinute, Store};

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

/// The minute now being counted, with its counts so far (not yet written).
pub fn current() -> FlowMinute {
    let [accepted, delivered, deferred, bounced] =
        [0, 1, 2, 3].map(|i| COUNTS[i].load(Ordering::Relaxed));
    FlowMinute {
        minute: now_unix().div_euclid(60),
        accepted,
        delivered,
        deferred,
        bounced,
    }
}

/// Takes the counts since the last call.
fn take() -> [u64; 4] {
    [0, 1, 2, 3].map(|i| COUNTS[i].swap(0, Ordering::Relaxed))
}

/// Writes the counts to the store at every minute's end until `stop`, then
/// once more; a write the store refuses is added to the next.
pub async fn run(store: Store, stop: CancellationToken) {
    let mut pending = [0u64; 4];
    loop {
        let now = now_unix();
        let to_next_minute = 60 - now.rem_euclid(60);
        let stopping = tokio::select! {
            () = stop.cancelled() => true,
            () = tokio::time::sleep(Duration::from_secs(to_next_minute as u64)) => false,
        };
        // The minute that just ended (or, at shutdown, the current one).
        flush(&store, &mut pending, (now_unix() - 1).div_euclid(60)).await;
        if stopping {
            return;
        }
    }
}

/// Adds what was counted since the last call to `pending` and writes it as
/// `minute`'s; what the store refuses stays in `pending` for the next call.
async fn flush(store: &Store, pending: &mut [u64; 4], minute: i64) {
    for (p, t) in pending.iter_mut().zip(take()) {
        *p += t;
    }
    let [accepted, delivered, deferred, bounced] = *pending;
    let row = FlowMinute {
        minute,
        accepted,
        delivered,
        deferred,
        bounced,
    };
    match store.add_flow(&row, minute - MINUTES_KEPT).await {
        Ok(()) => *pending = [0; 4],
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

    /// A store that refuses a write loses no count: it goes with the next.
    #[tokio::test]
    async fn a_refused_write_is_added_to_the_next() {
        let _one_at_a_time = TAKING.lock().await;
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(dir.path()).await.expect("store");
        for _ in 0..2 {
            count(Flow::Deferred);
        }
        let mut pending = [0u64; 4];
        store.close().await;
        flush(&store, &mut pending, 100).await;
        assert!(pending[2] >= 2, "kept: {pending:?}");
        let reopened = Store::open(dir.path()).await.expect("store");
        flush(&reopened, &mut pending, 101).await;
        assert_eq!(pending, [0; 4]);
        let written = reopened.flow_since(0).await.expect("read");
        assert!(
            written.iter().map(|m| m.deferred).sum::<u64>() >= 2,
            "{written:?}"
        );
    }
}
