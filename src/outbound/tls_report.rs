//! TLS reporting (RFC 8460): what came of each new TLS session to each
//! recipient domain's MX hosts, counted per domain with the policy it had
//! (MTA-STS, or none); the server sends each domain that asks for reports
//! (`_smtp._tls.<domain>` TXT `v=TLSRPTv1; rua=mailto:...`) one aggregate
//! report per `tls_report_interval`, written by mail-auth (JSON, gzipped).
//! Counted in memory: a restart loses the counts of the period, which are
//! statistics, not mail.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use mail_auth::report::tlsrpt::{
    DateRange, FailureDetails, Policy as ReportPolicy, PolicyDetails, PolicyType, ResultType,
    Summary, TlsReport,
};

use crate::dns::Dns;
use crate::spool::NewMessage;

/// The policy a domain's sessions were held to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// An MTA-STS policy: its text, one line per element, and its mx patterns.
    Sts {
        lines: Vec<String>,
        mx: Vec<String>,
    },
    None,
}

/// What came of one TLS session (or the lack of one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure {
        result: ResultType,
        mx_host: String,
        ip: IpAddr,
        /// The error as the TLS library gave it.
        reason: String,
    },
}

#[derive(Default)]
struct DomainCounts {
    applied: Option<Applied>,
    success: u32,
    failures: HashMap<(ResultType, String, IpAddr, String), u32>,
}

/// The counts since the last report, per recipient domain.
pub struct TlsResults {
    since: Mutex<(i64, HashMap<String, DomainCounts>)>,
}

impl TlsResults {
    pub fn new(now: i64) -> TlsResults {
        TlsResults {
            since: Mutex::new((now, HashMap::new())),
        }
    }

    /// Counts one session to `domain`'s MX hosts under `applied`.
    pub fn record(&self, domain: &str, applied: &Applied, outcome: Outcome) {
        let mut guard = self.since.lock().unwrap_or_else(|e| e.into_inner());
        let counts = guard.1.entry(domain.to_ascii_lowercase()).or_default();
        counts.applied = Some(applied.clone());
        match outcome {
            Outcome::Success => counts.success = counts.success.saturating_add(1),
            Outcome::Failure {
                result,
                mx_host,
                ip,
                reason,
            } => {
                let n = counts
                    .failures
                    .entry((result, mx_host, ip, reason))
                    .or_default();
                *n = n.saturating_add(1);
            }
        }
    }

    /// The reports due at `now` (one per domain that asks for them, to its
    /// mailto addresses), from `postmaster@hostname`; the counts start again.
    pub async fn due(&self, dns: &Dns, hostname: &str, now: i64) -> Vec<NewMessage> {
        let (since, counted) = {
            let mut guard = self.since.lock().unwrap_or_else(|e| e.into_inner());
            let since = std::mem::replace(&mut guard.0, now);
            (since, std::mem::take(&mut guard.1))
        };
        let mut messages = Vec::new();
        for (domain, counts) in counted {
            let to = report_addresses(dns, &domain).await;
            if to.is_empty() {
                continue;
            }
            let report = report(&domain, counts, hostname, (since, now));
            let from = format!("postmaster@{hostname}");
            let body = match report.to_rfc5322(
                &domain,
                hostname,
                ("TLS reports", from.as_str()),
                to.iter().map(String::as_str),
            ) {
                Ok(body) => body,
                Err(e) => {
                    tracing::warn!(event = "tls_report_failed", domain, error = %e);
                    continue;
                }
            };
            tracing::info!(event = "tls_report", domain, to = ?to);
            let to: Vec<&str> = to.iter().map(String::as_str).collect();
            messages.push(NewMessage::generated(from, &to, body.into_bytes()));
        }
        messages
    }
}

/// The mailto addresses of `domain`'s TLSRPT record (RFC 8460 §3); https
/// ones are not sent to.
async fn report_addresses(dns: &Dns, domain: &str) -> Vec<String> {
    let records = dns
        .lookup_values(
            &format!("_smtp._tls.{domain}"),
            hickory_resolver::proto::rr::RecordType::TXT,
        )
        .await
        .unwrap_or_default();
    let mut announced = records
        .iter()
        .filter(|r| r.split(';').next().map(str::trim) == Some("v=TLSRPTv1"));
    let Some(record) = announced.next() else {
        return Vec::new();
    };
    if announced.next().is_some() {
        return Vec::new();
    }
    record
        .split(';')
        .filter_map(|field| field.trim().strip_prefix("rua="))
        .flat_map(|uris| uris.split(','))
        .filter_map(|uri| uri.trim().strip_prefix("mailto:"))
        .map(str::to_string)
        .collect()
}

fn report(
    domain: &str,
    counts: DomainCounts,
    hostname: &str,
    (since, now): (i64, i64),
) -> TlsReport {
    let mut details = match counts.applied.unwrap_or(Applied::None) {
        Applied::Sts { lines, mx } => {
            let mut details = PolicyDetails::new(PolicyType::Sts, domain);
            details.policy_string = lines;
            details.mx_host = mx;
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
            let mut details = FailureDetails::new(result)
                .with_receiving_mx_hostname(mx_host)
                .with_receiving_ip(ip)
                .with_failure_reason_code(reason);
            details.failed_session_count = n;
            details
        })
        .collect();
    TlsReport {
        organization_name: Some(hostname.to_string()),
        date_range: DateRange::from_timestamps(since, now),
        contact_info: Some(format!("postmaster@{hostname}")),
        report_id: format!("{domain}.{since}.{now}@{hostname}"),
        policies: vec![ReportPolicy {
            policy: details,
            summary: Summary {
                total_success: counts.success,
                total_failure,
            },
            failure_details,
        }],
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
