//! One HTTPS request to one address, for what delivery fetches and posts
//! over HTTPS (MTA-STS policies, TLS reports): TCP, TLS with the
//! certificate verified for `host` by the connector given, HTTP/1.1.

use std::net::SocketAddr;

use hyper::body::{Body, Incoming};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio_rustls::TlsConnector;

/// Why a request got no response.
#[derive(Debug)]
pub enum HttpsFailure {
    /// The TLS handshake failed (the certificate, most often).
    Tls(String),
    /// Anything else: the connection, the HTTP exchange.
    Other(String),
}

impl std::fmt::Display for HttpsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpsFailure::Tls(e) => write!(f, "TLS: {e}"),
            HttpsFailure::Other(e) => f.write_str(e),
        }
    }
}

/// Sends `request` to `host` at `addr`; the response's body is left to read.
pub async fn send<B>(
    connector: &TlsConnector,
    host: &str,
    addr: SocketAddr,
    request: hyper::Request<B>,
) -> Result<hyper::Response<Incoming>, HttpsFailure>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let other = |e: &dyn std::fmt::Display| HttpsFailure::Other(e.to_string());
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| other(&e))?;
    let name = ServerName::try_from(host.to_string()).map_err(|e| other(&e))?;
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| HttpsFailure::Tls(e.to_string()))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| other(&e))?;
    tokio::spawn(connection);
    sender.send_request(request).await.map_err(|e| other(&e))
}
