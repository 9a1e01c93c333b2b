//! The HTTP listeners of a running server, as a reload changes them. A
//! reload that changes `[http]` or `trusted_networks` serves HTTP anew: the
//! sockets whose address stayed are kept (with the connections waiting on
//! them), new addresses are bound, the old server stops accepting and its
//! open connections finish the request in progress. The new addresses are
//! bound before anything stops (and before the new configuration is put in
//! place), so one that cannot be bound leaves HTTP and `[http]` as they
//! were, and the report says why.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, Http};
use crate::context::ServerContext;
use crate::dashboard::{self, Dashboard};
use crate::http::{self, HttpSockets};
use crate::listener::ConnectionLimits;
use crate::scheduler::Delivery;

/// The sockets a reload serves HTTP on; `None` inside: no `[http]` address.
pub struct Rebound(Option<HttpSockets>);

/// HTTP as it is served now.
struct Serving {
    /// The settings it was started with.
    http: Http,
    trusted: Vec<ipnet::IpNet>,
    sockets: HttpSockets,
    addrs: Vec<SocketAddr>,
    stop: CancellationToken,
}

pub struct HttpListeners {
    ctx: Arc<ServerContext>,
    delivery: Arc<Delivery>,
    /// The SMTP connection caps, for submission on the HTTPS listener.
    limits: Arc<ConnectionLimits>,
    /// The HTTP connection caps and the total they were made for: kept
    /// while the total stays, so that a server serving HTTP anew counts the
    /// connections its predecessor still serves (a new total starts the
    /// count again: the caps' semaphore has a fixed size).
    http_caps: Option<(usize, Arc<ConnectionLimits>)>,
    tasks: TaskTracker,
    /// Made once and kept, so a reload does not sign administrators out.
    dashboard: Option<Arc<Dashboard>>,
    serving: Option<Serving>,
}

impl HttpListeners {
    /// Serves `sockets` (bound at start, before root was given up) with the
    /// configuration in place; connections run on `tasks`.
    pub fn start(
        ctx: Arc<ServerContext>,
        delivery: Arc<Delivery>,
        limits: Arc<ConnectionLimits>,
        tasks: TaskTracker,
        sockets: Option<HttpSockets>,
    ) -> HttpListeners {
        let mut listeners = HttpListeners {
            ctx,
            delivery,
            limits,
            tasks,
            dashboard: None,
            http_caps: None,
            serving: None,
        };
        if let Some(sockets) = sockets {
            listeners.serve(sockets);
        }
        listeners
    }

    /// Where HTTP is served now.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.serving
            .as_ref()
            .map(|s| s.addrs.clone())
            .unwrap_or_default()
    }

    fn serve(&mut self, sockets: HttpSockets) {
        let config = self.ctx.config();
        let mounted = config.http.dashboard.then(|| {
            let dashboard = self.dashboard.get_or_insert_with(|| {
                Arc::new(Dashboard::new(
                    Arc::clone(&self.ctx),
                    Arc::clone(&self.delivery),
                ))
            });
            ("/dashboard", dashboard::router(Arc::clone(dashboard)))
        });
        let (max, per_ip) = (
            config.http.max_connections,
            config.http.max_connections_per_ip,
        );
        let http_caps = match &self.http_caps {
            Some((was, caps)) if *was == max => {
                caps.update(per_ip, config.trusted_networks.clone());
                Arc::clone(caps)
            }
            _ => {
                let caps = ConnectionLimits::new(max, per_ip, config.trusted_networks.clone());
                self.http_caps = Some((max, Arc::clone(&caps)));
                caps
            }
        };
        let caps = http::Caps {
            http: http_caps,
            smtp: Arc::clone(&self.limits),
        };
        let stop = self.ctx.shutdown.child_token();
        let addrs = http::start(
            Arc::clone(&self.ctx),
            mounted,
            &sockets,
            caps,
            &self.tasks,
            stop.clone(),
        );
        for addr in &addrs {
            tracing::info!(event = "listening", addr = %addr, role = "http");
        }
        self.serving = Some(Serving {
            http: config.http.clone(),
            trusted: config.trusted_networks.clone(),
            sockets,
            addrs,
            stop,
        });
    }

    /// The sockets for `new`'s `[http]` if it or `trusted_networks`
    /// changed (`None` when neither did), bound before the new configuration
    /// is put in place: an address that cannot be bound leaves HTTP and
    /// `[http]` as they run. The error says why.
    pub async fn bind(&self, new: &Config) -> Result<Option<Rebound>, String> {
        let running = self.serving.as_ref();
        let unchanged = match running {
            Some(s) => s.http == new.http && s.trusted == new.trusted_networks,
            None => new.http.addr.is_none() && new.http.tls_addr.is_none(),
        };
        if unchanged {
            return Ok(None);
        }
        match http::bind_reusing(&new.http, running.map(|s| (&s.http, &s.sockets))).await {
            Ok(sockets) => Ok(Some(Rebound(sockets))),
            Err(e) => {
                tracing::error!(event = "bind_failed", "{e}");
                let ours = e
                    .port_in_use()
                    .is_some_and(|port| self.addrs().iter().any(|a| a.port() == port));
                Err(if ours {
                    format!("{e} (by this server's HTTP listener: restart to move it there)")
                } else {
                    e.to_string()
                })
            }
        }
    }

    /// Serves HTTP anew on `rebound` with the configuration now in place;
    /// the old server stops accepting, its open connections finish the
    /// request in progress. Returns what changed, for the reload's report.
    pub fn serve_anew(&mut self, Rebound(sockets): Rebound) -> String {
        let was = self.addrs();
        if let Some(old) = self.serving.take() {
            old.stop.cancel();
        }
        match sockets {
            // `http::start` says where submission on HTTPS is now.
            Some(sockets) => self.serve(sockets),
            None => {
                *self
                    .ctx
                    .https_submission
                    .write()
                    .unwrap_or_else(|p| p.into_inner()) = None;
            }
        }
        let now = self.addrs();
        if now == was {
            "HTTP served anew".to_string()
        } else if now.is_empty() {
            "stopped serving HTTP".to_string()
        } else {
            let list: Vec<String> = now.iter().map(ToString::to_string).collect();
            format!("serving HTTP on {}", list.join(", "))
        }
    }
}
