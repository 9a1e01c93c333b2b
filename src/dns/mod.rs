//! DNS for delivery: one hickory resolver built from `[delivery] nameservers`
//! (the system resolver when empty), and the two questions delivery asks: the
//! MX hosts of a domain, and the addresses of a host. The checks of arriving
//! mail (`dmarc`) ask through it too.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
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

/// Answers the resolver keeps: room for the MX and addresses of over 5,000
/// domains at a time.
const CACHE_SIZE: u64 = 16_384;

/// The resolver: one per server, shared (with its cache) by every delivery.
#[derive(Clone)]
pub struct Dns {
    resolver: TokioResolver,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot set up the DNS resolver: {0}")]
pub struct ResolverSetupError(String);

impl Dns {
    /// A resolver that asks `nameservers` (all of them, in order), or the system's
    /// configured resolvers when the list is empty.
    pub fn new(nameservers: &[SocketAddr]) -> Result<Dns, ResolverSetupError> {
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
        let resolver = builder
            .with_options(opts)
            .build()
            .map_err(|e| ResolverSetupError(e.to_string()))?;
        Ok(Dns { resolver })
    }

    pub async fn mx(&self, domain: &str) -> Result<MxAnswer, DnsError> {
        let fqdn = format!("{}.", domain.trim_end_matches('.'));
        match self.resolver.mx_lookup(fqdn.as_str()).await {
            Ok(lookup) => {
                let hosts: Vec<(u16, String)> = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::MX(mx) => Some((
                            mx.preference,
                            mx.exchange.to_ascii().trim_end_matches('.').to_lowercase(),
                        )),
                        _ => None,
                    })
                    .collect();
                if hosts.len() == 1 && hosts[0].1.is_empty() {
                    return Ok(MxAnswer::Null);
                }
                Ok(if hosts.is_empty() {
                    MxAnswer::Implicit
                } else {
                    MxAnswer::Hosts(hosts)
                })
            }
            Err(e) => negative(domain, &e).map(|()| MxAnswer::Implicit),
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
