//! `run`: builds the shared services from a `Config`, binds the listeners and
//! the control socket, serves until SIGTERM or SIGINT, then drains: stop
//! accepting, let open sessions finish (bounded by `shutdown_grace`), return.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::acme::{self, Renewal};
use crate::auth::Authenticator;
use crate::config::Config;
use crate::context::ServerContext;
use crate::control::{self, ControlError};
use crate::dns::{Dns, ResolverSetupError};
use crate::http;
use crate::listener::{self, ConnectionLimits, ListenerInfo};
use crate::outbound::{Outbound, OutboundSetupError};
use crate::portecho::EchoRegistry;
use crate::scheduler::{self, ActiveQueue, Delivery};
use crate::sendmail;
use crate::spool::{Spool, SpoolError};
use crate::store::{Store, StoreError};
use crate::tls::{self, Certificates, TlsSetupError};
use crate::{dkim, dmarc};
use http_listeners::HttpListeners;
use listeners::Listeners;
use reload::CERTIFICATE_CHECK;
use sd_notify::NotifyState;
use tokio::signal::unix::{Signal, SignalKind, signal};

mod http_listeners;
mod listeners;
pub mod privileges;
mod reload;

use privileges::PrivilegeError;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    #[error(transparent)]
    Resolver(#[from] ResolverSetupError),
    #[error(transparent)]
    Outbound(#[from] OutboundSetupError),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error(transparent)]
    Privileges(#[from] PrivilegeError),
    #[error("no listener could be bound; see the errors above")]
    NoListener,
    #[error("cannot read or make the SRS key in {0}: {1}")]
    SrsKey(String, std::io::Error),
    #[error("cannot write {path}: {source}")]
    RunFile {
        path: String,
        source: std::io::Error,
    },
}

/// Serves until a termination signal, then drains and returns.
pub async fn run(config: Config) -> Result<(), ServerError> {
    let config = Arc::new(config);
    // Watched from the start: SIGHUP's default action ends the process, and
    // systemd or an admin may send it as soon as the listeners are up.
    let signals =
        signal(SignalKind::terminate()).and_then(|t| Ok((t, signal(SignalKind::hangup())?)));
    // Made here with its mode (other users reach the submission socket
    // through it), before the lock's run/ would make it owner-only.
    crate::sqlite::create_data_dir(&config.data_dir).map_err(|source| ServerError::RunFile {
        path: config.data_dir.display().to_string(),
        source,
    })?;
    // First of all: the server lock keeps a second server off this data_dir,
    // and from here on the CLI changes the queue through this server.
    let control_socket = control::bind(&config).await?;
    let submit_socket = sendmail::bind(&config)?;
    // What needs root (ports below 1024, a key only root may read) comes
    // next; then, with `user` set, the server becomes that user for good.
    let bound = listener::bind_all(&config.listeners).await;
    if bound.is_empty() {
        return Err(ServerError::NoListener);
    }
    // HTTP is a convenience: if it cannot start, mail still flows.
    let http_sockets = match http::bind(&config.http).await {
        Ok(sockets) => sockets,
        Err(e) => {
            tracing::error!(event = "bind_failed", "{e}");
            None
        }
    };
    let tls::ServerTls {
        config: tls,
        certificates,
    } = tls::server_config(&config)?;
    if let Some(run_as) = privileges::drop_root(&config)? {
        tracing::info!(event = "privileges_dropped", user = %run_as.user, uid = run_as.uid, group = %run_as.group, gid = run_as.gid);
    }
    privileges::warn_if_maildirs_cannot_be_given(&config);
    if config.run_as.is_none() && privileges::is_root() {
        tracing::warn!(
            event = "running_as_root",
            "running as root; set user = \"postern\" (an unprivileged account) in the config to give up root once the ports are bound"
        );
    }
    let store = Store::open(&config.data_dir).await?;
    let srs = Arc::new(
        crate::srs::Srs::load(&config.data_dir)
            .map_err(|e| ServerError::SrsKey(config.data_dir.display().to_string(), e))?,
    );
    let spool = Spool::open(&config.data_dir)
        .await?
        .with_free_space_floor(&config.data_dir, config.limits.min_free_space);
    let auth = Authenticator::new(store.clone(), config.limits.auth_failures_per_ip_per_hour)
        .with_cache(config.auth.cache_ttl, config.auth.cache_size);
    let mut dns = Dns::new(&config.delivery.nameservers)?;
    if config.delivery.dane {
        dns = dns.with_dnssec(
            &config.delivery.nameservers,
            config.delivery.dnssec_trust_anchor.as_deref(),
        )?;
    }
    let checks = dmarc::Checks::new(dns.authenticator(), &config.hostname, config.dmarc)
        .with_reports(config.dmarc_reports.is_some());
    let live = crate::config::Live::new(Arc::clone(&config));
    let outbound = Outbound::new(live.clone(), dns.clone(), Some(store.clone()))?;
    outbound.load_kept().await;
    let (queue, hand_offs) = ActiveQueue::new(spool, scheduler::max_claimed(&config));
    let watch = Arc::new(crate::watch::Watch::new(
        live.clone(),
        store.clone(),
        queue.clone(),
    ));
    let portmap = Arc::new(crate::portmap::PortMap::load(store.clone()).await?);
    let (bounce_reports, bounces) = tokio::sync::mpsc::channel(1024);
    let delivery = Arc::new(
        Delivery::new(
            live.clone(),
            queue.clone(),
            store.clone(),
            outbound,
            Arc::clone(&srs),
        )
        .with_bounce_reports(bounce_reports),
    );
    let shutdown = CancellationToken::new();
    let ctx = Arc::new(ServerContext {
        live: live.clone(),
        store,
        queue: queue.clone(),
        auth,
        tls,
        shutdown: shutdown.clone(),
        echo: EchoRegistry::default(),
        rewrites: tokio::sync::Semaphore::new(2),
        acme: Arc::default(),
        dkim: Arc::new(crate::dkim::Signer::new(&config.data_dir)),
        checks,
        dns: dns.clone(),
        watch: Arc::clone(&watch),
        srs,
        portmap: Arc::clone(&portmap),
        listening: Default::default(),
        https_submission: Default::default(),
        plaintext_first: Default::default(),
    });

    let infos: Vec<ListenerInfo> = bound
        .iter()
        .filter_map(listener::BoundListener::info)
        .collect();
    for info in &infos {
        tracing::info!(event = "listening", addr = %info.addr, role = %info.role);
    }
    let counted: Vec<(u16, &'static str)> = infos
        .iter()
        .map(|i| (i.addr.port(), i.role.as_str()))
        .collect();
    crate::prometheus::zero(&counted);

    let limits = ConnectionLimits::new(
        config.limits.max_connections,
        config.limits.max_connections_per_ip,
        config.trusted_networks.clone(),
    );
    let sessions = TaskTracker::new();
    let accept_loops = TaskTracker::new();
    // Before HTTP: the client settings it serves offer the mail ports these
    // publish.
    let mut listeners = Listeners::start(
        Arc::clone(&ctx),
        Arc::clone(&limits),
        sessions.clone(),
        accept_loops.clone(),
        bound,
    );
    accept_loops.close();
    let mut http_listeners = HttpListeners::start(
        Arc::clone(&ctx),
        Arc::clone(&delivery),
        Arc::clone(&limits),
        sessions.clone(),
        http_sockets,
    );
    write_http_run_file(&config, &http_listeners)?;
    // After the HTTP listeners, which answer its challenges.
    let renewal = Renewal::start(
        acme::renewal::Parts {
            config: Arc::clone(&config),
            live: live.clone(),
            store: ctx.store.clone(),
            certificates: Arc::clone(&certificates),
            challenges: Arc::clone(&ctx.acme),
        },
        shutdown.clone(),
    );
    // Written last: its appearance tells scripts and tests that every
    // listener, HTTP included, is up.
    write_run_file(&config, "listeners.json", &listeners.infos())?;
    // The free-space floor is checked at every MAIL; this keeps /metrics and
    // the end of a low-space episode current on a quiet server too.
    let floor = (ctx.queue.spool().clone(), shutdown.clone());
    tokio::spawn(async move {
        let (spool, stop) = floor;
        loop {
            let _ = spool.has_room_for(0);
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(std::time::Duration::from_secs(10)) => {}
            }
        }
    });
    // Stopped after sessions and deliveries have drained, so what they
    // record on the way out is written too; awaited before the process ends.
    let records_stop = CancellationToken::new();
    let records = [
        tokio::spawn(watch.run(bounces, records_stop.clone())),
        tokio::spawn(portmap.run(records_stop.clone())),
        tokio::spawn(crate::flow::run(ctx.store.clone(), records_stop.clone())),
    ];
    if let Some(interval) = config.dmarc_reports {
        let ctx_for_reports = Arc::clone(&ctx);
        tokio::spawn(send_reports(Arc::clone(&ctx), interval, move |now| {
            let ctx = Arc::clone(&ctx_for_reports);
            async move {
                let authenticator = ctx.dns.authenticator();
                dmarc::report::due(&ctx.store, &authenticator, &ctx.config().hostname, now).await
            }
        }));
    }
    if let Some(interval) = config.delivery.tls_reports {
        let (delivery, ctx_for_reports) = (Arc::clone(&delivery), Arc::clone(&ctx));
        tokio::spawn(send_reports(Arc::clone(&ctx), interval, move |now| {
            let (delivery, ctx) = (Arc::clone(&delivery), Arc::clone(&ctx_for_reports));
            async move {
                delivery
                    .outbound
                    .tls_reports_due(&ctx.config().hostname, now)
                    .await
            }
        }));
    }
    tokio::spawn(dkim::rotation::watch(
        config.data_dir.clone(),
        dns,
        config.dkim.retire_after,
        config.dkim.check_interval,
        Arc::clone(&ctx.dkim),
        shutdown.clone(),
    ));
    let submissions = tokio::spawn(sendmail::serve(
        submit_socket,
        Arc::clone(&ctx),
        sessions.clone(),
    ));
    let (reloads, mut reload_asks) = tokio::sync::mpsc::channel(4);
    let control = tokio::spawn(control::serve(
        control_socket,
        queue,
        Arc::clone(&delivery),
        reloads,
        shutdown.clone(),
    ));
    let deliveries = TaskTracker::new();
    let scheduler = tokio::spawn(scheduler::run(
        Arc::clone(&delivery),
        hand_offs,
        shutdown.clone(),
        deliveries.clone(),
    ));

    tell_systemd(NotifyState::Ready);
    let mut running = Running {
        config: &config,
        live: &live,
        connection_limits: &limits,
        delivery: &delivery,
        certificates: &certificates,
        renewal: renewal.as_ref(),
        listeners: &mut listeners,
        http_listeners: &mut http_listeners,
    };
    running.serve_until_stopped(&mut reload_asks, signals).await;
    tell_systemd(NotifyState::Stopping);
    tracing::info!(
        event = "shutdown",
        "stopping: no new connections; open sessions may finish"
    );
    shutdown.cancel();
    accept_loops.wait().await;
    let _ = scheduler.await;
    let _ = control.await;
    let _ = submissions.await;
    sessions.close();
    deliveries.close();
    let drained = async {
        sessions.wait().await;
        deliveries.wait().await;
    };
    if tokio::time::timeout(live.get().limits.shutdown_grace, drained)
        .await
        .is_err()
    {
        // Unfinished deliveries are tried again at the next start: their
        // leases are void then.
        tracing::warn!(
            event = "shutdown",
            "sessions or deliveries still running after the grace period; stopping them"
        );
    }
    records_stop.cancel();
    for written in records {
        let _ = written.await;
    }
    for name in ["listeners.json", "http.json"] {
        let _ = std::fs::remove_file(config.run_dir().join(name));
    }
    Ok(())
}

/// Tells systemd how the server stands (the unit's Type=notify: "started"
/// means listening, not merely forked); a no-op without `$NOTIFY_SOCKET`.
fn tell_systemd(state: NotifyState<'_>) {
    if let Err(e) = sd_notify::notify(&[state]) {
        tracing::warn!(event = "notify_failed", error = %e, "cannot tell systemd the server's state");
    }
}

/// Writes `data_dir/run/<name>` as JSON, renamed into place so a reader never
/// sees half a file.
fn write_run_file(
    config: &Config,
    name: &str,
    value: &impl serde::Serialize,
) -> Result<(), ServerError> {
    let dir = config.run_dir();
    let path = dir.join(name);
    let err = |source| ServerError::RunFile {
        path: path.display().to_string(),
        source,
    };
    std::fs::create_dir_all(&dir).map_err(err)?;
    let tmp = dir.join(format!("{name}.tmp"));
    let json = serde_json::to_vec_pretty(value).unwrap_or_default();
    std::fs::write(&tmp, json).map_err(err)?;
    std::fs::rename(&tmp, &path).map_err(err)
}

/// `data_dir/run/http.json`: where HTTP is served, while it is.
fn write_http_run_file(config: &Config, http: &HttpListeners) -> Result<(), ServerError> {
    let addrs = http.addrs();
    if addrs.is_empty() {
        let _ = std::fs::remove_file(config.run_dir().join("http.json"));
        return Ok(());
    }
    write_run_file(config, "http.json", &addrs)
}

/// What a reload changes in the running server.
struct Running<'a> {
    /// The configuration it started with (where its run files are).
    config: &'a Config,
    /// The configuration it runs on now, which a reload replaces.
    live: &'a crate::config::Live,
    /// The SMTP listeners' caps per client.
    connection_limits: &'a ConnectionLimits,
    /// Follows `[fallback_relay]`.
    delivery: &'a Delivery,
    certificates: &'a Certificates,
    renewal: Option<&'a Renewal>,
    listeners: &'a mut Listeners,
    http_listeners: &'a mut HttpListeners,
}

impl Running<'_> {
    /// Reads the configuration again and applies the certificate, the
    /// settings work reads as it begins, and the listeners (systemd is told
    /// while it runs); then the ACME certificate is looked at, so a domain
    /// just added gets its names.
    async fn reload(&mut self) -> Result<String, String> {
        tell_systemd(NotifyState::Reloading);
        let running = self.live.get();
        let outcome = match reload::read_and_apply(&running, self.certificates) {
            Ok(mut reloaded) => {
                let http = match self.http_listeners.bind(&reloaded.config).await {
                    Ok(rebound) => rebound,
                    Err(why) => {
                        reloaded.keep_http(&running, why);
                        None
                    }
                };
                let mut report = reloaded.report();
                let new = Arc::new(reloaded.config);
                self.connection_limits.update(
                    new.limits.max_connections_per_ip,
                    new.trusted_networks.clone(),
                );
                self.live.replace(Arc::clone(&new));
                self.delivery.outbound.follow_fallback_relay();
                if let Some(changed) = self.listeners.apply(&new.listeners).await {
                    report.push_str(&format!("; {changed}"));
                    if let Err(e) =
                        write_run_file(self.config, "listeners.json", &self.listeners.infos())
                    {
                        tracing::error!(event = "run_file_failed", "{e}");
                    }
                }
                if let Some(rebound) = http {
                    report.push_str(&format!("; {}", self.http_listeners.serve_anew(rebound)));
                    if let Err(e) = write_http_run_file(self.config, self.http_listeners) {
                        tracing::error!(event = "run_file_failed", "{e}");
                    }
                }
                tracing::info!(event = "reloaded", "{report}");
                Ok(report)
            }
            Err(error) => {
                tracing::error!(event = "reload_refused", "{error}");
                Err(error)
            }
        };
        tell_systemd(NotifyState::Ready);
        if let Some(renewal) = self.renewal {
            renewal.check_now();
        }
        outcome
    }

    /// Until SIGTERM or Ctrl-C: reloads on SIGHUP and on `postern reload`, and
    /// picks up a certificate replaced on disk (a renewal) without either.
    async fn serve_until_stopped(
        &mut self,
        reload_asks: &mut tokio::sync::mpsc::Receiver<control::ReloadAsk>,
        signals: std::io::Result<(Signal, Signal)>,
    ) {
        let (mut term, mut hup) = match signals {
            Ok(signals) => signals,
            Err(e) => {
                tracing::error!(error = %e, "cannot watch SIGTERM and SIGHUP; stop with Ctrl-C");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        let mut certificate_check = tokio::time::interval(CERTIFICATE_CHECK);
        certificate_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = term.recv() => return,
                _ = tokio::signal::ctrl_c() => return,
                _ = hup.recv() => {
                    let _ = self.reload().await;
                }
                Some(ask) = reload_asks.recv() => {
                    let _ = ask.send(self.reload().await);
                }
                _ = certificate_check.tick() => reload::certificate_if_changed(self.certificates),
            }
        }
    }
}

/// Queues what `due` finds (the aggregate reports: DMARC, TLS) every
/// `interval`, until the server stops.
async fn send_reports<F, Fut>(ctx: Arc<ServerContext>, interval: std::time::Duration, due: F)
where
    F: Fn(i64) -> Fut,
    Fut: std::future::Future<Output = Vec<crate::spool::NewMessage>>,
{
    loop {
        tokio::select! {
            () = ctx.shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        for message in due(crate::clock::now_unix()).await {
            let id = crate::spool::QueueId::generate();
            if let Err(e) = ctx.queue.put(id.clone(), message).await {
                tracing::error!(event = "spool_failed", qid = %id, error = %e);
            }
        }
    }
}
