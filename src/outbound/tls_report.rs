//! TLS reporting (RFC 8460): what came of each new TLS session to each
//! recipient domain's MX hosts, counted per domain and per policy the
//! session was held to (the domain's MTA-STS policy, a host's TLSA records,
//! or none), with the failures to get a policy at all (a policy host that
//! cannot be reached, TLSA or MX records that do not validate). The server
//! sends each domain that asks for reports (`_smtp._tls.<domain>` TXT
//! `v=TLSRPTv1; rua=mailto:...,https://...`) one aggregate report per
//! `tls_report_interval`, written by mail-auth (JSON, gzipped): by mail to
//! its mailto addresses, POSTed to its https ones. Counted in memory: a
//! restart loses the counts of the period, which are statistics, not mail.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use mail_auth::report::tlsrpt::{
    DateRange, FailureDetails, Policy as ReportPolicy, PolicyDetails, PolicyType, ResultType,
    Summary, TlsReport,
};
use tokio::sync::Semaphore;
use tokio_rustls::TlsConnector;

use super::client::{ConnectFailure, Connection, Endpoint};
use super::https;
use crate::failure::FailureKind;

use crate::dns::Dns;
use crate::spool::NewMessage;

/// Most report POSTs under way at once.
const POSTS_AT_ONCE: usize = 16;

/// How long one POST of a report to one address may take.
const POST_TIMEOUT: Duration = Duration::from_secs(30);
/// When a report is POSTed, each after the try before it failed: at once,
/// then again so that a report server down for a moment still gets the
/// day's report, and one down for hours is not knocked on all day.
const POST_TRIES: [Duration; 4] = [
    Duration::ZERO,
    Duration::from_secs(60),
    Duration::from_secs(10 * 60),
    Duration::from_secs(60 * 60),
];
/// Bounds on what a period's counts hold, whatever the domains mailed and
/// their policies (TLSA sets can change with every lookup): past them new
/// entries are left out, and the report says less.
const MAX_DOMAINS: usize = 20_000;
const MAX_POLICIES_PER_DOMAIN: usize = 8;
const MAX_FAILURES_PER_POLICY: usize = 32;

/// The policy a domain's sessions were held to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Applied {
    /// An MTA-STS policy: its text, one line per element, and its mx
    /// patterns; both empty when the policy could not be fetched.
    Sts {
        lines: Vec<String>,
        mx: Vec<String>,
    },
    /// A host's TLSA records (DANE), as presented (`3 1 1 0a1b…`); none
    /// when they could not be had. `host` is empty for the domain's MX
    /// records.
    Tlsa {
        host: String,
        records: Vec<String>,
    },
    None,
}

/// What came of one TLS session (or the lack of one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure {
        result: ResultType,
        /// The host and address, when a host was tried.
        mx_host: Option<String>,
        ip: Option<IpAddr>,
        /// The error as the TLS library (or the policy lookup) gave it.
        reason: String,
    },
}

type FailureKey = (ResultType, Option<String>, Option<IpAddr>, String);

#[derive(Default)]
struct PolicyCounts {
    success: u32,
    failures: HashMap<FailureKey, u32>,
}

/// One recipient domain's counts, per policy.
type DomainCounts = HashMap<Applied, PolicyCounts>;

/// The counts since the last report (when it began), per recipient domain.
pub struct TlsResults {
    since: Mutex<(i64, HashMap<String, DomainCounts>)>,
    /// Report POSTs under way at once: every domain's report is due at the
    /// same moment, and each POST is a DNS question and a TLS connection.
    posting: Arc<Semaphore>,
}

impl TlsResults {
    pub fn new(now: i64) -> TlsResults {
        TlsResults {
            since: Mutex::new((now, HashMap::new())),
            posting: Arc::new(Semaphore::new(POSTS_AT_ONCE)),
        }
    }

    /// Counts one session to `domain`'s MX hosts under `applied`.
    pub fn record(&self, domain: &str, applied: &Applied, outcome: Outcome) {
        let mut guard = self.since.lock().unwrap_or_else(|e| e.into_inner());
        let domains = &mut guard.1;
        let domain = domain.to_ascii_lowercase();
        if domains.len() >= MAX_DOMAINS && !domains.contains_key(&domain) {
            return;
        }
        let policies = domains.entry(domain).or_default();
        if policies.len() >= MAX_POLICIES_PER_DOMAIN && !policies.contains_key(applied) {
            return;
        }
        let counts = policies.entry(applied.clone()).or_default();
        match outcome {
            Outcome::Success => counts.success = counts.success.saturating_add(1),
            Outcome::Failure {
                result,
                mx_host,
                ip,
                reason,
            } => {
                let key = (result, mx_host, ip, reason);
                if counts.failures.len() >= MAX_FAILURES_PER_POLICY
                    && !counts.failures.contains_key(&key)
                {
                    return;
                }
                let n = counts.failures.entry(key).or_default();
                *n = n.saturating_add(1);
            }
        }
    }

    /// Sends the reports due at `now` to the https addresses of the domains
    /// that ask for them (over `connector`), and returns the mail to their
    /// mailto addresses, from `postmaster@hostname`; the counts start again.
    pub async fn due(
        &self,
        dns: &Dns,
        connector: &TlsConnector,
        hostname: &str,
        now: i64,
    ) -> Vec<NewMessage> {
        let (since, counted) = {
            let mut guard = self.since.lock().unwrap_or_else(|e| e.into_inner());
            let since = std::mem::replace(&mut guard.0, now);
            (since, std::mem::take(&mut guard.1))
        };
        let mut messages = Vec::new();
        for (domain, counts) in counted {
            let (mailto, https) = report_addresses(dns, &domain).await;
            if mailto.is_empty() && https.is_empty() {
                continue;
            }
            let report = report(&domain, counts, hostname, (since, now));
            let gzipped = match gzip(report.to_json().as_bytes()) {
                Ok(gzipped) => gzipped,
                Err(e) => {
                    tracing::warn!(event = "tls_report_failed", domain, error = %e);
                    continue;
                }
            };
            for uri in https {
                // In the background: the other domains' reports, and the
                // mail ones, do not wait for this server (up to POST_TIMEOUT
                // each try).
                let (dns, connector) = (dns.clone(), connector.clone());
                let (gzipped, domain) = (gzipped.clone(), domain.clone());
                let posting = Arc::clone(&self.posting);
                tokio::spawn(async move {
                    let post = Post {
                        dns: &dns,
                        connector: &connector,
                        posting: &posting,
                    };
                    post.tries(&gzipped, &uri, &domain, &POST_TRIES).await
                });
            }
            if mailto.is_empty() {
                continue;
            }
            let from = format!("postmaster@{hostname}");
            // RFC 8460 §5.3: a report must get through even where TLS to
            // the domain is broken, which is what it may be reporting.
            let mut body = b"TLS-Required: No\r\n".to_vec();
            if let Err(e) = report.write_rfc5322_from_bytes(
                &domain,
                hostname,
                ("TLS reports", from.as_str()),
                mailto.iter().map(String::as_str),
                &gzipped,
                &mut body,
            ) {
                tracing::warn!(event = "tls_report_failed", domain, error = %e);
                continue;
            }
            tracing::info!(event = "tls_report", domain, to = ?mailto);
            let to: Vec<&str> = mailto.iter().map(String::as_str).collect();
            let mut message = NewMessage::generated(from, &to, body);
            message.tls_policy_waived = true;
            messages.push(message);
        }
        messages
    }
}

/// The mailto and https addresses of `domain`'s TLSRPT record (RFC 8460 §3).
async fn report_addresses(dns: &Dns, domain: &str) -> (Vec<String>, Vec<String>) {
    let Some(record) = dns
        .tagged_txt(&format!("_smtp._tls.{domain}"), "v=TLSRPTv1")
        .await
    else {
        return (Vec::new(), Vec::new());
    };
    let uris: Vec<&str> = record
        .split(';')
        .filter_map(|field| field.trim().strip_prefix("rua="))
        .flat_map(|uris| uris.split(','))
        .map(str::trim)
        .collect();
    // An address listed twice gets one report.
    let once = |mut list: Vec<String>| {
        list.sort_unstable();
        list.dedup();
        list
    };
    let mailto = uris
        .iter()
        .filter_map(|uri| uri.strip_prefix("mailto:"))
        .map(str::to_string)
        .collect();
    let https = uris
        .iter()
        .filter(|uri| uri.starts_with("https://"))
        .map(|uri| uri.to_string())
        .collect();
    (once(mailto), once(https))
}

fn gzip(json: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(json)?;
    encoder.finish()
}

/// What a report's POSTs go through.
struct Post<'a> {
    dns: &'a Dns,
    connector: &'a TlsConnector,
    posting: &'a Semaphore,
}

impl Post<'_> {
    /// POSTs a report after each of `delays` (from the try before), until
    /// one goes through; false when none did. Each try waits for its turn
    /// among `posting`'s.
    async fn tries(&self, gzipped: &[u8], uri: &str, domain: &str, delays: &[Duration]) -> bool {
        for delay in delays {
            tokio::time::sleep(*delay).await;
            let Ok(_turn) = self.posting.acquire().await else {
                break;
            };
            match post(self.dns, self.connector, gzipped, uri).await {
                Ok(()) => {
                    tracing::info!(event = "tls_report", domain, to = %uri);
                    return true;
                }
                Err(e) => {
                    tracing::warn!(event = "tls_report_failed", domain, to = %uri, error = %e);
                }
            }
        }
        tracing::warn!(event = "tls_report_dropped", domain, to = %uri, tries = delays.len());
        false
    }
}

/// POSTs a `gzipped` report to `uri` (RFC 8460 §5.2: `application/tlsrpt+gzip`),
/// the server's certificate verified by `connector`; any 2xx is taken.
async fn post(
    dns: &Dns,
    connector: &TlsConnector,
    gzipped: &[u8],
    uri: &str,
) -> Result<(), String> {
    let uri: hyper::Uri = uri.parse().map_err(|e| format!("{e}"))?;
    let host = uri.host().ok_or("no host")?.to_string();
    let port = uri.port_u16().unwrap_or(443);
    let gzipped = Bytes::copy_from_slice(gzipped);
    let addrs = dns.addresses(&host).await.map_err(|e| e.to_string())?;
    let mut last = format!("{host} has no address");
    for ip in addrs {
        let request = hyper::Request::post(uri.path_and_query().map_or("/", |p| p.as_str()))
            .header("Host", &host)
            .header("Content-Type", "application/tlsrpt+gzip")
            .body(Full::new(gzipped.clone()))
            .map_err(|e| e.to_string())?;
        let sent = tokio::time::timeout(
            POST_TIMEOUT,
            https::send(connector, &host, SocketAddr::new(ip, port), request),
        )
        .await
        .map_err(|_| format!("no answer within {} s", POST_TIMEOUT.as_secs()))
        .and_then(|sent| sent.map_err(|e| e.to_string()));
        match sent {
            Ok(response) if response.status().is_success() => return Ok(()),
            Ok(response) => last = format!("{host} ({ip}): HTTP status {}", response.status()),
            Err(e) => last = format!("{host} ({ip}): {e}"),
        }
    }
    Err(last)
}

fn report(
    domain: &str,
    counts: DomainCounts,
    hostname: &str,
    (since, now): (i64, i64),
) -> TlsReport {
    let policies = counts
        .into_iter()
        .map(|(applied, counts)| policy_report(domain, applied, counts))
        .collect();
    TlsReport {
        organization_name: Some(hostname.to_string()),
        date_range: DateRange::from_timestamps(since, now),
        contact_info: Some(format!("postmaster@{hostname}")),
        report_id: format!("{domain}.{since}.{now}@{hostname}"),
        policies,
    }
}

fn policy_report(domain: &str, applied: Applied, counts: PolicyCounts) -> ReportPolicy {
    let mut details = match applied {
        Applied::Sts { lines, mx } => {
            let mut details = PolicyDetails::new(PolicyType::Sts, domain);
            details.policy_string = lines;
            details.mx_host = mx;
            details
        }
        Applied::Tlsa { host, records } => {
            let mut details = PolicyDetails::new(PolicyType::Tlsa, domain);
            details.policy_string = records;
            if !host.is_empty() {
                details.mx_host = vec![host];
            }
            details
        }
        Applied::None => PolicyDetails::new(PolicyType::NoPolicyFound, domain),
    };
    details.policy_domain = domain.to_string();
    let total_failure = counts
        .failures
        .values()
        .fold(0u32, |a, n| a.saturating_add(*n));
    let failure_details = counts
        .failures
        .into_iter()
        .map(|((result, mx_host, ip, reason), n)| {
            let mut details = FailureDetails::new(result).with_failure_reason_code(reason);
            if let Some(host) = mx_host {
                details = details.with_receiving_mx_hostname(host);
            }
            if let Some(ip) = ip {
                details = details.with_receiving_ip(ip);
            }
            details.failed_session_count = n;
            details
        })
        .collect();
    ReportPolicy {
        policy: details,
        summary: Summary {
            total_success: counts.success,
            total_failure,
        },
        failure_details,
    }
}

/// The RFC 8460 result type of a TLS failure, from the TLS library's words
/// (mail-send passes rustls' error on as text).
pub fn result_type(error: &str) -> ResultType {
    if error.contains("NotValidForName") {
        ResultType::CertificateHostMismatch
    } else if error.contains("Expired") {
        ResultType::CertificateExpired
    } else if error.contains("UnknownIssuer") || error.contains("BadSignature") {
        ResultType::CertificateNotTrusted
    } else {
        ResultType::ValidationFailure
    }
}

/// What a new connection to an MX host says for TLS reports: a TLS session,
/// a host that would not or could not have one (with why), or nothing to
/// say (the connection failed before TLS came up).
pub(super) fn tls_outcome(
    opened: &Result<Connection, ConnectFailure>,
    endpoint: &Endpoint<'_>,
) -> Option<Outcome> {
    let failure = |result, reason: &str| Outcome::Failure {
        result,
        mx_host: Some(endpoint.host.to_string()),
        ip: Some(endpoint.addr.ip()),
        reason: reason.to_string(),
    };
    match opened {
        Ok(conn) if conn.encrypted => Some(Outcome::Success),
        Ok(_) => Some(failure(
            ResultType::StartTlsNotSupported,
            "delivered without TLS",
        )),
        Err(f) if f.starttls_failed => Some(failure(result_type(&f.failure.text), &f.failure.text)),
        Err(f) if f.failure.kind == FailureKind::Tls => {
            Some(failure(ResultType::StartTlsNotSupported, &f.failure.text))
        }
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tlsa(n: usize) -> Applied {
        Applied::Tlsa {
            host: "mx.example".into(),
            records: vec![format!("3 1 1 {n:064x}")],
        }
    }

    fn failure(n: usize) -> Outcome {
        Outcome::Failure {
            result: ResultType::ValidationFailure,
            mx_host: Some("mx.example".into()),
            ip: None,
            reason: format!("failure {n}"),
        }
    }

    #[test]
    fn the_counts_stay_within_their_bounds() {
        let results = TlsResults::new(0);
        for n in 0..=MAX_DOMAINS {
            results.record(&format!("d{n}.example"), &Applied::None, Outcome::Success);
        }
        for n in 0..=MAX_POLICIES_PER_DOMAIN {
            results.record("d0.example", &tlsa(n), Outcome::Success);
        }
        for n in 0..=MAX_FAILURES_PER_POLICY {
            results.record("d0.example", &Applied::None, failure(n));
        }
        // A domain, a policy and a failure already counted still count.
        results.record("d1.example", &Applied::None, Outcome::Success);
        results.record("d0.example", &tlsa(0), failure(0));
        results.record("d0.example", &Applied::None, failure(0));
        let guard = results.since.lock().expect("counts");
        let domains = &guard.1;
        assert_eq!(domains.len(), MAX_DOMAINS);
        assert!(!domains.contains_key(&format!("d{MAX_DOMAINS}.example")));
        assert_eq!(domains["d1.example"][&Applied::None].success, 2);
        let d0 = &domains["d0.example"];
        assert_eq!(d0.len(), MAX_POLICIES_PER_DOMAIN);
        assert_eq!(d0[&tlsa(0)].failures.len(), 1);
        let none = &d0[&Applied::None];
        assert_eq!(none.failures.len(), MAX_FAILURES_PER_POLICY);
        assert_eq!(none.failures.values().max(), Some(&2));
    }

    /// A report address whose server is down is an error naming it (the
    /// caller logs it and goes on to the other addresses), not a hang.
    #[tokio::test]
    async fn a_post_to_a_dead_server_fails_at_once_and_says_where() {
        crate::tls::install_crypto_provider();
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = closed.local_addr().expect("addr").port();
        drop(closed);
        let connector = mail_send::smtp::tls::build_tls_connector(false).expect("connector");
        let dns = Dns::new(&[]).expect("dns");
        let uri = format!("https://127.0.0.1:{port}/tlsrpt");
        let started = std::time::Instant::now();
        let sent = post(&dns, &connector, b"report", &uri).await;
        let error = sent.expect_err("nothing listens there");
        assert!(error.contains("127.0.0.1 (127.0.0.1)"), "{error}");
        assert!(started.elapsed() < POST_TIMEOUT, "refused, not waited for");
    }

    /// A POST that fails is made again after each delay, then given up.
    #[tokio::test]
    async fn a_failed_post_is_tried_again_after_each_delay() {
        crate::tls::install_crypto_provider();
        // A server that takes each connection and closes it: every POST
        // fails, and each one is counted.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let tries = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = std::sync::Arc::clone(&tries);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                drop(stream);
            }
        });
        let connector = mail_send::smtp::tls::build_tls_connector(false).expect("connector");
        let dns = Dns::new(&[]).expect("dns");
        let uri = format!("https://127.0.0.1:{port}/tlsrpt");
        let delays = [Duration::from_millis(50); 2];
        let started = std::time::Instant::now();
        let posting = Semaphore::new(1);
        let post = Post {
            dns: &dns,
            connector: &connector,
            posting: &posting,
        };
        let sent = post.tries(b"report", &uri, "d.example", &delays).await;
        assert!(!sent, "the server closes every connection");
        assert_eq!(
            tries.load(std::sync::atomic::Ordering::SeqCst),
            2,
            "one per delay"
        );
        assert!(
            started.elapsed() >= Duration::from_millis(100),
            "it waited before each try"
        );
    }
}
