//! The web dashboard (`[http] dashboard = true`, on the `[http]` listeners,
//! for clients in `dashboard_from` only): is mail flowing, what is stuck,
//! and which client networks reach which port. Administrators sign in with
//! a name and password of their own (`postern admin add`, argon2id, the
//! same throttle as SMTP AUTH); the session is a cookie (HttpOnly,
//! SameSite=Strict, Secure over TLS) and every action carries the session's
//! CSRF token. Actions on the queue take the control socket's path
//! (`control::act`) and are logged with the queue id and the admin's name.
//! Pages are HTML written here on the server: no script, nothing fetched
//! from elsewhere, so it works offline.

mod pages;
mod sessions;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;

use crate::auth::AuthOutcome;
use crate::context::ServerContext;
use crate::control::Request;
use crate::http::Encrypted;
use crate::scheduler::Delivery;
use crate::spool::{ListFilter, MessageState, QueueId};
use sessions::{Session, Sessions};

const COOKIE: &str = "postern_session";

pub struct Dashboard {
    ctx: Arc<ServerContext>,
    delivery: Arc<Delivery>,
    sessions: Sessions,
}

impl Dashboard {
    pub fn new(ctx: Arc<ServerContext>, delivery: Arc<Delivery>) -> Dashboard {
        Dashboard {
            ctx,
            delivery,
            sessions: Sessions::default(),
        }
    }

    /// The server's mail ports now (a reload may change them), sorted,
    /// each once (IPv4 and IPv6 listeners share theirs).
    fn mail_ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self.ctx.listening().iter().map(|(p, _)| *p).collect();
        ports.extend(self.ctx.https_submission());
        ports.sort_unstable();
        ports.dedup();
        ports
    }

    fn admit(&self, from: &Client) -> Result<(), Refusal> {
        from.admitted(&self.ctx.config().http.dashboard_from)
    }

    /// The signed-in session of the request: its token, and itself. A
    /// session ends when its administrator is deleted or given a new
    /// password (the `postern admin` commands run in another process).
    async fn session(&self, from: &Client) -> Result<(String, Session), Refusal> {
        self.admit(from)?;
        let (token, session) = cookie(&from.headers)
            .and_then(|token| self.sessions.get(&token).map(|s| (token, s)))
            .ok_or(Refusal::SignIn)?;
        let current = self
            .ctx
            .store
            .admin_login(&session.admin)
            .await
            .map_err(|e| {
                tracing::error!(event = "store_error", error = %e);
                Refusal::Unavailable
            })?;
        match current {
            Some((_, hash)) if session.is_for(&hash) => Ok((token, session)),
            _ => {
                self.sessions.end(&token);
                Err(Refusal::SignIn)
            }
        }
    }

    /// The session of a form that acts, once its CSRF token (and, when the
    /// browser says, its origin) is checked.
    async fn acting(
        &self,
        from: &Client,
        form: &ActionForm,
        action: &str,
    ) -> Result<(String, Session), Refusal> {
        let (token, session) = self.session(from).await?;
        if !session.csrf_matches(&form.csrf) || !same_origin(&from.headers) {
            tracing::warn!(event = "dashboard_csrf_refused", admin = %session.admin, action);
            return Err(Refusal::Csrf);
        }
        Ok((token, session))
    }
}

/// Who asks, as the dashboard cares.
struct Client {
    peer: SocketAddr,
    encrypted: bool,
    /// The request names a client it was forwarded for.
    proxied: bool,
    headers: HeaderMap,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Client, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |c| c.0);
        let encrypted = parts.extensions.get::<Encrypted>().is_some_and(|e| e.0);
        let proxied = ["forwarded", "x-forwarded-for", "x-real-ip"]
            .iter()
            .any(|h| parts.headers.contains_key(*h));
        Ok(Client {
            peer,
            encrypted,
            proxied,
            headers: parts.headers.clone(),
        })
    }
}

impl Client {
    /// Whether the client may see the dashboard at all: it is in
    /// `allowed`, over TLS unless on this host (a password must not cross
    /// a network in the clear), and not behind a proxy (whose own address
    /// would stand for every client behind it).
    fn admitted(&self, allowed: &[ipnet::IpNet]) -> Result<(), Refusal> {
        let ip = self.peer.ip().to_canonical();
        if !crate::config::in_networks(allowed, ip) {
            return Err(Refusal::NotHere);
        }
        if self.proxied {
            return Err(Refusal::Proxied);
        }
        if !self.encrypted && !ip.is_loopback() {
            return Err(Refusal::NeedsTls);
        }
        Ok(())
    }
}

/// False when the browser says the form came from another site (its
/// `Origin` names another host than the request's `Host`); true when it
/// says nothing.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin_host = origin.split_once("://").map(|(_, rest)| rest);
    matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
}

/// Why a request gets no page.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    /// The client is outside `dashboard_from`.
    NotHere,
    /// Plain HTTP from another host than this one.
    NeedsTls,
    /// Through a proxy.
    Proxied,
    /// Not signed in: to the sign-in page.
    SignIn,
    /// The form's CSRF token is missing or wrong.
    Csrf,
    /// No such message or action.
    NotFound,
    /// The queue or the store cannot be read now (logged).
    Unavailable,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let (status, text) = match self {
            Refusal::SignIn => return Redirect::to("/dashboard/login").into_response(),
            Refusal::NotHere => (
                StatusCode::FORBIDDEN,
                "the dashboard is not served to this address",
            ),
            Refusal::NeedsTls => (
                StatusCode::FORBIDDEN,
                "the dashboard is served over HTTPS ([http] tls_addr), or over HTTP to this host only",
            ),
            Refusal::Proxied => (
                StatusCode::FORBIDDEN,
                "the dashboard is not served through a proxy",
            ),
            Refusal::Csrf => (
                StatusCode::FORBIDDEN,
                "the form's CSRF token is missing or wrong; reload the page",
            ),
            Refusal::NotFound => (StatusCode::NOT_FOUND, "no such message or action"),
            Refusal::Unavailable => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot read the queue now; the log says why",
            ),
        };
        (status, format!("{text}\n")).into_response()
    }
}

impl From<crate::spool::SpoolError> for Refusal {
    fn from(e: crate::spool::SpoolError) -> Refusal {
        tracing::error!(event = "spool_error", error = %e);
        Refusal::Unavailable
    }
}

type Page = Result<Response, Refusal>;

/// The session token in the request's cookies.
fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_string())
}

/// The dashboard's routes, for `http::start` to serve under `/dashboard`.
pub fn router(dashboard: Arc<Dashboard>) -> Router {
    Router::new()
        .route("/", get(overview))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/queue", get(queue))
        .route("/queue/{id}/{action}", post(act))
        .route("/ports", get(ports))
        .route("/accounts", get(accounts))
        .layer(axum::middleware::from_fn(guarded))
        .with_state(dashboard)
}

#[derive(Deserialize)]
struct LoginForm {
    name: String,
    password: String,
}

#[derive(Deserialize)]
struct ActionForm {
    /// Missing is refused as wrong is, by the handler (403), not by the
    /// form's parser.
    #[serde(default)]
    csrf: String,
}

async fn login_page(State(d): State<Arc<Dashboard>>, from: Client) -> Page {
    d.admit(&from)?;
    Ok(pages::login(None).into_response())
}

/// Names as `postern admin add` allows them; another is not looked up.
fn admin_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c))
}

async fn login(State(d): State<Arc<Dashboard>>, from: Client, Form(form): Form<LoginForm>) -> Page {
    d.admit(&from)?;
    // Another site's page must not spend this address's sign-in failures
    // (the throttle SMTP AUTH shares) on the administrator's behalf.
    if !same_origin(&from.headers) {
        return Err(Refusal::Csrf);
    }
    let ip = from.peer.ip();
    // A name no administrator can have is checked against nothing, at the
    // cost of a real check (the decoy), so it tells nothing either.
    let name = if admin_name(&form.name) {
        form.name.as_str()
    } else {
        ""
    };
    let outcome = d
        .ctx
        .auth
        .verify_admin(ip, name, &form.password)
        .await
        .map_err(|e| {
            tracing::error!(event = "dashboard_login_error", error = %e);
            Refusal::Unavailable
        })?;
    Ok(match outcome {
        AuthOutcome::Success(admin) => {
            let hash = d
                .ctx
                .store
                .admin_login(&admin)
                .await
                .ok()
                .flatten()
                .map(|(_, hash)| hash)
                .unwrap_or_default();
            tracing::info!(event = "dashboard_login", admin = %admin, client = %ip);
            let token = d.sessions.start(&admin, &hash);
            let secure = if from.encrypted { "; Secure" } else { "" };
            let cookie = format!(
                "{COOKIE}={token}; Path=/dashboard; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
                sessions::LIFETIME.as_secs()
            );
            with_cookie(Redirect::to("/dashboard").into_response(), &cookie)
        }
        AuthOutcome::Failure => {
            let shown: String = form.name.chars().take(64).collect();
            tracing::warn!(event = "dashboard_login_failed", admin = %shown, client = %ip);
            let page = pages::login(Some("Wrong name or password."));
            (StatusCode::UNAUTHORIZED, page).into_response()
        }
        AuthOutcome::Throttled => {
            let page = pages::login(Some(
                "Too many failed sign-ins from this address; try again later.",
            ));
            (StatusCode::TOO_MANY_REQUESTS, page).into_response()
        }
    })
}

fn with_cookie(mut response: Response, cookie: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

async fn logout(
    State(d): State<Arc<Dashboard>>,
    from: Client,
    Form(form): Form<ActionForm>,
) -> Page {
    let (token, _) = d.acting(&from, &form, "logout").await?;
    d.sessions.end(&token);
    let expired = format!("{COOKIE}=; Path=/dashboard; HttpOnly; SameSite=Strict; Max-Age=0");
    Ok(with_cookie(
        Redirect::to("/dashboard/login").into_response(),
        &expired,
    ))
}

async fn overview(State(d): State<Arc<Dashboard>>, from: Client) -> Page {
    let (_, session) = d.session(&from).await?;
    let summary = d.ctx.queue.spool().summary().await?;
    let (mut minutes, now) = crate::flow::last_day(&d.ctx.store).await.map_err(|e| {
        tracing::error!(event = "store_error", error = %e);
        Refusal::Unavailable
    })?;
    minutes.push(now);
    let port25 = d.delivery.outbound.port25.is_blocked();
    let fallback = crate::router::mx_fallback(&d.ctx.config())
        .filter(|_| port25)
        .map(|r| format!("{}:{}", r.host, r.port));
    let chart = pages::flow(&minutes, minutes.last().map_or(0, |m| m.minute));
    Ok(pages::overview(&session, &summary, port25, fallback.as_deref(), &chart).into_response())
}

async fn queue(State(d): State<Arc<Dashboard>>, from: Client) -> Page {
    let (_, session) = d.session(&from).await?;
    let spool = d.ctx.queue.spool();
    let stuck = spool.stuck(pages::ROWS).await?;
    let mut lists = Vec::new();
    for state in [MessageState::Deferred, MessageState::Held] {
        let filter = ListFilter {
            state: Some(state),
            ..ListFilter::default()
        };
        let first = spool
            .pages(filter, Some(u64::from(pages::ROWS)), pages::ROWS)
            .next()
            .await?
            .unwrap_or_default();
        lists.push(first);
    }
    Ok(pages::queue(&session, &stuck, &lists[0], &lists[1]).into_response())
}

async fn act(
    State(d): State<Arc<Dashboard>>,
    from: Client,
    Path((id, action)): Path<(String, String)>,
    Form(form): Form<ActionForm>,
) -> Page {
    let (_, session) = d.acting(&from, &form, &action).await?;
    let id = QueueId::parse(&id).ok_or(Refusal::NotFound)?;
    let request = match action.as_str() {
        "retry" => Request::Retry { id },
        "hold" => Request::Hold { id },
        "release" => Request::Release { id },
        "delete" => Request::Delete { id },
        _ => return Err(Refusal::NotFound),
    };
    match crate::control::act(&d.ctx.queue, &d.delivery, &request, &session.admin).await {
        crate::control::Response::Failed { .. } => Err(Refusal::Unavailable),
        _ => Ok(Redirect::to("/dashboard/queue").into_response()),
    }
}

async fn ports(State(d): State<Arc<Dashboard>>, from: Client) -> Page {
    let (_, session) = d.session(&from).await?;
    let last_resort = d.ctx.https_submission();
    let week = d.ctx.portmap.week(last_resort);
    Ok(pages::ports(&session, &week, &d.mail_ports(), last_resort).into_response())
}

async fn accounts(State(d): State<Arc<Dashboard>>, from: Client) -> Page {
    let (_, session) = d.session(&from).await?;
    let (total, views) = d
        .ctx
        .store
        .account_views(pages::ROWS, crate::clock::now_unix())
        .await
        .map_err(|e| {
            tracing::error!(event = "store_error", error = %e);
            Refusal::Unavailable
        })?;
    Ok(pages::accounts(&session, total, &views, &d.ctx.config().limits).into_response())
}

/// Headers on every dashboard response: not kept in caches (the pages hold
/// the CSRF token and addresses), not framed, nothing loaded or sent
/// elsewhere. The referrer policy is `same-origin`, not `no-referrer`:
/// under `no-referrer` a browser sends `Origin: null` with every form, which
/// `same_origin` must refuse (Chromium did, in tests/dashboard_browser.rs).
async fn guarded(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CACHE_CONTROL, "no-store"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "same-origin"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(peer: &str, encrypted: bool, proxied: bool) -> Client {
        Client {
            peer: peer.parse().expect("addr"),
            encrypted,
            proxied,
            headers: HeaderMap::new(),
        }
    }

    #[test]
    fn only_allowed_clients_over_tls_or_on_this_host_and_not_proxied_are_admitted() {
        let allowed: Vec<ipnet::IpNet> = ["127.0.0.0/8", "::1/128", "192.0.2.0/24"]
            .iter()
            .map(|n| n.parse().expect("net"))
            .collect();
        let admitted = |peer, tls, proxied| client(peer, tls, proxied).admitted(&allowed);
        assert_eq!(admitted("127.0.0.1:5000", false, false), Ok(()));
        assert_eq!(admitted("[::1]:5000", false, false), Ok(()));
        assert_eq!(admitted("[::ffff:127.0.0.1]:5000", false, false), Ok(()));
        assert_eq!(admitted("192.0.2.7:5000", true, false), Ok(()));
        assert_eq!(
            admitted("192.0.2.7:5000", false, false),
            Err(Refusal::NeedsTls),
            "a password over plain HTTP across a network"
        );
        assert_eq!(
            admitted("198.51.100.1:5000", true, false),
            Err(Refusal::NotHere)
        );
        assert_eq!(
            admitted("127.0.0.1:5000", true, true),
            Err(Refusal::Proxied)
        );
    }

    #[test]
    fn a_form_from_another_origin_is_not_the_same_origin() {
        let headers = |origin: Option<&str>| {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, HeaderValue::from_static("mx.example.com:443"));
            if let Some(o) = origin {
                h.insert(header::ORIGIN, HeaderValue::from_str(o).expect("origin"));
            }
            h
        };
        assert!(same_origin(&headers(None)), "a browser that says nothing");
        assert!(same_origin(&headers(Some("https://mx.example.com:443"))));
        assert!(!same_origin(&headers(Some("https://evil.example"))));
        assert!(!same_origin(&headers(Some("null"))));
    }
}
