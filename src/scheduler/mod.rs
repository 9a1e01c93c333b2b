//! The queue manager: the only module that decides *when*. It owns the active
//! queue (`active.rs`: claims, hand-offs of fresh mail, wake-ups), sleeps until
//! the next recipient falls due or it is woken (new mail, an outcome, an
//! operator's change through the control socket), claims due recipients from
//! the spool, asks the router where each goes, delivers each message's
//! destinations concurrently within the global and per-destination limits, and
//! records the outcomes (with one DSN per round).

mod active;
mod backoff;
mod destinations;
mod groups;
mod outcome;
mod port25;
#[cfg(test)]
mod testing;

pub use active::{ActiveQueue, Fresh, FreshBody, HandOffs};
pub use port25::DeliveryStatus;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::clock::now_unix;
use crate::config::Config;
use crate::dsn::{DsnBudget, MAX_DSN_PER_SENDER_PER_HOUR};
use crate::failure::{DeliveryFailure, FailureKind};
use crate::local;
use crate::outbound::{Envelope, Outbound, Rcpt, Reached, RecipientResult};
use crate::router::Destination;
use crate::spool::{QueueId, QueuedMessage, QueuedRecipient, RecipientStatus, SpoolError};
use crate::store::Store;
use destinations::Destinations;
use groups::Groups;

/// Recipients claimed per look at the spool.
const CLAIM_BATCH: usize = 256;

/// How many recipients the active queue may claim under `config`: forty per
/// delivery slot. A few per slot keep the slots fed without waiting for a
/// look at the spool; the rest is room for recipients that wait for their
/// destination rather than for a slot. A destination that never answers holds
/// all mail sent to it for a whole connect timeout before it is taken to be
/// down (`destinations.rs`), and that mail must not take the room mail to
/// other destinations needs: with a tenth of 2,000 destinations dead, at the
/// rate `bench/destinations.sh` sends, ~2,000 recipients wait so. Postfix's
/// active queue holds 200 messages per delivery process (20,000 for 100).
/// A waiting claim costs about 4 KiB (its envelope and tasks; bodies held in
/// memory are bounded apart, `active::FRESH_BYTES`).
pub fn max_claimed(config: &Config) -> usize {
    config.delivery.concurrency * 40
}

/// What deliveries share.
pub struct Delivery {
    /// Read through `config()`: a reload replaces it.
    live: crate::config::Live,
    pub queue: ActiveQueue,
    pub store: Store,
    pub outbound: Outbound,
    /// Bounces to the SRS sender of a forwarded message go to its original.
    srs: Arc<crate::srs::Srs>,
    global: Arc<Semaphore>,
    destinations: Destinations,
    dsn_budget: DsnBudget,
    /// Where bounces of users' mail are reported, if anywhere.
    bounces: Option<mpsc::Sender<Bounced>>,
}

/// Recipients of a user's message that failed for good, reported to the
/// watch over senders (a burst of bounces is a sign of a stolen account).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bounced {
    /// The message's `auth_user`.
    pub user: String,
    pub failed: u64,
}

impl Delivery {
    pub fn new(
        live: crate::config::Live,
        queue: ActiveQueue,
        store: Store,
        outbound: Outbound,
        srs: Arc<crate::srs::Srs>,
    ) -> Delivery {
        let config = live.get();
        let global = Arc::new(Semaphore::new(config.delivery.concurrency));
        let destinations = Destinations::new(
            config.delivery.destination_concurrency,
            config.delivery.retry_min,
        );
        Delivery {
            live,
            queue,
            store,
            outbound,
            srs,
            global,
            destinations,
            dsn_budget: DsnBudget::new(MAX_DSN_PER_SENDER_PER_HOUR),
            bounces: None,
        }
    }

    /// The configuration in place now; a round keeps the copy it began
    /// with.
    pub fn config(&self) -> Arc<Config> {
        self.live.get()
    }

    /// Reports the bounces of users' mail to `bounces`.
    pub fn with_bounce_reports(mut self, bounces: mpsc::Sender<Bounced>) -> Delivery {
        self.bounces = Some(bounces);
        self
    }

    /// Tells the watch that `failed` recipients of `message` bounced; a
    /// report that finds the channel full is dropped (the counts are a
    /// sign, not a ledger, and delivery must not wait for them).
    fn report_bounces(&self, message: &QueuedMessage, failed: u64) {
        if let (Some(bounces), Some(user), true) = (&self.bounces, &message.auth_user, failed > 0) {
            let _ = bounces.try_send(Bounced {
                user: user.clone(),
                failed,
            });
        }
    }

    /// A bounce of a message this server forwarded with an SRS sender goes
    /// to the original sender (the address is one of a hosted domain, with
    /// no mailbox behind it).
    async fn unwrap_srs(&self, bounce: &mut crate::spool::NewMessage) {
        for rcpt in &mut bounce.recipients {
            let Some((local, domain)) = rcpt.address.rsplit_once('@') else {
                continue;
            };
            if !self.store.is_hosted_domain(domain).await.unwrap_or(false) {
                continue;
            }
            if let Some(Ok(original)) = self.srs.reverse(local, now_unix()) {
                rcpt.address = original;
            }
        }
    }

    /// The operator asked for a retry (`postern queue retry`): destinations
    /// taken to be down are tried again too, as Postfix's `postqueue -f`
    /// flushes its dead destinations.
    pub fn retry_destinations(&self) {
        self.destinations.forget_down(|_| true);
    }

    /// Whether `message`'s sender may get one more DSN now; a suppressed one
    /// is logged (`dsn_suppressed`) and counted. Our own authenticated users
    /// always get their bounces: the cap is against backscatter to forged
    /// senders, and theirs are not forged.
    fn dsn_allowed(&self, message: &QueuedMessage) -> DsnAllowance {
        if message.auth_user.is_some() {
            return DsnAllowance::Exempt;
        }
        let now = Instant::now();
        if self.dsn_budget.allow(&message.sender, now) {
            return DsnAllowance::Counted(now);
        }
        tracing::warn!(event = "dsn_suppressed", qid = %message.id, to = %message.sender, limit_per_hour = MAX_DSN_PER_SENDER_PER_HOUR);
        metrics::counter!("postern_dsn_suppressed_total").increment(1);
        DsnAllowance::Suppressed
    }
}

/// What the per-sender DSN cap says about one bounce.
enum DsnAllowance {
    /// Not capped (an authenticated sender's).
    Exempt,
    /// Counted at this moment: refunded if the DSN is not queued after all.
    Counted(Instant),
    Suppressed,
}

/// Runs until `shutdown`, taking fresh messages from `hand_offs`; deliveries
/// run on `tasks` so the server can wait for them.
pub async fn run(
    delivery: Arc<Delivery>,
    mut hand_offs: HandOffs,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    if delivery.config().delivery.hold {
        tracing::warn!(
            event = "hold",
            "[delivery] hold is set: mail is accepted and kept, not delivered"
        );
        return;
    }
    let queue = &delivery.queue;
    tasks.spawn({
        let (delivery, shutdown) = (Arc::clone(&delivery), shutdown.clone());
        async move { delivery.outbound.probe_port25(&shutdown).await }
    });
    let mut port25 = delivery.outbound.port25.subscribe();
    let mut reported_blocked = None;
    // When the next recipient falls due; `None` while nothing is waiting for
    // a time (the queue wakes the loop for everything else).
    let mut look_at: Option<tokio::time::Instant> = None;
    loop {
        let blocked = port25.borrow_and_update().is_some();
        if reported_blocked != Some(blocked) {
            port25::changed(&delivery, reported_blocked, blocked).await;
            reported_blocked = Some(blocked);
        }
        if let Some(at) = queue.take_wake_at() {
            let at = instant_at(at);
            look_at = Some(look_at.map_or(at, |t| t.min(at)));
        }
        let timer = look_at.is_some_and(|t| tokio::time::Instant::now() >= t);
        if timer {
            // Spent: the look happens now, or once there is room.
            look_at = None;
        }
        if let Some(room) = queue.look(timer) {
            // Kept with what the pass says: a wake-up taken before it (after a
            // failure, for recipients due already) is not in the spool's
            // next due time.
            let next = claim_pass(&delivery, &tasks, room).await;
            look_at = [look_at, next].into_iter().flatten().min();
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            Some(new) = hand_offs.recv() => {
                let body = new.body.map(Arc::new);
                tasks.spawn(deliver_message(Arc::clone(&delivery), new.message, body));
            }
            () = queue.woken() => {}
            () = sleep_until(look_at) => {}
            Ok(()) = port25.changed() => {}
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The monotonic instant of unix time `at` (whole seconds).
fn instant_at(at: i64) -> tokio::time::Instant {
    let wait = at.saturating_sub(now_unix()).max(0) as u64;
    tokio::time::Instant::now() + Duration::from_secs(wait)
}

/// Claims what is due in the spool and starts delivering it; returns when the
/// next recipient falls due.
async fn claim_pass(
    delivery: &Arc<Delivery>,
    tasks: &TaskTracker,
    room: usize,
) -> Option<tokio::time::Instant> {
    delivery.outbound.close_idle();
    let now = now_unix();
    let after_failure = || Some(tokio::time::Instant::now() + active::AFTER_FAILURE);
    match delivery.queue.claim_due(now, CLAIM_BATCH.min(room)).await {
        Ok(messages) => {
            for message in messages {
                tasks.spawn(deliver_message(Arc::clone(delivery), message, None));
            }
        }
        Err(e) => {
            tracing::error!(event = "spool_error", error = %e);
            return after_failure();
        }
    }
    match delivery.queue.spool().next_due(now).await {
        Ok(due) => due.map(instant_at),
        Err(e) => {
            tracing::error!(event = "spool_error", error = %e);
            after_failure()
        }
    }
}

/// One delivery round for one message: every destination of its due
/// recipients. `fresh` is the body when the message was handed over new.
async fn deliver_message(
    delivery: Arc<Delivery>,
    message: QueuedMessage,
    fresh: Option<Arc<FreshBody>>,
) {
    // One configuration for the whole round: its routes and its outcome.
    let config = delivery.config();
    let mut claims = RoundClaims {
        queue: delivery.queue.clone(),
        id: message.id.clone(),
        idxs: message.recipients.iter().map(|r| r.idx).collect(),
    };
    let message = Arc::new(message);
    let Groups { groups, unrouted } = groups::group(&delivery, &config, &message).await;
    // Recipients whose MX is tried this round: those a blocked port 25 may
    // turn away, and the fallback relay then takes.
    let mx_bound: Vec<u32> = groups
        .values()
        .filter(|(d, _)| matches!(d, Destination::Mx(_) | Destination::MxPolicyWaived(_)))
        .flat_map(|(_, idxs)| idxs.iter().copied())
        .collect();
    let attempt = message
        .recipients
        .iter()
        .map(|r| r.attempts)
        .max()
        .unwrap_or(0)
        + 1;
    let mut set = JoinSet::new();
    for (key, (destination, idxs)) in groups {
        let (delivery, message, fresh) =
            (Arc::clone(&delivery), Arc::clone(&message), fresh.clone());
        let (path, config) = (destination.path(&config), Arc::clone(&config));
        let span = tracing::info_span!("delivery", qid = %message.id, dest = %key, attempt);
        set.spawn(
            async move {
                // The destination's slot, then its server, and only then a
                // delivery slot: waiting for a server that is slow to answer,
                // or never does, holds up that destination's mail alone.
                let slot = delivery.destinations.enter(&key).await;
                // Boxed, here and below: many deliveries may wait for their
                // destination, and each task is as large as its largest state.
                let reached = match &destination {
                    Destination::Local => {
                        slot.up();
                        None
                    }
                    remote => match Box::pin(slot.reach(&delivery.outbound, remote)).await {
                        Ok(reached) => Some(reached),
                        Err(f) => return idxs.iter().map(|idx| (*idx, Err(f.clone()))).collect(),
                    },
                };
                let global = Arc::clone(&delivery.global).acquire_owned().await;
                // Loaded only once a delivery slot is free: claimed messages
                // waiting for a slot hold no body in memory.
                let body = if delivery.queue.is_withdrawn(&message.id) {
                    // Held or deleted while it waited: the claims go below.
                    Ok(None)
                } else {
                    body_of(&delivery, &message.id, fresh.as_deref()).await
                };
                let results = match body {
                    Ok(Some(body)) => {
                        Box::pin(deliver_group(
                            &delivery, &config, &message, &body, &idxs, reached,
                        ))
                        .await
                    }
                    // Deleted meanwhile: nothing to do, the claims are released below.
                    Ok(None) => {
                        keep(&delivery, reached);
                        Vec::new()
                    }
                    Err(e) => {
                        keep(&delivery, reached);
                        let f = DeliveryFailure::local(format!("cannot read the spool: {e}"));
                        idxs.iter().map(|idx| (*idx, Err(f.clone()))).collect()
                    }
                };
                drop((global, slot));
                let delivered = results.iter().filter(|(_, r)| r.is_ok()).count();
                metrics::counter!("postern_delivered_by_path_total", "path" => path)
                    .increment(delivered as u64);
                results
            }
            .instrument(span),
        );
    }
    let mut results: Vec<RecipientResult> = unrouted;
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(r) => results.extend(r),
            Err(e) => {
                tracing::error!(event = "delivery_task_failed", qid = %message.id, error = %e)
            }
        }
    }
    // The original is needed again only for a DSN.
    let body = if results.iter().any(|(_, r)| r.is_err()) {
        body_of(&delivery, &message.id, fresh.as_deref())
            .await
            .ok()
            .flatten()
            .unwrap_or_default()
    } else {
        Cow::Borrowed(&[][..])
    };
    let detour = delivery.outbound.port25.detouring();
    let detoured: &[u32] = if detour { &mx_bound } else { &[] };
    let mut applied = outcome::apply(&config, &message, &body, &results, now_unix(), detoured);
    let unreachable = FailureKind::Unreachable {
        port: config.delivery.mx_port,
    };
    let waits_for_port25 = !detour
        && applied
            .updates
            .iter()
            .any(|u| u.kind == Some(unreachable) && mx_bound.contains(&u.idx));
    if let Some(bounce) = &mut applied.bounce {
        delivery.unwrap_srs(bounce).await;
    }
    let (bounce, counted) = match applied.bounce.map(|b| (b, delivery.dsn_allowed(&message))) {
        Some((b, DsnAllowance::Counted(at))) => (Some((QueueId::generate(), b)), Some(at)),
        Some((b, DsnAllowance::Exempt)) => (Some((QueueId::generate(), b)), None),
        _ => (None, None),
    };
    let dsn = bounce.as_ref().map(|(id, _)| id.clone());
    let failed = applied
        .updates
        .iter()
        .filter(|u| u.status == RecipientStatus::Failed)
        .count() as u64;
    let recorded: Vec<u32> = applied.updates.iter().map(|u| u.idx).collect();
    let written = delivery
        .queue
        .record(&message.id, applied.updates, bounce)
        .await;
    // Only now: `record` gives up their claims when it returns, written or
    // not, and a round that ends inside it (a panic, a cancel) leaves them
    // to the guard.
    claims.recorded(recorded);
    match written {
        Ok(()) => {
            if let Some(dsn) = dsn {
                tracing::info!(event = "dsn_queued", qid = %message.id, dsn = %dsn);
            }
            delivery.report_bounces(&message, failed);
            // Deferred for port 25 just before the block was noticed, and
            // written after `port25::changed` made such mail due: due now
            // all the same.
            if waits_for_port25
                && delivery.outbound.port25.detouring()
                && delivery
                    .queue
                    .spool()
                    .retry_kind(&unreachable.token(), Some(&message.id))
                    .await
                    .is_ok()
            {
                delivery.queue.changed();
            }
        }
        Err(e) => {
            tracing::error!(event = "spool_error", qid = %message.id, error = %e);
            // The failure is bounced again on the retry: this one did not count.
            if let Some(at) = counted {
                delivery.dsn_budget.refund(&message.sender, at);
            }
        }
    }
    // Recipients without a result (a delivery task that failed, a message
    // deleted meanwhile) are released as `claims` goes: due again.
}

/// A round's claims on its message's recipients. Those it has not recorded
/// are released when the round ends, however it ends (a panic included):
/// due again, not claimed until a restart.
struct RoundClaims {
    queue: ActiveQueue,
    id: QueueId,
    idxs: Vec<u32>,
}

impl RoundClaims {
    /// `record` gives up these recipients' claims, written or not: once it
    /// has, the next round may claim them (due now for the fallback relay,
    /// or made due by `retry_kind`), and they are that round's to release,
    /// not this one's (releasing them let a recipient be delivered twice).
    fn recorded(&mut self, idxs: impl IntoIterator<Item = u32>) {
        let recorded: std::collections::HashSet<u32> = idxs.into_iter().collect();
        self.idxs.retain(|idx| !recorded.contains(idx));
    }
}

impl Drop for RoundClaims {
    fn drop(&mut self) {
        if !self.idxs.is_empty() {
            self.queue.release(&self.id, self.idxs.drain(..));
        }
    }
}

/// Gives back the connection of a delivery that does not happen after all.
fn keep(delivery: &Delivery, reached: Option<Reached>) {
    if let Some(reached) = reached {
        delivery.outbound.keep(reached);
    }
}

/// The body handed over with a fresh message, else the one in the spool
/// (`None` if the message was deleted meanwhile).
async fn body_of<'a>(
    delivery: &Delivery,
    id: &QueueId,
    fresh: Option<&'a FreshBody>,
) -> Result<Option<Cow<'a, [u8]>>, SpoolError> {
    match fresh {
        Some(body) => Ok(Some(Cow::Borrowed(&body[..]))),
        None => Ok(delivery.queue.spool().body(id).await?.map(Cow::Owned)),
    }
}

/// Delivers the recipients `idxs` of `message`: over `reached`, or to local
/// mailboxes when there is no remote destination to reach.
async fn deliver_group(
    delivery: &Delivery,
    config: &Config,
    message: &QueuedMessage,
    body: &[u8],
    idxs: &[u32],
    reached: Option<Reached>,
) -> Vec<RecipientResult> {
    let recipients: Vec<&QueuedRecipient> = message
        .recipients
        .iter()
        .filter(|r| idxs.contains(&r.idx))
        .collect();
    let env = Envelope {
        sender: &message.sender,
        recipients: recipients
            .iter()
            .map(|r| Rcpt {
                idx: r.idx,
                address: &r.address,
                orcpt: r.orcpt.as_deref(),
                notify: r.notify.as_deref(),
            })
            .collect(),
        body,
        smtputf8: message.smtputf8,
        requiretls: message.requiretls,
        ret: message.dsn.ret.as_deref(),
        envid: message.dsn.envid.as_deref(),
    };
    match reached {
        Some(reached) => delivery.outbound.deliver(reached, &env).await,
        None => local::deliver(&delivery.store, config, &env).await,
    }
}

#[cfg(test)]
mod tests;
