//! Serves the HTTP/1.1 connections of both HTTP listeners. Written out here
//! rather than left to `axum::serve`, which sets no timer (so hyper applies no
//! header read timeout) and takes every connection: a connection first needs
//! a slot under the HTTP connection caps, its request head must arrive within
//! `request_timeout` (slowloris), the rest of the request and the answer
//! within that again, and heads and bodies are capped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use axum::response::IntoResponse;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Http;
use crate::listener::{self, ConnectionLimits, ConnectionSlot};

/// The largest request body (octets): the Autodiscover POST, a few hundred
/// octets, is the only one. Beyond it: 413.
pub const MAX_BODY: usize = 64 * 1024;
/// hyper's read buffer, which must hold a whole request head: beyond it, 431.
const MAX_HEAD: usize = 16 * 1024;

/// Whether a request came over TLS, for handlers that care (the
/// dashboard's cookie is `Secure` then).
#[derive(Debug, Clone, Copy)]
pub struct Encrypted(pub bool);

/// The application and the limits every HTTP connection is served under.
pub struct HttpServer {
    app: Router,
    limits: Arc<ConnectionLimits>,
    request_timeout: Duration,
    stop: CancellationToken,
}

impl HttpServer {
    /// `limits`: the HTTP connection caps, which outlive one server (a
    /// reload's successor counts the connections this one still serves).
    pub fn new(
        app: Router,
        config: &Http,
        limits: Arc<ConnectionLimits>,
        stop: CancellationToken,
    ) -> Arc<HttpServer> {
        Arc::new(HttpServer {
            app,
            limits,
            request_timeout: config.request_timeout,
            stop,
        })
    }

    /// What stops this server: its listeners stop accepting, and its open
    /// connections finish the request in progress.
    pub fn stop(&self) -> &CancellationToken {
        &self.stop
    }

    /// A slot for a connection from `peer` under the HTTP caps; `None` means
    /// the connection is to be closed at once.
    pub fn admit(&self, peer: SocketAddr) -> Option<ConnectionSlot> {
        let slot = self.limits.admit(peer.ip());
        if slot.is_none() {
            tracing::info!(event = "rejected", peer = %peer, reason = "http connection limit");
        }
        slot
    }

    /// Accepts plain HTTP connections on `tcp` until `stop`, each served on
    /// `tasks`.
    pub async fn accept_plain(self: Arc<Self>, tcp: Arc<TcpListener>, tasks: TaskTracker) {
        listener::accept_each(&tcp, &self.stop, |stream, peer| {
            let Some(slot) = self.admit(peer) else {
                return;
            };
            let server = Arc::clone(&self);
            tasks.spawn(async move {
                server.serve(stream, peer, false).await;
                drop(slot);
            });
        })
        .await;
    }

    /// Serves one connection until the client closes it, a timeout ends it,
    /// or shutdown (which lets a request in progress finish). `encrypted`:
    /// it came over TLS (`tls_addr`).
    pub async fn serve<S>(&self, io: S, peer: SocketAddr, encrypted: bool)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let app = TowerToHyperService::new(self.app.clone());
        let timeout = self.request_timeout;
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            request.extensions_mut().insert(Encrypted(encrypted));
            let answer = app.call(request);
            async move {
                // Covers reading the body, which the handlers do.
                match tokio::time::timeout(timeout, answer).await {
                    Ok(answered) => answered,
                    Err(_) => Ok(StatusCode::REQUEST_TIMEOUT.into_response()),
                }
            }
        });
        let mut builder = http1::Builder::new();
        // The header read timeout also closes a keep-alive connection that
        // stays idle that long.
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(timeout)
            .max_buf_size(MAX_HEAD);
        let connection = builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(connection);
        tokio::select! {
            _ = connection.as_mut() => {}
            () = self.stop.cancelled() => {
                connection.as_mut().graceful_shutdown();
                let _ = connection.await;
            }
        }
    }
}
