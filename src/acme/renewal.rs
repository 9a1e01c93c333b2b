//! When to order: at start, then every `CHECK_INTERVAL` and at each reload,
//! an order is placed when there is no certificate from the CA yet, when a
//! name it should cover is missing (a domain added to the store), or when
//! fewer than `renew_before` remain. A failed check is tried again after a
//! minute, then after twice as long each time, up to `CHECK_INTERVAL`. A new
//! pair is written into data_dir and installed like a reload's.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::order::{self, Issued};
use super::{AcmeError, Chain, Challenges, account};
use crate::check::tls::CertInfo;
use crate::config::{Acme, Config};
use crate::store::Store;
use crate::tls::{self, Certificates};

/// How often the certificate is looked at when all is well.
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
    pub config: Arc<Config>,
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
    loop {
        let checked = tokio::time::timeout(CHECK_TIMEOUT, check(&parts, &acme))
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

/// One look: orders and installs a new pair if one is due.
async fn check(parts: &Parts, acme: &Acme) -> Result<(), AcmeError> {
    let config = &parts.config;
    let names = wanted(&config.hostname, &parts.store.domains().await?);
    let files = tls::acme_files(&config.data_dir);
    let now = SystemTime::now();
    let Some(reason) = due(held(&files.cert).as_ref(), &names, now, acme.renew_before) else {
        return Ok(());
    };
    tracing::info!(event = "acme_order", names = %names.join(" "), reason, "ordering a certificate");
    let account = account::account(acme, &config.data_dir).await?;
    let types = order::answerable(&config.http);
    let issued = order::issue(&account, &names, &types, &parts.challenges).await?;
    install(parts, &issued)?;
    let held = held(&files.cert);
    tracing::info!(
        event = "acme_installed",
        names = %names.join(" "),
        days = held.as_ref().map_or(0, |h| days_left(h, now)),
        "installed the certificate from the CA; new sessions use it"
    );
    if due(held.as_ref(), &names, now, acme.renew_before).is_some() {
        tracing::warn!(
            event = "acme_short_lived",
            "the CA's certificates last less than renew_before_days: each check renews it; lower renew_before_days"
        );
    }
    Ok(())
}

/// Writes the pair (key first: the certificate file is what tells that a
/// pair is there) and serves it.
fn install(parts: &Parts, issued: &Issued) -> Result<(), AcmeError> {
    let files = tls::acme_files(&parts.config.data_dir);
    tls::write_private(&files.key, issued.key.as_bytes())?;
    tls::write_private(&files.cert, issued.chain.as_bytes())?;
    parts.certificates.replace(files)?;
    Ok(())
}

/// `hostname`, then `autoconfig.` and `mta-sts.` of each hosted domain: the
/// names clients reach this server's HTTPS by.
fn wanted(hostname: &str, domains: &[String]) -> Vec<String> {
    let mut names = vec![hostname.to_ascii_lowercase()];
    for domain in domains {
        for prefix in ["autoconfig.", "mta-sts."] {
            let name = format!("{prefix}{}", domain.to_ascii_lowercase());
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names
}

/// What the certificate from the CA covers, and until when.
#[derive(Debug)]
struct Held {
    names: BTreeSet<String>,
    not_after: SystemTime,
}

fn held(cert: &Path) -> Option<Held> {
    let der = CertificateDer::from_pem_file(cert).ok()?;
    let info = CertInfo::parse(der.as_ref())?;
    let not_after = u64::try_from(info.not_after).ok()?;
    Some(Held {
        names: info.names.into_iter().collect(),
        not_after: SystemTime::UNIX_EPOCH + Duration::from_secs(not_after),
    })
}

fn days_left(held: &Held, now: SystemTime) -> u64 {
    held.not_after
        .duration_since(now)
        .unwrap_or_default()
        .as_secs()
        / 86_400
}

/// Why an order is due, or `None` while `held` covers `wanted` for longer
/// than `renew_before`.
fn due(
    held: Option<&Held>,
    wanted: &[String],
    now: SystemTime,
    renew_before: Duration,
) -> Option<String> {
    let Some(held) = held else {
        return Some("no certificate from the CA yet".into());
    };
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|n| !held.names.contains(*n))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Some(format!("not yet covered: {}", missing.join(" ")));
    }
    let left = held.not_after.duration_since(now).unwrap_or_default();
    (left < renew_before).then(|| format!("{} days left", days_left(held, now)))
}

/// The wait after the `failures`-th failed check in a row.
fn retry_after(failures: u32) -> Duration {
    let doubled = FIRST_RETRY.saturating_mul(1 << failures.saturating_sub(1).min(20));
    doubled.min(CHECK_INTERVAL)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn the_names_are_the_hostname_then_autoconfig_and_mta_sts_of_each_domain() {
        assert_eq!(
            wanted("MX.example.com", &names(&["example.com", "Example.ORG"])),
            names(&[
                "mx.example.com",
                "autoconfig.example.com",
                "mta-sts.example.com",
                "autoconfig.example.org",
                "mta-sts.example.org"
            ])
        );
        assert_eq!(wanted("mx.example.com", &[]), names(&["mx.example.com"]));
    }

    #[test]
    fn an_order_is_due_without_a_certificate_for_a_new_name_and_at_the_renewal_limit() {
        let now = SystemTime::UNIX_EPOCH + 1000 * DAY;
        let want = names(&["mx.example.com", "mta-sts.example.com"]);
        let held = |names: &[&str], left: Duration| Held {
            names: names.iter().map(ToString::to_string).collect(),
            not_after: now + left,
        };
        let window = 30 * DAY;
        assert!(due(None, &want, now, window).is_some());
        let both = ["mx.example.com", "mta-sts.example.com"];
        // At the limit: exactly 30 days left is not yet due, a second less is.
        assert_eq!(due(Some(&held(&both, 30 * DAY)), &want, now, window), None);
        assert_eq!(
            due(
                Some(&held(&both, 30 * DAY - Duration::from_secs(1))),
                &want,
                now,
                window
            ),
            Some("29 days left".into())
        );
        assert_eq!(
            due(
                Some(&held(&["mx.example.com"], 60 * DAY)),
                &want,
                now,
                window
            ),
            Some("not yet covered: mta-sts.example.com".into())
        );
        // A name no longer hosted does not make an order by itself.
        let more = ["mx.example.com", "mta-sts.example.com", "old.example"];
        assert_eq!(due(Some(&held(&more, 60 * DAY)), &want, now, window), None);
        // Expired: due.
        assert!(due(Some(&held(&both, Duration::ZERO)), &want, now, window).is_some());
    }

    #[test]
    fn failed_checks_back_off_from_a_minute_to_the_check_interval() {
        assert_eq!(retry_after(1), Duration::from_secs(60));
        assert_eq!(retry_after(2), Duration::from_secs(120));
        assert_eq!(retry_after(10), Duration::from_secs(60 * 512));
        assert_eq!(retry_after(11), CHECK_INTERVAL);
        assert_eq!(retry_after(u32::MAX), CHECK_INTERVAL);
    }
}
