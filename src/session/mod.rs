//! One SMTP session from greeting to QUIT: the only code that reads from and
//! writes to a client socket. Receives a connected stream from `listener`, runs
//! the state machine (commands in `ehlo.rs`, `auth.rs`, `envelope.rs`,
//! `body.rs`), and hands accepted messages to `prepare` and `spool`.

mod auth;
mod body;
mod ehlo;
mod envelope;
mod incoming;
pub mod io;
#[cfg(test)]
mod protocol_tests;
#[cfg(test)]
mod script;
mod state;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

use smtp_proto::Request;
use smtp_proto::request::receiver::RequestReceiver;
use tracing::Instrument;

use crate::config::ListenerRole;
use crate::context::ServerContext;
use crate::policy::limits::ErrorBudget;
use crate::smtp::reply::Reply;
use crate::telemetry::SessionId;
pub(crate) use body::{enqueue, received};
pub(crate) use envelope::recipient_facts;
pub(crate) use incoming::IncomingBody;
use io::{Connection, Line, SessionEnd, Stream};
use state::{Greeting, Transaction};

/// Commands that move no mail a session may send before each one counts as
/// an error (Postfix's smtpd_junk_command_limit).
const JUNK_COMMANDS: u32 = 100;

/// RFC 4954 §4: an AUTH command line may be up to 12288 octets; other commands
/// are held to `max_command_line` after reading.
const MAX_AUTH_LINE: usize = 12_288;

/// What a command handler tells the loop to do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Close,
}

/// TLS parameters of an encrypted session, for Received: and logs.
#[derive(Debug, Clone)]
pub struct TlsInfo {
    pub version: String,
    pub cipher: String,
}

impl TlsInfo {
    /// The negotiated version and cipher suite of a finished handshake.
    pub fn of(connection: &rustls::ServerConnection) -> TlsInfo {
        let version = connection
            .protocol_version()
            .and_then(|v| v.as_str())
            .unwrap_or("TLS")
            .replace('_', ".");
        let cipher = connection
            .negotiated_cipher_suite()
            .and_then(|s| s.suite().as_str())
            .unwrap_or("unknown")
            .to_string();
        TlsInfo { version, cipher }
    }
}

pub struct Session {
    ctx: Arc<ServerContext>,
    /// The configuration in place when the client connected: a reload
    /// changes later sessions, not this one.
    config: Arc<crate::config::Config>,
    conn: Connection,
    role: ListenerRole,
    peer: SocketAddr,
    /// The listener's address this client connected to.
    local: SocketAddr,
    trusted_network: bool,
    tls: Option<TlsInfo>,
    greeting: Option<Greeting>,
    /// The authenticated user's canonical address.
    identity: Option<String>,
    /// When the user logged in (Unix seconds): a password changed since
    /// ends what the session may send.
    logged_in_at: i64,
    /// Boxed: most sessions spend most of their time without one.
    tx: Option<Box<Transaction>>,
    errors: ErrorBudget,
    auth_failures: u32,
    /// NOOP, RSET, VRFY and HELP so far: commands that keep a session open
    /// without moving mail.
    junk_commands: u32,
    /// Counted by the port map already (at its first EHLO).
    seen_by_portmap: bool,
}

/// How TLS begins on a new connection.
#[derive(Debug, Clone)]
pub enum TlsStart {
    /// Plaintext greeting; STARTTLS may follow.
    Plain,
    /// The client opened with a TLS ClientHello: handshake before the greeting.
    Handshake,
    /// The caller already ran the handshake (the HTTPS port's SMTP side).
    Established(TlsInfo),
}

/// Who connected where, and how TLS starts.
pub struct Connected {
    pub role: ListenerRole,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub tls: TlsStart,
}

/// Runs a session on an accepted connection until it ends. Never panics on input;
/// I/O errors end the session and are logged.
///
/// The session is built before the returned future, not inside it: an idle
/// session's cost is the size of this future, and arguments moved into an
/// async block keep their room in it for its whole life.
pub fn run(
    ctx: Arc<ServerContext>,
    stream: Box<dyn Stream>,
    connected: Connected,
) -> impl Future<Output = ()> + Send {
    let Connected {
        role,
        peer,
        local,
        tls,
    } = connected;
    let sid = SessionId::next();
    let span = tracing::info_span!("session", sid = %sid, peer = %peer, role = %role);
    let config = ctx.config();
    let trusted_network = crate::config::in_networks(&config.trusted_networks, peer.ip());
    let max_errors = config.limits.max_errors;
    let write_timeout = config.limits.command_timeout;
    let mut session = Session {
        ctx,
        config,
        conn: Connection::new(stream, write_timeout),
        role,
        peer,
        local,
        trusted_network,
        tls: None,
        greeting: None,
        identity: None,
        logged_in_at: 0,
        tx: None,
        errors: ErrorBudget::new(max_errors),
        auth_failures: 0,
        junk_commands: 0,
        seen_by_portmap: false,
    };
    async move {
        tracing::info!(event = "connected");
        match session.serve(tls).await {
            Ok(()) => tracing::info!(
                event = "disconnected",
                reason = "closed after QUIT or a closing reply"
            ),
            Err(end) => tracing::info!(event = "disconnected", reason = %end),
        }
    }
    .instrument(span)
}

impl Session {
    /// The `[filter] dnsbl` list that names this client of an mta listener
    /// (clients in `trusted_networks` are not asked about).
    async fn listed(&self) -> Option<String> {
        let lists = &self.config.dnsbl;
        if lists.is_empty() || self.role != ListenerRole::Mta || self.trusted_network {
            return None;
        }
        crate::filter::dnsbl::listed_in(&self.ctx.dns, lists, self.peer.ip()).await
    }

    async fn serve(&mut self, tls: TlsStart) -> Result<(), SessionEnd> {
        match tls {
            TlsStart::Plain => {}
            TlsStart::Handshake => {
                if self.start_tls().await.is_err() {
                    return Err(SessionEnd::Eof);
                }
            }
            TlsStart::Established(info) => self.tls = Some(info),
        }
        if let Some(list) = self.listed().await {
            tracing::info!(event = "dnsbl_listed", list);
            self.conn.queue(&Reply::new(
                554,
                (7, 1),
                format!(
                    "Service unavailable; client [{}] blocked using {list}",
                    self.peer.ip()
                ),
            ));
            return self.conn.flush().await;
        }
        let banner = format!("{} ESMTP Postern", self.config.hostname);
        self.conn.queue(&Reply::plain(220, banner));
        loop {
            let limits = &self.config.limits;
            let (timeout, max_line) = (limits.command_timeout, limits.max_command_line);
            let stop = self.ctx.shutdown.clone();
            let line = match self
                .conn
                .read_line(MAX_AUTH_LINE, timeout, Some(&stop))
                .await
            {
                Ok(Line::Complete(line)) if line.len() <= max_line || starts_with_auth(&line) => {
                    line
                }
                Ok(_) => {
                    if self.reply(Reply::line_too_long()) == Flow::Close {
                        break;
                    }
                    continue;
                }
                Err(SessionEnd::Timeout) => {
                    self.conn.queue(&Reply::timeout(&self.config.hostname));
                    break;
                }
                Err(SessionEnd::Shutdown) => {
                    self.conn
                        .queue(&Reply::shutting_down(&self.config.hostname));
                    break;
                }
                Err(e) => return Err(e),
            };
            // A transaction's commands are logged in its span, which MAIL
            // opens and the end of the transaction closes.
            let span = self
                .tx
                .as_ref()
                .map_or_else(tracing::Span::none, |tx| tx.span.clone());
            // Boxed: a command's future (DATA's holds the body reader and the
            // spool's write) is many times the size of the wait for the next
            // line, and a future is as large as its largest state, so inline
            // it would cost every idle session as much as a busy one.
            let handled = Box::pin(
                async {
                    tracing::trace!(line = %String::from_utf8_lossy(&redact_auth(&line)), "command");
                    self.command(&line).await
                }
                .instrument(span),
            )
            .await;
            match handled {
                Ok(Flow::Continue) => {}
                Ok(Flow::Close) => break,
                // A body or an AUTH answer that stopped coming.
                Err(SessionEnd::Timeout) => {
                    self.conn.queue(&Reply::timeout(&self.config.hostname));
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        self.conn.flush().await
    }

    /// Parses and runs one command line.
    async fn command(&mut self, line: &[u8]) -> Result<Flow, SessionEnd> {
        let request = match parse_command(line) {
            Ok(request) => request,
            Err(e) => return Ok(self.reply(parse_error_reply(&e))),
        };
        if matches!(
            request,
            Request::Rset | Request::Noop { .. } | Request::Vrfy { .. } | Request::Help { .. }
        ) && self.junk() == Flow::Close
        {
            return Ok(Flow::Close);
        }
        match request {
            Request::Ehlo { host } => Ok(self.ehlo(host, true)),
            Request::Helo { host } => Ok(self.ehlo(host, false)),
            Request::StartTls => self.starttls().await,
            Request::Auth {
                mechanism,
                initial_response,
            } => self.auth(mechanism, initial_response).await,
            Request::Mail { from } => Ok(self.mail(from, line).await),
            Request::Rcpt { to } => Ok(self.rcpt(to, line).await),
            Request::Data => self.data().await,
            Request::Bdat {
                chunk_size,
                is_last,
            } => self.bdat(chunk_size, is_last).await,
            Request::Rset => {
                self.tx = None;
                Ok(self.reply(Reply::ok()))
            }
            // smtp-proto keeps only the first word of NOOP's argument.
            Request::Noop { .. } => Ok(self.noop(&String::from_utf8_lossy(line))),
            // RFC 5321 §3.5.3: 252 says "cannot verify" without revealing mailboxes.
            Request::Vrfy { .. } => Ok(self.reply(Reply::new(
                252,
                (5, 0),
                "Cannot VRFY user, but will accept message",
            ))),
            Request::Help { .. } => Ok(self.reply(Reply::new(214, (0, 0), "See RFC 5321"))),
            Request::Quit => {
                self.conn.queue(&Reply::new(221, (0, 0), "Bye"));
                Ok(Flow::Close)
            }
            Request::Expn { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. }
            | Request::Lhlo { .. } => {
                Ok(self.reply(Reply::new(502, (5, 1), "Error: command not implemented")))
            }
        }
    }

    /// Queues a reply, counting it against the error budget when it is an error;
    /// returns `Close` once the budget is spent (after a final 421).
    fn reply(&mut self, reply: Reply) -> Flow {
        // 452 for too many recipients is normal flow control, not a client error.
        let counts = reply.code >= 400 && reply.code != 452;
        if reply.code >= 400 {
            crate::prometheus::rejected(reply.code, reply.enhanced);
        }
        if counts {
            tracing::debug!(event = "rejected", reply = %reply);
        }
        self.conn.queue(&reply);
        if counts && self.errors.spend() {
            self.conn.queue(&Reply::too_many_errors());
            return Flow::Close;
        }
        Flow::Continue
    }

    /// Counts a command that moves no mail; past `JUNK_COMMANDS` each one is
    /// an error too (Postfix's smtpd_junk_command_limit), so a client cannot
    /// hold its session forever with a NOOP every few minutes.
    fn junk(&mut self) -> Flow {
        self.junk_commands += 1;
        if self.junk_commands > JUNK_COMMANDS && self.errors.spend() {
            self.conn.queue(&Reply::too_many_errors());
            return Flow::Close;
        }
        Flow::Continue
    }

    /// NOOP, which also answers `postern check`'s port-echo question
    /// (`NOOP postern-echo <token>`); RFC 5321 §4.1.1.9 lets NOOP carry a string.
    fn noop(&mut self, line: &str) -> Flow {
        let argument = line.get(5..).unwrap_or("").trim();
        match argument.strip_prefix("postern-echo ") {
            Some(token) => {
                // The check's last question: what its probes reached from
                // this network, for the dashboard's port map.
                let reached = self.ctx.echo.ports(token.trim());
                if !reached.is_empty() {
                    self.ctx.portmap.checks.checked(self.peer.ip(), &reached);
                }
                let text = crate::portecho::EchoRegistry::reply_text(&reached, self.peer.ip());
                self.reply(Reply::new(250, (0, 0), text))
            }
            None => self.reply(Reply::ok()),
        }
    }

    fn hostname(&self) -> &str {
        &self.config.hostname
    }
}

/// Parses a command line with smtp-proto, which does not accept address
/// literals (`user@[192.0.2.1]`, RFC 5321 §4.1.3) in MAIL and RCPT: the literal
/// is swapped for a placeholder domain for parsing and put back after.
fn parse_command(line: &[u8]) -> Result<Request<String>, smtp_proto::Error> {
    const PLACEHOLDER: &str = "address-literal.invalid";
    let literal = std::str::from_utf8(line).ok().filter(|t| {
        let verb = t.get(..5).unwrap_or("");
        verb.eq_ignore_ascii_case("MAIL ") || verb.eq_ignore_ascii_case("RCPT ")
    });
    let Some((text, start, end)) = literal.and_then(|t| {
        let start = t.find("@[")? + 1;
        let end = start + t[start..].find(']')? + 1;
        Some((t, start, end))
    }) else {
        return RequestReceiver::default()
            .ingest(&mut line.iter())
            .map(Request::into_owned);
    };
    let swapped = format!("{}{PLACEHOLDER}{}", &text[..start], &text[end..]);
    let restore = |address: String| address.replace(PLACEHOLDER, &text[start..end]);
    Ok(
        match RequestReceiver::default()
            .ingest(&mut swapped.as_bytes().iter())?
            .into_owned()
        {
            Request::Mail { mut from } => {
                from.address = restore(from.address);
                Request::Mail { from }
            }
            Request::Rcpt { mut to } => {
                to.address = restore(to.address);
                Request::Rcpt { to }
            }
            other => other,
        },
    )
}

fn starts_with_auth(line: &[u8]) -> bool {
    line.get(..5)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"AUTH "))
}

/// AUTH lines carry credentials: keep only the verb and mechanism in traces.
fn redact_auth(line: &[u8]) -> Cow<'_, [u8]> {
    if starts_with_auth(line) {
        let keep = line
            .iter()
            .skip(5)
            .position(|&b| b == b' ')
            .map_or(line.len(), |p| p + 5);
        Cow::Owned([&line[..keep], b" [redacted]"].concat())
    } else {
        Cow::Borrowed(line)
    }
}

fn parse_error_reply(e: &smtp_proto::Error) -> Reply {
    use smtp_proto::Error as E;
    match e {
        E::UnknownCommand => Reply::unknown_command(),
        E::InvalidSenderAddress => Reply::new(501, (1, 7), "Bad sender address syntax"),
        E::InvalidRecipientAddress => Reply::new(501, (1, 3), "Bad recipient address syntax"),
        E::SyntaxError { syntax } => Reply::syntax(format!("Syntax: {syntax}")),
        E::InvalidParameter { param } => Reply::syntax(format!("Invalid parameter: {param}")),
        E::UnsupportedParameter { param } => {
            Reply::new(555, (5, 4), format!("Unsupported parameter: {param}"))
        }
        E::ResponseTooLong => Reply::line_too_long(),
        E::NeedsMoreData { .. } | E::InvalidResponse { .. } => Reply::syntax("Syntax error"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::testing::TestContext;

    /// Issue #11: an idle session costs its task, and a task is as large as
    /// its future's largest state. Reads go into the connection's buffer and
    /// the large states (a command's, the TLS handshake's) are boxed, so the
    /// future stays small; with a 16 KiB read buffer on it, it took 18 KiB.
    #[tokio::test]
    async fn a_session_future_is_small() {
        let t = TestContext::start("").await;
        let (stream, _client) = tokio::io::duplex(64);
        let connected = Connected {
            role: ListenerRole::Mta,
            peer: SocketAddr::from(([192, 0, 2, 1], 40000)),
            local: SocketAddr::from(([127, 0, 0, 1], 25)),
            tls: TlsStart::Plain,
        };
        let session = run(Arc::clone(&t.ctx), Box::new(stream), connected);
        let size = std::mem::size_of_val(&session);
        assert!(size <= 2048, "a session's future takes {size} octets");
    }

    #[test]
    fn address_literals_parse_in_mail_and_rcpt() {
        let Ok(Request::Rcpt { to }) = parse_command(b"RCPT TO:<x@[192.0.2.1]> NOTIFY=NEVER\r\n")
        else {
            panic!("RCPT with a literal must parse");
        };
        assert_eq!(to.address, "x@[192.0.2.1]");
        assert_eq!(to.flags, smtp_proto::RCPT_NOTIFY_NEVER);
        let Ok(Request::Mail { from }) =
            parse_command(b"mail from:<a@[IPv6:2001:db8::1]> SIZE=10\r\n")
        else {
            panic!("MAIL with a literal must parse");
        };
        assert_eq!(
            (from.address.as_str(), from.size),
            ("a@[IPv6:2001:db8::1]", 10)
        );
        assert!(parse_command(b"RCPT TO:<x@[unclosed>\r\n").is_err());
    }
}
