//! DATA and BDAT (RFC 5321 §4.1.1.4, RFC 3030), and the end of a transaction:
//! the body is read, handed to `prepare`, and made durable before the 250.

use super::incoming::{IncomingBody, Unreceived};
use super::io::{BodyPace, SessionEnd};
use super::{Flow, Session};
use crate::clock::now_unix;
use crate::config::Limits;
use crate::context::ServerContext;
use crate::policy::sender::Sender;
use crate::prepare::{Accepted, Origin, Prepared, ReceivedBody, prepare};
use crate::smtp::data::{BodyReader, BodyViolation};
use crate::smtp::reply::Reply;
use crate::spool::{QueueId, SpoolError, WriteError};
use crate::watch::Admission;

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
        let limits = &self.config.limits;
        let reader = BodyReader::data(
            limits.max_message_size,
            limits.max_text_line,
            self.config.bare_newlines,
        );
        let mut body = IncomingBody::new(reader, self.ctx.queue.spool().clone());
        let mut pace = BodyPace::new(limits.data_timeout);
        self.conn.read_data(&mut body, &mut pace).await?;
        Ok(self.finish_body(body).await)
    }

    pub(super) async fn bdat(&mut self, size: usize, last: bool) -> Result<Flow, SessionEnd> {
        let data_timeout = self.config.limits.data_timeout;
        if let Err(reply) = self.check_body_start() {
            let mut pace = BodyPace::new(data_timeout);
            self.conn.read_chunk(size, None, &mut pace).await?;
            return Ok(self.reply(reply));
        }
        let (max, line, bare) = {
            let c = &self.config;
            (
                c.limits.max_message_size,
                c.limits.max_text_line,
                c.bare_newlines,
            )
        };
        let spool = self.ctx.queue.spool().clone();
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

    /// Ends the transaction: refuses a bad body, else has `prepare` make the
    /// message and the spool keep it, and answers.
    async fn finish_body(&mut self, body: IncomingBody) -> Flow {
        let Some(tx) = self.tx.take() else {
            return Flow::Continue;
        };
        let body = match received(body, &self.config.limits).await {
            Ok(received) => received,
            Err(reply) => return self.reply(reply),
        };
        let accepted = Accepted {
            sender: tx.sender_text(),
            recipients: tx.recipients,
            dsn: tx.dsn,
            smtputf8: tx.smtputf8,
            requiretls: tx.requiretls,
            body,
        };
        match enqueue(&self.ctx, &self.origin(), accepted, &tx.span).await {
            Ok(queue_id) => {
                metrics::counter!("postern_messages_queued_total", "port" => self.local.port().to_string()).increment(1);
                crate::flow::count(crate::flow::Flow::Accepted);
                self.reply(Reply::new(250, (0, 0), format!("Ok: queued as {queue_id}")))
            }
            Err(reply) => self.reply(reply),
        }
    }

    /// How this session's transaction arrived, for `prepare`.
    fn origin(&self) -> Origin<'_> {
        Origin {
            role: self.role,
            client_ip: self.peer.ip(),
            trusted_network: self.trusted_network,
            greeting: self
                .greeting
                .as_ref()
                .map(|g| (g.name.as_str(), g.extended)),
            tls: self
                .tls
                .as_ref()
                .map(|t| (t.version.as_str(), t.cipher.as_str())),
            identity: self.identity.as_deref().map(Sender::Account),
        }
    }
}

/// The whole body, or the reply that refuses it: what it broke, or why the
/// disk would not keep it.
pub(crate) async fn received(body: IncomingBody, limits: &Limits) -> Result<ReceivedBody, Reply> {
    match body.finish().await {
        Ok(received) => Ok(received),
        Err(Unreceived::Violation(violation)) => Err(violation_reply(violation, limits)),
        Err(Unreceived::Storage(e)) => {
            tracing::error!(event = "spool_failed", error = %e);
            Err(storage_reply(&WriteError::of_io(e)))
        }
    }
}

/// Has `prepare` make the message and the queue keep it: returns once the
/// message is durable, with its queue id, or with the reply that refuses
/// it. Records the id in `span` (the transaction's) and logs `queued`.
/// The end of every transaction, an SMTP session's or `postern sendmail`'s.
pub(crate) async fn enqueue(
    ctx: &ServerContext,
    origin: &Origin<'_>,
    accepted: Accepted,
    span: &tracing::Span,
) -> Result<QueueId, Reply> {
    let named: Vec<String> = accepted
        .recipients
        .iter()
        .map(|r| r.address.clone())
        .collect();
    let admission = match &origin.identity {
        Some(user) => ctx.watch.admit(user, &named, now_unix()).await?,
        None => Admission::default(),
    };
    let prepared = prepare(ctx, origin, accepted).await?;
    let (size, rcpts) = (prepared.size(), prepared.message.recipients.len());
    let Prepared {
        queue_id,
        mut message,
        spilled,
    } = prepared;
    message.held = admission.held;
    span.record("qid", tracing::field::display(&queue_id));
    let sender = message.sender.clone();
    let queued = match spilled {
        None => ctx.queue.put(queue_id.clone(), message).await,
        Some(file) => ctx.queue.put_spilled(queue_id.clone(), message, file).await,
    };
    match queued {
        Ok(()) => {
            tracing::info!(event = "queued", qid = %queue_id, from = %sender, rcpts, size, held = admission.held);
            if let Some(user) = &origin.identity {
                ctx.watch
                    .queued(user, &queue_id, &named, admission, now_unix())
                    .await;
            }
            Ok(queue_id)
        }
        Err(e) => {
            tracing::error!(event = "spool_failed", qid = %queue_id, error = %e);
            Err(match &e {
                SpoolError::Write(w) => storage_reply(w),
                _ => Reply::queue_write_error(),
            })
        }
    }
}

/// The answer to a message the spool could not take.
fn storage_reply(e: &WriteError) -> Reply {
    match e {
        WriteError::Full => Reply::insufficient_storage(),
        _ => Reply::queue_write_error(),
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
