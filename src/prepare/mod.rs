//! The one place where an accepted transaction becomes a queued message
//! (Postfix's "cleanup"). `prepare` checks the header section (hop count and,
//! for an authenticated user, the sender headers: `policy` decides), checks
//! who sent mail from other servers and whether it is spam (`dmarc`,
//! `filter`), makes submitted text 7-bit (`smtp::reencode`), expands aliases
//! (`aliases`, with SRS for forwards), and puts the trace headers on top:
//! Received:, and for submitted mail Date: and Message-ID: when the client
//! left them out (RFC 6409 §8), and signs submitted mail with its domain's
//! DKIM keys (`dkim`). The session hands it the envelope and the body as
//! received, and gets back the message for the spool, or the reply that
//! refuses it.

mod aliases;
mod checks;
mod trace;

use checks::checked;
pub use trace::{Arrival, trace_headers};

use std::net::IpAddr;

use crate::clock::now_unix;
use crate::config::ListenerRole;
use crate::context::ServerContext;
use crate::policy::Verdict;
use crate::policy::limits::check_hop_count;
use crate::policy::sender::{Sender, check_sender_headers};
use crate::smtp::headers::{HeaderFacts, SenderHeader, header_section, header_section_ends};
use crate::smtp::reencode::reencode_to_7bit;
use crate::smtp::reply::Reply;
use crate::spool::{DsnEnvelope, NewMessage, NewRecipient, QueueId, SpillFile};

/// Bodies larger than this go to disk while they arrive (256 KiB: a header
/// section is far smaller, and most mail fits); the first `SPILL_AT` octets
/// stay in memory too, for the checks here.
pub const SPILL_AT: usize = 256 * 1024;

/// A whole body as received.
pub struct ReceivedBody {
    /// The whole body, or its first `SPILL_AT` octets when it is on disk.
    pub head: Vec<u8>,
    /// The whole body on disk (durable), for a large one.
    pub file: Option<SpillFile>,
    /// A line is longer than RFC 5322 allows (998 octets).
    pub long_lines: bool,
}

/// How a transaction arrived: what Received: records and the checks ask.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    pub role: ListenerRole,
    pub client_ip: IpAddr,
    /// The client is in `trusted_networks`, as its session decided when it
    /// connected (a reload since does not change that session's answer).
    pub trusted_network: bool,
    /// The name EHLO or HELO gave, and whether it was EHLO.
    pub greeting: Option<(&'a str, bool)>,
    /// TLS version and cipher suite, when the session is encrypted.
    pub tls: Option<(&'a str, &'a str)>,
    /// Who proved who they are: the authenticated account, or the local
    /// Unix user of `postern sendmail` (then `client_ip` and `greeting` say
    /// nothing: Received: names the user's id instead).
    pub identity: Option<Sender<'a>>,
}

impl Origin<'_> {
    /// RFC 3848: SMTP, ESMTP, ESMTPS, ESMTPA or ESMTPSA.
    pub fn protocol(&self) -> &'static str {
        let extended = self.greeting.is_some_and(|(_, extended)| extended);
        match (extended, self.tls.is_some(), self.identity.is_some()) {
            (false, _, _) => "SMTP",
            (true, false, false) => "ESMTP",
            (true, true, false) => "ESMTPS",
            (true, false, true) => "ESMTPA",
            (true, true, true) => "ESMTPSA",
        }
    }

    /// Submitted mail (RFC 6409) rather than mail relayed by another server.
    fn submission(&self) -> bool {
        self.role != ListenerRole::Mta || self.identity.is_some()
    }
}

/// An accepted transaction: its envelope and its body as received.
pub struct Accepted {
    /// The reverse-path; empty for the null sender.
    pub sender: String,
    pub recipients: Vec<NewRecipient>,
    pub dsn: DsnEnvelope,
    pub smtputf8: bool,
    /// RFC 8689 REQUIRETLS was asked for.
    pub requiretls: bool,
    pub body: ReceivedBody,
}

/// A message ready for the spool.
pub struct Prepared {
    pub queue_id: QueueId,
    /// `body` is the whole message, or only the headers put on top of a
    /// spilled body (`spilled`).
    pub message: NewMessage,
    /// The received body on disk, for a large message.
    pub spilled: Option<SpillFile>,
}

impl Prepared {
    /// The stored message's size in octets.
    pub fn size(&self) -> u64 {
        self.message.body.len() as u64 + self.spilled.as_ref().map_or(0, SpillFile::len)
    }
}

/// Turns an accepted transaction into a message for the spool, or refuses it
/// with the reply to give (a refusal is logged here). Cancel safe: a body
/// re-encoded to disk is removed with its `SpillFile` when dropped.
pub async fn prepare(
    ctx: &ServerContext,
    origin: &Origin<'_>,
    accepted: Accepted,
) -> Result<Prepared, Reply> {
    let Accepted {
        sender,
        recipients,
        mut dsn,
        smtputf8,
        requiretls,
        body,
    } = accepted;
    // The checks read the header section from the part of the body held in
    // memory: a spilled body's section must end there.
    if body.file.is_some() && !header_section_ends(&body.head) {
        return Err(Reply::new(
            552,
            (3, 4),
            format!("Message header section exceeds {SPILL_AT} octets"),
        ));
    }
    let facts = HeaderFacts::scan(header_section(&body.head));
    let verdict = match (check_hop_count(facts.received), &origin.identity) {
        (Verdict::Accept, Some(sender)) => check_sender_headers(sender, &facts),
        (verdict, _) => verdict,
    };
    if let Verdict::Reject(reply) = verdict {
        tracing::info!(event = "rejected", reply = %reply);
        return Err(reply);
    }
    let expanded = aliases::expand(&ctx.store, &recipients, &facts.delivered_to).await?;
    // Mail from other servers: who really sent it, and whether it is spam
    // (and, when asked, what users send), checked on the message as it
    // came; results this server did not write are removed. What an alias
    // forwards is sealed (ARC) in the forwarding domain's name.
    let forwarding_domain = expanded
        .forwarded
        .first()
        .and_then(|alias| alias.rsplit_once('@'))
        .map(|(_, domain)| domain);
    let envelope = (sender.as_str(), recipients.as_slice());
    let (results, body) = checked(ctx, origin, envelope, &facts, forwarding_domain, body).await?;
    // The one point where a submitted message's text may change: after the
    // header checks, before anything adds headers or signs. Text parts that
    // are not 7-bit (lines over 998 octets, 8-bit octets) become
    // quoted-printable, so that the signature holds on to any server,
    // 8BITMIME or not; mail from other servers is kept byte for byte. A
    // spilled body may hold 8-bit text past what is in memory: it is read.
    let rewrite = body.long_lines || body.file.is_some() || !body.head.is_ascii();
    let body = match (&origin.identity, rewrite) {
        (Some(_), true) => reencoded(ctx, body).await.map_err(|e| {
            tracing::error!(event = "spool_failed", error = %e);
            Reply::queue_write_error()
        })?,
        _ => body,
    };
    // No backscatter: anonymous mail from another server to an alias that
    // forwards elsewhere is often spam with a forged sender; should the
    // forward fail for good, the bounce to that sender (and any the next hop
    // makes) carries the headers only.
    if !expanded.forwarded.is_empty()
        && origin.role == ListenerRole::Mta
        && origin.identity.is_none()
    {
        dsn.ret = Some("HDRS".to_string());
    }
    let sender = forwarding_sender(ctx, sender, &expanded.forwarded).await;
    let queue_id = QueueId::generate();
    let arrival = Arrival {
        helo: origin.greeting.map_or("unknown", |(name, _)| name),
        client_ip: origin.client_ip,
        hostname: &ctx.config().hostname,
        protocol: origin.protocol(),
        tls: origin.tls,
        queue_id: &queue_id,
        single_recipient: match recipients.as_slice() {
            [only] => Some(only.address.as_str()),
            _ => None,
        },
        submission: origin.submission(),
        delivered_to: &expanded.forwarded,
        local_uid: match origin.identity {
            Some(Sender::Local { uid, .. }) => Some(uid),
            _ => None,
        },
    };
    let trace = [results, trace_headers(&arrival, &body.head)].concat();
    let (trace, body) = match signing_domain(origin, &facts) {
        Some(domain) => signed(ctx, domain, trace, body).await.map_err(|e| {
            tracing::error!(event = "spool_failed", error = %e);
            Reply::queue_write_error()
        })?,
        None => (trace, body),
    };
    // A body held in memory is stored after the new headers, in one piece (the
    // received copy goes at once); a spilled one stays where it is, and only
    // the new headers go with the envelope.
    let (stored, spilled) = match body.file {
        None => ([trace, body.head].concat(), None),
        Some(file) => (trace, Some(file)),
    };
    Ok(Prepared {
        queue_id,
        message: NewMessage {
            sender,
            dsn,
            recipients: expanded.recipients,
            auth_user: origin.identity.map(|s| s.name().to_string()),
            smtputf8,
            requiretls,
            // RFC 8689 §3: REQUIRETLS wins over the header.
            tls_policy_waived: facts.tls_required_no && !requiretls,
            held: false,
            body: stored.into(),
        },
        spilled,
    })
}

/// The body with its text parts made 7-bit (unchanged when all are). A spilled body is read back for it, a few at a time
/// (`ServerContext::rewrites`: the whole message and its new form are in
/// memory meanwhile), and the new form goes back to disk in a new spill.
async fn reencoded(ctx: &ServerContext, received: ReceivedBody) -> std::io::Result<ReceivedBody> {
    let Some(file) = &received.file else {
        return Ok(match reencode_to_7bit(&received.head) {
            Some(head) => ReceivedBody {
                head,
                file: None,
                long_lines: false,
            },
            None => received,
        });
    };
    let _turn = ctx
        .rewrites
        .acquire()
        .await
        .map_err(std::io::Error::other)?;
    let Some(new) = reencode_to_7bit(&file.read_all().await?) else {
        return Ok(received);
    };
    // The received form's file goes with `received`.
    replaced(ctx, true, new, false).await
}

/// A body that replaces one received: in memory, or on disk in a new spill
/// when the received one was spilled.
pub(super) async fn replaced(
    ctx: &ServerContext,
    spilled: bool,
    new: Vec<u8>,
    long_lines: bool,
) -> std::io::Result<ReceivedBody> {
    if !spilled {
        return Ok(ReceivedBody {
            head: new,
            file: None,
            long_lines,
        });
    }
    let head = new[..SPILL_AT.min(new.len())].to_vec();
    let mut spill = ctx.queue.spool().spill().await?;
    spill.write(new).await?;
    spill.finish().await?;
    Ok(ReceivedBody {
        head,
        file: Some(spill),
        long_lines,
    })
}

/// The envelope sender of a message an alias forwards to another domain:
/// an SRS address of the alias's domain (`srs`) when the sender's own domain
/// is not hosted here, so that the next server's SPF check asks about a
/// domain whose mail this server may send. Kept for bounces, and for
/// senders of hosted domains.
async fn forwarding_sender(ctx: &ServerContext, sender: String, forwarded: &[String]) -> String {
    let Some((_, alias_domain)) = forwarded.first().and_then(|a| a.rsplit_once('@')) else {
        return sender;
    };
    let Some((_, sender_domain)) = sender.rsplit_once('@') else {
        return sender;
    };
    if ctx
        .store
        .is_hosted_domain(sender_domain)
        .await
        .unwrap_or(true)
    {
        return sender;
    }
    match ctx.srs.forward(&sender, alias_domain, now_unix()) {
        Some(rewritten) => {
            tracing::info!(event = "srs_rewritten", from = %sender, to = %rewritten);
            rewritten
        }
        None => sender,
    }
}

/// The domain in the message's From:, lower-cased, when it is a plain host
/// name (it may name a key file).
fn from_domain(facts: &HeaderFacts) -> Option<String> {
    let from = facts.fields(SenderHeader::From).next()?;
    let mailbox = from.mailboxes.as_ref().ok()?.first()?;
    let domain = mailbox
        .address
        .rsplit_once('@')?
        .1
        .trim_end_matches('.')
        .to_ascii_lowercase();
    // It names a key file: a host name, nothing that could leave the directory.
    let host_name = !domain.is_empty()
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    host_name.then_some(domain)
}

/// The domain whose DKIM keys sign the message: the one in its From: (DMARC
/// aligns with it), for mail a user or a local program submitted. The
/// sender checks made sure that the submitter may use it; mail relayed from
/// other servers keeps what its own domain signed.
fn signing_domain(origin: &Origin<'_>, facts: &HeaderFacts) -> Option<String> {
    origin.identity?;
    from_domain(facts)
}

/// `trace` with the DKIM-Signature fields of `domain` put on top (none when
/// the domain has no key), signed over the whole message as it will be
/// stored. A spilled body is read back for it, a few at a time, as for
/// `reencoded`; hashing and signing run on a blocking thread.
async fn signed(
    ctx: &ServerContext,
    domain: String,
    trace: Vec<u8>,
    body: ReceivedBody,
) -> std::io::Result<(Vec<u8>, ReceivedBody)> {
    let signer = std::sync::Arc::clone(&ctx.dkim);
    let (_turn, whole) = match &body.file {
        Some(file) => {
            let turn = ctx
                .rewrites
                .acquire()
                .await
                .map_err(std::io::Error::other)?;
            (Some(turn), Some(file.read_all().await?))
        }
        None => (None, None),
    };
    let (fields, trace, body) = tokio::task::spawn_blocking(move || {
        let text = whole.as_deref().unwrap_or(&body.head);
        let fields = signer.sign(&domain, &[&trace, text]);
        (fields, trace, body)
    })
    .await
    .map_err(std::io::Error::other)?;
    Ok(([fields, trace].concat(), body))
}
