//! `Authenticator`: checks a user name and password against the store (argon2id
//! hashes) and slows and cuts guessing: per client address across connections
//! here, per connection in the session. Successes are remembered for a short
//! time (cache.rs), so a login per message does not cost argon2 each time.

pub mod cache;
pub mod sasl;

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::store::{Store, StoreError};
use cache::VerifiedCache;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("password hashing failed: {0}")]
    Hash(String),
}

/// The result of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    /// Authenticated as this canonical address.
    Success(String),
    Failure,
    /// This client address has failed too often; it may not try now.
    Throttled,
}

/// Hashes a new password (argon2id, random salt) for the store.
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

fn verify_password(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored)
        .map(|hash| {
            Argon2::default()
                .verify_password(password.as_bytes(), &hash)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A hash to verify against when the user does not exist, so that a missing
/// account takes as long as a wrong password and cannot be told apart by timing.
fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password("decoy password").unwrap_or_default())
}

#[derive(Clone)]
pub struct Authenticator {
    store: Store,
    failures: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    blocked: Arc<Mutex<HashMap<IpAddr, Instant>>>,
    block_for: Duration,
    /// Argon2 checks running at once. Each takes argon2's memory (19 MiB by
    /// default): a thousand clients starting AUTH together would otherwise
    /// take gigabytes. More than the cores could not run faster anyway.
    hashing: Arc<tokio::sync::Semaphore>,
    /// Recent successes; `None` when `[auth] cache_ttl` is zero.
    verified: Option<Arc<VerifiedCache>>,
}

impl Authenticator {
    /// `failures_per_hour`: failed attempts one client address may make per hour
    /// before further attempts are refused without checking.
    pub fn new(store: Store, failures_per_hour: u32) -> Authenticator {
        let per_hour = NonZeroU32::new(failures_per_hour).unwrap_or(NonZeroU32::MIN);
        Authenticator {
            store,
            failures: Arc::new(RateLimiter::keyed(Quota::per_hour(per_hour))),
            blocked: Arc::new(Mutex::new(HashMap::new())),
            block_for: Duration::from_secs(3600) / per_hour.get(),
            hashing: Arc::new(tokio::sync::Semaphore::new(
                2 * std::thread::available_parallelism().map_or(2, usize::from),
            )),
            verified: None,
        }
    }

    /// Remembers each success for `ttl` (zero: not at all), for up to
    /// `size` users.
    pub fn with_cache(mut self, ttl: Duration, size: usize) -> Authenticator {
        self.verified = VerifiedCache::new(ttl, size).map(Arc::new);
        self
    }

    fn is_blocked(&self, ip: IpAddr) -> bool {
        let mut blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        blocked.retain(|_, until| *until > now);
        blocked.contains_key(&ip)
    }

    fn record_failure(&self, ip: IpAddr) {
        if self.failures.check_key(&ip).is_err() {
            let mut blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
            blocked.insert(ip, Instant::now() + self.block_for);
            tracing::warn!(event = "auth_throttled", client = %ip, "too many failed logins from this address");
        }
        self.failures.retain_recent();
    }

    /// Checks a mail account's credentials. Cancel safe: dropping the
    /// future loses only this attempt.
    pub async fn verify(
        &self,
        ip: IpAddr,
        username: &str,
        password: &str,
    ) -> Result<AuthOutcome, AuthError> {
        if self.is_blocked(ip) {
            return Ok(AuthOutcome::Throttled);
        }
        let found = self.store.login(username).await?;
        self.check(ip, found, password, self.verified.as_deref())
            .await
    }

    /// Checks a dashboard administrator's credentials (`postern admin`),
    /// under the same throttle as mail logins, and never from the cache
    /// of mail logins' successes.
    pub async fn verify_admin(
        &self,
        ip: IpAddr,
        name: &str,
        password: &str,
    ) -> Result<AuthOutcome, AuthError> {
        if self.is_blocked(ip) {
            return Ok(AuthOutcome::Throttled);
        }
        let found = self.store.admin_login(name).await?;
        self.check(ip, found, password, None).await
    }

    /// Checks `password` against `found` (the name as stored and its hash),
    /// or against a decoy when there is no such name.
    async fn check(
        &self,
        ip: IpAddr,
        found: Option<(String, String)>,
        password: &str,
        cache: Option<&VerifiedCache>,
    ) -> Result<AuthOutcome, AuthError> {
        let (account, hash) = match found {
            Some((address, hash)) => (Some(address), hash),
            None => (None, decoy_hash().to_string()),
        };
        // Checked against the hash just read: a password changed or an
        // account deleted since the entry was made misses here.
        if let (Some(cache), Some(address)) = (cache, &account)
            && cache.contains(address, password, &hash, Instant::now())
        {
            tracing::debug!(event = "auth_cache_hit", user = %address);
            metrics::counter!("postern_auth_cache_hits_total").increment(1);
            return Ok(AuthOutcome::Success(address.clone()));
        }
        let password = password.to_string();
        // Argon2 takes tens of milliseconds of CPU: keep it off the async
        // workers, a few at a time.
        let slot = Arc::clone(&self.hashing)
            .acquire_owned()
            .await
            .map_err(|e| AuthError::Hash(e.to_string()))?;
        let (matches, password, hash) = tokio::task::spawn_blocking(move || {
            let matches = verify_password(&password, &hash);
            drop(slot);
            (matches, password, hash)
        })
        .await
        .map_err(|e| AuthError::Hash(e.to_string()))?;
        if let Some(address) = account.filter(|_| matches) {
            if let Some(cache) = cache {
                cache.insert(&address, &password, &hash, Instant::now());
            }
            // The store's spelling, not the login's: `Alice@Example.COM.`
            // logs in as alice@example.com and sends as that address.
            Ok(AuthOutcome::Success(address))
        } else {
            self.record_failure(ip);
            Ok(AuthOutcome::Failure)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_and_verify() {
        let h = hash_password("pw").expect("hash");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("pw", &h));
        assert!(!verify_password("PW", &h));
        assert!(!verify_password("pw", "not a hash"));
    }

    /// A store with a@example.com (password "right") in a temporary directory.
    async fn store_with_a() -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).await.expect("store");
        store.add_domain("example.com").await.expect("domain");
        store
            .add_user("a@example.com", &hash_password("right").expect("hash"))
            .await
            .expect("user");
        (store, dir)
    }

    fn ok() -> AuthOutcome {
        AuthOutcome::Success("a@example.com".into())
    }

    /// With the login cache or without, failures count the same, and a
    /// remembered success does not get a blocked address in.
    #[tokio::test]
    async fn an_address_is_throttled_after_its_failures() {
        for ttl in [Duration::ZERO, Duration::from_secs(60)] {
            throttled_after_failures(ttl).await;
        }
    }

    async fn throttled_after_failures(cache_ttl: Duration) {
        let (store, _dir) = store_with_a().await;
        let auth = Authenticator::new(store, 2).with_cache(cache_ttl, 10);
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        let other: IpAddr = "192.0.2.2".parse().expect("ip");
        assert_eq!(
            auth.verify(ip, "a@example.com", "right").await.expect("v"),
            AuthOutcome::Success("a@example.com".into())
        );
        // The quota allows two failures; the third blocks the address.
        for _ in 0..3 {
            assert_eq!(
                auth.verify(ip, "a@example.com", "wrong").await.expect("v"),
                AuthOutcome::Failure
            );
        }
        assert_eq!(
            auth.verify(ip, "a@example.com", "right").await.expect("v"),
            AuthOutcome::Throttled
        );
        assert_eq!(
            auth.verify(other, "A@Example.COM.", "right")
                .await
                .expect("v"),
            AuthOutcome::Success("a@example.com".into())
        );
        assert_eq!(
            auth.verify(other, "nobody@example.com", "right")
                .await
                .expect("v"),
            AuthOutcome::Failure
        );
    }

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));

    #[tokio::test]
    async fn a_remembered_success_skips_argon2_and_failures_never_do() {
        let (store, _dir) = store_with_a().await;
        let auth = Authenticator::new(store, 100).with_cache(Duration::from_secs(60), 10);
        assert_eq!(
            auth.verify(IP, "a@example.com", "right").await.expect("v"),
            ok()
        );
        // From here on no argon2 check can run: only the cache can answer.
        auth.hashing.close();
        assert_eq!(
            auth.verify(IP, "A@Example.COM.", "right").await.expect("v"),
            ok()
        );
        assert!(
            auth.verify(IP, "a@example.com", "wrong").await.is_err(),
            "a wrong password must go to argon2"
        );
        assert!(auth.verify(IP, "a@example.com", "wrong").await.is_err());
    }

    #[tokio::test]
    async fn without_the_cache_every_login_runs_argon2() {
        let (store, _dir) = store_with_a().await;
        let auth = Authenticator::new(store, 100).with_cache(Duration::ZERO, 10);
        assert_eq!(
            auth.verify(IP, "a@example.com", "right").await.expect("v"),
            ok()
        );
        auth.hashing.close();
        assert!(auth.verify(IP, "a@example.com", "right").await.is_err());
    }

    #[tokio::test]
    async fn a_new_password_or_a_deleted_account_misses_at_once() {
        let (store, _dir) = store_with_a().await;
        let auth = Authenticator::new(store.clone(), 100).with_cache(Duration::from_secs(60), 10);
        assert_eq!(
            auth.verify(IP, "a@example.com", "right").await.expect("v"),
            ok()
        );
        // As `postern user passwd` does, from another process.
        store
            .set_password("a@example.com", &hash_password("new").expect("hash"))
            .await
            .expect("passwd");
        assert_eq!(
            auth.verify(IP, "a@example.com", "right").await.expect("v"),
            AuthOutcome::Failure
        );
        assert_eq!(
            auth.verify(IP, "a@example.com", "new").await.expect("v"),
            ok()
        );
        store.delete_user("a@example.com").await.expect("del");
        assert_eq!(
            auth.verify(IP, "a@example.com", "new").await.expect("v"),
            AuthOutcome::Failure
        );
    }
}
