//! Delivery to other servers: the only module that opens outbound connections.
//! A delivery has two steps. `reach` looks up a destination's servers (a
//! smarthost, or a domain's MX hosts) and connects to the first that answers,
//! or takes a kept connection to it: all the waiting on the other side before
//! a message can go, which the scheduler does before it takes a delivery slot.
//! `deliver` then sends one message's recipients over that connection (and
//! over the next servers if the transaction fails there) and returns a result
//! per recipient.

mod cache;
mod client;
mod commands;
mod dane;
mod https;
pub mod mta_sts;
mod mx;
pub mod port25;
mod servers;
pub mod tls_report;

use std::sync::Arc;

use mail_auth::report::tlsrpt::ResultType;
use mail_send::Credentials;
use tokio_rustls::TlsConnector;

use client::{ConnectFailure, Connection, Endpoint};
pub use client::{Envelope, Rcpt, RecipientResult, TlsMode};
use dane::Dane;
// The parts of an SMTP dialogue that LMTP delivery (local/lmtp.rs) shares.
pub(crate) use client::{greeting, write_dot_stuffed};
pub(crate) use commands::{check_capabilities, mail_command, rcpt_command};
use port25::Port25Monitor;
use servers::{Server, Servers};

use crate::config::{Config, Relay, RelayTls};
use crate::dns::{Dns, MxAnswer, MxSigning};
use crate::failure::{DeliveryFailure, FailureKind, Severity};
use crate::router::Destination;

#[derive(Debug, thiserror::Error)]
#[error("cannot set up outbound TLS: {0}")]
pub struct OutboundSetupError(String);

/// Where MX-bound mail goes while port 25 is blocked, as `host:port`.
fn fallback_relay_name(config: &Config) -> Option<String> {
    crate::router::mx_fallback(config).map(|r| format!("{}:{}", r.host, r.port))
}

pub struct Outbound {
    /// Read through `config()`: a reload replaces it.
    live: crate::config::Live,
    dns: Dns,
    /// Opportunistic TLS to MX hosts: encryption without authentication, as
    /// RFC 7435 describes; an MX certificate is rarely valid for its name.
    unverified: TlsConnector,
    /// Smarthosts: the certificate must chain to the system's roots.
    verified: TlsConnector,
    pub port25: Port25Monitor,
    cache: cache::ConnectionCache,
    /// Recipient domains' MTA-STS policies; `None` with `mta_sts = false`.
    mta_sts: Option<Arc<mta_sts::Policies>>,
    /// What came of the TLS sessions to MX hosts, for TLS reports.
    tls_results: Arc<tls_report::TlsResults>,
}

/// How to talk to a destination's servers.
struct Settings {
    tls: TlsMode,
    verify: bool,
    credentials: Option<Credentials<String>>,
    plaintext_auth: bool,
    /// Who requires TLS, when it is required.
    tls_required_by: String,
    /// For MX hosts: the policy their TLS sessions are reported under.
    report: Option<tls_report::Applied>,
}

/// A destination reached: a connection ready for a transaction, and the
/// servers left to try should it fail there.
pub struct Reached {
    servers: Servers,
    settings: Settings,
    server: Server,
    conn: Connection,
    /// Taken from the kept connections: it may have gone stale meanwhile.
    kept: bool,
}

impl Outbound {
    /// `store` keeps MTA-STS policies across restarts (`load_kept` reads
    /// them back).
    pub fn new(
        live: crate::config::Live,
        dns: Dns,
        store: Option<crate::store::Store>,
    ) -> Result<Outbound, OutboundSetupError> {
        crate::tls::install_crypto_provider();
        let config = live.get();
        let unverified =
            mail_send::smtp::tls::build_tls_connector(true).map_err(OutboundSetupError)?;
        let verified =
            mail_send::smtp::tls::build_tls_connector(false).map_err(OutboundSetupError)?;
        // As many idle connections in all as there may be deliveries.
        let cache = cache::ConnectionCache::new(
            config.delivery.destination_concurrency,
            config.delivery.concurrency,
        );
        let tls_results = Arc::new(tls_report::TlsResults::new(crate::clock::now_unix()));
        let mta_sts = config.delivery.mta_sts.then(|| {
            Arc::new(mta_sts::Policies::new(
                dns.clone(),
                verified.clone(),
                config.delivery.mta_sts_port,
                Arc::clone(&tls_results),
                store,
            ))
        });
        Ok(Outbound {
            port25: Port25Monitor::new(fallback_relay_name(&config)),
            live,
            dns,
            unverified,
            verified,
            cache,
            mta_sts,
            tls_results,
        })
    }

    /// The configuration in place now.
    fn config(&self) -> Arc<Config> {
        self.live.get()
    }

    /// `[fallback_relay]` as the configuration in place now says; a reload
    /// calls it.
    pub fn follow_fallback_relay(&self) {
        self.port25
            .set_fallback(fallback_relay_name(&self.config()));
    }

    pub fn dns(&self) -> &Dns {
        &self.dns
    }

    /// Takes up what the store kept from before a restart (MTA-STS policies).
    pub async fn load_kept(&self) {
        if let Some(policies) = &self.mta_sts {
            policies.load().await;
        }
    }

    /// The TLS reports due at `now`: those to https addresses are sent
    /// here, those to mailto addresses are returned to be queued.
    pub async fn tls_reports_due(&self, hostname: &str, now: i64) -> Vec<crate::spool::NewMessage> {
        self.tls_results
            .due(&self.dns, &self.verified, hostname, now)
            .await
    }

    /// Finds `destination`'s servers (never `Local`) and a connection to the
    /// first that can take a transaction: a kept one, or a new one (connect,
    /// greeting, EHLO, TLS, AUTH). `Err` when none can: the failure every
    /// recipient gets. Cancel safe: dropping it abandons the attempt.
    pub async fn reach(&self, destination: &Destination) -> Result<Reached, DeliveryFailure> {
        let mut enforced = None;
        let (mut servers, settings) = match destination {
            Destination::Smarthost(relay) => (
                Servers::relay(&relay.host, relay.port),
                self.relay_settings(relay)?,
            ),
            Destination::MxPolicyWaived(domain) => {
                let (hosts, _) = mx::hosts(&self.dns, domain).await?;
                let (hosts, mut settings) = mta_sts::mx_settings(domain, hosts, None)?;
                // What the policies would have said is not known: nothing
                // to report under them.
                settings.report = None;
                let port = self.config().delivery.mx_port;
                (Servers::mx(domain, hosts, port), settings)
            }
            Destination::Mx(domain) => {
                let port = self.config().delivery.mx_port;
                // Asked first: a domain that does not exist, or whose DNS
                // does not answer, fails as a DNS failure.
                let (hosts, published) = mx::hosts(&self.dns, domain).await?;
                let (hosts, dane) = self.under_dane(domain, hosts, published).await?;
                let policy = match &self.mta_sts {
                    Some(policies) => policies.policy(domain).await,
                    None => None,
                };
                let (hosts, settings) = mta_sts::mx_settings(domain, hosts, policy.as_deref())?;
                if settings.tls == TlsMode::Required {
                    enforced = Some(domain);
                }
                (Servers::mx(domain, hosts, port).with_dane(dane), settings)
            }
            Destination::Local => {
                return Err(DeliveryFailure::local(
                    "local mail reached the outbound client",
                ));
            }
        };
        match self.next_server(&mut servers, &settings).await {
            Some((server, conn, kept)) => Ok(Reached {
                servers,
                settings,
                server,
                conn,
                kept,
            }),
            None => {
                let mut failure = servers.failure();
                if let Some(domain) = enforced {
                    failure.text =
                        format!("MTA-STS policy of {domain} (enforce): {}", failure.text);
                }
                Err(failure)
            }
        }
    }

    /// Delivers `env` over the connection `reach` made; when the transaction
    /// fails there before any recipient is settled (a kept connection gone
    /// stale is opened again first), the next servers are tried. Keeps the
    /// connection afterwards when it is still good. Cancel safe in the sense
    /// that dropping it only abandons this attempt.
    pub async fn deliver(&self, reached: Reached, env: &Envelope<'_>) -> Vec<RecipientResult> {
        let Reached {
            mut servers,
            settings,
            mut server,
            mut conn,
            mut kept,
        } = reached;
        loop {
            let endpoint = self.endpoint(&settings, &server);
            match client::transaction(&mut conn, &server.host, env).await {
                Ok((results, reusable)) => {
                    self.keep_or_close(endpoint.key(), conn, reusable);
                    return results;
                }
                Err(_) if kept => {
                    kept = false;
                    match self.open(&servers, &settings, &server).await {
                        Ok(fresh) => {
                            conn = fresh;
                            continue;
                        }
                        Err(f) => servers.failed(&server, f),
                    }
                }
                Err(failure) => servers.failed(
                    &server,
                    ConnectFailure {
                        failure,
                        tcp_failed: false,
                        starttls_failed: false,
                    },
                ),
            }
            let Some(next) = self.next_server(&mut servers, &settings).await else {
                let f = servers.failure();
                return env
                    .recipients
                    .iter()
                    .map(|r| (r.idx, Err(f.clone())))
                    .collect();
            };
            (server, conn, kept) = next;
        }
    }

    /// Gives back the connection of a destination reached for a message that
    /// is not sent after all (deleted or held meanwhile, or unreadable).
    pub fn keep(&self, reached: Reached) {
        let key = self.endpoint(&reached.settings, &reached.server).key();
        self.keep_or_close(key, reached.conn, true);
    }

    /// The next of `servers` that can take a transaction, with a kept
    /// connection to it (true) or a new one.
    async fn next_server(
        &self,
        servers: &mut Servers,
        settings: &Settings,
    ) -> Option<(Server, Connection, bool)> {
        loop {
            let next = servers.next(&self.dns).await;
            let passed_over = servers.take_passed_over();
            if let Some(domain) = servers.mx_domain() {
                for (host, why) in passed_over {
                    self.record_dnssec_invalid(domain, Some(host), &why);
                }
            }
            let server = next?;
            let endpoint = self.endpoint(settings, &server);
            if let Some(conn) = self.cache.take(&endpoint.key()) {
                return Some((server, conn, true));
            }
            match self.open(servers, settings, &server).await {
                Ok(conn) => return Some((server, conn, false)),
                Err(f) => servers.failed(&server, f),
            }
        }
    }

    /// `domain`'s `hosts` (found by the plain resolver; `published`: from
    /// MX records) as DANE has them, and whether their TLSA records are to
    /// be asked: the validated MX hosts when the domain is signed (an
    /// attacker forging only the plain answer would otherwise send the mail
    /// to a host without TLSA records), the same hosts when it is not, and
    /// a failure when its records cannot be validated.
    async fn under_dane(
        &self,
        domain: &str,
        hosts: Vec<String>,
        published: bool,
    ) -> Result<(Vec<String>, bool), DeliveryFailure> {
        // An address literal has no MX records to sign.
        if !self.config().delivery.dane || domain.starts_with('[') {
            return Ok((hosts, false));
        }
        match self.dns.mx_signing(domain, published).await {
            MxSigning::Signed(records) => {
                Ok((mx::in_order(domain, Ok(MxAnswer::of(records)))?, true))
            }
            MxSigning::Unsigned => Ok((hosts, false)),
            MxSigning::Unusable(why) => {
                self.record_dnssec_invalid(domain, None, &why);
                Err(DeliveryFailure::new(
                    Severity::Transient,
                    FailureKind::Tls,
                    format!("{why}; the mail waits (DANE, RFC 7672 §2.2.1)"),
                ))
            }
        }
    }

    /// Counts for TLS reports that `domain`'s MX records (no `host`) or a
    /// host's TLSA records could not be validated.
    fn record_dnssec_invalid(&self, domain: &str, host: Option<String>, why: &str) {
        let applied = tls_report::Applied::Tlsa {
            host: host.clone().unwrap_or_default(),
            records: Vec::new(),
        };
        let outcome = tls_report::Outcome::Failure {
            result: ResultType::DnssecInvalid,
            mx_host: host,
            ip: None,
            reason: why.to_string(),
        };
        self.tls_results.record(domain, &applied, outcome);
    }

    /// A new connection to `server`, one of `servers`; what became of it
    /// counts for port-25 detection and TLS reports when they are MX hosts.
    async fn open(
        &self,
        servers: &Servers,
        settings: &Settings,
        server: &Server,
    ) -> Result<Connection, ConnectFailure> {
        let endpoint = &self.endpoint(settings, server);
        let hostname = &self.config().hostname.clone();
        let Some(domain) = servers.mx_domain() else {
            return client::open(endpoint, hostname).await;
        };
        // A connection to port 25 still being tried when the block is
        // noticed gives up: its mail takes the fallback relay at once
        // rather than after the connect timeout.
        let opened = tokio::select! {
            biased;
            opened = client::open(endpoint, hostname) => opened,
            () = self.port25.detour_begins() => return Err(ConnectFailure {
                failure: DeliveryFailure::new(
                    Severity::Transient,
                    FailureKind::Unreachable { port: endpoint.addr.port() },
                    format!(
                        "{}: not tried further: outbound port {} is blocked, the fallback relay takes the mail",
                        endpoint.host,
                        endpoint.addr.port()
                    ),
                ),
                tcp_failed: true,
                starttls_failed: false,
            }),
        };
        match &opened {
            Err(f) if f.tcp_failed => self.port25.record_failure(domain, endpoint.addr),
            _ => self.port25.record_success(endpoint.addr),
        }
        // A host's TLSA records are the policy its session is held to.
        let applied = match &server.dane {
            Some(dane) => Some(tls_report::Applied::Tlsa {
                host: server.host.clone(),
                records: dane.records.clone(),
            }),
            None => settings.report.clone(),
        };
        if let (Some(applied), Some(outcome)) =
            (applied, tls_report::tls_outcome(&opened, endpoint))
        {
            self.tls_results.record(domain, &applied, outcome);
        }
        opened
    }

    /// While port 25 is blocked, knocks on it every `PROBE_EVERY` (the MX
    /// hosts that failed lately and those that answered before, all at
    /// once); the first that answers ends the block. Runs until `shutdown`.
    pub async fn probe_port25(&self, shutdown: &tokio_util::sync::CancellationToken) {
        let mut changes = self.port25.subscribe();
        loop {
            let blocked = async { changes.wait_for(Option::is_some).await.map(|_| ()) };
            tokio::select! {
                () = shutdown.cancelled() => return,
                open = blocked => if open.is_err() { return },
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(port25::PROBE_EVERY) => {}
            }
            if !self.port25.is_blocked() {
                continue;
            }
            let timeout = self
                .config()
                .delivery
                .connect_timeout
                .min(port25::PROBE_TIMEOUT);
            let mut knocks: tokio::task::JoinSet<_> = self
                .port25
                .probe_targets()
                .into_iter()
                .map(|addr| async move { (addr, client::knock(addr, timeout).await) })
                .collect();
            loop {
                let joined = tokio::select! {
                    // The knocks are dropped with the set: shutdown waits for none.
                    () = shutdown.cancelled() => return,
                    joined = knocks.join_next() => joined,
                };
                match joined {
                    None => break,
                    Some(Ok((addr, Ok(())))) => {
                        self.port25.record_success(addr);
                        break;
                    }
                    Some(Ok((addr, Err(e)))) => {
                        tracing::debug!(event = "port25_probe", addr = %addr, error = %e)
                    }
                    Some(Err(e)) => tracing::error!(event = "port25_probe", error = %e),
                }
            }
        }
    }

    fn endpoint<'a>(&'a self, settings: &'a Settings, server: &'a Server) -> Endpoint<'a> {
        let policy = (
            settings.tls,
            if settings.verify {
                &self.verified
            } else {
                &self.unverified
            },
            settings.verify,
            settings.tls_required_by.as_str(),
        );
        // A host's own TLSA records come before the domain's policy.
        let (tls, connector, verified, tls_required_by) = match &server.dane {
            Some(Dane {
                verifier: Some(connector),
                ..
            }) => (
                TlsMode::Required,
                connector,
                true,
                "its TLSA records (DANE)",
            ),
            Some(Dane { verifier: None, .. }) => (
                TlsMode::Required,
                &self.unverified,
                false,
                "its TLSA records (DANE)",
            ),
            None => policy,
        };
        Endpoint {
            host: &server.host,
            addr: server.addr,
            tls,
            connector,
            credentials: settings.credentials.as_ref(),
            plaintext_auth: settings.plaintext_auth,
            tls_required_by,
            verified,
            connect_timeout: self.config().delivery.connect_timeout,
            reply_timeout: self.config().delivery.timeout,
        }
    }

    fn keep_or_close(&self, key: String, conn: Connection, reusable: bool) {
        let surplus = if reusable {
            self.cache.put(key, conn)
        } else {
            vec![conn]
        };
        for conn in surplus {
            tokio::spawn(client::quit(conn));
        }
    }

    /// Closes kept connections that have idled too long; the scheduler calls
    /// this every time it looks at the queue.
    pub fn close_idle(&self) {
        for conn in self.cache.expired() {
            tokio::spawn(client::quit(conn));
        }
    }

    fn relay_settings(&self, relay: &Relay) -> Result<Settings, DeliveryFailure> {
        let credentials = match (&relay.username, &relay.password_file) {
            (Some(user), Some(file)) => {
                let password = std::fs::read_to_string(file).map_err(|e| {
                    DeliveryFailure::local(format!(
                        "cannot read the relay password file {}: {e}",
                        file.display()
                    ))
                })?;
                Some(Credentials::new(
                    user.clone(),
                    password.trim_end_matches(['\r', '\n']).to_string(),
                ))
            }
            _ => None,
        };
        let tls = match relay.tls {
            RelayTls::StartTls => TlsMode::Required,
            RelayTls::Implicit => TlsMode::Implicit,
            RelayTls::None => TlsMode::Off,
        };
        Ok(Settings {
            tls,
            verify: relay.tls_verify,
            credentials,
            plaintext_auth: relay.allow_plaintext_auth,
            tls_required_by: "this relay".to_string(),
            report: None,
        })
    }
}
