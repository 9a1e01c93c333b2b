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
use std::collections::{BTreeSet, HashMap};
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
use crate::config::{Acme, Config, Live};
use crate::store::Store;
use crate::tls::{self, Certificates, certificates};

/// How often the certificate is looked at when all is well, and how long a
/// name the CA did not validate is left out.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(12 * 3600);
/// Let's Encrypt's limit on the names in one certificate.
const NAMES_PER_CERTIFICATE: usize = 100;
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

/// Whether an order may be placed again without `failed`: never without
/// the hostname (clients that name nothing get the first pair), never
/// without a name the certificate in use covers for longer than
/// `renew_before` (a passing failure must not take a working name away; the
/// certificate stays until the next check), and never with nothing left.
fn may_leave_out(
    held: Option<&Held>,
    failed: &[String],
    names: &[String],
    hostname: &str,
    now: SystemTime,
    renew_before: Duration,
) -> bool {
    let expiring =
        held.is_none_or(|h| h.not_after.duration_since(now).unwrap_or_default() < renew_before);
    let covered = |name: &String| held.is_some_and(|h| h.names.contains(name));
    !failed.is_empty()
        && failed
            .iter()
            .all(|n| n != hostname && names.contains(n) && (expiring || !covered(n)))
        && names.iter().any(|n| !failed.contains(n))
}

/// The names each pair is to hold, by index: a name stays with the pair
/// that holds it now (a new domain reorders one certificate, not every
/// one); the first wanted name (`hostname`) is in the first pair; the other
/// names go to the first pair with room, or a new one. A pair left with no
/// name gets an empty list.
fn plan(held: &[Option<Held>], wanted: &[String]) -> Vec<Vec<String>> {
    let mut pairs: Vec<Vec<String>> = held
        .iter()
        .map(|h| {
            wanted
                .iter()
                .filter(|n| h.as_ref().is_some_and(|h| h.names.contains(*n)))
                .cloned()
                .collect()
        })
        .collect();
    if pairs.is_empty() {
        pairs.push(Vec::new());
    }
    let mut unplaced = Vec::new();
    if let Some(first) = wanted.first() {
        for pair in &mut pairs {
            pair.retain(|n| n != first);
        }
        pairs[0].insert(0, first.clone());
    }
    let mut placed = BTreeSet::new();
    for pair in &mut pairs {
        // Held twice (a pair from before a move): the first keeps it.
        pair.retain(|n| placed.insert(n.clone()));
        if pair.len() > NAMES_PER_CERTIFICATE {
            unplaced.extend(pair.drain(NAMES_PER_CERTIFICATE..));
        }
    }
    unplaced.extend(wanted.iter().filter(|n| !placed.contains(*n)).cloned());
    for name in unplaced {
        match pairs.iter_mut().find(|p| p.len() < NAMES_PER_CERTIFICATE) {
            Some(pair) => pair.push(name),
            None => pairs.push(vec![name]),
        }
    }
    pairs
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

    fn holding(list: &[String]) -> Option<Held> {
        Some(Held {
            names: list.iter().cloned().collect(),
            not_after: SystemTime::UNIX_EPOCH,
        })
    }

    /// `hostname` and the two names of each of `domains` hosted domains.
    fn many(domains: usize) -> Vec<String> {
        let domains: Vec<String> = (0..domains).map(|i| format!("d{i}.example")).collect();
        wanted("mx.example", &domains)
    }

    #[test]
    fn past_a_hundred_names_the_rest_go_to_a_second_certificate() {
        let names = many(50);
        assert_eq!(names.len(), 101);
        let first = plan(&[], &names);
        assert_eq!(first.len(), 2);
        assert_eq!(first[0].len(), NAMES_PER_CERTIFICATE);
        assert_eq!(first[0][0], "mx.example");
        assert_eq!(first[1], vec!["mta-sts.d49.example".to_string()]);
        // Exactly a hundred: one certificate.
        assert_eq!(plan(&[], &names[..100]).len(), 1);

        // A domain removed from the middle and two added: the names held
        // stay where they are, the new ones fill the room left.
        let held = [holding(&first[0]), holding(&first[1])];
        let mut next: Vec<String> = names
            .iter()
            .filter(|n| !n.ends_with(".d7.example"))
            .cloned()
            .collect();
        next.extend(many(52).into_iter().skip(101));
        let again = plan(&held, &next);
        assert_eq!(again.len(), 2);
        assert_eq!(again[1][0], "mta-sts.d49.example");
        assert!(
            first[0]
                .iter()
                .all(|n| n.contains("d7.") || again[0].contains(n))
        );
        assert_eq!(again[0].len(), NAMES_PER_CERTIFICATE);
        assert_eq!(
            again[0][98..],
            ["autoconfig.d50.example", "mta-sts.d50.example"]
        );
        assert_eq!(
            again[1][1..],
            ["autoconfig.d51.example", "mta-sts.d51.example"]
        );
    }

    #[test]
    fn a_pair_whose_names_are_all_gone_is_left_empty_and_its_place_reused() {
        let names = many(50);
        let first = plan(&[], &names);
        let held = [
            holding(&first[0]),
            holding(&first[1]),
            holding(&names[1..3]),
        ];
        let gone: Vec<String> = names[..100].to_vec();
        let again = plan(&held, &gone);
        // Pair 2's names are held by pair 0 too: the first keeps them.
        assert_eq!(again, vec![names[..100].to_vec(), vec![], vec![]]);
        // A new hostname joins the first pair; the name it displaces moves.
        let moved: Vec<String> = std::iter::once("new.example".to_string())
            .chain(names[1..].iter().cloned())
            .collect();
        let after = plan(&[holding(&first[0]), None], &moved);
        assert_eq!(after[0][0], "new.example");
        assert_eq!(after[0].len(), NAMES_PER_CERTIFICATE);
        assert_eq!(after[1].len(), 1);
    }

    #[test]
    fn only_new_names_or_those_of_an_expiring_certificate_are_left_out_never_the_hostname() {
        let now = SystemTime::UNIX_EPOCH + 1000 * DAY;
        let window = 30 * DAY;
        let want = names(&["mx.example", "autoconfig.a.example", "autoconfig.b.example"]);
        let held = |left: Duration| Held {
            names: names(&["mx.example", "autoconfig.a.example"])
                .into_iter()
                .collect(),
            not_after: now + left,
        };
        let fresh = held(60 * DAY);
        let leave = |held: Option<&Held>, failed: &[&str]| {
            may_leave_out(held, &names(failed), &want, "mx.example", now, window)
        };
        // A new name: left out; one the certificate in use covers: not,
        // unless that certificate is due.
        assert!(leave(Some(&fresh), &["autoconfig.b.example"]));
        assert!(!leave(Some(&fresh), &["autoconfig.a.example"]));
        assert!(leave(Some(&held(29 * DAY)), &["autoconfig.a.example"]));
        assert!(leave(
            None,
            &["autoconfig.a.example", "autoconfig.b.example"]
        ));
        // Never the hostname, nothing unknown, never every name.
        assert!(!leave(None, &["mx.example"]));
        assert!(!leave(None, &["other.example"]));
        assert!(!leave(None, &[]));
        assert!(!leave(
            None,
            &["autoconfig.a.example", "autoconfig.b.example", "mx.example"]
        ));
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
