//! DATA and BDAT (RFC 5321 §4.1.1.4, RFC 3030), and the end of a transaction:
//! the body is checked, prepared and made durable before the 250.

use std::collections::HashSet;

use super::incoming::{IncomingBody, ReceivedBody, SPILL_AT, Unreceived};
use super::io::{BodyPace, SessionEnd};
use super::{Flow, Session};
use crate::config::Limits;
use crate::config::ListenerRole;
use crate::context::ServerContext;
use crate::policy::Verdict;
use crate::policy::limits::check_hop_count;
use crate::policy::sender::check_sender_headers;
use crate::prepare::headers::{HeaderFacts, header_section, header_section_ends};
use crate::prepare::reencode::reencode_long_lines;
use crate::prepare::{self, Arrival};
use crate::smtp::data::{BodyReader, BodyViolation};
use crate::smtp::reply::Reply;
use crate::spool::{
    DsnEnvelope, NewMessage, NewRecipient, QueueId, SpillFile, SpoolError, WriteError,
};
use crate::store::{MAX_ALIAS_EXPANSION, StoreError};

impl Session {
    fn check_body_start(&self) -> Result<(), Reply> {
        match &self.tx {
            None => Err(Reply::bad_sequence("Error: need MAIL command")),
            Some(tx) if tx.recipients.is_empty() => {
                Err(Reply::new(554, (5, 1), "Error: no valid recipients"))
            }
            Some(_) => Ok(()),
        }
    }

    pub(super) async fn data(&mut self) -> Result<Flow, SessionEnd> {
        if let Err(reply) = self.check_body_start() {
            return Ok(self.reply(reply));
        }
        if self.tx.as_ref().is_some_and(|tx| tx.chunks.is_some()) {
            return Ok(self.reply(Reply::bad_sequence("Error: DATA after BDAT")));
        }
        self.conn
            .queue(&Reply::plain(354, "End data with <CR><LF>.<CR><LF>"));
        let limits = &self.ctx.config.limits;
        let reader = BodyReader::data(
            limits.max_message_size,
            limits.max_text_line,
            self.ctx.config.bare_newlines,
        );
        let mut body = IncomingBody::new(reader, self.ctx.spool.clone());
        let mut pace = BodyPace::new(limits.data_timeout);
        self.conn.read_data(&mut body, &mut pace).await?;
        Ok(self.finish_body(body).await)
    }

    pub(super) async fn bdat(&mut self, size: usize, last: bool) -> Result<Flow, SessionEnd> {
        let data_timeout = self.ctx.config.limits.data_timeout;
        if let Err(reply) = self.check_body_start() {
            let mut pace = BodyPace::new(data_timeout);
            self.conn.read_chunk(size, None, &mut pace).await?;
            return Ok(self.reply(reply));
        }
        let (max, line, bare) = {
            let c = &self.ctx.config;
            (
                c.limits.max_message_size,
                c.limits.max_text_line,
                c.bare_newlines,
            )
        };
        let spool = self.ctx.spool.clone();
        let Some(tx) = &mut self.tx else {
            return Ok(Flow::Continue);
        };
        let (body, pace) = tx.chunks.get_or_insert_with(|| {
            (
                IncomingBody::new(BodyReader::bdat(max, line, bare), spool),
                BodyPace::new(data_timeout),
            )
        });
        self.conn.read_chunk(size, Some(body), pace).await?;
        if !last {
            return Ok(self.reply(Reply::new(250, (0, 0), format!("{size} octets received"))));
        }
        let body = self.tx.as_mut().and_then(|tx| tx.chunks.take());
        match body {
            Some((body, _)) => Ok(self.finish_body(body).await),
            None => Ok(Flow::Continue),
        }
    }

    /// Ends the transaction: refuses a bad body, else prepares and spools it.
    async fn finish_body(&mut self, body: IncomingBody) -> Flow {
        let Some(tx) = self.tx.take() else {
            return Flow::Continue;
        };
        let received = match body.finish().await {
            Ok(received) => received,
            Err(Unreceived::Violation(violation)) => {
                return self.reply(violation_reply(violation, &self.ctx.config.limits));
            }
            Err(Unreceived::Storage(e)) => {
                tracing::error!(event = "spool_failed", error = %e);
                return self.reply(storage_reply(&WriteError::of_io(&e)));
            }
        };
        // The checks read the header section from the part of the body held
        // in memory: a spilled body's section must end there.
        if received.file.is_some() && !header_section_ends(&received.head) {
            return self.reply(Reply::new(
                552,
                (3, 4),
                format!("Message header section exceeds {SPILL_AT} octets"),
            ));
        }
        let facts = HeaderFacts::scan(header_section(&received.head));
        let verdict = match (check_hop_count(facts.received), &self.identity) {
            (Verdict::Accept, Some(user)) => check_sender_headers(user, &facts),
            (verdict, _) => verdict,
        };
        if let Verdict::Reject(reply) = verdict {
            tracing::info!(event = "rejected", reply = %reply);
            return self.reply(reply);
        }
        // The one point where a submitted message's text may change: after the
        // header checks, before anything adds headers or signs. Text parts with
        // lines over 998 octets become quoted-printable; mail from other
        // servers is kept byte for byte.
        let received = match (&self.identity, received.long_lines) {
            (Some(_), true) => match reencoded(&self.ctx, received).await {
                Ok(received) => received,
                Err(e) => {
                    tracing::error!(event = "spool_failed", error = %e);
                    return self.reply(Reply::queue_write_error());
                }
            },
            _ => received,
        };
        let expanded = match self
            .expand_aliases(&tx.recipients, &facts.delivered_to)
            .await
        {
            Ok(e) => e,
            Err(reply) => return self.reply(reply),
        };
        let queue_id = QueueId::generate();
        let protocol = match (
            self.greeting.as_ref().is_some_and(|g| g.extended),
            self.tls.is_some(),
            self.identity.is_some(),
        ) {
            (false, _, _) => "SMTP",
            (true, false, false) => "ESMTP",
            (true, true, false) => "ESMTPS",
            (true, false, true) => "ESMTPA",
            (true, true, true) => "ESMTPSA",
        };
        let helo = self
            .greeting
            .as_ref()
            .map(|g| g.name.as_str())
            .unwrap_or("unknown");
        let arrival = Arrival {
            helo,
            client_ip: self.peer.ip(),
            hostname: &self.ctx.config.hostname,
            protocol,
            tls: self
                .tls
                .as_ref()
                .map(|t| (t.version.as_str(), t.cipher.as_str())),
            queue_id: &queue_id,
            single_recipient: match tx.recipients.as_slice() {
                [only] => Some(only.address.as_str()),
                _ => None,
            },
            submission: self.role != ListenerRole::Mta || self.identity.is_some(),
            delivered_to: &expanded.forwarded,
        };
        let trace = prepare::trace_headers(&arrival, &received.head);
        // A body held in memory is stored after the new headers, in one piece
        // (the received copy goes at once); a spilled one stays where it is,
        // and only the new headers go with the envelope.
        let (stored, file) = match received.file {
            None => ([trace, received.head].concat(), None),
            Some(file) => (trace, Some(file)),
        };
        let sender = tx.sender_text();
        let message = NewMessage {
            sender: sender.clone(),
            dsn: expanded.dsn(tx.dsn),
            recipients: expanded.recipients,
            auth_user: self.identity.clone(),
            smtputf8: tx.smtputf8,
            body: stored.into(),
        };
        let size = message.body.len() as u64 + file.as_ref().map_or(0, SpillFile::len);
        let rcpt_count = message.recipients.len();
        let queue = &self.ctx.queue;
        let queued = match file {
            None => queue.put(queue_id.clone(), message).await,
            Some(file) => queue.put_spilled(queue_id.clone(), message, file).await,
        };
        match queued {
            Ok(()) => {
                tracing::Span::current().record("qid", tracing::field::display(&queue_id));
                tracing::info!(event = "queued", qid = %queue_id, from = %sender, rcpts = rcpt_count, size);
                metrics::counter!("postern_messages_queued_total", "port" => self.local.port().to_string()).increment(1);
                self.reply(Reply::new(250, (0, 0), format!("Ok: queued as {queue_id}")))
            }
            Err(e) => {
                tracing::error!(event = "spool_failed", qid = %queue_id, error = %e);
                self.reply(match &e {
                    SpoolError::Write(w) => storage_reply(w),
                    _ => Reply::queue_write_error(),
                })
            }
        }
    }
}

/// The body with its over-long text lines re-encoded (unchanged when none is
/// in a text part). A spilled body is read back for it, a few at a time
/// (`ServerContext::rewrites`: the whole message and its new form are in
/// memory meanwhile), and the new form goes back to disk in a new spill.
async fn reencoded(ctx: &ServerContext, received: ReceivedBody) -> std::io::Result<ReceivedBody> {
    let Some(file) = &received.file else {
        return Ok(match reencode_long_lines(&received.head) {
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
    let Some(new) = reencode_long_lines(&file.read_all().await?) else {
        return Ok(received);
    };
    let head = new[..SPILL_AT.min(new.len())].to_vec();
    let mut spill = ctx.spool.spill().await?;
    spill.write(new).await?;
    spill.finish().await?;
    // The received form's file goes with `received`.
    Ok(ReceivedBody {
        head,
        file: Some(spill),
        long_lines: false,
    })
}

/// The answer to a message the spool could not take.
fn storage_reply(e: &WriteError) -> Reply {
    match e {
        WriteError::Full => Reply::insufficient_storage(),
        _ => Reply::queue_write_error(),
    }
}

/// The recipients of a transaction after alias expansion.
struct Expanded {
    recipients: Vec<NewRecipient>,
    /// Recipients that are aliases forwarding (at least in part) to other
    /// domains, canonical: the stored message gets a `Delivered-To:` for each.
    /// All recipients share one stored copy (one commit behind one 250), so
    /// every copy, local ones included, carries every mark: a Bcc'd alias is
    /// then visible in the others' copies, a smaller harm than a loop.
    forwarded: Vec<String>,
    /// The DSN of a failed forward returns the headers only (see `dsn`).
    headers_only: bool,
}

impl Expanded {
    /// The message's DSN parameters, with RET=HDRS forced where asked: this
    /// is where the queued message gets it.
    fn dsn(&self, mut dsn: DsnEnvelope) -> DsnEnvelope {
        if self.headers_only {
            dsn.ret = Some("HDRS".to_string());
        }
        dsn
    }
}

impl Session {
    /// Replaces recipients that are aliases by their targets (Postfix's virtual
    /// alias step, done before queueing so each target has its own delivery
    /// state); the original address is kept as ORCPT for DSNs. A recipient
    /// reached twice (named twice, or through two aliases) is kept once. An
    /// alias the message's `Delivered-To:` fields (`marks`) already name is a
    /// forwarding loop: the message came back, and is refused.
    async fn expand_aliases(
        &self,
        recipients: &[NewRecipient],
        marks: &[String],
    ) -> Result<Expanded, Reply> {
        let mut out = Expanded {
            recipients: Vec::with_capacity(recipients.len()),
            forwarded: Vec::new(),
            headers_only: false,
        };
        let mut seen = HashSet::new();
        for r in recipients {
            let targets = match self.ctx.store.expand(&r.address).await {
                Ok(t) => t,
                Err(StoreError::AliasTooLarge(alias)) => {
                    tracing::error!(event = "alias_too_large", rcpt = %alias, limit = MAX_ALIAS_EXPANSION);
                    // Postfix defers too: the administrator can mend the alias.
                    return Err(Reply::new(
                        451,
                        (3, 0),
                        format!(
                            "<{alias}>: alias expands to more than {MAX_ALIAS_EXPANSION} addresses; try again later"
                        ),
                    ));
                }
                Err(e) => {
                    tracing::error!(event = "store_error", error = %e);
                    return Err(Reply::local_error());
                }
            };
            let key = r.address.to_lowercase();
            if let [only] = targets.as_slice()
                && only.address.to_lowercase() == key
            {
                // No alias: the recipient keeps its own spelling.
                if seen.insert(only.address.clone()) {
                    out.recipients.push(r.clone());
                }
                continue;
            }
            // An alias is in a hosted domain, where the key is the lower case.
            if marks.contains(&key) {
                tracing::info!(event = "rejected", rcpt = %r.address, reason = "forwarding loop");
                return Err(Reply::new(
                    554,
                    (4, 6),
                    format!("mail forwarding loop for <{}>", r.address),
                ));
            }
            if targets.iter().any(|t| !t.hosted) {
                out.forwarded.push(key);
            }
            let orcpt = r
                .orcpt
                .clone()
                .or_else(|| Some(format!("rfc822;{}", r.address)));
            for target in targets {
                if seen.insert(target.address.clone()) {
                    out.recipients.push(NewRecipient {
                        address: target.address,
                        orcpt: orcpt.clone(),
                        notify: r.notify.clone(),
                    });
                }
            }
        }
        // No backscatter: anonymous mail from another server to an alias
        // that forwards elsewhere is often spam with a forged sender; should
        // the forward fail for good, the bounce to that sender (and any the
        // next hop makes) carries the headers only.
        out.headers_only =
            !out.forwarded.is_empty() && self.role == ListenerRole::Mta && self.identity.is_none();
        Ok(out)
    }
}

fn violation_reply(v: BodyViolation, limits: &Limits) -> Reply {
    match v {
        BodyViolation::TooBig => Reply::new(
            552,
            (3, 4),
            format!(
                "Message size exceeds fixed limit of {} octets",
                limits.max_message_size
            ),
        ),
        BodyViolation::LineTooLong => Reply::new(
            550,
            (6, 0),
            format!(
                "Message rejected: a line is longer than {} octets",
                limits.max_text_line
            ),
        ),
        BodyViolation::BareLf => Reply::new(
            550,
            (6, 0),
            "Message rejected: bare <LF> in message; lines must end with <CR><LF> (RFC 5321 §2.3.8)",
        ),
        BodyViolation::BareCr => Reply::new(
            550,
            (6, 0),
            "Message rejected: bare <CR> in message; lines must end with <CR><LF> (RFC 5321 §2.3.8)",
        ),
    }
}
