//! The HTTPS port, which can also take SMTP submission for networks that block
//! every mail port (`submission_on_tls`). After the TLS handshake a
//! connection is SMTP when the client asked for ALPN `smtp`, or when it sends
//! nothing for a moment (a mail client waits for the greeting, a browser
//! speaks first); otherwise it is HTTP and goes to axum with whatever bytes
//! were already read put back in front.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::task::TaskTracker;

use crate::listener::{ConnectionLimits, ListenerRole};
use crate::server::ServerContext;
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

type HttpConnection = (Prefixed<TlsStream<TcpStream>>, SocketAddr);

/// What axum serves: the HTTP connections the splitter lets through.
pub struct SplitListener {
    rx: mpsc::Receiver<HttpConnection>,
    local: SocketAddr,
}

struct Splitter {
    ctx: Arc<ServerContext>,
    acceptor: TlsAcceptor,
    smtp: bool,
    limits: Arc<ConnectionLimits>,
    tasks: TaskTracker,
    http: mpsc::Sender<HttpConnection>,
}

impl SplitListener {
    pub fn start(
        tcp: TcpListener,
        ctx: Arc<ServerContext>,
        smtp: bool,
        limits: Arc<ConnectionLimits>,
        tasks: TaskTracker,
    ) -> SplitListener {
        let local = tcp
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let mut config = (*ctx.tls).clone();
        config.alpn_protocols = if smtp {
            vec![b"http/1.1".to_vec(), b"smtp".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        let (http, rx) = mpsc::channel(64);
        let splitter = Arc::new(Splitter {
            ctx,
            acceptor: TlsAcceptor::from(Arc::new(config)),
            smtp,
            limits,
            tasks: tasks.clone(),
            http,
        });
        tasks.spawn(accept_loop(tcp, splitter));
        SplitListener { rx, local }
    }
}

impl axum::serve::Listener for SplitListener {
    type Io = Prefixed<TlsStream<TcpStream>>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(conn) => conn,
            // The accept loop has stopped (shutdown): axum stops on its own signal.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

async fn accept_loop(tcp: TcpListener, splitter: Arc<Splitter>) {
    let stop = splitter.ctx.shutdown.clone();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = tcp.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(event = "accept_failed", error = %e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stop.cancelled() => return,
        };
        let s = Arc::clone(&splitter);
        splitter
            .tasks
            .spawn(async move { s.split(stream, peer).await });
    }
}

impl Splitter {
    async fn split(&self, stream: TcpStream, peer: SocketAddr) {
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
            Some(b"smtp") if self.smtp => None,
            Some(_) => Some(Vec::new()),
            None if !self.smtp => Some(Vec::new()),
            None => {
                let mut buf = vec![0u8; 4096];
                match tokio::time::timeout(self.ctx.config.tls_detect, tls.read(&mut buf)).await {
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
                let _ = self
                    .http
                    .send((
                        Prefixed {
                            prefix,
                            offset: 0,
                            inner: tls,
                        },
                        peer,
                    ))
                    .await;
            }
            None => {
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
