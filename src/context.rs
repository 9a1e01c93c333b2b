//! `ServerContext`: the services every connection shares (configuration,
//! store, spool and the scheduler's queue, authenticator, TLS), built once by
//! `server` and handed down to `listener`, `session` and `http`, which
//! therefore need not know `server`.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::portecho::EchoRegistry;
use crate::scheduler::ActiveQueue;
use crate::spool::Spool;
use crate::store::Store;

/// Everything a session needs, built once and shared.
pub struct ServerContext {
    pub config: Arc<Config>,
    pub store: Store,
    pub spool: Spool,
    /// Where accepted mail is queued: made durable, then handed to the scheduler.
    pub queue: ActiveQueue,
    pub auth: Authenticator,
    pub tls: Arc<rustls::ServerConfig>,
    pub shutdown: CancellationToken,
    /// Which ports saw which `postern check` probe.
    pub echo: EchoRegistry,
    /// Large submitted bodies being rewritten at once (long lines
    /// re-encoded): each holds the message twice in memory meanwhile.
    pub rewrites: tokio::sync::Semaphore,
}
