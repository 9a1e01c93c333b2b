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
use axum::{Extension, Form, Router};
use serde::Deserialize;

use crate::auth::AuthOutcome;
use crate::context::ServerContext;
use crate::control::Request;
use crate::http::Encrypted;
use crate::scheduler::Delivery;
use crate::spool::QueueId;
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

    /// A client outside `dashboard_from` is refused.
    fn admit(&self, peer: SocketAddr) -> Result<(), Refusal> {
        if crate::config::in_networks(&self.ctx.config.http.dashboard_from, peer.ip()) {
            Ok(())
        } else {
            Err(Refusal::NotHere)
        }
    }

    /// The signed-in session of the request: its token, and itself.
    fn session(&self, peer: SocketAddr, headers: &HeaderMap) -> Result<(String, Session), Refusal> {
        self.admit(peer)?;
        cookie(headers)
            .and_then(|token| self.sessions.get(&token).map(|s| (token, s)))
            .ok_or(Refusal::SignIn)
    }

    /// The session of a form that acts, once its CSRF token is checked.
    fn acting(
        &self,
        peer: SocketAddr,
        headers: &HeaderMap,
        form: &ActionForm,
        action: &str,
    ) -> Result<(String, Session), Refusal> {
        let (token, session) = self.session(peer, headers)?;
        if !session.csrf_matches(&form.csrf) {
            tracing::warn!(event = "dashboard_csrf_refused", admin = %session.admin, action);
            return Err(Refusal::Csrf);
        }
        Ok((token, session))
    }
}

/// Why a request gets no page.
enum Refusal {
    /// The client is outside `dashboard_from`.
    NotHere,
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

pub fn router(dashboard: Arc<Dashboard>) -> Router {
    Router::new()
        .route("/", get(overview))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/queue", get(queue))
        .route("/queue/{id}/{action}", post(act))
        .route("/ports", get(ports))
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

async fn login_page(
    State(d): State<Arc<Dashboard>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Page {
    d.admit(peer)?;
    Ok(pages::login(None).into_response())
}

async fn login(
    State(d): State<Arc<Dashboard>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(Encrypted(encrypted)): Extension<Encrypted>,
    Form(form): Form<LoginForm>,
) -> Page {
    d.admit(peer)?;
    let outcome = d
        .ctx
        .auth
        .verify_admin(peer.ip(), &form.name, &form.password)
        .await
        .map_err(|e| {
            tracing::error!(event = "dashboard_login_error", error = %e);
            Refusal::Unavailable
        })?;
    Ok(match outcome {
        AuthOutcome::Success(admin) => {
            tracing::info!(event = "dashboard_login", admin = %admin, client = %peer.ip());
            let token = d.sessions.start(&admin);
            let secure = if encrypted { "; Secure" } else { "" };
            let cookie = format!(
                "{COOKIE}={token}; Path=/dashboard; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
                sessions::LIFETIME.as_secs()
            );
            let mut response = Redirect::to("/dashboard").into_response();
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(header::SET_COOKIE, value);
            }
            response
        }
        AuthOutcome::Failure => {
            tracing::warn!(event = "dashboard_login_failed", admin = %form.name, client = %peer.ip());
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

async fn logout(
    State(d): State<Arc<Dashboard>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Page {
    let (token, _) = d.acting(peer, &headers, &form, "logout")?;
    d.sessions.end(&token);
    Ok(Redirect::to("/dashboard/login").into_response())
}

async fn overview(
    State(d): State<Arc<Dashboard>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Page {
    let (_, session) = d.session(peer, &headers)?;
    let summary = d.ctx.queue.spool().summary().await?;
    let port25 = d.delivery.outbound.port25.is_blocked();
    let fallback = crate::router::mx_fallback(&d.ctx.config)
        .filter(|_| port25)
        .map(|r| format!("{}:{}", r.host, r.port));
    Ok(pages::overview(&session, &summary, port25, fallback.as_deref()).into_response())
}

async fn queue(
    State(d): State<Arc<Dashboard>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Page {
    let (_, session) = d.session(peer, &headers)?;
    let spool = d.ctx.queue.spool();
    let stuck = spool.stuck(pages::ROWS).await?;
    let messages = spool
        .pages(
            crate::spool::ListFilter::default(),
            Some(u64::from(pages::ROWS)),
            0,
        )
        .next()
        .await?
        .unwrap_or_default();
    Ok(pages::queue(&session, &stuck, &messages).into_response())
}

async fn act(
    State(d): State<Arc<Dashboard>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    Form(form): Form<ActionForm>,
) -> Page {
    let (_, session) = d.acting(peer, &headers, &form, &action)?;
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

async fn ports(
    State(d): State<Arc<Dashboard>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Page {
    let (_, session) = d.session(peer, &headers)?;
    Ok(pages::ports(&session, &d.ctx.portmap.week()).into_response())
}
