//! The server's side of the submission socket: binds it for every local
//! user, learns each caller's Unix user from the kernel (peer credentials),
//! decides what it may send as, receives the message with the SMTP session's
//! limits and body reader, and queues it through the session's own hand-off
//! (`session::enqueue`): the same prepare, spool write and fsync, routing.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::sender::{
    LocalUser, bare_from, from_header, from_line, parse_sender, printable, qualified, rights,
};
use super::{Answer, Envelope, Request, socket_path};
use crate::config::{Config, ListenerRole};
use crate::context::ServerContext;
use crate::control::{self, ControlError};
use crate::policy::Verdict;
use crate::policy::relay::{ClientStanding, RecipientFacts, check_recipient};
use crate::policy::sender::{SenderPattern, check_envelope_sender};
use crate::prepare::{Accepted, Origin, SPILL_AT};
use crate::session::{IncomingBody, enqueue, received, recipient_facts};
use crate::smtp::address::Mailbox;
use crate::smtp::data::BodyReader;
use crate::smtp::headers::{HeaderFacts, SenderHeader, header_section};
use crate::smtp::reply::Reply;
use crate::spool::{DsnEnvelope, NewRecipient};

/// Submissions handled at once; more wait to be accepted. Each holds up to
/// `SPILL_AT` of its message in memory.
const MAX_AT_ONCE: usize = 64;
/// The request line: an envelope of `max_recipients` addresses of at most
/// RFC 5321's 256 octets each (JSON-quoted), and room for the rest.
const REQUEST_PER_RECIPIENT: u64 = 1024;
const REQUEST_BASE: u64 = 64 * 1024;
/// What one read of the message asks for.
const READ: usize = 64 * 1024;

/// The bound socket, ready to serve.
pub struct SubmitSocket {
    listener: UnixListener,
    path: PathBuf,
}

/// Binds `data_dir/run/submit.sock` so that every local user can connect
/// (0666): who connects is told by the kernel, not by the socket's mode.
/// Reaching it needs `data_dir` and `run/` searchable by others (o+x, not
/// o+r: they may open this one name, not list or read anything else, which
/// is all the owner's only): `run/` is made 0711 here, and a new data_dir
/// 0751 (`sqlite::create_data_dir`); a data_dir an admin made without o+x is
/// left so, with a warning. Called after `control::bind`, whose lock makes
/// removing a stale socket safe.
pub fn bind(config: &Config) -> Result<SubmitSocket, ControlError> {
    let path = socket_path(config);
    let run = config.run_dir();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o711)).map_err(|error| {
        ControlError::Bind {
            path: run.display().to_string(),
            error,
        }
    })?;
    warn_if_closed(&config.data_dir, &path);
    let listener = control::bind_socket(&path, 0o666)?;
    Ok(SubmitSocket { listener, path })
}

/// Says once, at start, when other users cannot get through `data_dir`.
fn warn_if_closed(data_dir: &Path, socket: &Path) {
    if let Ok(meta) = std::fs::metadata(data_dir)
        && meta.permissions().mode() & 0o001 == 0
    {
        tracing::warn!(
            event = "sendmail_unreachable",
            data_dir = %data_dir.display(),
            "other Unix users cannot reach {} for `postern sendmail`: data_dir is not searchable by them; `chmod o+x` it to let them",
            socket.display()
        );
    }
}

/// Takes submissions until the server stops, each on `tasks` so that the
/// drain waits for it; then removes the socket.
pub async fn serve(socket: SubmitSocket, ctx: Arc<ServerContext>, tasks: TaskTracker) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_AT_ONCE));
    loop {
        let slot = tokio::select! {
            () = ctx.shutdown.cancelled() => break,
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        tokio::select! {
            () = ctx.shutdown.cancelled() => break,
            accepted = socket.listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let ctx = Arc::clone(&ctx);
                    tasks.spawn(async move {
                        answer(ctx, stream).await;
                        drop(slot);
                    });
                }
                Err(e) => {
                    tracing::warn!(event = "sendmail_accept_failed", error = %e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    let _ = std::fs::remove_file(&socket.path);
}

/// One connection: who it is, then its request.
async fn answer(ctx: Arc<ServerContext>, stream: UnixStream) {
    let uid = match stream.peer_cred() {
        Ok(cred) => cred.uid(),
        Err(e) => {
            tracing::warn!(event = "sendmail_refused", error = %e, "no peer credentials");
            return;
        }
    };
    let name = user_name(uid).await;
    let shown = name.clone().unwrap_or_else(|| format!("#{uid}"));
    let span = tracing::info_span!("sendmail", user = %shown, uid, qid = tracing::field::Empty);
    let (read, write) = stream.into_split();
    let mut client = Client {
        ctx: &ctx,
        read: BufReader::new(read),
        write,
        span: span.clone(),
    };
    async {
        // The request is read first, also from a user who is then refused:
        // the client learns why instead of finding the socket closed.
        let answer = match client.read_request().await {
            Ok(request) => match rights(&ctx.config(), uid, name.as_deref()) {
                Ok(user) => client.request(&user, request).await,
                Err(reply) => Answer::Refused { reply },
            },
            Err(reply) => Answer::Refused { reply },
        };
        if let Answer::Refused { reply } = &answer {
            tracing::info!(event = "rejected", reply = %reply);
        }
        client.say(&answer).await;
    }
    .instrument(span)
    .await;
}

/// The name of `uid` in the user database, looked up off the runtime's
/// threads (NSS may ask a directory server).
async fn user_name(uid: u32) -> Option<String> {
    let lookup = move || nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid));
    match tokio::task::spawn_blocking(lookup).await {
        Ok(Ok(user)) => user.map(|u| u.name),
        _ => None,
    }
}

struct Client<'a> {
    ctx: &'a ServerContext,
    read: BufReader<OwnedReadHalf>,
    write: OwnedWriteHalf,
    span: tracing::Span,
}

impl Client<'_> {
    async fn read_request(&mut self) -> Result<Request, Reply> {
        let max = self.ctx.config().limits.max_recipients as u64;
        let line = self
            .read_line(REQUEST_BASE + max * REQUEST_PER_RECIPIENT)
            .await?;
        serde_json::from_slice::<Request>(&line)
            .map_err(|e| Reply::new(501, (5, 2), format!("Not a request: {e}")))
    }

    async fn request(&mut self, user: &LocalUser, request: Request) -> Answer {
        let outcome = match request {
            Request::Send(envelope) => self.send(user, envelope).await,
            Request::Verify { addresses } => self.verify(&addresses).await,
        };
        outcome.unwrap_or_else(|reply| Answer::Refused { reply })
    }

    async fn send(&mut self, user: &LocalUser, envelope: Envelope) -> Result<Answer, Reply> {
        let config = self.ctx.config();
        let hostname = config.hostname.as_str();
        let max_size = config.limits.max_message_size;
        if envelope.size > max_size {
            return Err(Reply::new(
                552,
                (3, 4),
                format!(
                    "Message size exceeds fixed limit of {max_size} octets ([limits] max_message_size)"
                ),
            ));
        }
        // As MAIL with SIZE: below the free-space floor, refused before
        // the message comes.
        if self.ctx.queue.spool().has_room_for(envelope.size).is_err() {
            return Err(Reply::insufficient_storage());
        }
        let recipients = self.recipients(&envelope.recipients).await?;
        // The sending limits, as MAIL and RCPT apply them to a logged-in user.
        self.ctx
            .watch
            .check_local(
                &user.name,
                recipients.len() as u64,
                crate::clock::now_unix(),
            )
            .await?;
        let named = match envelope.sender.as_deref().map(str::trim) {
            None => None,
            Some("" | "<>") => Some(None),
            Some(text) => Some(Some(parse_sender(text, hostname)?)),
        };
        // With no -f, a user with one fixed address sends as it.
        let fixed = match user.patterns.as_slice() {
            [SenderPattern::Address(a)] if !user.trusted => Mailbox::parse(a, true).ok(),
            _ => None,
        };
        self.say(&Answer::Proceed {}).await;
        let size = envelope.size;
        let head = self.read_exactly(size.min(SPILL_AT as u64)).await?;
        let facts = HeaderFacts::scan(header_section(&head));
        let sender = match named {
            Some(sender) => sender,
            None => Some(fixed.map_or_else(|| from_header(&facts, user, hostname), Ok)?),
        };
        let allowed = self.allowed(user, sender.as_ref(), &facts).await?;
        let local = user.sender(&allowed);
        if let Verdict::Reject(reply) = check_envelope_sender(&local, sender.as_ref()) {
            return Err(reply);
        }
        // A message without From: gets one from the envelope sender (as
        // Postfix's cleanup adds it), which was just checked; a From: of a
        // bare name (cron's) gets the host name.
        let unread = size - head.len() as u64;
        let (from_line, head) = match (facts.fields(SenderHeader::From).count(), &sender) {
            (0, Some(sender)) => (from_line(envelope.full_name.as_deref(), sender), head),
            (0, None) => {
                return Err(Reply::new(
                    550,
                    (7, 1),
                    "Message rejected: it has no From: header, and the null sender gives none",
                ));
            }
            _ => match bare_from(&head, hostname) {
                Some((line, field)) => {
                    let mut head = head;
                    head.drain(field);
                    (line, head)
                }
                None => (Vec::new(), head),
            },
        };
        let body = self.receive(unread, &from_line, head).await?;
        let smtputf8 = sender.as_ref().is_some_and(|s| !s.to_string().is_ascii())
            || recipients.iter().any(|r| !r.address.is_ascii());
        let accepted = Accepted {
            sender: sender.map(|s| s.to_string()).unwrap_or_default(),
            recipients,
            dsn: DsnEnvelope::default(),
            smtputf8,
            requiretls: false,
            body,
        };
        let origin = Origin {
            role: ListenerRole::Submission,
            client_ip: Ipv4Addr::LOCALHOST.into(),
            trusted_network: false,
            greeting: None,
            tls: None,
            identity: Some(local),
        };
        let id = enqueue(self.ctx, &origin, accepted, &self.span).await?;
        metrics::counter!("postern_messages_queued_total", "port" => "sendmail").increment(1);
        crate::flow::count(crate::flow::Flow::Accepted);
        Ok(Answer::Queued { id })
    }

    /// The recipients as RCPT would take them from an authenticated client:
    /// each must parse, and one in a hosted domain must exist; a duplicate
    /// is kept once. Any refusal refuses the message, so that the caller
    /// knows nothing was sent.
    async fn recipients(&self, addresses: &[String]) -> Result<Vec<NewRecipient>, Reply> {
        if addresses.is_empty() {
            return Err(Reply::new(554, (5, 1), "Error: no recipients"));
        }
        self.check_count(addresses)?;
        let mut out = Vec::with_capacity(addresses.len());
        let mut seen = HashSet::new();
        for address in addresses {
            let (rcpt, hosted) = self.check_recipient(address).await?;
            if seen.insert(rcpt.recipient_key(hosted)) {
                out.push(NewRecipient {
                    address: rcpt.to_string(),
                    orcpt: None,
                    notify: None,
                });
            }
        }
        Ok(out)
    }

    /// At most `max_recipients` addresses in one request.
    fn check_count(&self, addresses: &[String]) -> Result<(), Reply> {
        let max = self.ctx.config().limits.max_recipients;
        if addresses.len() > max {
            return Err(Reply::new(
                550,
                (5, 3),
                format!("Too many recipients: at most {max} per message ([limits] max_recipients)"),
            ));
        }
        Ok(())
    }

    /// One recipient as RCPT checks it; with whether its domain is hosted.
    /// A bare name is taken at the host name, and one that is no mailbox
    /// or alias there (root, a system user) goes to the postmaster, as
    /// Postfix's luser_relay sends it: cron's mail reaches the admin.
    async fn check_recipient(&self, address: &str) -> Result<(Mailbox, bool), Reply> {
        let address = address.trim();
        let address = address
            .strip_prefix('<')
            .and_then(|a| a.strip_suffix('>'))
            .unwrap_or(address);
        let hostname = self.ctx.config().hostname.clone();
        let full = qualified(address, &hostname);
        let mut rcpt = Mailbox::parse(&full, true).map_err(|e| {
            Reply::new(
                501,
                (1, 3),
                format!(
                    "<{}>: Bad recipient address syntax: {e}",
                    printable(address)
                ),
            )
        })?;
        let mut facts = self.recipient_facts(&rcpt).await?;
        if full != address && !facts.mailbox_exists && !rcpt.is_postmaster() {
            tracing::info!(
                event = "local_user_to_postmaster",
                recipient = %rcpt,
                "no mailbox or alias {rcpt}: the postmaster gets it"
            );
            rcpt = Mailbox {
                local: "postmaster".into(),
                domain: hostname,
            };
            facts = self.recipient_facts(&rcpt).await?;
        }
        let standing = ClientStanding {
            authenticated: true,
            trusted_network: false,
        };
        match check_recipient(&rcpt, facts, standing) {
            Verdict::Accept => Ok((rcpt, facts.hosted_domain)),
            Verdict::Reject(reply) => Err(reply),
        }
    }

    async fn recipient_facts(&self, rcpt: &Mailbox) -> Result<RecipientFacts, Reply> {
        recipient_facts(self.ctx, rcpt).await.map_err(|e| {
            tracing::error!(event = "store_error", error = %e);
            Reply::local_error()
        })
    }

    /// `-bv`: each address as `recipients` would take it, without sending.
    async fn verify(&self, addresses: &[String]) -> Result<Answer, Reply> {
        self.check_count(addresses)?;
        let mut results = Vec::with_capacity(addresses.len());
        for address in addresses {
            results.push(self.check_recipient(address).await.err());
        }
        Ok(Answer::Verified { results })
    }

    /// The patterns the sender checks go by: the user's own, or for a
    /// trusted user `*@domain` for each hosted domain among those the
    /// envelope sender and the sender headers name.
    async fn allowed(
        &self,
        user: &LocalUser,
        sender: Option<&Mailbox>,
        facts: &HeaderFacts,
    ) -> Result<Vec<SenderPattern>, Reply> {
        let own = user
            .own
            .as_ref()
            .map(|own| SenderPattern::Address(own.to_string().to_lowercase()));
        if !user.trusted {
            // At a hosted host name, the address is a mailbox's, maybe
            // another's: only the user's entry may name it.
            let hostname = self.ctx.config().hostname.clone();
            let own = match self.ctx.store.is_hosted_domain(&hostname).await {
                Ok(false) => own,
                Ok(true) => None,
                Err(e) => {
                    tracing::error!(event = "store_error", error = %e);
                    return Err(Reply::local_error());
                }
            };
            return Ok(user.patterns.iter().cloned().chain(own).collect());
        }
        let named = facts
            .senders
            .iter()
            .filter_map(|f| f.mailboxes.as_ref().ok())
            .flatten()
            .filter_map(|m| Mailbox::parse(&m.address, true).ok());
        let domains: HashSet<String> = sender
            .cloned()
            .into_iter()
            .chain(named)
            .map(|m| m.domain)
            .collect();
        let mut hosted: Vec<SenderPattern> = own.into_iter().collect();
        for domain in domains {
            match self.ctx.store.is_hosted_domain(&domain).await {
                Ok(true) => hosted.push(SenderPattern::Domain(domain)),
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(event = "store_error", error = %e);
                    return Err(Reply::local_error());
                }
            }
        }
        Ok(hosted)
    }

    /// The message: `head` (its first octets, already read), then `unread`
    /// octets more, through the body reader of BDAT (no dot-stuffing here),
    /// so that the session's limits and checks apply and a large message
    /// goes to disk as it arrives. `from_line` goes first and does not count
    /// against the size limit: the client's message is what is limited.
    async fn receive(
        &mut self,
        unread: u64,
        from_line: &[u8],
        head: Vec<u8>,
    ) -> Result<crate::prepare::ReceivedBody, Reply> {
        let config = &self.ctx.config();
        let limits = &config.limits;
        let reader = BodyReader::bdat(
            limits.max_message_size + from_line.len() as u64,
            limits.max_text_line,
            config.bare_newlines,
        );
        let mut body = IncomingBody::new(reader, self.ctx.queue.spool().clone());
        body.feed(from_line);
        body.feed(&head);
        body.absorb().await;
        let mut left = unread;
        let mut buffer = vec![0; READ];
        while left > 0 {
            let want = left.min(READ as u64) as usize;
            let n = self.read_some(&mut buffer[..want]).await?;
            body.feed(&buffer[..n]);
            body.absorb().await;
            left -= n as u64;
        }
        received(body, limits).await
    }

    /// Reads exactly `n` octets (at most `SPILL_AT`, the first part of a message).
    async fn read_exactly(&mut self, n: u64) -> Result<Vec<u8>, Reply> {
        let mut out = vec![0; n as usize];
        let mut at = 0;
        while at < out.len() {
            at += self.read_some(&mut out[at..]).await?;
        }
        Ok(out)
    }

    /// One read of the message, within `data_timeout`; the end of input
    /// before the declared size is an error.
    async fn read_some(&mut self, buffer: &mut [u8]) -> Result<usize, Reply> {
        let timeout = self.ctx.config().limits.data_timeout;
        match tokio::time::timeout(timeout, self.read.read(buffer)).await {
            Ok(Ok(0)) => Err(Reply::new(
                451,
                (3, 0),
                "Error: the message ended before its declared size",
            )),
            Ok(Ok(n)) => Ok(n),
            Ok(Err(e)) => Err(Reply::new(451, (3, 0), format!("Error: cannot read: {e}"))),
            Err(_) => Err(Reply::new(
                421,
                (4, 2),
                format!("Error: no data for {} s", timeout.as_secs()),
            )),
        }
    }

    /// The request line, within `command_timeout`, of at most `max` octets.
    async fn read_line(&mut self, max: u64) -> Result<Vec<u8>, Reply> {
        let timeout = self.ctx.config().limits.command_timeout;
        let mut line = Vec::new();
        let mut limited = (&mut self.read).take(max);
        match tokio::time::timeout(timeout, limited.read_until(b'\n', &mut line)).await {
            Ok(Ok(_)) if line.ends_with(b"\n") => Ok(line),
            Ok(Ok(_)) if line.len() as u64 >= max => Err(Reply::new(
                500,
                (5, 2),
                format!("Error: a request is one line of at most {max} octets"),
            )),
            Ok(Ok(_)) => Err(Reply::new(500, (5, 2), "Error: the request ended early")),
            Ok(Err(e)) => Err(Reply::new(451, (3, 0), format!("Error: cannot read: {e}"))),
            Err(_) => Err(Reply::new(
                421,
                (4, 2),
                format!("Error: no request within {} s", timeout.as_secs()),
            )),
        }
    }

    /// Writes one answer line; a client that went away is not an error of ours.
    async fn say(&mut self, answer: &Answer) {
        let mut line = serde_json::to_vec(answer).unwrap_or_default();
        line.push(b'\n');
        let _ = self.write.write_all(&line).await;
    }
}
