//! The active queue (Postfix's qmgr): which recipients this server is
//! delivering (its claims), the fresh messages handed over as they are queued,
//! and when the spool must be read again (the backlog mark, the next due time,
//! the wake-up). The spool only stores; this decides what is in flight.
//!
//! A claim lives in memory only: one process delivers from a spool, and a
//! crash releases every claim with it. A fresh message is claimed as it is
//! queued and handed over with its body, so its first delivery reads nothing
//! back from the disk (Postfix's queue manager likewise learns of new mail
//! from the cleanup daemon instead of scanning for it). The spool is read for
//! the rest: retries, bounces, operator changes, and what a restart or a full
//! set of claims left behind.

use std::collections::{HashMap, HashSet};
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};

use crate::clock::now_unix;
use crate::spool::{
    NewMessage, QueueId, QueuedMessage, RecipientStatus, RecipientUpdate, SpillFile, Spool,
    SpoolError,
};

/// Most body octets of fresh messages held in memory at once, from `put` to the
/// end of their first delivery. Beyond it a fresh message is handed over
/// without its body, which is read back when a delivery slot is free, so
/// memory stays bounded under any load.
const FRESH_BYTES: usize = 4 << 20;

/// A claim pass waits for at least this much room (when the claims allow
/// so much): see `look`.
const MIN_LOOK: usize = 256;

/// How soon recipients are looked at again after their outcome could not be
/// recorded (a spool error, a failed delivery task): they are still due, and
/// looking at once would repeat the failure in a tight loop.
pub(super) const AFTER_FAILURE: Duration = Duration::from_secs(2);

/// The scheduler's view of the queue; cheap to clone. Sessions queue mail
/// through it, the control socket reports changes to it, the scheduler claims
/// and records through it.
#[derive(Clone)]
pub struct ActiveQueue {
    inner: Arc<Inner>,
}

struct Inner {
    spool: Spool,
    claims: Mutex<Claims>,
    /// Claimed recipients wait for a delivery slot: this bounds how many wait,
    /// so that a large backlog is not all in memory at once.
    max_claimed: usize,
    fresh_bytes: Arc<AtomicUsize>,
    hand_off: mpsc::UnboundedSender<Fresh>,
    /// The spool may hold due recipients that nobody has claimed: set when a
    /// message or bounce is queued without being handed over, or something
    /// became due; taken by the scheduler before it looks.
    backlog: AtomicBool,
    /// The earliest due time (unix seconds) that recorded outcomes set and the
    /// scheduler has not yet taken; `i64::MAX` for none.
    wake_at: AtomicI64,
    woken: Notify,
}

#[derive(Default)]
struct Claims {
    messages: HashMap<QueueId, Claimed>,
    count: usize,
    /// While a claim pass reads the spool: messages whose claims were given up
    /// meanwhile, or that were held or deleted. Their rows may be older than
    /// that change, so the pass must not claim them; it reads again instead.
    changed_during_pass: Option<HashSet<QueueId>>,
}

#[derive(Default)]
struct Claimed {
    idxs: HashSet<u32>,
    /// Held or deleted while claimed: a delivery that has not started does not.
    withdrawn: bool,
}

/// A message that was just made durable, already claimed, with its body when
/// there was room for it in memory.
pub struct Fresh {
    pub message: QueuedMessage,
    pub body: Option<FreshBody>,
}

/// A fresh message's body; its octets count against `FRESH_BYTES` until dropped.
pub struct FreshBody {
    bytes: bytes::Bytes,
    fresh_bytes: Arc<AtomicUsize>,
}

impl Deref for FreshBody {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for FreshBody {
    fn drop(&mut self) {
        self.fresh_bytes
            .fetch_sub(self.bytes.len(), Ordering::Relaxed);
    }
}

/// Where fresh messages arrive, for the scheduler's loop.
pub struct HandOffs(mpsc::UnboundedReceiver<Fresh>);

impl HandOffs {
    /// The next fresh message. Cancel safe.
    pub async fn recv(&mut self) -> Option<Fresh> {
        self.0.recv().await
    }
}

impl ActiveQueue {
    /// A queue over `spool` that claims at most `max_claimed` recipients, and
    /// the receiver of its hand-offs. While nobody receives (delivery is on
    /// hold), new mail simply waits in the spool.
    pub fn new(spool: Spool, max_claimed: usize) -> (ActiveQueue, HandOffs) {
        let (hand_off, receiver) = mpsc::unbounded_channel();
        let inner = Inner {
            spool,
            claims: Mutex::new(Claims::default()),
            max_claimed,
            fresh_bytes: Arc::new(AtomicUsize::new(0)),
            hand_off,
            // Whatever a previous run left is due for a look.
            backlog: AtomicBool::new(true),
            wake_at: AtomicI64::new(i64::MAX),
            woken: Notify::new(),
        };
        (
            ActiveQueue {
                inner: Arc::new(inner),
            },
            HandOffs(receiver),
        )
    }

    /// The spool behind the queue.
    pub fn spool(&self) -> &Spool {
        &self.inner.spool
    }

    fn claims(&self) -> MutexGuard<'_, Claims> {
        self.inner.claims.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `message` durable under `id` ([`crate::spool::Storage::put`]),
    /// then hands it to the scheduler, claimed, while there is room (a held
    /// message waits for its release instead). Cancel safety: as `put`'s.
    pub async fn put(&self, id: QueueId, message: NewMessage) -> Result<(), SpoolError> {
        if message.held {
            self.inner.spool.put(id, message, None).await?;
            return Ok(());
        }
        let body = self.reserve(&message);
        let queued = self.inner.spool.put(id, message, None).await?;
        self.offer(queued, body);
        Ok(())
    }

    /// `put` for a message whose body was spilled ([`crate::spool::Storage::put`]);
    /// its body is read back from the spool for delivery.
    pub async fn put_spilled(
        &self,
        id: QueueId,
        message: NewMessage,
        body: SpillFile,
    ) -> Result<(), SpoolError> {
        let held = message.held;
        let queued = self.inner.spool.put(id, message, Some(body)).await?;
        if !held {
            self.offer(queued, None);
        }
        Ok(())
    }

    /// `message`'s body, shared, if the scheduler takes fresh messages and
    /// there is room for it in memory. Taken before the commit, which
    /// consumes the message.
    fn reserve(&self, message: &NewMessage) -> Option<FreshBody> {
        if self.inner.hand_off.is_closed() {
            return None;
        }
        let len = message.body.len();
        self.inner
            .fresh_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                (held + len <= FRESH_BYTES).then_some(held + len)
            })
            .ok()?;
        Some(FreshBody {
            bytes: message.body.clone(),
            fresh_bytes: Arc::clone(&self.inner.fresh_bytes),
        })
    }

    /// Claims every recipient of a committed message and hands it over; else
    /// (no room, nobody receives, or a claim pass got it first) it waits in
    /// the spool, marked as backlog.
    fn offer(&self, message: QueuedMessage, body: Option<FreshBody>) {
        let handed = {
            let mut claims = self.claims();
            let idxs: HashSet<u32> = message.recipients.iter().map(|r| r.idx).collect();
            let id = message.id.clone();
            let room = claims.count + idxs.len() <= self.inner.max_claimed;
            if room
                && !claims.messages.contains_key(&id)
                && self.inner.hand_off.send(Fresh { message, body }).is_ok()
            {
                claims.count += idxs.len();
                claims.messages.insert(
                    id,
                    Claimed {
                        idxs,
                        withdrawn: false,
                    },
                );
                true
            } else {
                false
            }
        };
        if !handed {
            self.mark_backlog();
        }
    }

    /// Something in the spool became due (a retry, a release from hold, a
    /// message queued without a hand-off): the scheduler looks soon.
    pub fn changed(&self) {
        self.mark_backlog();
    }

    fn mark_backlog(&self) {
        self.inner.backlog.store(true, Ordering::SeqCst);
        self.inner.woken.notify_one();
    }

    /// Message `id` was held or deleted: if it is claimed, a delivery of it
    /// that has not started yet does not start; if a claim pass is reading
    /// the spool, it does not claim the message from rows read before.
    pub fn withdraw(&self, id: &QueueId) {
        let mut claims = self.claims();
        if let Some(claimed) = claims.messages.get_mut(id) {
            claimed.withdrawn = true;
        }
        if let Some(during) = &mut claims.changed_during_pass {
            during.insert(id.clone());
        }
    }

    /// Message `id` was released from hold: undoes [`ActiveQueue::withdraw`].
    pub fn restore(&self, id: &QueueId) {
        if let Some(claimed) = self.claims().messages.get_mut(id) {
            claimed.withdrawn = false;
        }
    }

    /// Whether a delivery of `id` about to start must not (see `withdraw`).
    pub fn is_withdrawn(&self, id: &QueueId) -> bool {
        self.claims().messages.get(id).is_some_and(|c| c.withdrawn)
    }

    /// How many recipients are claimed and not yet recorded or released.
    pub fn claimed(&self) -> usize {
        self.claims().count
    }

    /// Whether to read the spool now, and how many recipients may be claimed:
    /// when it may hold due recipients nobody claimed (the backlog mark, or
    /// `timer`: the next due time has come) and there is room. Without room
    /// the mark stays (the timer's included), so the release that makes room
    /// wakes the scheduler: it never spins on a timer it cannot act on.
    pub fn look(&self, timer: bool) -> Option<usize> {
        // Marked before room is counted: a release that frees room after the
        // count sees the mark and wakes the scheduler.
        if timer {
            self.inner.backlog.store(true, Ordering::SeqCst);
        }
        let room = self.inner.max_claimed.saturating_sub(self.claimed());
        // A pass reads every claimed row before the ones it may take, so
        // with thousands claimed, a pass per freed slot cost thousands of
        // rows per delivered message while a backlog drained: wait for a
        // batch's worth of room (an eighth of the claims, at most 256).
        if room == 0 || room < self.min_room() {
            return None;
        }
        self.inner
            .backlog
            .swap(false, Ordering::SeqCst)
            .then_some(room)
    }

    /// The least room worth a look at the spool.
    fn min_room(&self) -> usize {
        (self.inner.max_claimed / 8).clamp(1, MIN_LOOK)
    }

    /// Resolves when something happened that may call for a look: a message
    /// queued without a hand-off, a change, an outcome, room made while the
    /// spool holds a backlog. Cancel safe.
    pub async fn woken(&self) {
        self.inner.woken.notified().await;
    }

    /// The earliest due time (unix seconds) recorded outcomes set since the
    /// last call, if any.
    pub fn take_wake_at(&self) -> Option<i64> {
        let at = self.inner.wake_at.swap(i64::MAX, Ordering::SeqCst);
        (at != i64::MAX).then_some(at)
    }

    fn wake_at(&self, at: i64) {
        self.inner.wake_at.fetch_min(at, Ordering::SeqCst);
        self.inner.woken.notify_one();
    }

    /// Claims up to `limit` recipients that are due at `now` and not already
    /// claimed, grouped by message (with each message's envelope). A claim is
    /// held until `record` or `release`. One caller at a time (the scheduler).
    pub async fn claim_due(
        &self,
        now: i64,
        limit: usize,
    ) -> Result<Vec<QueuedMessage>, SpoolError> {
        let busy = {
            let mut claims = self.claims();
            claims.changed_during_pass = Some(HashSet::new());
            claims.count
        };
        let want = u32::try_from(limit + busy).unwrap_or(u32::MAX);
        let due = self.inner.spool.due(now, want).await;
        let (claimed, again) = {
            let mut claims = self.claims();
            let changed = claims.changed_during_pass.take().unwrap_or_default();
            let Claiming { claimed, skipped } = claims.claim(due?, limit, &changed);
            let n: usize = claimed.iter().map(|m| m.recipients.len()).sum();
            (claimed, n >= limit || skipped)
        };
        if again {
            // Perhaps more is due than this pass took, or a message changed
            // while it read: look again, at once if there is room left, else
            // once a release makes some.
            self.mark_backlog();
        }
        Ok(claimed)
    }

    /// Records delivery outcomes for recipients of message `id` with the
    /// bounce they cause ([`crate::spool::Storage::record`]) and gives up their
    /// claims. The scheduler is woken for the deferred recipients' next
    /// attempt and for the bounce.
    pub async fn record(
        &self,
        id: &QueueId,
        updates: Vec<RecipientUpdate>,
        bounce: Option<(QueueId, NewMessage)>,
    ) -> Result<(), SpoolError> {
        if updates.is_empty() && bounce.is_none() {
            return Ok(());
        }
        let idxs: Vec<u32> = updates.iter().map(|u| u.idx).collect();
        let next = updates
            .iter()
            .filter(|u| u.status == RecipientStatus::Queued)
            .map(|u| u.next_attempt)
            .min();
        let bounced = bounce.is_some();
        let written = self.inner.spool.record(id, updates, bounce).await;
        match &written {
            Ok(()) => {
                if let Some(at) = next {
                    self.wake_at(at);
                }
                if bounced {
                    self.mark_backlog();
                }
            }
            Err(_) => self.wake_at(now_unix() + AFTER_FAILURE.as_secs() as i64),
        }
        self.unclaim(id, idxs);
        written
    }

    /// Gives up claims without recording anything: the recipients stay due,
    /// and are looked at again after `AFTER_FAILURE`.
    pub fn release(&self, id: &QueueId, idxs: impl IntoIterator<Item = u32>) {
        if self.unclaim(id, idxs) > 0 {
            self.wake_at(now_unix() + AFTER_FAILURE.as_secs() as i64);
        }
    }

    /// Removes claims; returns how many there were. Room made while the spool
    /// holds a backlog wakes the scheduler.
    fn unclaim(&self, id: &QueueId, idxs: impl IntoIterator<Item = u32>) -> usize {
        let released = self.claims().release(id, idxs);
        if released > 0 && self.inner.backlog.load(Ordering::SeqCst) {
            self.inner.woken.notify_one();
        }
        released
    }
}

/// What a claim pass took, and whether it left out a message that changed
/// while it read (then the spool is read again).
struct Claiming {
    claimed: Vec<QueuedMessage>,
    skipped: bool,
}

impl Claims {
    /// Claims what a pass read, up to `limit` new claims, skipping what is
    /// claimed already and what `changed` while the pass was reading.
    fn claim(
        &mut self,
        due: Vec<QueuedMessage>,
        limit: usize,
        changed: &HashSet<QueueId>,
    ) -> Claiming {
        let mut out = Vec::new();
        let mut taken = 0;
        let mut skipped = false;
        for mut message in due {
            if taken >= limit {
                continue;
            }
            if changed.contains(&message.id) {
                skipped = true;
                continue;
            }
            let claimed = self.messages.entry(message.id.clone()).or_default();
            message.recipients.retain(|r| {
                let take = taken < limit && claimed.idxs.insert(r.idx);
                taken += usize::from(take);
                take
            });
            if claimed.idxs.is_empty() {
                self.messages.remove(&message.id);
            }
            if !message.recipients.is_empty() {
                out.push(message);
            }
        }
        self.count += taken;
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Claiming {
            claimed: out,
            skipped,
        }
    }

    fn release(&mut self, id: &QueueId, idxs: impl IntoIterator<Item = u32>) -> usize {
        let mut released = 0;
        if let Some(claimed) = self.messages.get_mut(id) {
            for idx in idxs {
                released += usize::from(claimed.idxs.remove(&idx));
            }
            if claimed.idxs.is_empty() {
                self.messages.remove(id);
            }
        }
        self.count -= released;
        if released > 0
            && let Some(during) = &mut self.changed_during_pass
        {
            during.insert(id.clone());
        }
        released
    }
}

#[cfg(test)]
mod tests;
