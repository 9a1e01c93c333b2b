//! One port's probe for `postern check`: connect, greeting, EHLO with the
//! run's token, STARTTLS or implicit TLS, EHLO again, and AUTH when asked and
//! safe. It records what happened as plain data (`PortProbe`) and never
//! judges; classify.rs does. Also the port-echo question and the test message.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use tokio::net::TcpStream;
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout_at};

use super::tls::{TlsFailure, TlsSession, TlsSetup};
use super::wire::{self, Conn, Ehlo, Io, Reply, WireError};

/// How a port expects TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// TLS from the first byte (RFC 8314: 465, and 443).
    Implicit,
    /// Plain text, then STARTTLS (RFC 3207).
    StartTls,
    /// No TLS at all (only for a relay configured so).
    Plain,
}

impl Security {
    /// The words a mail client uses for it.
    pub fn client_words(self) -> &'static str {
        match self {
            Security::Implicit => "SSL/TLS",
            Security::StartTls => "STARTTLS",
            Security::Plain => "none",
        }
    }

    /// The usual security of a port: implicit TLS on 465 and 443.
    pub fn for_port(port: u16) -> Security {
        if matches!(port, 465 | 443) {
            Security::Implicit
        } else {
            Security::StartTls
        }
    }
}

/// One place to probe.
#[derive(Debug, Clone)]
pub struct Target {
    /// Position in the run's list, for progress.
    pub index: usize,
    /// The name the user typed: used for TLS verification and the report.
    pub host: String,
    pub addrs: Vec<IpAddr>,
    pub port: u16,
    pub security: Security,
}

/// What a user name and password are for.
#[derive(Clone)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// A step of a probe, for progress and reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Connect,
    Greeting,
    Ehlo,
    StartTls,
    Tls,
    Auth,
    Mail,
}

impl Step {
    pub fn word(self) -> &'static str {
        match self {
            Step::Connect => "connecting",
            Step::Greeting => "greeting",
            Step::Ehlo => "EHLO",
            Step::StartTls => "STARTTLS",
            Step::Tls => "TLS",
            Step::Auth => "AUTH",
            Step::Mail => "sending",
        }
    }
}

/// A live progress event: target number `index` reached `step`, or
/// finished (`None`).
#[derive(Debug, Clone)]
pub struct Progress {
    pub index: usize,
    pub step: Option<Step>,
}

/// What every probe of one run shares.
#[derive(Clone)]
pub struct Context {
    pub tls: TlsSetup,
    /// `check-<token>.postern.invalid`, or the server's own name for --outbound.
    pub ehlo_name: String,
    pub started: Instant,
    pub deadline: Instant,
    pub credentials: Option<Credentials>,
    /// Send a password only over TLS whose certificate is valid for the host
    /// (a relay with `tls_verify = false` relaxes it, as delivery would).
    pub auth_needs_valid_cert: bool,
    pub progress: Option<UnboundedSender<Progress>>,
}

impl Context {
    fn report(&self, index: usize, step: Option<Step>) {
        if let Some(tx) = &self.progress {
            let _ = tx.send(Progress { index, step });
        }
    }

    /// When a port that accepted the connection but said nothing gets one
    /// EHLO line, to make a service that waits for the client show itself
    /// (HTTP answers it). Late enough not to rush a slow real greeting.
    fn nudge_at(&self) -> Instant {
        self.started + (self.deadline - self.started) * 2 / 3
    }
}

/// Why a TCP connection failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectError {
    /// RST: nothing listens, or a firewall rejects.
    Refused,
    /// No answer at all before the deadline.
    TimedOut,
    /// No route, or an ICMP unreachable.
    NoRoute(String),
    Other(String),
}

/// Where and why a probe stopped before its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    Connect(ConnectError),
    /// Connected, but no usable greeting (silence, noise, close, too long).
    Greeting(WireError),
    /// The server answered a step with a failure code.
    Rejected {
        step: Step,
        reply: Reply,
    },
    NoStartTls,
    /// Octets after the 220 to STARTTLS: a plaintext injection (RFC 3207 §6).
    Injected,
    Tls(TlsFailure),
    /// Timeout, close or garbage after the greeting.
    Wire {
        step: Step,
        error: WireError,
    },
}

/// The result of AUTH on one port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    Accepted {
        mechanism: String,
    },
    Refused {
        reply: Reply,
    },
    /// Not tried, and why.
    NotTried(String),
}

/// Everything one probe saw, as data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortProbe {
    pub port: u16,
    pub security: Security,
    pub address: Option<IpAddr>,
    /// TCP connect time.
    pub latency: Option<Duration>,
    pub greeting: Option<Reply>,
    /// The EHLO names the server gave (before and after TLS).
    pub ehlo_names: Vec<String>,
    /// The last EHLO reply (after TLS when TLS was used).
    pub ehlo: Option<Ehlo>,
    pub tls: Option<TlsSession>,
    /// Our EHLO carrying the token reached whatever answered.
    pub token_sent: bool,
    pub stop: Option<Stop>,
    pub auth: Option<AuthOutcome>,
}

impl PortProbe {
    pub fn new(port: u16, security: Security) -> PortProbe {
        PortProbe {
            port,
            security,
            address: None,
            latency: None,
            greeting: None,
            ehlo_names: Vec::new(),
            ehlo: None,
            tls: None,
            token_sent: false,
            stop: None,
            auth: None,
        }
    }
}

/// Probes one target. Never fails: every outcome is recorded in the result.
pub async fn probe(ctx: Arc<Context>, target: Target) -> PortProbe {
    let mut probe = PortProbe::new(target.port, target.security);
    match dialogue(&ctx, &target, &mut probe, true).await {
        Err(stop) => probe.stop = Some(stop),
        Ok(mut conn) => {
            if let Some(creds) = &ctx.credentials {
                ctx.report(target.index, Some(Step::Auth));
                probe.auth = Some(authenticate(&ctx, &probe, &mut conn, creds).await);
            }
            quit(conn).await;
        }
    }
    ctx.report(target.index, None);
    probe
}

/// Connects and runs the dialogue up to the EHLO after TLS, recording each
/// fact in `probe`; returns the connection ready for AUTH or MAIL.
async fn dialogue(
    ctx: &Context,
    target: &Target,
    probe: &mut PortProbe,
    nudge: bool,
) -> Result<Conn, Stop> {
    let port = target.port;
    ctx.report(target.index, Some(Step::Connect));
    let (tcp, ip, latency) = connect(&target.addrs, port, ctx.deadline)
        .await
        .map_err(Stop::Connect)?;
    probe.address = Some(ip);
    probe.latency = Some(latency);
    let mut io: Box<dyn Io> = Box::new(tcp);
    if target.security == Security::Implicit {
        ctx.report(target.index, Some(Step::Tls));
        let (tls_io, session) = ctx
            .tls
            .handshake(io, &target.host, ctx.deadline)
            .await
            .map_err(Stop::Tls)?;
        io = tls_io;
        probe.tls = Some(session);
    }
    let mut conn = Conn::new(io);
    ctx.report(target.index, Some(Step::Greeting));
    let mut ehlo_sent = false;
    let spoke = conn
        .peek(if nudge { ctx.nudge_at() } else { ctx.deadline })
        .await
        .map_err(Stop::Greeting)?;
    if !spoke {
        conn.send(&format!("EHLO {}", ctx.ehlo_name), ctx.deadline)
            .await
            .map_err(Stop::Greeting)?;
        ehlo_sent = true;
        probe.token_sent = true;
    }
    let greeting = conn
        .read_reply(ctx.deadline)
        .await
        .map_err(Stop::Greeting)?;
    probe.greeting = Some(greeting.clone());
    if greeting.code / 100 != 2 {
        return Err(Stop::Rejected {
            step: Step::Greeting,
            reply: greeting,
        });
    }
    ctx.report(target.index, Some(Step::Ehlo));
    let ehlo = if ehlo_sent {
        conn.read_reply(ctx.deadline).await
    } else {
        conn.command(&format!("EHLO {}", ctx.ehlo_name), ctx.deadline)
            .await
    };
    probe.token_sent = true;
    let ehlo = ehlo_reply(ehlo, probe)?;
    if target.security != Security::StartTls {
        return Ok(conn);
    }
    if !ehlo.starttls {
        return Err(Stop::NoStartTls);
    }
    ctx.report(target.index, Some(Step::StartTls));
    expect(
        conn.command("STARTTLS", ctx.deadline).await,
        Step::StartTls,
        220,
    )?;
    if conn.buffered() > 0 {
        return Err(Stop::Injected);
    }
    ctx.report(target.index, Some(Step::Tls));
    let (io, session) = ctx
        .tls
        .handshake(conn.into_inner(), &target.host, ctx.deadline)
        .await
        .map_err(Stop::Tls)?;
    probe.tls = Some(session);
    let mut conn = Conn::new(io);
    // RFC 3207 §4.2: everything learnt before TLS is forgotten; ask again.
    let again = conn
        .command(&format!("EHLO {}", ctx.ehlo_name), ctx.deadline)
        .await;
    ehlo_reply(again, probe)?;
    Ok(conn)
}

/// The reply to the command of `step`, if it has the expected code.
fn expect(reply: Result<Reply, WireError>, step: Step, code: u16) -> Result<Reply, Stop> {
    let reply = reply.map_err(|error| Stop::Wire { step, error })?;
    if reply.code != code {
        return Err(Stop::Rejected { step, reply });
    }
    Ok(reply)
}

fn ehlo_reply(reply: Result<Reply, WireError>, probe: &mut PortProbe) -> Result<Ehlo, Stop> {
    let reply = expect(reply, Step::Ehlo, 250)?;
    let ehlo = wire::parse_ehlo(&reply);
    probe.ehlo_names.extend(ehlo.name.clone());
    probe.ehlo = Some(ehlo.clone());
    Ok(ehlo)
}

/// Tries every address at once and keeps the first that connects; when none
/// does, the most telling error wins (a refusal says more than a timeout).
async fn connect(
    addrs: &[IpAddr],
    port: u16,
    deadline: Instant,
) -> Result<(TcpStream, IpAddr, Duration), ConnectError> {
    let mut attempts = JoinSet::new();
    for &ip in addrs {
        attempts.spawn(async move {
            let start = Instant::now();
            let result = timeout_at(deadline, TcpStream::connect((ip, port))).await;
            (ip, start.elapsed(), result)
        });
    }
    let mut errors = Vec::new();
    while let Some(joined) = attempts.join_next().await {
        match joined {
            Ok((ip, took, Ok(Ok(stream)))) => return Ok((stream, ip, took)),
            Ok((_, _, Ok(Err(e)))) => errors.push(connect_error(&e)),
            Ok((_, _, Err(_))) => errors.push(ConnectError::TimedOut),
            Err(e) => errors.push(ConnectError::Other(e.to_string())),
        }
    }
    let rank = |e: &ConnectError| match e {
        ConnectError::Refused => 0,
        ConnectError::TimedOut => 1,
        ConnectError::NoRoute(_) => 2,
        ConnectError::Other(_) => 3,
    };
    errors.sort_by_key(rank);
    Err(errors
        .into_iter()
        .next()
        .unwrap_or(ConnectError::Other("no address to connect to".into())))
}

fn connect_error(e: &std::io::Error) -> ConnectError {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => ConnectError::Refused,
        K::NetworkUnreachable | K::HostUnreachable | K::AddrNotAvailable => {
            ConnectError::NoRoute(e.to_string())
        }
        K::TimedOut => ConnectError::TimedOut,
        _ => ConnectError::Other(e.to_string()),
    }
}

/// AUTH PLAIN (RFC 4616), or LOGIN where PLAIN is not offered; only over TLS
/// that a mail client would accept, so a password never reaches an impostor.
async fn authenticate(
    ctx: &Context,
    probe: &PortProbe,
    conn: &mut Conn,
    creds: &Credentials,
) -> AuthOutcome {
    let tls_ok = probe.tls.as_ref().is_some_and(|t| t.verdict.is_valid())
        || (probe.tls.is_some() && !ctx.auth_needs_valid_cert);
    if !tls_ok {
        return AuthOutcome::NotTried(
            "the password was not sent: no TLS with a valid certificate on this port".into(),
        );
    }
    let offered = probe
        .ehlo
        .as_ref()
        .map(|e| e.auth.clone())
        .unwrap_or_default();
    let result = if offered.iter().any(|m| m == "PLAIN") {
        let token = B64.encode(format!("\0{}\0{}", creds.user, creds.password));
        conn.command(&format!("AUTH PLAIN {token}"), ctx.deadline)
            .await
            .map(|r| (r, "PLAIN"))
    } else if offered.iter().any(|m| m == "LOGIN") {
        auth_login(ctx, conn, creds).await.map(|r| (r, "LOGIN"))
    } else {
        return AuthOutcome::NotTried("the server offers neither PLAIN nor LOGIN here".into());
    };
    match result {
        Ok((reply, mechanism)) if reply.code == 235 => AuthOutcome::Accepted {
            mechanism: mechanism.into(),
        },
        Ok((reply, _)) => AuthOutcome::Refused { reply },
        Err(e) => AuthOutcome::NotTried(format!("AUTH got no answer: {e}")),
    }
}

async fn auth_login(
    ctx: &Context,
    conn: &mut Conn,
    creds: &Credentials,
) -> Result<Reply, WireError> {
    let reply = conn.command("AUTH LOGIN", ctx.deadline).await?;
    if reply.code != 334 {
        return Ok(reply);
    }
    let reply = conn.command(&B64.encode(&creds.user), ctx.deadline).await?;
    if reply.code != 334 {
        return Ok(reply);
    }
    conn.command(&B64.encode(&creds.password), ctx.deadline)
        .await
}

/// Ends politely but without waiting long: the verdict is already known.
async fn quit(mut conn: Conn) {
    let soon = Instant::now() + Duration::from_millis(300);
    let _ = conn.command("QUIT", soon).await;
}

/// Asks whatever answers on `target` which of its ports saw `token`:
/// `Some(ports)` from a server that knows the question, else `None`.
pub async fn echo(ctx: Arc<Context>, target: Target, token: String) -> Option<Vec<u16>> {
    let (tcp, _, _) = connect(&target.addrs, target.port, ctx.deadline)
        .await
        .ok()?;
    let mut io: Box<dyn Io> = Box::new(tcp);
    if target.security == Security::Implicit {
        io = ctx
            .tls
            .handshake(io, &target.host, ctx.deadline)
            .await
            .ok()?
            .0;
    }
    let mut conn = Conn::new(io);
    let greeting = conn.read_reply(ctx.deadline).await.ok()?;
    if greeting.code != 220 {
        return None;
    }
    // RFC 5321 §4.1.1.9: NOOP may carry a string; an older server just says 250.
    let reply = conn
        .command(&format!("NOOP postern-echo {token}"), ctx.deadline)
        .await
        .ok()?;
    quit(conn).await;
    wire::parse_echo(&reply)
}

/// The outcome of `--send-to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendOutcome {
    /// The port used; `None` when no port could be tried.
    pub port: Option<u16>,
    pub accepted: bool,
    pub queue_id: Option<String>,
    /// The last reply, or why there was none.
    pub detail: String,
    /// Where the dialogue stopped before the message, for the report to put
    /// in words (`classify::describe_stop`): probing only measures.
    pub stopped: Option<Stop>,
}

/// Sends one short test message from `from` to `to` through `target`,
/// authenticated; the 250 after DATA carries the queue id.
pub async fn send_test(ctx: Arc<Context>, target: Target, from: &str, to: &str) -> SendOutcome {
    let port = target.port;
    let mut outcome = SendOutcome {
        port: Some(port),
        accepted: false,
        queue_id: None,
        detail: String::new(),
        stopped: None,
    };
    let mut probe = PortProbe::new(port, target.security);
    let mut conn = match dialogue(&ctx, &target, &mut probe, false).await {
        Ok(conn) => conn,
        Err(stop) => {
            outcome.stopped = Some(stop);
            return outcome;
        }
    };
    if let Some(creds) = &ctx.credentials {
        match authenticate(&ctx, &probe, &mut conn, creds).await {
            AuthOutcome::Accepted { .. } => {}
            AuthOutcome::Refused { reply } => {
                outcome.detail = format!("AUTH was refused: {}", reply.summary());
                return outcome;
            }
            AuthOutcome::NotTried(why) => {
                outcome.detail = why;
                return outcome;
            }
        }
    }
    ctx.report(target.index, Some(Step::Mail));
    match transaction(&ctx, &mut conn, from, to).await {
        Ok(reply) => {
            outcome.accepted = reply.code == 250;
            outcome.queue_id = wire::queue_id(&reply).filter(|_| outcome.accepted);
            outcome.detail = reply.summary();
        }
        Err(detail) => outcome.detail = detail,
    }
    quit(conn).await;
    ctx.report(target.index, None);
    outcome
}

async fn transaction(
    ctx: &Context,
    conn: &mut Conn,
    from: &str,
    to: &str,
) -> Result<Reply, String> {
    let message = test_message(from, to, &ctx.ehlo_name);
    let steps = [
        (format!("MAIL FROM:<{from}>"), 250),
        (format!("RCPT TO:<{to}>"), 250),
        ("DATA".to_string(), 354),
    ];
    for (command, want) in steps {
        let reply = conn
            .command(&command, ctx.deadline)
            .await
            .map_err(|e| format!("{command}: {e}"))?;
        if reply.code != want {
            return Ok(reply);
        }
    }
    conn.send_raw(&wire::dot_stuff(&message), ctx.deadline)
        .await
        .map_err(|e| format!("sending the message: {e}"))?;
    conn.read_reply(ctx.deadline)
        .await
        .map_err(|e| format!("after the message: {e}"))
}

fn test_message(from: &str, to: &str, probe_name: &str) -> Vec<u8> {
    let text = format!(
        "This message was sent by `postern check --send-to` to test the way out\r\n\
         from this network ({probe_name}). It needs no answer.\r\n"
    );
    mail_builder::MessageBuilder::new()
        .from(from.to_string())
        .to(to.to_string())
        .subject("postern check: test message")
        .text_body(text)
        .write_to_vec()
        .unwrap_or_default()
}
