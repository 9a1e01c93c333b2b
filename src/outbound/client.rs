//! One SMTP client session to one server address (mail-send's low-level
//! commands): greeting, EHLO, STARTTLS or implicit TLS, AUTH to a smarthost,
//! MAIL/RCPT (pipelined when offered) and DATA, with an outcome per recipient.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mail_send::{Credentials, SmtpClient};
use smtp_proto::{EXT_PIPELINING, EXT_START_TLS, EhloResponse, Response};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::commands::{
    check_capabilities, check_requiretls, mail_command, rcpt_command, seven_bit_body,
};
use crate::smtp::Stream;
use tokio_rustls::TlsConnector;

use crate::failure::{DeliveryFailure, FailureKind, Severity, Stage, render};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// STARTTLS when offered, plaintext otherwise (MX delivery).
    Opportunistic,
    /// STARTTLS or fail (a smarthost with `tls = "starttls"`).
    Required,
    /// TLS from the first byte (`tls = "implicit"`).
    Implicit,
    /// Never (`tls = "none"`).
    Off,
}

/// Where to connect and how.
pub struct Endpoint<'a> {
    /// Host name, for TLS (SNI and verification) and messages.
    pub host: &'a str,
    pub addr: SocketAddr,
    pub tls: TlsMode,
    pub connector: &'a TlsConnector,
    pub credentials: Option<&'a Credentials<String>>,
    /// Whether `credentials` may be sent over a connection without TLS
    /// (`allow_plaintext_auth`).
    pub plaintext_auth: bool,
    /// Whether `connector` verifies the server's certificate.
    pub verified: bool,
    /// Who requires TLS when `tls` is `Required`, for the failure's text:
    /// "this relay", "the MTA-STS policy of example.org".
    pub tls_required_by: &'a str,
    pub connect_timeout: Duration,
    /// How long each reply may take; the end of DATA gets five times as long
    /// (RFC 5321 §4.5.3.2.6 allows 10 minutes there).
    pub reply_timeout: Duration,
}

impl Endpoint<'_> {
    /// Its name among kept connections: a connection serves another message
    /// only to the same address, host name, TLS mode, certificate check and
    /// login (a relay's unverified session must not carry mail an MTA-STS
    /// policy sends only over verified ones).
    pub fn key(&self) -> String {
        format!(
            "{}|{}|{:?}|{}|{}",
            self.addr,
            self.host,
            self.tls,
            self.verified,
            self.credentials.map_or("", |c| match c {
                Credentials::Plain { username, .. } => username.as_str(),
                _ => "",
            })
        )
    }
}

/// One recipient of a delivery attempt.
#[derive(Clone)]
pub struct Rcpt<'a> {
    pub idx: u32,
    pub address: &'a str,
    pub orcpt: Option<&'a str>,
    pub notify: Option<&'a str>,
}

pub struct Envelope<'a> {
    pub sender: &'a str,
    pub recipients: Vec<Rcpt<'a>>,
    pub body: &'a [u8],
    pub smtputf8: bool,
    /// RFC 8689: only over TLS with a verified certificate, to a server
    /// that offers REQUIRETLS, which is asked for.
    pub requiretls: bool,
    pub ret: Option<&'a str>,
    pub envid: Option<&'a str>,
}

/// The result for one recipient: the server's acceptance, or why not.
pub type RecipientResult = (u32, Result<String, DeliveryFailure>);

/// Why a connection could not be used at all, with what port-25 detection needs.
#[derive(Debug)]
pub struct ConnectFailure {
    pub failure: DeliveryFailure,
    /// The TCP connection itself failed (refused or timed out), as opposed to a
    /// server that answered badly.
    pub tcp_failed: bool,
    /// The server answered, but STARTTLS did not give an encrypted session.
    pub starttls_failed: bool,
}

/// An open, greeted (and, as the endpoint asks, encrypted and authenticated)
/// SMTP session, ready for MAIL; kept between messages by `cache.rs`.
pub struct Connection {
    pub client: SmtpClient<Box<dyn Stream>>,
    pub caps: EhloResponse<String>,
    pub opened: Instant,
    /// Encrypted, with the server's certificate verified for its name.
    pub tls_verified: bool,
    /// Encrypted at all.
    pub encrypted: bool,
}

/// Connects to `endpoint`: greeting, EHLO, TLS as asked, AUTH when credentials
/// are given. `Err` means this host cannot be used now (try the next).
///
/// With opportunistic TLS, a STARTTLS that fails (a refused command, a
/// handshake with a server that knows only old ciphers or versions) is
/// followed at once by a plaintext session on a new connection, as Postfix
/// does at security level "may": such a host would otherwise never get mail,
/// and without a policy (MTA-STS, DANE) plaintext is what was on offer.
pub async fn open(endpoint: &Endpoint<'_>, ehlo_name: &str) -> Result<Connection, ConnectFailure> {
    match open_with(endpoint, ehlo_name, endpoint.tls).await {
        Err(failed) if failed.starttls_failed && endpoint.tls == TlsMode::Opportunistic => {
            tracing::warn!(
                event = "tls_fallback_plaintext",
                host = endpoint.host,
                addr = %endpoint.addr,
                error = %failed.failure.text,
                "STARTTLS failed; delivering without TLS"
            );
            open_with(endpoint, ehlo_name, TlsMode::Off).await
        }
        opened => opened,
    }
}

async fn open_with(
    endpoint: &Endpoint<'_>,
    ehlo_name: &str,
    tls_mode: TlsMode,
) -> Result<Connection, ConnectFailure> {
    let host = endpoint.host;
    let tcp = SmtpClient::connect(endpoint.addr, endpoint.connect_timeout)
        .await
        .map_err(|e| ConnectFailure {
            failure: DeliveryFailure::unreachable(host, endpoint.addr, &e),
            tcp_failed: true,
            starttls_failed: false,
        })?;
    // Commands and small messages are written in pieces and answered at once:
    // with Nagle's algorithm on, each piece may wait for the peer's delayed ACK
    // (tens of milliseconds per message).
    let _ = tcp.stream.set_nodelay(true);
    let mut tcp = SmtpClient {
        stream: tcp.stream,
        timeout: endpoint.reply_timeout,
    };
    let host_failure = |failure: DeliveryFailure| ConnectFailure {
        failure,
        tcp_failed: false,
        starttls_failed: false,
    };
    // Whether the session ends up encrypted: AUTH depends on it below.
    let (mut conn, encrypted) = if tls_mode == TlsMode::Implicit {
        let tls = tcp.into_tls(endpoint.connector, host).await.map_err(|e| {
            host_failure(DeliveryFailure::from_client_error(
                host,
                Stage::TlsHandshake,
                &e,
            ))
        })?;
        let mut client = boxed(tls);
        greeting(&mut client, host).await.map_err(host_failure)?;
        let caps = ehlo(&mut client, host, ehlo_name)
            .await
            .map_err(host_failure)?;
        (Connection::new(client, caps), true)
    } else {
        greeting(&mut tcp, host).await.map_err(host_failure)?;
        let caps = ehlo(&mut tcp, host, ehlo_name)
            .await
            .map_err(host_failure)?;
        let use_tls = match tls_mode {
            TlsMode::Off => false,
            TlsMode::Opportunistic => caps.has_capability(EXT_START_TLS),
            TlsMode::Required if caps.has_capability(EXT_START_TLS) => true,
            TlsMode::Required | TlsMode::Implicit => {
                return Err(host_failure(DeliveryFailure::new(
                    Severity::Transient,
                    FailureKind::Tls,
                    format!(
                        "{host} does not offer STARTTLS, which {} requires",
                        endpoint.tls_required_by
                    ),
                )));
            }
        };
        if use_tls {
            let tls =
                tcp.start_tls(endpoint.connector, host)
                    .await
                    .map_err(|e| ConnectFailure {
                        starttls_failed: true,
                        ..host_failure(DeliveryFailure::from_client_error(
                            host,
                            Stage::StartTls,
                            &e,
                        ))
                    })?;
            let mut client = boxed(tls);
            let caps = ehlo(&mut client, host, ehlo_name)
                .await
                .map_err(host_failure)?;
            (Connection::new(client, caps), true)
        } else {
            (Connection::new(boxed(tcp), caps), false)
        }
    };
    conn.encrypted = encrypted;
    conn.tls_verified = encrypted && endpoint.verified;
    if let Some(credentials) = endpoint.credentials {
        // The config check already refuses this combination; this keeps a
        // password off the wire whatever path led here.
        if !encrypted && !endpoint.plaintext_auth {
            return Err(host_failure(DeliveryFailure::new(
                Severity::Transient,
                FailureKind::Tls,
                format!(
                    "{host}: the connection is not encrypted, so the password is not sent \
                     (allow_plaintext_auth = true permits it on a private link)"
                ),
            )));
        }
        conn.client
            .authenticate(credentials, &conn.caps)
            .await
            .map_err(|e| host_failure(DeliveryFailure::from_client_error(host, Stage::Auth, &e)))?;
    }
    Ok(conn)
}

impl Connection {
    fn new(client: SmtpClient<Box<dyn Stream>>, caps: EhloResponse<String>) -> Connection {
        Connection {
            client,
            caps,
            opened: Instant::now(),
            tls_verified: false,
            encrypted: false,
        }
    }
}

fn boxed<T: Stream + 'static>(c: SmtpClient<T>) -> SmtpClient<Box<dyn Stream>> {
    SmtpClient {
        stream: Box::new(c.stream),
        timeout: c.timeout,
    }
}

/// Ends a session politely; errors do not matter any more.
pub async fn quit(mut conn: Connection) {
    let _ = conn.client.cmd("QUIT\r\n").await;
}

/// Whether a TCP connection to `addr` can be made within `timeout`: if so,
/// the server's greeting is read (within `timeout` too) and the session
/// ended with QUIT, as a courtesy to a server that owes us nothing. A port
/// test, not a delivery: nothing is sent.
pub async fn knock(addr: SocketAddr, timeout: Duration) -> Result<(), mail_send::Error> {
    let mut c = SmtpClient::connect(addr, timeout).await?;
    if greeting(&mut c, "").await.is_ok() {
        let _ = c.cmd("QUIT\r\n").await;
    }
    Ok(())
}

/// Reads the server's greeting: `Ok` for 220, else why this host cannot be used.
pub(crate) async fn greeting<T: AsyncRead + AsyncWrite + Unpin>(
    c: &mut SmtpClient<T>,
    host: &str,
) -> Result<(), DeliveryFailure> {
    let reply = tokio::time::timeout(c.timeout, c.read())
        .await
        .map_err(|_| {
            DeliveryFailure::new(
                Severity::Transient,
                FailureKind::Timeout {
                    stage: Stage::Greeting,
                },
                format!("{host}: no greeting"),
            )
        })?
        .map_err(|e| DeliveryFailure::from_client_error(host, Stage::Greeting, &e))?;
    if reply.code == 220 {
        Ok(())
    } else {
        // A 554 greeting means "no service here": another host may do better.
        let mut f = DeliveryFailure::from_reply(host, Stage::Greeting, &reply);
        f.severity = Severity::Transient;
        Err(f)
    }
}

async fn ehlo<T: AsyncRead + AsyncWrite + Unpin>(
    c: &mut SmtpClient<T>,
    host: &str,
    name: &str,
) -> Result<EhloResponse<String>, DeliveryFailure> {
    c.ehlo(name)
        .await
        .map_err(|e| DeliveryFailure::from_client_error(host, Stage::Ehlo, &e))
}

/// One mail transaction on an open connection. `Ok` carries a result per
/// recipient and whether the connection may carry another message; `Err`
/// means the connection failed before any recipient was settled.
pub async fn transaction(
    conn: &mut Connection,
    host: &str,
    env: &Envelope<'_>,
) -> Result<(Vec<RecipientResult>, bool), DeliveryFailure> {
    let (c, caps) = (&mut conn.client, &conn.caps);
    let everyone = |f: DeliveryFailure| {
        env.recipients
            .iter()
            .map(|r| (r.idx, Err(f.clone())))
            .collect::<Vec<_>>()
    };
    if let Err(f) = check_capabilities(host, caps, env)
        .and_then(|()| check_requiretls(host, conn.tls_verified, caps, env))
    {
        return Ok((everyone(f), true));
    }
    let seven_bit = seven_bit_body(caps, env);
    let converted;
    let env = match &seven_bit {
        Some(body) => {
            converted = Envelope {
                body,
                recipients: env.recipients.clone(),
                ..*env
            };
            &converted
        }
        None => env,
    };
    let mut commands = vec![mail_command(env, caps)];
    commands.extend(env.recipients.iter().map(|r| rcpt_command(r, caps)));
    let pipelining = caps.has_capability(EXT_PIPELINING);
    let replies: Vec<Response<String>> = if pipelining {
        // DATA may end the group (RFC 2920 §3.1): one round trip for the
        // envelope, and one for the body.
        commands.push("DATA\r\n".to_string());
        pipeline(c, &commands)
            .await
            .map_err(|e| DeliveryFailure::from_client_error(host, Stage::Mail, &e))?
    } else {
        let mut replies = Vec::with_capacity(commands.len());
        for cmd in &commands {
            let reply = c
                .cmd(cmd)
                .await
                .map_err(|e| DeliveryFailure::from_client_error(host, Stage::Mail, &e))?;
            let refused_sender = replies.is_empty() && reply.code >= 400;
            replies.push(reply);
            if refused_sender {
                break;
            }
        }
        replies
    };
    let (rcpt_replies, data_reply) = if pipelining {
        let (data, rest) = replies.split_last().unzip();
        (rest.and_then(|r| r.get(1..)).unwrap_or(&[]), data.cloned())
    } else {
        (replies.get(1..).unwrap_or(&[]), None)
    };
    let Some(mail) = replies.first().filter(|r| r.code >= 400) else {
        return data(c, host, env, rcpt_replies, data_reply).await;
    };
    let failure = DeliveryFailure::from_reply(host, Stage::Mail, mail);
    let reusable = abandon(c, data_reply.as_ref()).await;
    Ok((everyone(failure), reusable))
}

/// Sends a group of commands in one write and reads a reply to each.
async fn pipeline<T: AsyncRead + AsyncWrite + Unpin>(
    c: &mut SmtpClient<T>,
    commands: &[String],
) -> mail_send::Result<Vec<Response<String>>> {
    let group = commands.concat();
    tokio::time::timeout(c.timeout, async {
        c.stream.write_all(group.as_bytes()).await?;
        c.stream.flush().await?;
        c.read_many(commands.len()).await
    })
    .await
    .map_err(|_| mail_send::Error::Timeout)?
}

/// Ends a transaction that will carry no message: a pipelined DATA that the
/// server took anyway (354) gets an empty body, then RSET. Whether the
/// connection can carry another message.
async fn abandon<T: AsyncRead + AsyncWrite + Unpin>(
    c: &mut SmtpClient<T>,
    data_reply: Option<&Response<String>>,
) -> bool {
    if data_reply.is_some_and(|r| r.code == 354) {
        let ended = tokio::time::timeout(c.timeout, async {
            write_dot_stuffed(&mut c.stream, b"").await?;
            c.read().await
        })
        .await;
        if !matches!(ended, Ok(Ok(_))) {
            return false;
        }
    }
    c.rset().await.is_ok()
}

async fn data<T: AsyncRead + AsyncWrite + Unpin>(
    c: &mut SmtpClient<T>,
    host: &str,
    env: &Envelope<'_>,
    rcpt_replies: &[Response<String>],
    data_reply: Option<Response<String>>,
) -> Result<(Vec<RecipientResult>, bool), DeliveryFailure> {
    let mut results: Vec<RecipientResult> = Vec::with_capacity(env.recipients.len());
    let mut accepted = Vec::new();
    for (r, reply) in env.recipients.iter().zip(rcpt_replies) {
        if reply.code < 400 {
            accepted.push(r.idx);
        } else {
            results.push((
                r.idx,
                Err(DeliveryFailure::from_reply(host, Stage::Rcpt, reply)),
            ));
        }
    }
    if accepted.is_empty() {
        let reusable = abandon(c, data_reply.as_ref()).await;
        return Ok((results, reusable));
    }
    let data_reply = match data_reply {
        Some(reply) => Ok(reply),
        None => c.cmd("DATA\r\n").await,
    };
    let reply = match data_reply {
        Ok(r) if r.code == 354 => send_body(c, env.body).await,
        Ok(r) => Ok(r),
        Err(e) => Err(e),
    };
    let (outcome, reusable) = match reply {
        Ok(r) if r.code < 400 => (Ok(format!("{host} said: {}", render(&r))), true),
        Ok(r) => (
            Err(DeliveryFailure::from_reply(host, Stage::Data, &r)),
            false,
        ),
        // A connection cut in the middle of DATA: nobody knows whether the
        // message arrived, so it is tried again (RFC 5321 §6.1).
        Err(e) => (
            Err(DeliveryFailure::from_client_error(host, Stage::Data, &e)),
            false,
        ),
    };
    results.extend(accepted.into_iter().map(|idx| (idx, outcome.clone())));
    Ok((results, reusable))
}

async fn send_body<T: AsyncRead + AsyncWrite + Unpin>(
    c: &mut SmtpClient<T>,
    body: &[u8],
) -> mail_send::Result<Response<String>> {
    tokio::time::timeout(c.timeout * 5, async {
        write_dot_stuffed(&mut c.stream, body).await?;
        c.read().await
    })
    .await
    .map_err(|_| mail_send::Error::Timeout)?
}

/// Writes a spooled body (CRLF line ends, no bare CR) as DATA content: a dot
/// doubled at the start of every line (RFC 5321 §4.5.2), then CRLF.CRLF.
/// mail-send's `write_message` does the same by testing every octet, which was a
/// tenth of the CPU time when relaying 100 KiB messages; memchr finds the rare
/// line that starts with a dot, and the buffer merges the pieces and the
/// terminator into few writes (a large run goes straight to the socket).
pub(crate) async fn write_dot_stuffed<W: AsyncWrite + Unpin>(
    stream: &mut W,
    body: &[u8],
) -> std::io::Result<()> {
    let mut out = tokio::io::BufWriter::with_capacity(16 * 1024, stream);
    let mut start = 0;
    if body.first() == Some(&b'.') {
        out.write_all(b".").await?;
    }
    for newline in memchr::memmem::find_iter(body, b"\n.") {
        out.write_all(&body[start..=newline]).await?;
        out.write_all(b".").await?;
        start = newline + 1;
    }
    out.write_all(&body[start..]).await?;
    if !body.is_empty() && !body.ends_with(b"\r\n") {
        out.write_all(b"\r\n").await?;
    }
    out.write_all(b".\r\n").await?;
    out.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scripted server without STARTTLS that offers AUTH; returns what the
    /// client sent, once it hangs up.
    async fn plaintext_server() -> (SocketAddr, tokio::task::JoinHandle<String>) {
        use tokio::io::{AsyncBufReadExt, BufReader};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            write.write_all(b"220 fake ESMTP\r\n").await.expect("write");
            let mut seen = String::new();
            while let Ok(Some(line)) = lines.next_line().await {
                let reply: &[u8] = if line.starts_with("EHLO") {
                    b"250-fake\r\n250 AUTH PLAIN LOGIN\r\n"
                } else if line.starts_with("AUTH") {
                    b"235 2.7.0 ok\r\n"
                } else {
                    b"250 ok\r\n"
                };
                seen.push_str(&line);
                seen.push('\n');
                write.write_all(reply).await.expect("write");
            }
            seen
        });
        (addr, server)
    }

    /// Issue #9 item 12, defence in depth behind the config check: a password
    /// goes over a connection without TLS only when the relay allows it.
    #[tokio::test]
    async fn no_auth_in_clear_unless_the_relay_allows_it() {
        crate::tls::install_crypto_provider();
        let connector = mail_send::smtp::tls::build_tls_connector(true).expect("connector");
        let credentials = Credentials::new("relayuser".to_string(), "secret".to_string());
        for plaintext_auth in [false, true] {
            let (addr, server) = plaintext_server().await;
            let endpoint = Endpoint {
                host: "relay.test",
                addr,
                tls: TlsMode::Off,
                connector: &connector,
                credentials: Some(&credentials),
                plaintext_auth,
                tls_required_by: "this relay",
                verified: false,
                connect_timeout: Duration::from_secs(5),
                reply_timeout: Duration::from_secs(5),
            };
            let opened = open(&endpoint, "client.test").await;
            let failure = opened.as_ref().err().map(|f| f.failure.clone());
            drop(opened);
            let seen = server.await.expect("server");
            if plaintext_auth {
                assert!(failure.is_none(), "{failure:?}");
                assert!(seen.contains("AUTH"), "{seen}");
            } else {
                let failure = failure.expect("refused");
                assert_eq!(failure.severity, Severity::Transient);
                assert!(
                    failure.text.contains(
                        "relay.test: the connection is not encrypted, so the password is not sent"
                    ),
                    "{}",
                    failure.text
                );
                assert!(!seen.contains("AUTH"), "{seen}");
            }
        }
    }

    async fn on_the_wire(body: &[u8]) -> Vec<u8> {
        let mut wire = Vec::new();
        write_dot_stuffed(&mut wire, body)
            .await
            .expect("write to a Vec");
        wire
    }

    #[tokio::test]
    async fn dots_at_line_starts_are_doubled_and_the_end_is_marked() {
        assert_eq!(on_the_wire(b"a\r\nb\r\n").await, b"a\r\nb\r\n.\r\n");
        assert_eq!(
            on_the_wire(b".x\r\n.\r\na.b\r\n..\r\n").await,
            b"..x\r\n..\r\na.b\r\n...\r\n.\r\n"
        );
        assert_eq!(on_the_wire(b"").await, b".\r\n");
        assert_eq!(on_the_wire(b"no end").await, b"no end\r\n.\r\n");
    }

    proptest::proptest! {
        /// Whatever the body, the receiver's unstuffing gives it back whole.
        #[test]
        fn the_receiver_reads_back_the_body(lines in proptest::collection::vec("[.a-z ]{0,20}", 0..20)) {
            let body: Vec<u8> = lines.iter().flat_map(|l| format!("{l}\r\n").into_bytes()).collect();
            let wire = tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime")
                .block_on(on_the_wire(&body));
            let mut reader = crate::smtp::data::BodyReader::data(1 << 20, 1000, crate::smtp::data::BareNewlines::Reject);
            proptest::prop_assert_eq!(reader.feed(&wire), Some(wire.len()));
            proptest::prop_assert_eq!(reader.finish().expect("valid"), body);
        }
    }
}
