//! The SMTP listeners of a running server, as a reload changes them: a
//! listener no longer in the configuration stops accepting (its open sessions
//! finish), a new one is bound and served, and `run/listeners.json` says what
//! is bound now. The others are left alone, so their sockets and queues of
//! pending connections survive the reload.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ListenerConfig;
use crate::context::ServerContext;
use crate::listener::{self, BoundListener, ConnectionLimits, ListenerInfo};

/// One listener being served, and what stops it.
struct Serving {
    config: ListenerConfig,
    info: ListenerInfo,
    stop: CancellationToken,
}

/// Every SMTP listener being served, and what new ones are started with.
pub struct Listeners {
    ctx: Arc<ServerContext>,
    limits: Arc<ConnectionLimits>,
    sessions: TaskTracker,
    accept_loops: TaskTracker,
    serving: Vec<Serving>,
}

impl Listeners {
    /// Serves `bound` (the listeners bound at start) on `accept_loops`,
    /// their sessions on `sessions`.
    pub fn start(
        ctx: Arc<ServerContext>,
        limits: Arc<ConnectionLimits>,
        sessions: TaskTracker,
        accept_loops: TaskTracker,
        bound: Vec<BoundListener>,
    ) -> Listeners {
        let mut listeners = Listeners {
            ctx,
            limits,
            sessions,
            accept_loops,
            serving: Vec::new(),
        };
        for b in bound {
            listeners.serve(b);
        }
        listeners.publish();
        listeners
    }

    /// Tells the rest of the server (`ServerContext::listening`) what is
    /// bound now.
    fn publish(&self) {
        let now: Vec<_> = self
            .serving
            .iter()
            .map(|s| (s.info.addr.port(), s.info.role))
            .collect();
        *self
            .ctx
            .listening
            .write()
            .unwrap_or_else(|p| p.into_inner()) = now;
    }

    fn serve(&mut self, bound: BoundListener) {
        let Some(info) = bound.info() else {
            return;
        };
        let config = ListenerConfig {
            addr: bound.configured,
            role: bound.role,
        };
        let stop = self.ctx.shutdown.child_token();
        self.accept_loops.spawn(listener::accept_loop(
            Arc::clone(&self.ctx),
            bound,
            Arc::clone(&self.limits),
            self.sessions.clone(),
            stop.clone(),
        ));
        self.serving.push(Serving { config, info, stop });
    }

    /// What is bound now, for `run/listeners.json`.
    pub fn infos(&self) -> Vec<&ListenerInfo> {
        self.serving.iter().map(|s| &s.info).collect()
    }

    /// Makes the listeners those of `wanted`: stops the ones it no longer
    /// has, binds and serves the new ones. Returns what changed, for the
    /// reload's report; `None` when nothing did.
    pub async fn apply(&mut self, wanted: &[ListenerConfig]) -> Option<String> {
        // Matched one for one, so that two listeners on "127.0.0.1:0" with
        // the same role are two.
        let mut added: Vec<ListenerConfig> = wanted.to_vec();
        let mut removed = Vec::new();
        self.serving.retain(|s| {
            if let Some(i) = added.iter().position(|w| *w == s.config) {
                added.remove(i);
                true
            } else {
                s.stop.cancel();
                removed.push(format!("{} ({})", s.info.addr, s.info.role));
                false
            }
        });
        let mut report = Vec::new();
        if !removed.is_empty() {
            report.push(format!("stopped listening on {}", removed.join(", ")));
        }
        if !added.is_empty() {
            let bound = listener::bind_all(&added).await;
            let mut started = Vec::new();
            for b in bound {
                if let Some(info) = b.info() {
                    tracing::info!(event = "listening", addr = %info.addr, role = %info.role);
                    started.push(format!("{} ({})", info.addr, info.role));
                }
                self.serve(b);
            }
            let failed = added.len() - started.len();
            if !started.is_empty() {
                report.push(format!("listening on {}", started.join(", ")));
            }
            if failed > 0 {
                report.push(format!(
                    "{failed} new listener{} could not be bound (see the log)",
                    if failed == 1 { "" } else { "s" }
                ));
            }
        }
        self.publish();
        (!report.is_empty()).then(|| report.join("; "))
    }
}
