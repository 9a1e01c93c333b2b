//! The session harness: a `Session` run in-process over an in-memory duplex
//! stream, against a `TestContext` (a real store and spool in a temporary
//! directory), driven by a small script (`send`, `expect`), in the style of
//! OpenSMTPD's smtpscript. Protocol rules are tested here in milliseconds;
//! what needs a real client or real TLS stays in `tests/`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::{Connected, TlsInfo, TlsStart, run};
use crate::config::ListenerRole;
use crate::context::ServerContext;

/// How long a reply may take before the test fails instead of hanging.
const WAIT: Duration = Duration::from_secs(10);

/// The client's end of one in-process session.
pub struct Script {
    stream: DuplexStream,
    input: Vec<u8>,
    session: tokio::task::JoinHandle<()>,
}

impl Script {
    /// A session on a listener of `role`, from 192.0.2.1, that has sent its
    /// greeting (checked to be a 220).
    pub async fn connect(ctx: &Arc<ServerContext>, role: ListenerRole) -> Script {
        Script::start(ctx, role, "192.0.2.1:40000", TlsStart::Plain).await
    }

    /// As `connect`, on a connection that is encrypted already (as after
    /// STARTTLS or on 465), so AUTH is offered without a TLS client here.
    pub async fn encrypted(ctx: &Arc<ServerContext>, role: ListenerRole) -> Script {
        let tls = TlsStart::Established(TlsInfo {
            version: "TLSv1.3".into(),
            cipher: "TLS13_AES_256_GCM_SHA384".into(),
        });
        Script::start(ctx, role, "192.0.2.1:40000", tls).await
    }

    /// A session from `peer`, with TLS as `tls` says.
    pub async fn start(
        ctx: &Arc<ServerContext>,
        role: ListenerRole,
        peer: &str,
        tls: TlsStart,
    ) -> Script {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let connected = Connected {
            role,
            peer: peer.parse().expect("peer address"),
            local: SocketAddr::from(([127, 0, 0, 1], 25)),
            tls,
        };
        let session = tokio::spawn(run(Arc::clone(ctx), Box::new(server), connected));
        let mut script = Script {
            stream: client,
            input: Vec::new(),
            session,
        };
        script.expect(220).await;
        script
    }

    /// Sends `line` and its CRLF.
    pub async fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\r\n").as_bytes()).await;
    }

    /// Sends exactly `bytes`.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("send");
    }

    /// The next whole reply, every line of it with its CRLF; empty once the
    /// session has closed the connection.
    pub async fn reply(&mut self) -> String {
        let mut reply = Vec::new();
        loop {
            if let Some(end) = self.input.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.input.drain(..=end).collect();
                let last = line.get(3) != Some(&b'-');
                reply.extend(line);
                if last {
                    return String::from_utf8(reply).expect("UTF-8 reply");
                }
                continue;
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = tokio::time::timeout(WAIT, self.stream.read(&mut chunk))
                .await
                .expect("a reply in time")
                .expect("read");
            if n == 0 {
                assert!(self.input.is_empty(), "half a reply: {:?}", self.input);
                return String::from_utf8(reply).expect("UTF-8 reply");
            }
            self.input.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next reply, which must have `code`; returns it whole.
    pub async fn expect(&mut self, code: u16) -> String {
        let reply = self.reply().await;
        assert!(
            reply.starts_with(&code.to_string()),
            "expected {code}, got {reply:?}"
        );
        reply
    }

    /// Sends `line` and returns its reply.
    pub async fn cmd(&mut self, line: &str) -> String {
        self.send(line).await;
        self.reply().await
    }

    /// Whether the session has ended and closed the connection, with no
    /// reply left unread.
    pub async fn closed(mut self) -> bool {
        let rest = self.reply().await;
        tokio::time::timeout(WAIT, &mut self.session)
            .await
            .is_ok_and(|joined| joined.is_ok())
            && rest.is_empty()
    }
}
