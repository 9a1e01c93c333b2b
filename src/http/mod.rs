//! The HTTP side of `postern serve` (off unless `[http]` sets an address): mail
//! client autoconfiguration (Thunderbird, Autodiscover, Apple), the MTA-STS
//! policy, Prometheus metrics and the port echo of `postern check`. On
//! `tls_addr` it speaks HTTPS with the server's certificate and, with
//! `submission_on_tls`, also takes SMTP submission (see `tls.rs`).
//!
//! Every reply is generated from the live configuration and store; a domain
//! that is not hosted here gets 404, so nothing is said about other domains.
//! Connections are capped and timed (`serve.rs`); `/metrics` is only for
//! `metrics_from`.

mod autoconfig;
mod autodiscover;
pub mod endpoints;
mod mobileconfig;
mod serve;
mod tls;

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::in_networks;
use crate::context::ServerContext;
use crate::listener::ConnectionLimits;
use crate::smtp::address::{Mailbox, normalize_domain};
use endpoints::{SubmissionEndpoint, submission_endpoints};
pub use serve::Encrypted;
use serve::HttpServer;

#[derive(Debug, thiserror::Error)]
#[error("cannot listen for HTTP on {addr}: {source}")]
pub struct HttpSetupError {
    addr: SocketAddr,
    source: std::io::Error,
}

impl HttpSetupError {
    /// The port that was in use, if that is what failed.
    pub fn port_in_use(&self) -> Option<u16> {
        (self.source.kind() == std::io::ErrorKind::AddrInUse).then_some(self.addr.port())
    }
}

struct HttpState {
    ctx: Arc<ServerContext>,
    /// `[http] imap_host` and `imap_port`: a reload that changes `[http]`
    /// serves it anew (`server::HttpListeners`).
    imap: (String, u16),
    metrics: PrometheusHandle,
    /// The port echo must stay cheap: a global cap on questions per second.
    echo_limit: DefaultDirectRateLimiter,
}

impl HttpState {
    /// The submission ports for a client at `peer`: those that worked from
    /// its network first (`portmap`), unless `[http] ports_by_network` is off.
    /// The listeners are read as they are now: a reload changes them.
    fn endpoints_for(&self, peer: SocketAddr) -> Vec<SubmissionEndpoint> {
        let endpoints = submission_endpoints(&self.ctx.listening(), self.ctx.https_submission());
        if !self.ctx.config().http.ports_by_network {
            return endpoints;
        }
        let usual: Vec<u16> = endpoints.iter().map(|e| e.port).collect();
        self.ctx
            .portmap
            .order_for(peer.ip(), &usual)
            .into_iter()
            .filter_map(|port| endpoints.iter().find(|e| e.port == port).copied())
            .collect()
    }
}

/// Escapes text for XML element content and attribute values.
pub fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// The bound `[http] addr` and `tls_addr` sockets; bound before the server
/// gives up root (ports 80 and 443), served once everything else is ready.
/// Shared, so that a reload serving `[http]` anew keeps the sockets whose
/// address did not change (and the connections waiting on them).
#[derive(Clone)]
pub struct HttpSockets {
    plain: Option<Arc<TcpListener>>,
    secure: Option<Arc<TcpListener>>,
}

impl HttpSockets {
    /// The bound port of `tls_addr` when it also takes SMTP submission
    /// (`submission_on_tls`): the mail port of last resort.
    pub fn submission_port(&self, http: &crate::config::Http) -> Option<u16> {
        match &self.secure {
            Some(l) if http.submission_on_tls => l.local_addr().ok().map(|a| a.port()),
            _ => None,
        }
    }
}

/// Binds `[http] addr` and `tls_addr` (when set); `None` when neither is.
pub async fn bind(http: &crate::config::Http) -> Result<Option<HttpSockets>, HttpSetupError> {
    bind_reusing(http, None).await
}

/// Like `bind`, taking from `running` (the sockets bound for the `[http]`
/// it had) each socket whose configured address `http` keeps, also when it
/// moved between `addr` and `tls_addr`.
pub async fn bind_reusing(
    http: &crate::config::Http,
    running: Option<(&crate::config::Http, &HttpSockets)>,
) -> Result<Option<HttpSockets>, HttpSetupError> {
    if http.addr.is_none() && http.tls_addr.is_none() {
        return Ok(None);
    }
    let (mut old_plain, mut old_secure) = running.map_or((None, None), |(h, s)| {
        (
            h.addr.zip(s.plain.clone()),
            h.tls_addr.zip(s.secure.clone()),
        )
    });
    let mut plain = http.addr.and_then(|a| take(&mut old_plain, a, false));
    let mut secure = http.tls_addr.and_then(|a| take(&mut old_secure, a, false));
    if plain.is_none() {
        plain = http.addr.and_then(|a| take(&mut old_secure, a, true));
    }
    if secure.is_none() {
        secure = http.tls_addr.and_then(|a| take(&mut old_plain, a, true));
    }
    let plain = match (http.addr, plain) {
        (Some(addr), None) => Some(bind_one(addr).await?),
        (_, kept) => kept,
    };
    let secure = match (http.tls_addr, secure) {
        (Some(addr), None) => Some(bind_one(addr).await?),
        (_, kept) => kept,
    };
    Ok(Some(HttpSockets { plain, secure }))
}

/// The socket in `slot` if it was configured for `addr`; one of the other
/// listener (`swapped`) only for a fixed port: two listeners on port 0 are
/// told apart by their role.
fn take(
    slot: &mut Option<(SocketAddr, Arc<TcpListener>)>,
    addr: SocketAddr,
    swapped: bool,
) -> Option<Arc<TcpListener>> {
    let fits = slot
        .as_ref()
        .is_some_and(|(was, _)| *was == addr && (!swapped || addr.port() != 0));
    if fits {
        slot.take().map(|(_, socket)| socket)
    } else {
        None
    }
}

async fn bind_one(addr: SocketAddr) -> Result<Arc<TcpListener>, HttpSetupError> {
    crate::listener::bind_tcp(addr)
        .await
        .map(Arc::new)
        .map_err(|source| HttpSetupError { addr, source })
}

/// The connection caps HTTP is served under: its own, and SMTP's for
/// submission on `tls_addr`.
pub struct Caps {
    pub http: Arc<ConnectionLimits>,
    pub smtp: Arc<ConnectionLimits>,
}

/// Serves `sockets` with the `[http]` of `ctx`'s configuration until `stop`
/// (a reload serving `[http]` anew, or shutdown), connections on `tasks`;
/// returns their addresses.
pub fn start(
    ctx: Arc<ServerContext>,
    mounted: Option<(&'static str, Router)>,
    sockets: &HttpSockets,
    caps: Caps,
    tasks: &TaskTracker,
    stop: CancellationToken,
) -> Vec<SocketAddr> {
    let config = ctx.config();
    let http = &config.http;
    let https_submission = sockets.submission_port(http);
    if let Some(port) = https_submission {
        crate::prometheus::count_listener(port, "submissions");
    }
    *ctx.https_submission
        .write()
        .unwrap_or_else(|p| p.into_inner()) = https_submission;
    let HttpSockets { plain, secure } = sockets.clone();
    let per_second = NonZeroU32::new(50).unwrap_or(NonZeroU32::MIN);
    let state = Arc::new(HttpState {
        ctx: Arc::clone(&ctx),
        imap: (http.imap_host.clone(), http.imap_port),
        metrics: crate::prometheus::handle(),
        echo_limit: RateLimiter::direct(Quota::per_second(per_second)),
    });
    let mut app = router(state);
    if let Some((path, routes)) = mounted {
        // Nested routes answer at `path` but not at `path/`.
        app = app.nest(path, routes).route(
            &format!("{path}/"),
            get(move || async move { axum::response::Redirect::to(path) }),
        );
    }
    let server = HttpServer::new(
        app.layer(DefaultBodyLimit::max(serve::MAX_BODY)),
        http,
        caps.http,
        stop,
    );
    let mut bound = Vec::new();
    if let Some(listener) = plain {
        bound.extend(listener.local_addr().ok());
        tasks.spawn(Arc::clone(&server).accept_plain(listener, tasks.clone()));
    }
    if let Some(listener) = secure {
        bound.extend(listener.local_addr().ok());
        tls::start(
            listener,
            Arc::clone(&ctx),
            http.submission_on_tls,
            caps.smtp,
            server,
            tasks.clone(),
        );
    }
    bound
}

fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route(
            "/.well-known/autoconfig/mail/config-v1.1.xml",
            get(thunderbird),
        )
        .route("/mail/config-v1.1.xml", get(thunderbird))
        .route(
            "/autodiscover/autodiscover.xml",
            get(autodiscover_get).post(autodiscover_post),
        )
        .route(
            "/Autodiscover/Autodiscover.xml",
            get(autodiscover_get).post(autodiscover_post),
        )
        .route("/apple/{file}", get(apple))
        .route("/.well-known/mta-sts.txt", get(mta_sts))
        .route("/.well-known/acme-challenge/{token}", get(acme_challenge))
        .route("/.well-known/postern/echo/{token}", get(echo))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// The hosted domain a request is about: the domain of `?emailaddress=` when
/// given, else the Host header without its `autoconfig.`, `autodiscover.` or
/// `mta-sts.` label (the names clients look up; a reverse proxy keeps Host).
async fn hosted_domain(
    state: &HttpState,
    headers: &HeaderMap,
    email: Option<&str>,
) -> Result<String, StatusCode> {
    let domain = match email {
        Some(address) => {
            Mailbox::parse(address, true)
                .map_err(|_| StatusCode::NOT_FOUND)?
                .domain
        }
        None => {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .ok_or(StatusCode::NOT_FOUND)?;
            let host = host
                .rsplit_once(':')
                .filter(|(_, p)| p.parse::<u16>().is_ok())
                .map_or(host, |(h, _)| h);
            let bare = ["autoconfig.", "autodiscover.", "mta-sts."]
                .iter()
                .find_map(|p| host.strip_prefix(p))
                .unwrap_or(host);
            normalize_domain(bare).ok_or(StatusCode::NOT_FOUND)?
        }
    };
    match state.ctx.store.is_hosted_domain(&domain).await {
        Ok(true) => Ok(domain),
        Ok(false) => Err(StatusCode::NOT_FOUND),
        Err(e) => {
            tracing::error!(event = "store_error", error = %e);
            Err(StatusCode::SERVICE_UNAVAILABLE)
        }
    }
}

fn typed(content_type: &'static str, body: String) -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response()
}

fn imap(state: &HttpState) -> (&str, u16) {
    (&state.imap.0, state.imap.1)
}

#[derive(serde::Deserialize)]
struct EmailQuery {
    emailaddress: Option<String>,
}

async fn thunderbird(
    State(state): State<Arc<HttpState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<EmailQuery>,
) -> Response {
    match hosted_domain(&state, &headers, q.emailaddress.as_deref()).await {
        Ok(domain) => typed(
            "text/xml; charset=utf-8",
            autoconfig::render(
                &domain,
                &state.ctx.config().hostname,
                imap(&state),
                &state.endpoints_for(peer),
            ),
        ),
        Err(status) => status.into_response(),
    }
}

async fn autodiscover_reply(
    state: &HttpState,
    peer: SocketAddr,
    headers: &HeaderMap,
    address: Option<String>,
) -> Response {
    let Some(address) = address else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    match hosted_domain(state, headers, Some(&address)).await {
        Ok(_) => typed(
            "application/xml; charset=utf-8",
            autodiscover::render(
                &address,
                &state.ctx.config().hostname,
                imap(state),
                &state.endpoints_for(peer),
            ),
        ),
        Err(status) => status.into_response(),
    }
}

async fn autodiscover_post(
    State(state): State<Arc<HttpState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: String,
) -> Response {
    autodiscover_reply(
        &state,
        peer,
        &headers,
        autodiscover::requested_address(&body),
    )
    .await
}

async fn autodiscover_get(
    State(state): State<Arc<HttpState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<EmailQuery>,
) -> Response {
    autodiscover_reply(&state, peer, &headers, q.emailaddress).await
}

async fn apple(
    State(state): State<Arc<HttpState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(file): Path<String>,
) -> Response {
    let Some(mailbox) = file
        .strip_suffix(".mobileconfig")
        .and_then(|a| Mailbox::parse(a, true).ok())
    else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let address = mailbox.canonical();
    if let Err(status) = hosted_domain(&state, &headers, Some(&address)).await {
        return status.into_response();
    }
    let Some(first) = state.endpoints_for(peer).first().copied() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let body = mobileconfig::render(&address, &state.ctx.config().hostname, imap(&state), first);
    let mut response = typed("application/x-apple-aspen-config", body);
    response
        .headers_mut()
        .insert(header::CONTENT_DISPOSITION, attachment(&address));
    response
}

/// `Content-Disposition` for a profile named after `address` (canonical, so
/// never the request path): whatever is not a letter, digit or `.@_+-`
/// becomes `_`, which leaves nothing to quote or escape in the header.
fn attachment(address: &str) -> HeaderValue {
    let name: String = address
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".@_+-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    HeaderValue::from_str(&format!("attachment; filename=\"{name}.mobileconfig\""))
        .unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}

/// The MTA-STS policy (RFC 8461 §3.2); `postern dns` derives the record id from it.
pub fn mta_sts_policy(config: &crate::config::Config) -> String {
    format!(
        "version: STSv1\r\nmode: {}\r\nmx: {}\r\nmax_age: 604800\r\n",
        config.http.mta_sts_mode.as_str(),
        config.hostname
    )
}

/// Served on `mta-sts.<domain>`.
async fn mta_sts(State(state): State<Arc<HttpState>>, headers: HeaderMap) -> Response {
    match hosted_domain(&state, &headers, None).await {
        Ok(_) => typed(
            "text/plain; charset=utf-8",
            mta_sts_policy(&state.ctx.config()),
        ),
        Err(status) => status.into_response(),
    }
}

/// HTTP-01 (RFC 8555 §8.3): the key authorization of a challenge in flight.
async fn acme_challenge(
    State(state): State<Arc<HttpState>>,
    Path(token): Path<String>,
) -> Response {
    match state.ctx.acme.key_authorization(&token) {
        Some(answer) => typed("application/octet-stream", answer),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The port echo over HTTP: the ports `token` reached, and the address the
/// request came from (how `postern check` learns its public address when no
/// mail port gets through).
async fn echo(
    State(state): State<Arc<HttpState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(token): Path<String>,
) -> Response {
    if state.echo_limit.check().is_err() {
        return StatusCode::TOO_MANY_REQUESTS.into_response();
    }
    let ports = state.ctx.echo.ports(&token);
    let addr = peer.ip().to_canonical();
    axum::Json(serde_json::json!({ "token": token, "ports": ports, "addr": addr })).into_response()
}

/// Whether the request carries `[http] metrics_token_file`'s token as
/// `Authorization: Bearer`; compared in constant time.
fn bearer_matches(headers: &HeaderMap, http: &crate::config::Http) -> bool {
    let Some(token) = &http.metrics_token else {
        return false;
    };
    let sent = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    aws_lc_rs::constant_time::verify_slices_are_equal(sent.as_bytes(), token.0.as_bytes()).is_ok()
}

async fn metrics(
    State(state): State<Arc<HttpState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let http = &state.ctx.config().http;
    if !in_networks(&http.metrics_from, peer.ip()) && !bearer_matches(&headers, http) {
        return StatusCode::FORBIDDEN.into_response();
    }
    crate::prometheus::read_queue(state.ctx.queue.spool(), crate::clock::now_unix()).await;
    typed("text/plain; version=0.0.4", state.metrics.render())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Http};

    fn http(addr: Option<SocketAddr>, tls_addr: Option<SocketAddr>) -> Http {
        let mut http = Config::from_text("hostname = \"mx.test.example\"\n", None)
            .expect("config")
            .http;
        (http.addr, http.tls_addr) = (addr, tls_addr);
        http
    }

    fn free() -> SocketAddr {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
    }

    fn bound(socket: &Option<Arc<TcpListener>>) -> SocketAddr {
        socket.as_ref().expect("socket").local_addr().expect("addr")
    }

    #[tokio::test]
    async fn a_reload_keeps_the_sockets_whose_address_stayed_or_moved_between_the_listeners() {
        let (one, two) = (free(), free());
        let first = http(Some(one), Some(two));
        let running = bind(&first).await.expect("bind").expect("sockets");
        // Swapped: each socket serves the other listener, none is bound again
        // (binding again would fail: the running ones hold the ports).
        let swapped = http(Some(two), Some(one));
        let again = bind_reusing(&swapped, Some((&first, &running)))
            .await
            .expect("kept")
            .expect("sockets");
        assert!(Arc::ptr_eq(
            again.plain.as_ref().expect("plain"),
            running.secure.as_ref().expect("secure")
        ));
        assert_eq!((bound(&again.plain), bound(&again.secure)), (two, one));

        // Port 0 on both: each keeps its own, never the other's.
        let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let zeros = http(Some(any), Some(any));
        let running = bind(&zeros).await.expect("bind").expect("sockets");
        let again = bind_reusing(&zeros, Some((&zeros, &running)))
            .await
            .expect("kept")
            .expect("sockets");
        assert!(Arc::ptr_eq(
            again.plain.as_ref().expect("plain"),
            running.plain.as_ref().expect("plain")
        ));
        assert!(Arc::ptr_eq(
            again.secure.as_ref().expect("secure"),
            running.secure.as_ref().expect("secure")
        ));
        // A port the running server holds, on another address of it: in use.
        let taken = bound(&running.plain);
        let moved = http(
            Some(SocketAddr::new(
                "0.0.0.0".parse().expect("ip"),
                taken.port(),
            )),
            None,
        );
        let refused = bind_reusing(&moved, Some((&zeros, &running)))
            .await
            .err()
            .expect("in use");
        assert_eq!(refused.port_in_use(), Some(taken.port()));
    }
}
