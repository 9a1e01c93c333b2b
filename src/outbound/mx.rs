//! The hosts to try for a domain, in order (RFC 5321 §5.1): MX records by
//! preference, shuffled among equals; the domain itself when it has no MX; a
//! permanent failure for a null MX (RFC 7505) or a domain that does not exist.

use rand::seq::SliceRandom;

use crate::dns::{Dns, DnsError, MxAnswer};
use crate::failure::{DeliveryFailure, FailureKind, Severity};

/// The hosts to try for `domain`, and whether it publishes MX records
/// (rather than being its own host).
pub async fn hosts(dns: &Dns, domain: &str) -> Result<(Vec<String>, bool), DeliveryFailure> {
    // An address literal names the host itself (RFC 5321 §4.1.3): no MX lookup.
    if domain.starts_with('[') {
        return Ok((vec![domain.to_string()], false));
    }
    let answer = dns.mx(domain).await;
    let published = matches!(answer, Ok(MxAnswer::Hosts(_)));
    Ok((in_order(domain, answer)?, published))
}

/// The hosts to try, in order, for `domain`'s MX `answer`.
pub fn in_order(
    domain: &str,
    answer: Result<MxAnswer, DnsError>,
) -> Result<Vec<String>, DeliveryFailure> {
    match answer {
        Ok(MxAnswer::Hosts(mut records)) => {
            // Shuffle first, then a stable sort by preference: equal preferences
            // end up in random order, spreading load as RFC 5321 §5.1 asks.
            records.shuffle(&mut rand::rng());
            records.sort_by_key(|(pref, _)| *pref);
            Ok(records.into_iter().map(|(_, host)| host).collect())
        }
        Ok(MxAnswer::Implicit) => Ok(vec![domain.to_string()]),
        Ok(MxAnswer::Null) => Err(DeliveryFailure::new(
            Severity::Permanent,
            FailureKind::Dns,
            format!("the domain {domain} does not accept mail (it publishes a null MX, RFC 7505)"),
        )),
        Err(e @ DnsError::NoSuchDomain(_)) => Err(DeliveryFailure::new(
            Severity::Permanent,
            FailureKind::Dns,
            e.to_string(),
        )),
        Err(e @ DnsError::Temporary(..)) => Err(DeliveryFailure::new(
            Severity::Transient,
            FailureKind::Dns,
            e.to_string(),
        )),
    }
}
