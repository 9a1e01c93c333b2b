//! The watch over what each user sends, for the host's reputation: the
//! sending limits at MAIL and RCPT, and the hold on an account whose last
//! hour is a burst against its own history (the sign of a stolen password).
//! A held account's mail is accepted and kept, not delivered, until `postern
//! user release` (or `purge-held`); the user and the postmaster are told
//! (`notice.rs`). A new password ends the hold for new mail.
//!
//! The counts of the last day are in memory (`policy::sending`); whom each
//! user wrote to, their hourly history and the holds are in the store, so a
//! restart forgets none of them.

mod notice;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::clock::now_unix;
use crate::control::{Request, perform};
use crate::policy::sender::Sender;
use crate::policy::sending::{self, Allowance, Burst, HourCounts, SendingLog};
use crate::scheduler::{ActiveQueue, Bounced};
use crate::smtp::reply::Reply;
use crate::spool::QueueId;
use crate::store::{OwnLimits, Sending, Standing, Store, correspondent_key};

const WEEK: i64 = 7 * 86_400;

/// What the watch says of a message a user is about to queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Admission {
    /// Queue it held: the user's outgoing mail is on hold.
    pub held: bool,
    /// How many of its recipients the user never wrote to.
    pub first_time: u64,
}

pub struct Watch {
    log: SendingLog,
    store: Store,
    queue: ActiveQueue,
    /// Read through `config.get()`: a reload replaces it.
    config: crate::config::Live,
    unwritten: Mutex<Unwritten>,
}

/// What users sent that the store does not have yet: written a second at a
/// time, in one transaction (one sync for many messages, as the spool's
/// group commit; a sync per message cost a fifth of the logins' rate), and
/// asked meanwhile, so that a recipient just written to is not first-time
/// again. A crash loses at most that second of history.
#[derive(Default)]
struct Unwritten {
    sent: Vec<Sending>,
    /// Per user, the recipients of `sent` (as the store compares them).
    known: HashMap<String, HashSet<String>>,
}

impl Watch {
    pub fn new(config: crate::config::Live, store: Store, queue: ActiveQueue) -> Watch {
        Watch {
            log: SendingLog::default(),
            store,
            queue,
            config,
            unwritten: Mutex::default(),
        }
    }

    /// `user`'s limits, hold and password change; the defaults when the
    /// store cannot say (a local Unix user has no account: the defaults).
    async fn standing(&self, user: &str) -> Standing {
        self.store.standing(user).await.unwrap_or_else(|e| {
            tracing::error!(event = "store_error", error = %e);
            Standing::default()
        })
    }

    /// The limits of `user` now: their own (`postern user limits`), else the
    /// configured ones.
    async fn allowance(&self, user: &str) -> Allowance {
        self.allowance_of(&self.standing(user).await.limits)
    }

    fn allowance_of(&self, own: &OwnLimits) -> Allowance {
        let config = self.config.get();
        let limits = &config.limits;
        // At least one of each: a store edited by hand to 0 must not stop
        // the sender's mail for good.
        let or_default = |own: Option<u64>, default: u64| own.unwrap_or(default).max(1);
        Allowance {
            messages_per_hour: or_default(own.messages_per_hour, limits.messages_per_hour_per_user),
            recipients_per_day: or_default(
                own.recipients_per_day,
                limits.recipients_per_day_per_user,
            ),
            new_recipients_per_day: or_default(
                own.new_recipients_per_day,
                limits.new_recipients_per_day_per_user,
            ),
        }
    }

    /// At MAIL: refuses a message when the user's last hour is full, or
    /// when the password changed after the session logged in (at
    /// `logged_in_at`): a thief's open connection may send no more.
    pub async fn check_message(
        &self,
        user: &str,
        logged_in_at: i64,
        now: i64,
    ) -> Result<(), Reply> {
        let standing = self.standing(user).await;
        if standing
            .password_changed
            .is_some_and(|at| at > logged_in_at)
        {
            tracing::info!(event = "password_changed_since_login", user);
            return Err(Reply::new(
                530,
                (7, 0),
                format!(
                    "The password of {user} changed after this session logged in; \
                     log in again"
                ),
            ));
        }
        self.log
            .check_message(user, self.allowance_of(&standing.limits), now)
    }

    /// At RCPT: refuses `rcpt` when the user's last day is full, of
    /// recipients or of first-time ones (the message has `pending` so far,
    /// `pending_new` of them first-time); else says whether it is first-time.
    pub async fn check_recipient(
        &self,
        user: &str,
        rcpt: &str,
        pending: (u64, u64),
        now: i64,
    ) -> Result<bool, Reply> {
        let (pending, pending_new) = pending;
        let allowance = self.allowance(user).await;
        self.log.check_recipient(user, allowance, pending, now)?;
        let first_time = self
            .first_time(user, std::slice::from_ref(&rcpt.to_string()), now)
            .await
            .map_err(|e| {
                tracing::error!(event = "store_error", error = %e);
                Reply::local_error()
            })?;
        if first_time.is_empty() {
            return Ok(false);
        }
        self.log
            .check_new_recipient(user, allowance, pending_new, now)?;
        Ok(true)
    }

    /// A local Unix user's message to `recipients` (`postern sendmail`): the
    /// limits MAIL and RCPT apply to a logged-in user, but for first-time
    /// recipients (only accounts have their correspondents kept).
    pub async fn check_local(&self, user: &str, recipients: u64, now: i64) -> Result<(), Reply> {
        let allowance = self.allowance(user).await;
        self.log.check_message(user, allowance, now)?;
        let others = recipients.saturating_sub(1);
        self.log.check_recipient(user, allowance, others, now)
    }

    /// Before `user`'s message to `recipients` is queued: whether it is to
    /// be held (the account is on hold, or this message makes its last hour
    /// a burst, which puts it on hold now), and how many recipients are
    /// first-time. Counted now, not once queued, so that parallel sessions
    /// see each other's messages. A store that fails refuses the message
    /// for now.
    pub async fn admit(
        &self,
        user: &Sender<'_>,
        recipients: &[String],
        now: i64,
    ) -> Result<Admission, Reply> {
        let sent = recipients.len() as u64;
        let Sender::Account(user) = *user else {
            self.log.record(user.name(), sent, 0, now);
            return Ok(Admission::default());
        };
        let store_failed = |e: crate::store::StoreError| {
            tracing::error!(event = "store_error", error = %e);
            Reply::local_error()
        };
        let standing = self.store.standing(user).await.map_err(store_failed)?;
        let first_time = self
            .first_time(user, recipients, now)
            .await
            .map_err(store_failed)?
            .len() as u64;
        // A held message is not counted: it is the thief's, not the user's.
        if standing.hold.is_some() {
            return Ok(Admission {
                held: true,
                first_time,
            });
        }
        let since = standing.hold_ended.unwrap_or(0);
        let burst = match self.normal(user, now).await {
            Some((normal, thresholds)) => {
                self.log
                    .admit(user, (sent, first_time), (now, since), |hour| {
                        sending::burst(hour, normal, &thresholds)
                    })
            }
            None => {
                self.log.record(user, sent, first_time, now);
                None
            }
        };
        if let Some(why) = &burst {
            self.hold(user, why, now).await;
        }
        Ok(Admission {
            held: burst.is_some(),
            first_time,
        })
    }

    /// `user`'s busiest hour of the last week and the thresholds a burst
    /// is judged by; `None` when no burst is held (`hold_on_burst = false`,
    /// or a store that cannot say: holding every user's mail for a store
    /// error would be worse).
    async fn normal(&self, user: &str, now: i64) -> Option<(HourCounts, Burst)> {
        let thresholds = self.config.get().limits.burst.clone()?;
        match self.store.busiest_hour(user, now - WEEK, now).await {
            Ok(normal) => Some((normal, thresholds)),
            Err(e) => {
                tracing::error!(event = "store_error", error = %e);
                None
            }
        }
    }

    /// Those of `recipients` that `user` never wrote to: neither in the
    /// store nor among what is still to be written.
    async fn first_time(
        &self,
        user: &str,
        recipients: &[String],
        now: i64,
    ) -> Result<Vec<String>, crate::store::StoreError> {
        let unknown: Vec<String> = {
            let unwritten = self.unwritten.lock().unwrap_or_else(|e| e.into_inner());
            let known = unwritten.known.get(user);
            recipients
                .iter()
                .filter(|r| !known.is_some_and(|k| k.contains(&correspondent_key(r))))
                .cloned()
                .collect()
        };
        if unknown.is_empty() {
            return Ok(unknown);
        }
        self.store.first_time(user, &unknown, now).await
    }

    /// Writes what users sent to the store (see [`Unwritten`]).
    async fn write_sending(&self) {
        let sent = {
            let mut unwritten = self.unwritten.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::take(&mut unwritten.sent)
        };
        if sent.is_empty() {
            return;
        }
        if let Err(e) = self.store.remember_sending(&sent).await {
            tracing::error!(event = "store_error", messages = sent.len(), error = %e);
        }
        // Written (or lost): the store answers for them from now on.
        let mut unwritten = self.unwritten.lock().unwrap_or_else(|e| e.into_inner());
        for message in &sent {
            if let Some(known) = unwritten.known.get_mut(&message.address) {
                for recipient in &message.recipients {
                    known.remove(&correspondent_key(recipient));
                }
                if known.is_empty() {
                    unwritten.known.remove(&message.address);
                }
            }
        }
    }

    /// After `user`'s message `id` to `recipients` was queued: its
    /// recipients are known from now on (to the next message's RCPT at
    /// once, to the store within a second). A hold that began while it was
    /// being queued holds it too (the hold's sweep of the queue may have
    /// missed it).
    pub async fn queued(
        &self,
        user: &Sender<'_>,
        id: &QueueId,
        recipients: &[String],
        admission: Admission,
        now: i64,
    ) {
        let Sender::Account(user) = *user else {
            return;
        };
        if admission.held {
            return;
        }
        {
            let mut unwritten = self.unwritten.lock().unwrap_or_else(|e| e.into_inner());
            let known = unwritten.known.entry(user.to_string()).or_default();
            known.extend(recipients.iter().map(|r| correspondent_key(r)));
            unwritten.sent.push(Sending {
                address: user.to_string(),
                recipients: recipients.to_vec(),
                new: admission.first_time,
                at: now,
            });
        }
        if let Ok(standing) = self.store.standing(user).await
            && standing.hold.is_some()
        {
            let request = Request::Hold { id: id.clone() };
            if let Err(e) = perform(self.queue.spool(), Some(&self.queue), &request).await {
                tracing::error!(event = "spool_error", qid = %id, error = %e);
            }
        }
    }

    /// `failed` recipients of `user`'s mail bounced: counted, and a burst of
    /// bounces holds their mail.
    async fn bounced(&self, user: &str, failed: u64, now: i64) {
        if !is_account(user) || failed == 0 {
            return;
        }
        for _ in 0..failed {
            self.log.record_bounce(user, now);
        }
        if let Err(e) = self.store.count_bounces(user, failed, now).await {
            tracing::error!(event = "store_error", error = %e);
        }
        let Ok(standing) = self.store.standing(user).await else {
            return;
        };
        if standing.hold.is_some() {
            return;
        }
        let hour = self
            .log
            .last_hour(user, now, standing.hold_ended.unwrap_or(0));
        if let Some((normal, thresholds)) = self.normal(user, now).await
            && let Some(why) = sending::burst(hour, normal, &thresholds)
        {
            self.hold(user, &why, now).await;
        }
    }

    /// Puts `user`'s outgoing mail on hold for `reason`: what is queued is
    /// held, and so is what they send until released; they and their
    /// domain's postmaster are told once.
    async fn hold(&self, user: &str, reason: &str, now: i64) {
        match self.store.hold_user(user, reason, now).await {
            Ok(true) => {}
            // Held already, by another session or the administrator.
            Ok(false) => return,
            Err(e) => {
                tracing::error!(event = "store_error", user, error = %e);
                return;
            }
        }
        metrics::counter!("postern_user_holds_total").increment(1);
        metrics::gauge!("postern_users_held").increment(1.0);
        let request = Request::HoldUser {
            user: user.to_string(),
        };
        let held = perform(self.queue.spool(), Some(&self.queue), &request)
            .await
            .unwrap_or_else(|e| {
                tracing::error!(event = "spool_error", user, error = %e);
                0
            });
        tracing::warn!(
            event = "user_held",
            user,
            reason,
            held_recipients = held,
            "outgoing mail held as a stolen account's; `postern user release {user}` delivers it, `postern user purge-held {user}` deletes it"
        );
        let hostname = self.config.get().hostname.clone();
        let to = notice::addressed_to(user, &hostname);
        // Through the aliases, as prepare expands them: the postmaster is
        // often an alias of the admin's own address.
        let mut envelope: Vec<String> = Vec::new();
        for address in &to {
            match self.store.expand(address).await {
                Ok(targets) if !targets.is_empty() => {
                    envelope.extend(targets.into_iter().map(|t| t.address));
                }
                _ => envelope.push(address.clone()),
            }
        }
        envelope.dedup();
        let message = notice::hold_notice(&hostname, user, reason, now, &envelope);
        let id = QueueId::generate();
        match self.queue.put(id.clone(), message).await {
            Ok(()) => tracing::info!(event = "hold_notice_queued", user, qid = %id),
            Err(e) => tracing::error!(event = "spool_error", qid = %id, error = %e),
        }
    }

    /// Counts the bounces the scheduler reports, keeps `postern_users_held`
    /// current (holds end from the CLI too) and the store's history
    /// bounded, until `stop`.
    pub async fn run(
        self: Arc<Self>,
        mut bounces: mpsc::Receiver<Bounced>,
        stop: CancellationToken,
    ) {
        let mut every_10s = tokio::time::interval(Duration::from_secs(10));
        let mut every_second = tokio::time::interval(Duration::from_secs(1));
        let mut ticks = 0u64;
        loop {
            tokio::select! {
                () = stop.cancelled() => {
                    self.write_sending().await;
                    return;
                }
                _ = every_second.tick() => self.write_sending().await,
                Some(b) = bounces.recv() => self.bounced(&b.user, b.failed, now_unix()).await,
                _ = every_10s.tick() => {
                    match self.store.held_users().await {
                        Ok(held) => metrics::gauge!("postern_users_held").set(held.len() as f64),
                        Err(e) => tracing::error!(event = "store_error", error = %e),
                    }
                    if ticks.is_multiple_of(360)
                        && let Err(e) = self.store.forget_old_sending(now_unix()).await
                    {
                        tracing::error!(event = "store_error", error = %e);
                    }
                    ticks += 1;
                }
            }
        }
    }
}

/// Whether a submitter's name is an account's: a local Unix user's has no
/// `@` (`Sender::name`).
fn is_account(name: &str) -> bool {
    name.contains('@')
}
