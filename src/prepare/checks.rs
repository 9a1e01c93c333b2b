//! Mail from other servers (and, when asked, what users submit) before it is
//! queued: who really sent it (`dmarc`) and whether it is spam (`filter`),
//! checked on the message as it came; what they add on top, and the body as
//! they leave it.

use super::{Origin, ReceivedBody, replaced};
use crate::config::ListenerRole;
use crate::context::ServerContext;
use crate::dmarc::Outcome;
use crate::policy::sender::Sender;
use crate::smtp::headers::{HeaderFacts, SenderHeader};
use crate::smtp::reply::Reply;
use crate::spool::NewRecipient;

/// How long the sender checks of one message may take (DNS lookups for SPF,
/// each DKIM key and DMARC) before the client is asked to try again.
const CHECKS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Mail that neither a user nor a local program submitted, nor a client in
/// `trusted_networks` relayed: what the sender checks (`dmarc`) and the
/// spam filter are for.
fn from_outside(origin: &Origin<'_>) -> bool {
    origin.role == ListenerRole::Mta && origin.identity.is_none() && !origin.trusted_network
}

/// The fields the sender checks and the spam filter put on top of a message
/// (after the Junk mark when either puts it aside, and the ARC set when
/// `forwarding_domain` forwards it), and its body as they leave it (without
/// forged results, with the Subject: the filter rewrote); or the refusal one
/// of them calls for. A spilled body is read back for them, a few at a
/// time, as for `reencoded`.
pub(super) async fn checked(
    ctx: &ServerContext,
    origin: &Origin<'_>,
    envelope: (&str, &[NewRecipient]),
    facts: &HeaderFacts,
    forwarding_domain: Option<&str>,
    body: ReceivedBody,
) -> Result<(Vec<u8>, ReceivedBody), Reply> {
    let (sender, recipients) = envelope;
    let outside = from_outside(origin);
    let check_sender = outside && ctx.checks.enabled();
    let config = ctx.config();
    let rspamd = config
        .rspamd
        .as_ref()
        .filter(|r| outside || (r.outgoing && origin.identity.is_some()));
    if !check_sender && rspamd.is_none() {
        return Ok((Vec::new(), body));
    }
    let refused = |reply: Reply| {
        tracing::info!(event = "rejected", reply = %reply);
        reply
    };
    let write_error = |e: std::io::Error| {
        tracing::error!(event = "spool_failed", error = %e);
        Reply::queue_write_error()
    };
    // The turn is for the reading only: the checks wait on DNS and rspamd,
    // and must not hold up the rewriting of submitted mail meanwhile.
    let whole = match &body.file {
        Some(file) => {
            let _turn = ctx
                .rewrites
                .acquire()
                .await
                .map_err(|e| write_error(std::io::Error::other(e)))?;
            Some(file.read_all().await.map_err(write_error)?)
        }
        None => None,
    };
    let text = whole.as_deref().unwrap_or(&body.head);
    let helo = origin.greeting.map_or("", |(name, _)| name);
    let (mut fields, mut junk, mut changed) = (Vec::new(), false, None);
    let mut seal = Vec::new();
    if check_sender {
        // RFC 5322 §3.6: one From: field. Readers disagree on which of
        // several to show, and a forger counts on it.
        if ctx.checks.enforcing() && facts.fields(SenderHeader::From).count() > 1 {
            return Err(refused(Reply::new(
                550,
                (7, 1),
                "Message rejected: it has more than one From: field",
            )));
        }
        let arrival = crate::dmarc::Arrival {
            client_ip: origin.client_ip,
            helo,
            sender,
            message: text,
            store: &ctx.store,
            seal_as: forwarding_domain.map(|domain| (&*ctx.dkim, domain)),
        };
        // Many signatures whose keys never come must not hold the client
        // (or this message's memory) for long.
        let checked = tokio::time::timeout(CHECKS_TIMEOUT, ctx.checks.check(&arrival))
            .await
            .unwrap_or_else(|_| {
                Outcome::Refuse(Reply::new(
                    451,
                    (4, 3),
                    "The sender checks took too long; try again later",
                ))
            });
        match checked {
            Outcome::Refuse(reply) => return Err(refused(reply)),
            Outcome::Accept {
                field,
                junk: quarantine,
                seal: arc_set,
            } => {
                fields = field;
                junk = quarantine;
                seal = arc_set;
            }
        }
        changed = crate::dmarc::without_our_results(text, ctx.checks.authserv_id());
    }
    if let Some(rspamd) = rspamd {
        let recipients: Vec<String> = recipients.iter().map(|r| r.address.clone()).collect();
        let envelope = crate::filter::Envelope {
            client_ip: origin.client_ip,
            helo,
            sender,
            recipients: &recipients,
            user: origin.identity.as_ref().map(Sender::name),
        };
        match crate::filter::scan(rspamd, &envelope, text).await {
            crate::filter::Verdict::Refuse(reply) => return Err(refused(reply)),
            crate::filter::Verdict::Accept(status) => fields.extend(status),
            // A user's own mail is not filed away: it is logged, for the
            // host to look into.
            crate::filter::Verdict::Junk { fields: status, .. } if !outside => {
                let user = origin.identity.as_ref().map(Sender::name);
                tracing::warn!(event = "outgoing_spam", user);
                fields.extend(status);
            }
            crate::filter::Verdict::Junk {
                fields: status,
                subject,
            } => {
                fields.extend(status);
                junk = true;
                if let Some(subject) = subject {
                    let current = changed.as_deref().unwrap_or(text);
                    changed = Some(crate::filter::with_subject(current, &subject));
                    // The seal signed the Subject: as it came.
                    seal.clear();
                }
            }
        }
    }
    let mark: &[u8] = if junk { crate::dmarc::JUNK_MARK } else { b"" };
    let fields = [mark, &seal, &fields].concat();
    let body = match changed {
        None => body,
        Some(new) => replaced(ctx, body.file.is_some(), new, body.long_lines)
            .await
            .map_err(write_error)?,
    };
    Ok((fields, body))
}
