//! EHLO/HELO (RFC 5321 §4.1.1.1, the extension list) and STARTTLS (RFC 3207).

use std::sync::Arc;

use tokio_rustls::TlsAcceptor;

use super::io::SessionEnd;
use super::state::Greeting;
use super::{Flow, Session, TlsInfo};
use crate::portecho;
use crate::smtp::reply::Reply;

/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

impl Session {
    pub(super) fn ehlo(&mut self, host: String, extended: bool) -> Flow {
        // RFC 5321 §4.1.4: EHLO resets any transaction in progress.
        self.tx = None;
        match portecho::token_of_ehlo(&host) {
            Some(token) => self.ctx.echo.record(token, self.local.port()),
            // A session counts for the port map once it has said EHLO (a
            // bare connect proves little) and is not `postern check`'s probe.
            None if !self.seen_by_portmap && self.role != crate::config::ListenerRole::Mta => {
                self.seen_by_portmap = true;
                self.ctx
                    .portmap
                    .connected(self.peer.ip(), self.local.port());
                if self.tls.is_none() && self.role == crate::config::ListenerRole::Submission {
                    self.ctx.plaintext_first.spoke_plaintext(self.peer.ip());
                }
            }
            None => {}
        }
        self.greeting = Some(Greeting {
            name: host,
            extended,
        });
        if !extended {
            return self.reply(Reply::plain(250, self.hostname().to_string()));
        }
        let mut lines = vec![
            self.hostname().to_string(),
            "PIPELINING".to_string(),
            format!("SIZE {}", self.config.limits.max_message_size),
            "8BITMIME".to_string(),
            "SMTPUTF8".to_string(),
            "ENHANCEDSTATUSCODES".to_string(),
            "CHUNKING".to_string(),
            "DSN".to_string(),
        ];
        if self.tls.is_none() {
            lines.push("STARTTLS".to_string());
        } else {
            lines.push("REQUIRETLS".to_string());
        }
        if self.tls.is_some() && self.identity.is_none() {
            // AUTH only where the password cannot be read off the wire.
            lines.push("AUTH PLAIN LOGIN".to_string());
        }
        self.reply(Reply::plain(250, lines.join("\n")))
    }

    pub(super) async fn starttls(&mut self) -> Result<Flow, SessionEnd> {
        if self.tls.is_some() {
            return Ok(self.reply(Reply::bad_sequence("Error: TLS already active")));
        }
        self.conn
            .queue(&Reply::new(220, (0, 0), "Ready to start TLS"));
        self.conn.flush().await?;
        // CVE-2011-0411: anything pipelined after STARTTLS arrived in plaintext
        // and must not be run inside the TLS session.
        self.conn.discard_input();
        if self.start_tls().await.is_err() {
            return Ok(Flow::Close);
        }
        // RFC 3207 §4.2: forget everything learned before TLS.
        self.greeting = None;
        self.tx = None;
        self.identity = None;
        Ok(Flow::Continue)
    }

    /// Runs the TLS handshake on the current stream.
    pub(super) async fn start_tls(&mut self) -> Result<(), SessionEnd> {
        let acceptor = TlsAcceptor::from(Arc::clone(&self.ctx.tls));
        let plain = self.conn.take_stream();
        // Boxed: the handshake holds a whole rustls connection, which an idle
        // session's future would otherwise carry for its lifetime.
        let handshake = Box::pin(tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            acceptor.accept(plain),
        ));
        let stream = match handshake.await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::info!(event = "tls_failed", error = %e);
                return Err(SessionEnd::Io(e));
            }
            Err(_) => {
                tracing::info!(event = "tls_failed", error = "handshake timeout");
                return Err(SessionEnd::Timeout);
            }
        };
        let info = TlsInfo::of(stream.get_ref().1);
        tracing::info!(event = "tls_started", version = %info.version, cipher = %info.cipher);
        metrics::counter!("postern_tls_handshakes_total", "port" => self.local.port().to_string())
            .increment(1);
        self.tls = Some(info);
        self.conn.stream = Box::new(stream);
        Ok(())
    }
}
