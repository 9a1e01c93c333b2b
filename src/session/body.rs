//! DATA and BDAT (RFC 5321 §4.1.1.4, RFC 3030), and the end of a transaction:
//! the body is checked, prepared and made durable before the 250.

use super::io::SessionEnd;
use super::{Flow, Session};
use crate::config::Limits;
use crate::listener::ListenerRole;
use crate::policy::Verdict;
use crate::policy::limits::check_hop_count;
use crate::policy::sender::check_sender_headers;
use crate::prepare::headers::{HeaderFacts, header_section};
use crate::prepare::reencode::reencode_long_lines;
use crate::prepare::{self, Arrival};
use crate::smtp::data::{BodyReader, BodyViolation};
use crate::smtp::reply::Reply;
use crate::spool::{NewMessage, NewRecipient, QueueId};
use crate::store::StoreError;

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
        let mut reader = BodyReader::data(
            limits.max_message_size,
            limits.max_text_line,
            self.ctx.config.bare_newlines,
        );
        self.conn
            .read_data(&mut reader, limits.data_timeout)
            .await?;
        Ok(self.finish_body(reader).await)
    }

    pub(super) async fn bdat(&mut self, size: usize, last: bool) -> Result<Flow, SessionEnd> {
        let timeout = self.ctx.config.limits.data_timeout;
        if let Err(reply) = self.check_body_start() {
            self.conn.read_chunk(size, None, timeout).await?;
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
        let Some(tx) = &mut self.tx else {
            return Ok(Flow::Continue);
        };
        let reader = tx
            .chunks
            .get_or_insert_with(|| BodyReader::bdat(max, line, bare));
        self.conn.read_chunk(size, Some(reader), timeout).await?;
        if !last {
            return Ok(self.reply(Reply::new(250, (0, 0), format!("{size} octets received"))));
        }
        let reader = self.tx.as_mut().and_then(|tx| tx.chunks.take());
        match reader {
            Some(reader) => Ok(self.finish_body(reader).await),
            None => Ok(Flow::Continue),
        }
    }

    /// Ends the transaction: refuses a bad body, else prepares and spools it.
    async fn finish_body(&mut self, reader: BodyReader) -> Flow {
        let Some(tx) = self.tx.take() else {
            return Flow::Continue;
        };
        let long_lines = reader.has_long_lines();
        let body = match reader.finish() {
            Ok(body) => body,
            Err(violation) => {
                return self.reply(violation_reply(violation, &self.ctx.config.limits));
            }
        };
        let facts = HeaderFacts::scan(header_section(&body));
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
        let body = match (&self.identity, long_lines) {
            (Some(_), true) => reencode_long_lines(&body).unwrap_or(body),
            _ => body,
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
        };
        let stored = prepare::finish(&arrival, &body);
        // The stored copy replaces the received one: do not hold both while
        // the spool commits.
        drop(body);
        let sender = tx.sender_text();
        let recipients = match self.expand_aliases(tx.recipients).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(event = "store_error", error = %e);
                return self.reply(Reply::local_error());
            }
        };
        let message = NewMessage {
            sender: sender.clone(),
            recipients,
            dsn: tx.dsn,
            auth_user: self.identity.clone(),
            smtputf8: tx.smtputf8,
            body: stored.into(),
        };
        let size = message.body.len();
        let rcpt_count = message.recipients.len();
        match self.ctx.spool.put(queue_id.clone(), message).await {
            Ok(()) => {
                tracing::Span::current().record("qid", tracing::field::display(&queue_id));
                tracing::info!(event = "queued", qid = %queue_id, from = %sender, rcpts = rcpt_count, size);
                metrics::counter!("postern_messages_queued_total", "port" => self.local.port().to_string()).increment(1);
                self.reply(Reply::new(250, (0, 0), format!("Ok: queued as {queue_id}")))
            }
            Err(e) => {
                tracing::error!(event = "spool_failed", error = %e);
                self.reply(Reply::local_error())
            }
        }
    }
}

impl Session {
    /// Replaces recipients that are aliases by their targets (Postfix's virtual
    /// alias step, done before queueing so each target has its own delivery
    /// state); the original address is kept as ORCPT for DSNs.
    async fn expand_aliases(
        &self,
        recipients: Vec<NewRecipient>,
    ) -> Result<Vec<NewRecipient>, StoreError> {
        let mut out: Vec<NewRecipient> = Vec::with_capacity(recipients.len());
        for r in recipients {
            let targets = self.ctx.store.expand(&r.address).await?;
            if targets.len() == 1 && targets[0].eq_ignore_ascii_case(&r.address) {
                out.push(r);
                continue;
            }
            for address in targets {
                if out.iter().any(|o| o.address.eq_ignore_ascii_case(&address)) {
                    continue;
                }
                let orcpt = r
                    .orcpt
                    .clone()
                    .or_else(|| Some(format!("rfc822;{}", r.address)));
                out.push(NewRecipient {
                    address,
                    orcpt,
                    notify: r.notify.clone(),
                });
            }
        }
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
