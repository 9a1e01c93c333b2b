//! The HTTPS port, which can also take SMTP submission for networks that block
//! every mail port (`submission_on_tls`), and answers the ACME CA's
//! TLS-ALPN-01 validations when `[acme]` is set. After the TLS handshake a
//! connection is SMTP when the client asked for ALPN `smtp`, or when it sends
//! nothing for a moment (a mail client waits for the greeting, a browser
//! speaks first); otherwise it is HTTP and is served (`serve.rs`) with
//! whatever bytes were already read put back in front.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;

use super::serve::HttpServer;
use crate::acme::{ACME_TLS_ALPN, AlpnChallengeResolver};
use crate::config::ListenerRole;
use crate::context::ServerContext;
use crate::listener::{self, ConnectionLimits, ConnectionSlot};
use crate::session::{self, Connected, TlsInfo, TlsStart};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A stream with some bytes already read from it, served again first.
pub struct Prefixed<S> {
    prefix: Vec<u8>,
    offset: usize,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.offset < self.prefix.len() {
            let n = buf.remaining().min(self.prefix.len() - self.offset);
            let start = self.offset;
            buf.put_slice(&self.prefix[start..start + n]);
            self.offset += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

struct Splitter {
    ctx: Arc<ServerContext>,
    acceptor: TlsAcceptor,
    smtp: bool,
    /// The SMTP connection caps, for submission sessions.
    limits: Arc<ConnectionLimits>,
    http: Arc<HttpServer>,
}

/// Accepts on the HTTPS port until the HTTP server stops, each connection on
/// `tasks` (submission sessions run on until shutdown):
/// first under the HTTP caps (the handshake is work too), then HTTP goes to
/// `http` and SMTP submission moves to the SMTP caps.
pub fn start(
    tcp: Arc<TcpListener>,
    ctx: Arc<ServerContext>,
    smtp: bool,
    limits: Arc<ConnectionLimits>,
    http: Arc<HttpServer>,
    tasks: TaskTracker,
) {
    let mut config = (*ctx.tls).clone();
    config.alpn_protocols = if smtp {
        vec![b"http/1.1".to_vec(), b"smtp".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    if ctx.config().acme.is_some() {
        config.alpn_protocols.push(ACME_TLS_ALPN.to_vec());
        config.cert_resolver = Arc::new(AlpnChallengeResolver {
            challenges: Arc::clone(&ctx.acme),
            served: Arc::clone(&config.cert_resolver),
        });
    }
    let splitter = Arc::new(Splitter {
        ctx,
        acceptor: TlsAcceptor::from(Arc::new(config)),
        smtp,
        limits,
        http,
    });
    let spawner = tasks.clone();
    tasks.spawn(async move {
        let stop = splitter.http.stop().clone();
        listener::accept_each(&tcp, &stop, |stream, peer| {
            let Some(slot) = splitter.http.admit(peer) else {
                return;
            };
            let s = Arc::clone(&splitter);
            spawner.spawn(async move { s.split(stream, peer, slot).await });
        })
        .await;
    });
}

impl Splitter {
    async fn split(&self, stream: TcpStream, peer: SocketAddr, http_slot: ConnectionSlot) {
        let Ok(local) = stream.local_addr() else {
            return;
        };
        let mut tls =
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                _ => return,
            };
        let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        let prefix = match alpn.as_deref() {
            // A TLS-ALPN-01 validation: the handshake was all of it.
            Some(ACME_TLS_ALPN) => return,
            Some(b"smtp") if self.smtp => None,
            Some(_) => Some(Vec::new()),
            None if !self.smtp => Some(Vec::new()),
            None => {
                let mut buf = vec![0u8; 4096];
                match tokio::time::timeout(self.ctx.config().tls_detect, tls.read(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => {
                        buf.truncate(n);
                        Some(buf)
                    }
                    Ok(_) => return,
                    Err(_) => None,
                }
            }
        };
        match prefix {
            Some(prefix) => {
                let io = Prefixed {
                    prefix,
                    offset: 0,
                    inner: tls,
                };
                self.http.serve(io, peer, true).await;
                drop(http_slot);
            }
            None => {
                drop(http_slot);
                let Some(slot) = self.limits.admit(peer.ip()) else {
                    return;
                };
                metrics::counter!("postern_connections_total", "port" => local.port().to_string(), "role" => "submissions")
                    .increment(1);
                let info = TlsInfo::of(tls.get_ref().1);
                let connected = Connected {
                    role: ListenerRole::Submissions,
                    peer,
                    local,
                    tls: TlsStart::Established(info),
                };
                session::run(Arc::clone(&self.ctx), Box::new(tls), connected).await;
                drop(slot);
            }
        }
    }
}
