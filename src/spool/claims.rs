//! Which recipients this process is delivering (its claims), and the fresh
//! messages `put` hands straight to the scheduler.
//!
//! A claim lives in memory only: one process delivers from a spool, and a crash
//! releases every claim with it. A fresh message is claimed as it is handed
//! over, with a copy of its body, so its first delivery reads nothing back from
//! the disk (Postfix's queue manager likewise learns of new mail from the
//! cleanup daemon instead of scanning for it).

use std::collections::HashSet;
use std::ops::Deref;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use tokio::sync::mpsc;

use super::{NewMessage, QueueId, QueuedMessage, QueuedRecipient, RecipientStatus};

/// Most body octets of fresh messages held in memory at once, from `put` to the
/// end of their first delivery. Beyond it a message waits in the spool and is
/// read back when a delivery slot is free, so memory stays bounded under any load.
const FRESH_BYTES: usize = 4 << 20;

#[derive(Default)]
struct Held {
    recipients: HashSet<(String, u32)>,
    /// While a claim pass reads the spool: messages whose claims were given up
    /// meanwhile. Their rows may be older than the outcome just recorded, so the
    /// pass must not claim them again.
    released_during_pass: Option<HashSet<String>>,
}

#[derive(Clone, Default)]
pub(super) struct Claims {
    held: Arc<Mutex<Held>>,
    hand_off: Arc<OnceLock<HandOff>>,
    fresh_bytes: Arc<AtomicUsize>,
}

struct HandOff {
    to: mpsc::UnboundedSender<Fresh>,
    max_claimed: usize,
}

/// A message that was just made durable, already claimed, with its body.
pub struct Fresh {
    pub message: QueuedMessage,
    pub body: FreshBody,
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

impl Claims {
    fn held(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn count(&self) -> usize {
        self.held().recipients.len()
    }

    /// From now on, fresh messages go to the returned receiver while fewer than
    /// `max_claimed` recipients are claimed. Only the first call counts.
    pub fn hand_off_to(&self, max_claimed: usize) -> Option<mpsc::UnboundedReceiver<Fresh>> {
        let (to, from) = mpsc::unbounded_channel();
        self.hand_off.set(HandOff { to, max_claimed }).ok()?;
        Some(from)
    }

    /// What `put` would hand over for `message`, if anyone takes fresh
    /// messages and there is room for its body (shared, not copied). Made
    /// before the commit, which takes the message.
    pub fn prepare(&self, id: &QueueId, message: &NewMessage, now: i64) -> Option<Fresh> {
        self.hand_off.get()?;
        let len = message.body.len();
        self.fresh_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                (held + len <= FRESH_BYTES).then_some(held + len)
            })
            .ok()?;
        let recipients = message
            .recipients
            .iter()
            .enumerate()
            .map(|(idx, r)| QueuedRecipient {
                idx: idx as u32,
                address: r.address.clone(),
                orcpt: r.orcpt.clone(),
                notify: r.notify.clone(),
                status: RecipientStatus::Queued,
                attempts: 0,
                next_attempt: now,
                last_reply: None,
            })
            .collect();
        Some(Fresh {
            message: QueuedMessage {
                id: id.clone(),
                created: now,
                sender: message.sender.clone(),
                size: len as u64,
                auth_user: message.auth_user.clone(),
                smtputf8: message.smtputf8,
                dsn: message.dsn.clone(),
                recipients,
            },
            body: FreshBody {
                bytes: message.body.clone(),
                fresh_bytes: Arc::clone(&self.fresh_bytes),
            },
        })
    }

    /// Claims every recipient of a committed fresh message and hands it over;
    /// false (and nothing claimed) when it must be found in the spool instead.
    pub fn hand_off(&self, fresh: Fresh) -> bool {
        let Some(hand_off) = self.hand_off.get() else {
            return false;
        };
        let mut held = self.held();
        let id = fresh.message.id.as_str();
        let keys: Vec<(String, u32)> = fresh
            .message
            .recipients
            .iter()
            .map(|r| (id.to_string(), r.idx))
            .collect();
        if held.recipients.len() + keys.len() > hand_off.max_claimed
            || keys.iter().any(|k| held.recipients.contains(k))
        {
            return false;
        }
        if hand_off.to.send(fresh).is_err() {
            return false;
        }
        held.recipients.extend(keys);
        true
    }

    /// Starts a claim pass: releases from now on are remembered until `finish_pass`.
    pub fn begin_pass(&self) {
        self.held().released_during_pass = Some(HashSet::new());
    }

    /// Claims what the pass read, up to `limit` new claims, skipping what is
    /// claimed already and what was released while the pass was reading.
    pub fn finish_pass(
        &self,
        rows: Vec<(String, QueuedRecipient)>,
        limit: usize,
    ) -> Vec<(String, QueuedRecipient)> {
        let mut held = self.held();
        let released = held.released_during_pass.take().unwrap_or_default();
        let mut claimed = Vec::new();
        for (id, r) in rows {
            if claimed.len() >= limit || released.contains(&id) {
                continue;
            }
            if held.recipients.insert((id.clone(), r.idx)) {
                claimed.push((id, r));
            }
        }
        claimed
    }

    pub fn release(&self, id: &QueueId, idxs: impl IntoIterator<Item = u32>) {
        let mut held = self.held();
        let held = &mut *held;
        for idx in idxs {
            held.recipients.remove(&(id.as_str().to_string(), idx));
        }
        if let Some(released) = &mut held.released_during_pass {
            released.insert(id.as_str().to_string());
        }
    }
}
