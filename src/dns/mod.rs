//! DNS for delivery: one hickory resolver built from `[delivery] nameservers`
//! (the system resolver when empty), and the two questions delivery asks: the
//! MX hosts of a domain, and the addresses of a host. The checks of arriving
//! mail (`dmarc`) ask through it too. With DANE on, a second resolver over
//! the same servers validates with DNSSEC (the root's trust anchors, or
//! `[delivery] dnssec_trust_anchor`) and answers DANE's two questions:
//! whether a domain's MX records are signed, and a host's TLSA records.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::dnssec::{Proof, TrustAnchors};
use hickory_resolver::proto::rr::{RData, RecordType};

/// Why a lookup gave no usable answer.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum DnsError {
    /// NXDOMAIN: the name does not exist; retrying will not help.
    #[error("the domain {0} does not exist (NXDOMAIN)")]
    NoSuchDomain(String),
    /// Timeouts, SERVFAIL and the like: try again later.
    #[error("DNS lookup for {0} failed: {1}")]
    Temporary(String, String),
}

/// The answer to "where does mail for this domain go".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MxAnswer {
    /// MX hosts with their preference, as published.
    Hosts(Vec<(u16, String)>),
    /// The domain exists but has no MX: use the domain itself (RFC 5321 §5.1).
    Implicit,
    /// RFC 7505: the domain accepts no mail at all.
    Null,
}

impl MxAnswer {
    /// What MX records (preference, host) say.
    pub fn of(records: Vec<(u16, String)>) -> MxAnswer {
        match records.as_slice() {
            [] => MxAnswer::Implicit,
            [(_, host)] if host.is_empty() => MxAnswer::Null,
            _ => MxAnswer::Hosts(records),
        }
    }
}

/// The MX records among `answers`: preference and host, lower case,
/// without the final dot (empty for a null MX).
fn mx_records(answers: &[hickory_resolver::proto::rr::Record]) -> Vec<(u16, String)> {
    answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::MX(mx) => Some((
                mx.preference,
                mx.exchange.to_ascii().trim_end_matches('.').to_lowercase(),
            )),
            _ => None,
        })
        .collect()
}

/// Answers the resolver keeps: room for the MX and addresses of over 5,000
/// domains at a time.
const CACHE_SIZE: u64 = 16_384;

/// The resolver: one per server, shared (with its cache) by every delivery.
#[derive(Clone)]
pub struct Dns {
    resolver: TokioResolver,
    /// Validates with DNSSEC; `None` without DANE.
    secure: Option<Arc<Secure>>,
}

/// The validating resolver and what it has found out.
struct Secure {
    resolver: TokioResolver,
    /// The zone of the trust anchor (the root, or the configured key's).
    anchor_zone: String,
    /// Whether the resolvers asked pass DNSSEC records on at all, found by
    /// validating the anchor zone's keys. Many home routers and some ISP
    /// resolvers strip signatures: every answer would then look forged, and
    /// mail to every signed domain would wait.
    probe: std::sync::Mutex<Probe>,
    /// Whether a domain's MX records are signed, kept for `SIGNED_MX_TTL`:
    /// hickory does not keep answers that fail validation, and an unsigned
    /// domain (most are) would cost a round of questions per delivery.
    signed_mx: std::sync::Mutex<HashMap<String, (Instant, MxSigning)>>,
}

/// How long a domain's "MX signed or not" is kept.
const SIGNED_MX_TTL: Duration = Duration::from_secs(300);
/// Most domains whose answer is kept; past it the map starts over.
const SIGNED_MX_KEPT: usize = 10_000;
/// How long after a failed probe the next is tried.
const PROBE_RETRY: Duration = Duration::from_secs(60);

/// What is known of the resolvers' DNSSEC.
#[derive(Debug, Clone, Copy)]
enum Probe {
    Untried,
    /// The anchor zone's keys did not validate, at this time.
    Failed(Instant),
    /// They did once: from then on DANE applies for good, and an answer
    /// that does not validate is taken for what it may be, an attack,
    /// rather than for a resolver that cannot do DNSSEC.
    Passed,
}

/// Whether a domain's MX hosts are under DANE (RFC 7672 §2.2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MxSigning {
    /// Validated MX records (preference, host): the hosts delivery must
    /// use (not the other resolver's, which an attacker may have forged),
    /// and whose TLSA records are asked.
    Signed(Vec<(u16, String)>),
    /// Unsigned (most domains), no MX records, or DANE off.
    Unsigned,
    /// MX records that do not validate, or a validation that could not be
    /// finished: perhaps forged, so the mail waits.
    Unusable(String),
}

/// One TLSA record (RFC 6698 §2.1): what a server's certificate must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tlsa {
    pub usage: u8,
    pub selector: u8,
    pub matching: u8,
    pub data: Vec<u8>,
}

/// A host's TLSA records as DNSSEC vouches for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsaAnswer {
    /// None, or none that validate as signed: DANE does not apply.
    None,
    /// Signed records.
    Records(Vec<Tlsa>),
    /// Records whose signatures do not validate, a denial without its
    /// proof, or a question left unanswered: perhaps an attack hiding
    /// records, so the host must not get mail until it is settled (RFC 7672
    /// §2.1.1, §2.2).
    Unusable(String),
}

#[derive(Debug, thiserror::Error)]
#[error("cannot set up the DNS resolver: {0}")]
pub struct ResolverSetupError(String);

impl Dns {
    /// A resolver that asks `nameservers` (all of them, in order), or the system's
    /// configured resolvers when the list is empty.
    pub fn new(nameservers: &[SocketAddr]) -> Result<Dns, ResolverSetupError> {
        Ok(Dns {
            resolver: resolver(nameservers, None)?,
            secure: None,
        })
    }

    /// Adds the validating resolver DANE asks, over the same `nameservers`,
    /// trusting the keys in `trust_anchor` (a file of DNSKEY records), or
    /// the root zone's.
    pub fn with_dnssec(
        mut self,
        nameservers: &[SocketAddr],
        trust_anchor: Option<&std::path::Path>,
    ) -> Result<Dns, ResolverSetupError> {
        let (anchors, anchor_zone) = match trust_anchor {
            Some(path) => {
                let unreadable = |e: String| {
                    ResolverSetupError(format!("the trust anchor {}: {e}", path.display()))
                };
                let text = std::fs::read_to_string(path).map_err(|e| unreadable(e.to_string()))?;
                let zone = anchor_zone(&text)
                    .ok_or_else(|| unreadable("no DNSKEY record in it".into()))?;
                // The probe asks this name: a relative one would be asked
                // under the search domains and fail, and DANE with it.
                if !zone.ends_with('.') {
                    return Err(unreadable(format!(
                        "the owner of its DNSKEY record, {zone}, must be absolute (end with a dot)"
                    )));
                }
                let anchors = text
                    .parse::<TrustAnchors>()
                    .map_err(|e| unreadable(e.to_string()))?;
                (anchors, zone)
            }
            None => (TrustAnchors::default(), ".".to_string()),
        };
        self.secure = Some(Arc::new(Secure {
            resolver: resolver(nameservers, Some(Arc::new(anchors)))?,
            anchor_zone,
            probe: std::sync::Mutex::new(Probe::Untried),
            signed_mx: std::sync::Mutex::new(HashMap::new()),
        }));
        Ok(self)
    }
}

/// The owner of the first DNSKEY record in a trust anchor file.
fn anchor_zone(text: &str) -> Option<String> {
    text.lines()
        .map(|line| line.split(';').next().unwrap_or_default())
        .filter(|line| line.split_whitespace().any(|w| w == "DNSKEY"))
        .find_map(|line| line.split_whitespace().next().map(str::to_string))
}

/// A resolver asking `nameservers` (the system's when empty); validating
/// with DNSSEC from `anchors` when given.
fn resolver(
    nameservers: &[SocketAddr],
    anchors: Option<Arc<TrustAnchors>>,
) -> Result<TokioResolver, ResolverSetupError> {
    let mut opts = ResolverOpts::default();
    opts.timeout = Duration::from_secs(5);
    opts.attempts = 2;
    // Answers are kept for their TTL, so mail to a domain asks its MX and
    // their addresses once per TTL, not once per message. Delivery asks
    // up to three names per domain (MX, A, AAAA), and a busy server mails
    // thousands of domains within a TTL.
    opts.cache_size = CACHE_SIZE;
    let builder = if nameservers.is_empty() {
        TokioResolver::builder_tokio().map_err(|e| ResolverSetupError(e.to_string()))?
    } else {
        let servers = nameservers
            .iter()
            .map(|addr| {
                let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
                for c in &mut ns.connections {
                    c.port = addr.port();
                }
                ns
            })
            .collect();
        TokioResolver::builder_with_config(
            ResolverConfig::from_parts(None, vec![], servers),
            TokioRuntimeProvider::default(),
        )
    };
    let builder = builder.with_options(opts);
    let builder = match anchors {
        Some(anchors) => builder.with_trust_anchor(anchors),
        None => builder,
    };
    builder
        .build()
        .map_err(|e| ResolverSetupError(e.to_string()))
}

impl Dns {
    pub async fn mx(&self, domain: &str) -> Result<MxAnswer, DnsError> {
        let fqdn = format!("{}.", domain.trim_end_matches('.'));
        match self.resolver.mx_lookup(fqdn.as_str()).await {
            Ok(lookup) => Ok(MxAnswer::of(mx_records(lookup.answers()))),
            Err(e) => negative(domain, &e).map(|()| MxAnswer::Implicit),
        }
    }

    /// The one TXT record at `name` whose first field is `tag` (`v=STSv1`,
    /// `v=TLSRPTv1`); none when there is none, or several (RFC 8461 §3.1,
    /// RFC 8460 §3: more than one is as none), or the lookup fails.
    pub async fn tagged_txt(&self, name: &str, tag: &str) -> Option<String> {
        let records = self.lookup_values(name, RecordType::TXT).await.ok()?;
        let mut tagged = records
            .into_iter()
            .filter(|r| r.split(';').next().map(str::trim) == Some(tag));
        match (tagged.next(), tagged.next()) {
            (Some(record), None) => Some(record),
            _ => None,
        }
    }

    /// mail-auth's checker (SPF, DKIM and DMARC lookups), asking through
    /// this resolver and sharing its cache.
    pub fn authenticator(&self) -> mail_auth::MessageAuthenticator {
        mail_auth::MessageAuthenticator(self.resolver.clone())
    }

    /// The records of `kind` at `name`, each rendered as zone-file data (a TXT
    /// record's strings joined, as they are meant to be read). An empty list
    /// when there are none or the name does not exist.
    pub async fn lookup_values(
        &self,
        name: &str,
        kind: RecordType,
    ) -> Result<Vec<String>, DnsError> {
        let fqdn = format!("{}.", name.trim_end_matches('.'));
        let lookup = match self.resolver.lookup(fqdn.as_str(), kind).await {
            Ok(l) => l,
            Err(e) => {
                return negative(name, &e)
                    .or_else(|e| match e {
                        DnsError::NoSuchDomain(_) => Ok(()),
                        other => Err(other),
                    })
                    .map(|()| Vec::new());
            }
        };
        Ok(lookup
            .answers()
            .iter()
            .filter(|r| r.data.record_type() == kind)
            .map(|r| match &r.data {
                RData::TXT(txt) => txt
                    .txt_data
                    .iter()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect::<String>(),
                RData::MX(mx) => format!("{} {}", mx.preference, mx.exchange.to_ascii()),
                RData::SRV(srv) => format!(
                    "{} {} {} {}",
                    srv.priority,
                    srv.weight,
                    srv.port,
                    srv.target.to_ascii()
                ),
                RData::CNAME(c) => c.0.to_ascii(),
                other => other.to_string(),
            })
            .collect())
    }

    /// IPv6 and IPv4 addresses of a host (IPv6 first).
    pub async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        if let Some(literal) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            let bare = literal
                .get(..5)
                .filter(|t| t.eq_ignore_ascii_case("ipv6:"))
                .map_or(literal, |_| &literal[5..]);
            return bare
                .parse::<IpAddr>()
                .map(|ip| vec![ip])
                .map_err(|_| DnsError::NoSuchDomain(host.to_string()));
        }
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let fqdn = format!("{}.", host.trim_end_matches('.'));
        let (v6, v4) = tokio::join!(
            self.resolver.ipv6_lookup(fqdn.as_str()),
            self.resolver.ipv4_lookup(fqdn.as_str())
        );
        let mut out = Vec::new();
        let mut last_error = None;
        for result in [
            v6.map(|l| l.answers().to_vec()),
            v4.map(|l| l.answers().to_vec()),
        ] {
            match result {
                Ok(records) => out.extend(records.iter().filter_map(|r| match &r.data {
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                    _ => None,
                })),
                Err(e) => last_error = Some(e),
            }
        }
        if out.is_empty()
            && let Some(e) = last_error
        {
            negative(host, &e)?;
            return Err(DnsError::NoSuchDomain(host.to_string()));
        }
        Ok(out)
    }
}

impl Dns {
    /// Whether `domain`'s MX records validate as signed: DANE applies to
    /// its hosts only then (RFC 7672 §2.2.1), or to the domain itself when
    /// it provably has none. Unsigned without DANE, and while the resolvers
    /// do not pass DNSSEC records on. `published`: the plain resolver found
    /// MX records, which a validated denial then contradicts.
    pub async fn mx_signing(&self, domain: &str, published: bool) -> MxSigning {
        let Some(secure) = &self.secure else {
            return MxSigning::Unsigned;
        };
        if !secure.validates().await {
            return MxSigning::Unsigned;
        }
        let key = domain.trim_end_matches('.').to_ascii_lowercase();
        if let Some((at, signing)) = secure
            .signed_mx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            && at.elapsed() < SIGNED_MX_TTL
        {
            return signing.clone();
        }
        let fqdn = format!("{key}.");
        let signing = match secure.resolver.mx_lookup(fqdn.as_str()).await {
            Ok(lookup) => {
                let proofs: Vec<Proof> = lookup
                    .answers()
                    .iter()
                    .filter(|r| r.data.record_type() == RecordType::MX)
                    .map(|r| r.proof)
                    .collect();
                if proofs.is_empty() || proofs.iter().all(|p| *p == Proof::Insecure) {
                    MxSigning::Unsigned
                } else if proofs.iter().all(|p| *p == Proof::Secure) {
                    MxSigning::Signed(mx_records(lookup.answers()))
                } else {
                    MxSigning::Unusable(format!(
                        "the MX records of {key} do not validate (DNSSEC: {proofs:?})"
                    ))
                }
            }
            Err(e) => match validated_denial(&e) {
                Ok(()) if published => MxSigning::Unusable(format!(
                    "the MX records of {key}: the validating resolver finds none where the \
                     other finds some"
                )),
                // No MX in a signed zone: the domain is its own host, under
                // its own TLSA records.
                Ok(()) if denial_is_signed(&e) => MxSigning::Signed(Vec::new()),
                Ok(()) => MxSigning::Unsigned,
                Err(why) => MxSigning::Unusable(format!("the MX records of {key}: {why}")),
            },
        };
        let mut map = secure.signed_mx.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= SIGNED_MX_KEPT {
            map.clear();
        }
        map.insert(key, (Instant::now(), signing.clone()));
        signing
    }

    /// The TLSA records of `host`'s `port` (`_25._tcp.<host>`), as DNSSEC
    /// vouches for them.
    pub async fn tlsa(&self, host: &str, port: u16) -> TlsaAnswer {
        let Some(secure) = &self.secure else {
            return TlsaAnswer::None;
        };
        let name = format!("_{port}._tcp.{}.", host.trim_end_matches('.'));
        let lookup = match secure
            .resolver
            .lookup(name.as_str(), RecordType::TLSA)
            .await
        {
            Ok(lookup) => lookup,
            Err(e) => {
                return match validated_denial(&e) {
                    // Proven absent, or the host's zone is not signed.
                    Ok(()) => TlsaAnswer::None,
                    Err(why) => TlsaAnswer::Unusable(format!("the TLSA records of {host}: {why}")),
                };
            }
        };
        let mut records = Vec::new();
        for record in lookup.answers() {
            let RData::TLSA(tlsa) = &record.data else {
                continue;
            };
            match record.proof {
                Proof::Secure => records.push(Tlsa {
                    usage: tlsa.cert_usage.into(),
                    selector: tlsa.selector.into(),
                    matching: tlsa.matching.into(),
                    data: tlsa.cert_data.clone(),
                }),
                // In an unsigned zone: no DANE.
                Proof::Insecure => return TlsaAnswer::None,
                proof => {
                    return TlsaAnswer::Unusable(format!(
                        "the TLSA records of {host} do not validate (DNSSEC: {proof})"
                    ));
                }
            }
        }
        if records.is_empty() {
            TlsaAnswer::None
        } else {
            TlsaAnswer::Records(records)
        }
    }
}

impl Secure {
    /// Whether the resolvers pass DNSSEC records on: the anchor zone's keys
    /// validate. Asked until they do (every `PROBE_RETRY`), then never again.
    async fn validates(&self) -> bool {
        let before = *self.probe.lock().unwrap_or_else(|p| p.into_inner());
        match before {
            Probe::Passed => return true,
            Probe::Failed(at) if at.elapsed() < PROBE_RETRY => return false,
            Probe::Failed(_) | Probe::Untried => {}
        }
        let works = match self
            .resolver
            .lookup(self.anchor_zone.as_str(), RecordType::DNSKEY)
            .await
        {
            Ok(keys) => keys.answers().iter().any(|r| r.proof == Proof::Secure),
            Err(_) => false,
        };
        let now = if works {
            tracing::info!(event = "dnssec_probe", zone = %self.anchor_zone, "the DNS resolvers pass DNSSEC on: DANE applies");
            Probe::Passed
        } else {
            if matches!(before, Probe::Untried) {
                tracing::warn!(event = "dnssec_probe", zone = %self.anchor_zone, "the DNS resolvers do not pass DNSSEC on (the keys of the trust anchor's zone do not validate): DANE is not applied until they do; use a validating resolver, or set [delivery] dane = false");
            }
            Probe::Failed(Instant::now())
        };
        *self.probe.lock().unwrap_or_else(|p| p.into_inner()) = now;
        works
    }
}

/// Whether a "no such records" answer came with validated proof (the
/// zone's SOA or NSEC/NSEC3 records, signed), as opposed to from an
/// unsigned zone.
fn denial_is_signed(e: &NetError) -> bool {
    use hickory_resolver::net::DnsError as Answer;
    let NetError::Dns(Answer::NoRecordsFound(denial)) = e else {
        return false;
    };
    denial.authorities.as_deref().is_some_and(|records| {
        records.iter().any(|r| {
            r.proof == Proof::Secure
                && matches!(
                    r.record_type(),
                    RecordType::SOA | RecordType::NSEC | RecordType::NSEC3
                )
        })
    })
}

/// What a failed question to the validating resolver says: `Ok` when the
/// records are proven not to exist or sit in an unsigned zone (hickory
/// checks the NSEC/NSEC3 proof of a signed zone's denial, RFC 4035 §5.4),
/// else why nothing can be concluded.
fn validated_denial(e: &NetError) -> Result<(), String> {
    use hickory_resolver::net::DnsError as Answer;
    match e {
        NetError::Dns(Answer::DnssecBogus) => Err("the answer does not validate (DNSSEC)".into()),
        NetError::Dns(Answer::Nsec { proof, .. }) if *proof != Proof::Insecure => Err(format!(
            "the denial that they exist does not validate (DNSSEC: {proof})"
        )),
        NetError::Dns(Answer::Nsec { .. }) => Ok(()),
        e if e.is_no_records_found() || e.is_nx_domain() => Ok(()),
        e => Err(format!("the lookup failed: {e}")),
    }
}

/// Sorts a failed lookup: "no records" is an answer (Ok), NXDOMAIN is permanent,
/// the rest is temporary.
fn negative(name: &str, e: &NetError) -> Result<(), DnsError> {
    if e.is_nx_domain() {
        Err(DnsError::NoSuchDomain(name.to_string()))
    } else if e.is_no_records_found() {
        Ok(())
    } else {
        Err(DnsError::Temporary(name.to_string(), e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_anchor_zone_is_the_owner_of_its_first_key() {
        let file = "; the zone's key\n\
                    dane.test. 3600 IN DNSKEY 257 3 13 mdsswUyr3DPW132mOi8V9xESWE8jTo0d xCjjnopKl+GqJxpVXckHAeF+KkxLbxIL fDLUT0rAK9iUzy1L53eKGQ==\n\
                    other.test. 3600 IN DNSKEY 257 3 13 AAAA\n";
        assert_eq!(anchor_zone(file).as_deref(), Some("dane.test."));
        assert_eq!(anchor_zone("; nothing\n"), None);
    }
}
