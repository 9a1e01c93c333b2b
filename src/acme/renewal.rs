//! When to order: at start, then every `CHECK_INTERVAL` and at each reload,
//! an order is placed when there is no certificate from the CA yet, when a
//! name it should cover is missing (a domain added to the store), or when
//! fewer than `renew_before` remain. A failed check is tried again after a
//! minute, then after twice as long each time, up to `CHECK_INTERVAL`. A new
//! pair is written into data_dir and installed like a reload's.
//!
//! One certificate holds at most `NAMES_PER_CERTIFICATE` names (Let's
//! Encrypt refuses more), so past that the names are spread over several
//! (`plan`), each served to the clients that ask for one of its names. And
//! one name the CA cannot validate (a hosted domain whose `autoconfig.`
//! does not lead here yet) fails a whole order: such names are left out for
//! `CHECK_INTERVAL` and the order placed again without them, so one
//! customer's DNS does not keep the hostname on a self-signed certificate.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::names::{Held, days_left, due, held, may_leave_out, plan, wanted};
use super::order::{self, Issued};
use super::{AcmeError, Chain, Challenges, account};
use crate::config::{Acme, Config, Live};
use crate::store::Store;
use crate::tls::{self, Certificates, certificates};

/// How often the certificate is looked at when all is well, and how long a
/// name the CA did not validate is left out.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(12 * 3600);
/// The first wait after a failed check; it doubles with each failure.
const FIRST_RETRY: Duration = Duration::from_secs(60);
/// A whole check, order included: a CA that stops answering must not keep
/// every later check from happening.
const CHECK_TIMEOUT: Duration = Duration::from_secs(300);

/// The running renewal task; dropping this does not stop it (shutdown does).
pub struct Renewal {
    wake: Arc<Notify>,
}

/// What the task needs from the server.
pub struct Parts {
    /// The configuration as it starts; hostname, data_dir and `[acme]` keep
    /// their values until the next start.
    pub config: Arc<Config>,
    /// Where the challenges are answered now: a reload may change `[http]`.
    pub live: Live,
    pub store: Store,
    pub certificates: Arc<Certificates>,
    pub challenges: Arc<Challenges>,
}

impl Renewal {
    /// Starts the task when `[acme]` is set; it checks at once. The listeners
    /// that answer challenges must already be bound.
    pub fn start(parts: Parts, stop: CancellationToken) -> Option<Renewal> {
        let acme = parts.config.acme.clone()?;
        let wake = Arc::new(Notify::new());
        tokio::spawn(run(parts, acme, Arc::clone(&wake), stop));
        Some(Renewal { wake })
    }

    /// Checks now rather than at the next interval: a reload asks for this,
    /// so a domain just added gets its names without waiting half a day.
    pub fn check_now(&self) {
        self.wake.notify_one();
    }
}

async fn run(parts: Parts, acme: Acme, wake: Arc<Notify>, stop: CancellationToken) {
    let mut failures = 0;
    let mut left_out = LeftOut::default();
    loop {
        let checked = tokio::time::timeout(CHECK_TIMEOUT, check(&parts, &acme, &mut left_out))
            .await
            .unwrap_or(Err(AcmeError::TimedOut(CHECK_TIMEOUT)));
        parts.challenges.clear();
        let wait = match checked {
            Ok(()) => {
                failures = 0;
                CHECK_INTERVAL
            }
            Err(e) => {
                failures += 1;
                let wait = retry_after(failures);
                tracing::warn!(
                    event = "acme_failed",
                    error = %Chain(&e),
                    retry_in_secs = wait.as_secs(),
                    "could not obtain a certificate from the CA; the one in use stays"
                );
                wait
            }
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = wake.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Names the CA did not validate, and until when they are left out of
/// orders.
#[derive(Default)]
struct LeftOut(HashMap<String, SystemTime>);

impl LeftOut {
    fn remove_from(&mut self, names: &mut Vec<String>, now: SystemTime) {
        self.0.retain(|_, until| *until > now);
        names.retain(|n| !self.0.contains_key(n));
    }

    fn add(&mut self, names: &[String], now: SystemTime) {
        for name in names {
            self.0.insert(name.clone(), now + CHECK_INTERVAL);
        }
    }
}

/// One look: orders and installs each pair that is due. A failed order
/// does not keep the other pairs from theirs; the first error is returned.
async fn check(parts: &Parts, acme: &Acme, left_out: &mut LeftOut) -> Result<(), AcmeError> {
    let data_dir = &parts.config.data_dir;
    let now = SystemTime::now();
    let mut names = wanted(&parts.config.hostname, &parts.store.domains().await?);
    left_out.remove_from(&mut names, now);
    let last = tls::acme_more_pairs(data_dir).last().copied().unwrap_or(0);
    // A pair whose key is missing or does not match (a crash between the
    // two writes) is not held: it is ordered again.
    let held: Vec<Option<Held>> = (0..=last)
        .map(|i| tls::acme_pair(data_dir, i))
        .map(|files| held(&files.cert).filter(|_| certificates::read(&files).is_ok()))
        .collect();
    let mut account = None;
    let mut first_error = None;
    for (index, names) in plan(&held, &names).into_iter().enumerate() {
        let pair = Pair {
            index,
            held: held.get(index).and_then(Option::as_ref),
        };
        let ordered = if names.is_empty() {
            pair.retire(parts)
        } else {
            pair.renew(parts, acme, &mut account, names, left_out, now)
                .await
        };
        if let Err(e) = ordered {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// One certificate from the CA, as it is on disk.
struct Pair<'a> {
    index: usize,
    held: Option<&'a Held>,
}

impl Pair<'_> {
    /// Orders this pair for `names` if due, leaving out (and remembering in
    /// `left_out`) the names the CA did not validate, where `may_leave_out`
    /// allows.
    async fn renew(
        &self,
        parts: &Parts,
        acme: &Acme,
        account: &mut Option<instant_acme::Account>,
        mut names: Vec<String>,
        left_out: &mut LeftOut,
        now: SystemTime,
    ) -> Result<(), AcmeError> {
        let config = &parts.config;
        let hostname = config.hostname.to_ascii_lowercase();
        loop {
            let Some(reason) = due(self.held, &names, now, acme.renew_before) else {
                return Ok(());
            };
            tracing::info!(event = "acme_order", names = %names.join(" "), reason, "ordering a certificate");
            let account = match account {
                Some(account) => account,
                None => account.insert(account::account(acme, &config.data_dir).await?),
            };
            let types = order::answerable(&parts.live.get().http);
            match order::issue(account, &names, &types, &parts.challenges).await {
                Ok(issued) => return self.install(parts, &names, &issued, acme, now),
                Err(AcmeError::NotValidated {
                    names: failed,
                    detail,
                }) if may_leave_out(
                    self.held,
                    &failed,
                    &names,
                    &hostname,
                    now,
                    acme.renew_before,
                ) =>
                {
                    tracing::warn!(
                        event = "acme_names_left_out",
                        names = %failed.join(" "),
                        error = %detail,
                        retry_in_secs = CHECK_INTERVAL.as_secs(),
                        "the CA did not validate these names; ordering without them"
                    );
                    left_out.add(&failed, now);
                    names.retain(|n| !failed.contains(n));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes the pair (key first: the certificate file is what tells that
    /// a pair is there) and serves it.
    fn install(
        &self,
        parts: &Parts,
        names: &[String],
        issued: &Issued,
        acme: &Acme,
        now: SystemTime,
    ) -> Result<(), AcmeError> {
        let files = tls::acme_pair(&parts.config.data_dir, self.index);
        tls::write_private(&files.key, issued.key.as_bytes())?;
        tls::write_private(&files.cert, issued.chain.as_bytes())?;
        if self.index == 0 {
            parts.certificates.replace(files.clone())?;
        } else {
            parts.certificates.serve_also(self.index, Some(&files))?;
        }
        let held = held(&files.cert);
        tracing::info!(
            event = "acme_installed",
            names = %names.join(" "),
            days = held.as_ref().map_or(0, |h| days_left(h, now)),
            "installed the certificate from the CA; new sessions use it"
        );
        if due(held.as_ref(), names, now, acme.renew_before).is_some() {
            tracing::warn!(
                event = "acme_short_lived",
                "the CA's certificates last less than renew_before_days: each check renews it; lower renew_before_days"
            );
        }
        Ok(())
    }

    /// A further pair none of whose names is hosted any more: removed, and
    /// no longer served. The first pair is never retired: it is what
    /// clients that name nothing get.
    fn retire(&self, parts: &Parts) -> Result<(), AcmeError> {
        if self.index == 0 || self.held.is_none() {
            return Ok(());
        }
        parts.certificates.serve_also(self.index, None)?;
        let files = tls::acme_pair(&parts.config.data_dir, self.index);
        for path in [&files.cert, &files.key] {
            std::fs::remove_file(path).map_err(|e| AcmeError::Io(path.clone(), e))?;
        }
        tracing::info!(
            event = "acme_retired",
            cert = %files.cert.display(),
            "no name of this certificate from the CA is hosted any more; removed"
        );
        Ok(())
    }
}

/// The wait after the `failures`-th failed check in a row.
fn retry_after(failures: u32) -> Duration {
    let doubled = FIRST_RETRY.saturating_mul(1 << failures.saturating_sub(1).min(20));
    doubled.min(CHECK_INTERVAL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_checks_back_off_from_a_minute_to_the_check_interval() {
        assert_eq!(retry_after(1), Duration::from_secs(60));
        assert_eq!(retry_after(2), Duration::from_secs(120));
        assert_eq!(retry_after(10), Duration::from_secs(60 * 512));
        assert_eq!(retry_after(11), CHECK_INTERVAL);
        assert_eq!(retry_after(u32::MAX), CHECK_INTERVAL);
    }
}
