//! Delivery to other servers: the only module that opens outbound connections.
//! `deliver` takes one message's recipients for one destination (a smarthost or
//! a domain's MX hosts), tries each host address in order until one takes the
//! transaction, and returns a result per recipient.

mod cache;
mod client;
mod mx;
pub mod port25;

use std::net::SocketAddr;
use std::sync::Arc;

use mail_send::Credentials;
use tokio_rustls::TlsConnector;

use client::{ConnectFailure, Endpoint};
pub use client::{Envelope, Rcpt, RecipientResult, TlsMode};
use port25::Port25Monitor;

use crate::config::{Config, Relay, RelayTls};
use crate::dns::Dns;
use crate::failure::{DeliveryFailure, FailureKind, Severity};
use crate::router::Destination;

#[derive(Debug, thiserror::Error)]
#[error("cannot set up outbound TLS: {0}")]
pub struct OutboundSetupError(String);

pub struct Outbound {
    config: Arc<Config>,
    dns: Dns,
    /// Opportunistic TLS to MX hosts: encryption without authentication, as
    /// RFC 7435 describes; an MX certificate is rarely valid for its name.
    unverified: TlsConnector,
    /// Smarthosts: the certificate must chain to the system's roots.
    verified: TlsConnector,
    pub port25: Port25Monitor,
    cache: cache::ConnectionCache,
}

impl Outbound {
    pub fn new(config: Arc<Config>, dns: Dns) -> Result<Outbound, OutboundSetupError> {
        crate::tls::install_crypto_provider();
        let unverified =
            mail_send::smtp::tls::build_tls_connector(true).map_err(OutboundSetupError)?;
        let verified =
            mail_send::smtp::tls::build_tls_connector(false).map_err(OutboundSetupError)?;
        let cache = cache::ConnectionCache::new(config.delivery.destination_concurrency);
        Ok(Outbound {
            config,
            dns,
            unverified,
            verified,
            port25: Port25Monitor::default(),
            cache,
        })
    }

    pub fn dns(&self) -> &Dns {
        &self.dns
    }

    /// Delivers `env` to `destination` (never `Local`). Cancel safe in the sense
    /// that dropping it only abandons this attempt.
    pub async fn deliver(
        &self,
        destination: &Destination,
        env: &Envelope<'_>,
    ) -> Vec<RecipientResult> {
        let result = match destination {
            Destination::Smarthost(relay) => self.to_relay(relay, env).await,
            Destination::Mx(domain) => self.to_mx(domain, env).await,
            Destination::Local => Err(DeliveryFailure::local(
                "local mail reached the outbound client",
            )),
        };
        result.unwrap_or_else(|f| {
            env.recipients
                .iter()
                .map(|r| (r.idx, Err(f.clone())))
                .collect()
        })
    }

    /// Delivers over a kept connection to this endpoint when there is one (a
    /// stale one is dropped and a new connection made), else over a new one;
    /// keeps the connection afterwards when it is still good.
    async fn try_endpoint(
        &self,
        endpoint: &Endpoint<'_>,
        env: &Envelope<'_>,
    ) -> Result<Vec<RecipientResult>, ConnectFailure> {
        let key = format!(
            "{}|{}|{:?}|{}",
            endpoint.addr,
            endpoint.host,
            endpoint.tls,
            endpoint.credentials.map_or("", |c| match c {
                Credentials::Plain { username, .. } => username.as_str(),
                _ => "",
            })
        );
        if let Some(mut conn) = self.cache.take(&key)
            && let Ok((results, reusable)) =
                client::transaction(&mut conn, endpoint.host, env).await
        {
            self.keep_or_close(key, conn, reusable);
            return Ok(results);
        }
        let mut conn = client::open(endpoint, &self.config.hostname).await?;
        let (results, reusable) = client::transaction(&mut conn, endpoint.host, env)
            .await
            .map_err(|failure| ConnectFailure {
                failure,
                tcp_failed: false,
            })?;
        self.keep_or_close(key, conn, reusable);
        Ok(results)
    }

    fn keep_or_close(&self, key: String, conn: client::Connection, reusable: bool) {
        let surplus = if reusable {
            self.cache.put(key, conn)
        } else {
            Some(conn)
        };
        if let Some(conn) = surplus {
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

    async fn to_relay(
        &self,
        relay: &Relay,
        env: &Envelope<'_>,
    ) -> Result<Vec<RecipientResult>, DeliveryFailure> {
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
        let connector = if relay.tls_verify {
            &self.verified
        } else {
            &self.unverified
        };
        let addrs = self.dns.addresses(&relay.host).await.map_err(|e| {
            DeliveryFailure::new(Severity::Transient, FailureKind::Dns, e.to_string())
        })?;
        let mut last = None;
        for ip in addrs {
            let endpoint = Endpoint {
                host: &relay.host,
                addr: SocketAddr::new(ip, relay.port),
                tls,
                connector,
                credentials: credentials.as_ref(),
                plaintext_auth: relay.allow_plaintext_auth,
                connect_timeout: self.config.delivery.connect_timeout,
                reply_timeout: self.config.delivery.timeout,
            };
            match self.try_endpoint(&endpoint, env).await {
                Ok(results) => return Ok(results),
                Err(ConnectFailure { failure, .. }) => last = Some(failure),
            }
        }
        Err(last.unwrap_or_else(|| {
            DeliveryFailure::new(
                Severity::Transient,
                FailureKind::Dns,
                format!("the relay {} has no address", relay.host),
            )
        }))
    }

    async fn to_mx(
        &self,
        domain: &str,
        env: &Envelope<'_>,
    ) -> Result<Vec<RecipientResult>, DeliveryFailure> {
        let port = self.config.delivery.mx_port;
        let hosts = mx::hosts(&self.dns, domain).await?;
        let mut last = None;
        // Whether any server answered, and whether any connection failed: if
        // none answered but some were tried, the destination is unreachable on
        // this port (perhaps blocked), which the DSN says.
        let (mut answered, mut tried) = (false, false);
        for host in &hosts {
            let addrs = match self.dns.addresses(host).await {
                Ok(a) => a,
                Err(e) => {
                    last = Some(DeliveryFailure::new(
                        Severity::Transient,
                        FailureKind::Dns,
                        e.to_string(),
                    ));
                    continue;
                }
            };
            for ip in addrs {
                let endpoint = Endpoint {
                    host,
                    addr: SocketAddr::new(ip, port),
                    tls: TlsMode::Opportunistic,
                    connector: &self.unverified,
                    credentials: None,
                    plaintext_auth: false,
                    connect_timeout: self.config.delivery.connect_timeout,
                    reply_timeout: self.config.delivery.timeout,
                };
                match self.try_endpoint(&endpoint, env).await {
                    Ok(results) => {
                        self.port25.record_success();
                        return Ok(results);
                    }
                    Err(ConnectFailure {
                        failure,
                        tcp_failed,
                    }) => {
                        tried = true;
                        if tcp_failed {
                            self.port25.record_failure(domain, port);
                        } else {
                            self.port25.record_success();
                            answered = true;
                        }
                        tracing::info!(event = "host_failed", host = %host, addr = %endpoint.addr, reason = %failure);
                        last = Some(failure);
                    }
                }
            }
        }
        let kind = match &last {
            Some(f) if answered => f.kind,
            _ if tried => FailureKind::Unreachable { port },
            _ => FailureKind::Dns,
        };
        let last = last
            .map(|f| f.text)
            .unwrap_or_else(|| "no address found".into());
        let text = if answered {
            format!("no server of {domain} took the message on port {port} (last error: {last})")
        } else {
            format!("no server of {domain} could be reached on port {port} (last error: {last})")
        };
        Err(DeliveryFailure::new(Severity::Transient, kind, text))
    }
}
