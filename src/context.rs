//! `ServerContext`: the services every connection shares (configuration,
//! store, spool and the scheduler's queue, authenticator, TLS), built once by
//! `server` and handed down to `listener`, `session` and `http`, which
//! therefore need not know `server`.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::acme::Challenges;
use crate::auth::Authenticator;
use crate::config::Config;
use crate::dkim::Signer;
use crate::portecho::EchoRegistry;
use crate::scheduler::ActiveQueue;
use crate::store::Store;

/// Everything a session needs, built once and shared.
pub struct ServerContext {
    /// Read through `config()`: a reload replaces it.
    pub live: crate::config::Live,
    pub store: Store,
    /// Where accepted mail is queued: made durable, then handed to the
    /// scheduler. Its spool (`queue.spool()`) serves spills and the
    /// free-space floor; mail goes in through the queue only, so the
    /// scheduler always hears of it.
    pub queue: ActiveQueue,
    pub auth: Authenticator,
    pub tls: Arc<rustls::ServerConfig>,
    pub shutdown: CancellationToken,
    /// Which ports saw which `postern check` probe.
    pub echo: EchoRegistry,
    /// Large submitted bodies being rewritten at once (long lines
    /// re-encoded): each holds the message twice in memory meanwhile.
    pub rewrites: tokio::sync::Semaphore,
    /// The ACME challenges being validated, answered by `http`.
    pub acme: Arc<Challenges>,
    /// Signs submitted mail with its domain's DKIM keys.
    pub dkim: Arc<Signer>,
    /// Checks who sent mail from other servers (SPF, DKIM, DMARC).
    pub checks: crate::dmarc::Checks,
    /// The resolver delivery uses, for the block lists asked at connect.
    pub dns: crate::dns::Dns,
    /// What each user sends: the sending limits, and the hold on an
    /// account that looks stolen.
    pub watch: Arc<crate::watch::Watch>,
    /// The key of the sender addresses of forwarded mail.
    pub srs: Arc<crate::srs::Srs>,
    /// Which submission ports work from which client networks.
    pub portmap: Arc<crate::portmap::PortMap>,
    /// The SMTP listeners' ports and roles now (`server::Listeners` keeps
    /// it): the client settings and the dashboard follow a reload.
    pub listening: std::sync::RwLock<Vec<(u16, crate::config::ListenerRole)>>,
    /// The bound port of SMTP submission on the HTTPS listener
    /// (`submission_on_tls`), if on; `http::start` keeps it.
    pub https_submission: std::sync::RwLock<Option<u16>>,
    /// The client networks that waited for a plaintext greeting lately:
    /// greeted sooner (`listener::detect`).
    pub plaintext_first: crate::portmap::PlaintextFirst,
}

impl ServerContext {
    /// The configuration in place now; work that reads it more than once
    /// keeps this copy (`config::Live`).
    pub fn config(&self) -> Arc<Config> {
        self.live.get()
    }

    /// The SMTP listeners' ports and roles now.
    pub fn listening(&self) -> Vec<(u16, crate::config::ListenerRole)> {
        self.listening
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The bound port of SMTP submission on the HTTPS listener now.
    pub fn https_submission(&self) -> Option<u16> {
        *self
            .https_submission
            .read()
            .unwrap_or_else(|p| p.into_inner())
    }
}

/// A `ServerContext` for in-process tests (the session harness): a
/// temporary data directory with its own store and spool.
#[cfg(test)]
pub mod testing {
    use std::sync::Arc;

    use super::ServerContext;
    use crate::auth::{Authenticator, hash_password};
    use crate::config::Config;
    use crate::portecho::EchoRegistry;
    use crate::scheduler::ActiveQueue;
    use crate::spool::Spool;
    use crate::store::Store;

    /// The password of alice@example.com.
    pub const PASSWORD: &str = "correct horse battery staple";

    /// A context and the directory it lives in (removed on drop).
    pub struct TestContext {
        pub ctx: Arc<ServerContext>,
        _dir: tempfile::TempDir,
    }

    impl TestContext {
        /// Built-in defaults with the host name mx.test.example and `extra`
        /// TOML, hosting example.com with the user alice@example.com
        /// (password `PASSWORD`), as the integration tests' `TestServer`.
        pub async fn start(extra: &str) -> TestContext {
            let dir = tempfile::tempdir().expect("temp dir");
            let text = format!(
                "hostname = \"mx.test.example\"\ndata_dir = {:?}\n{extra}",
                dir.path()
            );
            let config = Arc::new(Config::from_text(&text, None).expect("test config"));
            let store = Store::open(&config.data_dir).await.expect("store");
            store.add_domain("example.com").await.expect("domain");
            let hash = hash_password(PASSWORD).expect("hash");
            store
                .add_user("alice@example.com", &hash)
                .await
                .expect("user");
            let spool = Spool::open(&config.data_dir)
                .await
                .expect("spool")
                .with_free_space_floor(&config.data_dir, config.limits.min_free_space);
            // Nobody takes hand-offs: queued mail stays in the spool, where
            // the tests look for it.
            let (queue, _hand_offs) =
                ActiveQueue::new(spool, crate::scheduler::max_claimed(&config));
            let ctx = ServerContext {
                tls: crate::tls::server_config(&config).expect("tls").config,
                dkim: Arc::new(crate::dkim::Signer::new(&config.data_dir)),
                // No DNS in unit tests: the session tests do not check senders.
                checks: crate::dmarc::Checks::new(
                    crate::dns::Dns::new(&[]).expect("dns").authenticator(),
                    &config.hostname,
                    crate::config::DmarcMode::Off,
                ),
                dns: crate::dns::Dns::new(&[]).expect("dns"),
                watch: Arc::new(crate::watch::Watch::new(
                    Arc::clone(&config).into(),
                    store.clone(),
                    queue.clone(),
                )),
                srs: Arc::new(crate::srs::Srs::with_secret(b"the unit tests' SRS key")),
                portmap: Arc::new(
                    crate::portmap::PortMap::load(store.clone())
                        .await
                        .expect("port map"),
                ),
                auth: Authenticator::new(
                    store.clone(),
                    config.limits.auth_failures_per_ip_per_hour,
                )
                .with_cache(config.auth.cache_ttl, config.auth.cache_size),
                live: config.into(),
                store,
                queue,
                shutdown: tokio_util::sync::CancellationToken::new(),
                echo: EchoRegistry::default(),
                rewrites: tokio::sync::Semaphore::new(2),
                acme: Arc::default(),
                listening: Default::default(),
                https_submission: Default::default(),
                plaintext_first: Default::default(),
            };
            TestContext {
                ctx: Arc::new(ctx),
                _dir: dir,
            }
        }
    }
}
