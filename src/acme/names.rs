//! Which names each certificate from the CA holds: the names wanted
//! (`hostname`, `autoconfig.` and `mta-sts.` of each hosted domain), spread
//! over certificates of at most `NAMES_PER_CERTIFICATE` (`plan`), what a
//! certificate on disk covers (`held`), when one is due, and which names an
//! order may go on without (`may_leave_out`). `renewal` decides when to look
//! and orders.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, SystemTime};

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::check::tls::CertInfo;

/// Let's Encrypt's limit on the names in one certificate.
const NAMES_PER_CERTIFICATE: usize = 100;

/// Whether an order may be placed again without `failed`: never without
/// the hostname (clients that name nothing get the first pair), never
/// without a name the certificate in use covers for longer than
/// `renew_before` (a passing failure must not take a working name away; the
/// certificate stays until the next check), and never with nothing left.
pub(super) fn may_leave_out(
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
pub(super) fn plan(held: &[Option<Held>], wanted: &[String]) -> Vec<Vec<String>> {
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
pub(super) fn wanted(hostname: &str, domains: &[String]) -> Vec<String> {
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
pub(super) struct Held {
    pub(super) names: BTreeSet<String>,
    pub(super) not_after: SystemTime,
}

pub(super) fn held(cert: &Path) -> Option<Held> {
    let der = CertificateDer::from_pem_file(cert).ok()?;
    let info = CertInfo::parse(der.as_ref())?;
    let not_after = u64::try_from(info.not_after).ok()?;
    Some(Held {
        names: info.names.into_iter().collect(),
        not_after: SystemTime::UNIX_EPOCH + Duration::from_secs(not_after),
    })
}

pub(super) fn days_left(held: &Held, now: SystemTime) -> u64 {
    held.not_after
        .duration_since(now)
        .unwrap_or_default()
        .as_secs()
        / 86_400
}

/// Why an order is due, or `None` while `held` covers `wanted` for longer
/// than `renew_before`.
pub(super) fn due(
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
}
