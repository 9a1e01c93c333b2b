//! DMARC aggregate reports (RFC 7489 §7.2), off unless `[filter]
//! dmarc_reports = true`: each message from another server whose From:
//! domain asks for reports (`rua=`) is counted by kind of result in the
//! store; every `dmarc_report_interval` each such domain is sent one report
//! (mail-auth writes the XML, gzipped, in a message) at the addresses it
//! named that accept reports about it (§7.1: an address in another domain
//! must say so in DNS).

use std::net::IpAddr;

use mail_auth::report::{ActionDisposition, PolicyPublished, Record, Report, SPFDomainScope};
use mail_auth::{ArcOutput, DkimOutput, DmarcOutput, MessageAuthenticator, SpfOutput};

use crate::spool::NewMessage;
use crate::store::{DmarcCounts, Store};

/// What one message adds to its From: domain's next report.
pub(super) struct Counted {
    domain: String,
    record: Record,
    policy: PolicyPublished,
    rua: Vec<String>,
}

/// The results of one message's checks, as a report counts them.
pub(super) struct Results<'a, 'x> {
    pub dmarc: &'a DmarcOutput,
    pub dkim: &'a [DkimOutput<'x>],
    pub spf: &'a SpfOutput,
    pub arc: &'a ArcOutput<'x>,
    /// Whether SPF was asked about the HELO name (a bounce) rather than
    /// the envelope sender.
    pub helo_scope: bool,
    pub client_ip: IpAddr,
    pub envelope_from: &'a str,
}

/// The entry for a message with `results`, given what was done with it
/// (`disposition`); `None` when its domain asks for no aggregate reports.
pub(super) fn counted(
    results: &Results<'_, '_>,
    disposition: ActionDisposition,
) -> Option<Counted> {
    let record = results.dmarc.dmarc_record()?;
    let rua: Vec<String> = record.rua().iter().map(|u| u.uri().to_string()).collect();
    if rua.is_empty() {
        return None;
    }
    let domain = results.dmarc.domain().to_ascii_lowercase();
    let scope = if results.helo_scope {
        SPFDomainScope::Helo
    } else {
        SPFDomainScope::MailFrom
    };
    let entry = Record::new()
        .with_dkim_output(results.dkim)
        .with_spf_output(results.spf, scope)
        .with_dmarc_output(results.dmarc)
        .with_arc_output(results.arc)
        .with_action_disposition(disposition)
        .with_source_ip(results.client_ip)
        .with_header_from(domain.clone())
        .with_envelope_from(results.envelope_from);
    Some(Counted {
        policy: PolicyPublished::from_record(domain.clone(), record),
        domain,
        record: entry,
        rua,
    })
}

/// Keeps `counted` for the domain's next report; a store that fails loses
/// the count, not the message.
pub(super) async fn count(store: &Store, counted: Counted, now: i64) {
    let record = serde_json::to_string(&counted.record).unwrap_or_default();
    let policy = serde_json::to_string(&counted.policy).unwrap_or_default();
    let rua = serde_json::to_string(&counted.rua).unwrap_or_default();
    if let Err(e) = store
        .count_dmarc(&counted.domain, &record, (&policy, &rua), now)
        .await
    {
        tracing::warn!(event = "dmarc_report_not_counted", domain = %counted.domain, error = %e);
    }
}

/// The reports due now: every domain counted since its last report gets one
/// message, from `postmaster@hostname`, to those of its addresses that accept
/// reports about it. The counts are taken out of the store.
pub async fn due(
    store: &Store,
    authenticator: &MessageAuthenticator,
    hostname: &str,
    now: i64,
) -> Vec<NewMessage> {
    let counts = match store.take_dmarc_counts().await {
        Ok(counts) => counts,
        Err(e) => {
            tracing::error!(event = "store_error", error = %e);
            return Vec::new();
        }
    };
    let mut messages = Vec::new();
    for domain in counts {
        let rua: Vec<String> = serde_json::from_str(&domain.rua).unwrap_or_default();
        let accepted = authenticator
            .verify_dmarc_report_address(&domain.domain, &rua, None::<&NoCache>)
            .await
            .unwrap_or_default();
        let to: Vec<String> = accepted.into_iter().cloned().collect();
        if to.is_empty() {
            tracing::info!(event = "dmarc_report_unauthorised", domain = %domain.domain, rua = ?rua);
            continue;
        }
        match report_message(&domain, &to, hostname, now) {
            Some(message) => {
                tracing::info!(event = "dmarc_report", domain = %domain.domain, to = ?to, records = domain.records.len());
                messages.push(message);
            }
            None => tracing::warn!(event = "dmarc_report_failed", domain = %domain.domain),
        }
    }
    messages
}

type NoCache = mail_auth::common::cache::NoCache<Box<str>, mail_auth::Txt>;

/// One domain's report, as a message to `to`.
fn report_message(
    counts: &DmarcCounts,
    to: &[String],
    hostname: &str,
    now: i64,
) -> Option<NewMessage> {
    let policy: PolicyPublished = serde_json::from_str(&counts.policy).ok()?;
    let from = format!("postmaster@{hostname}");
    let mut report = Report::new()
        .with_org_name(hostname)
        .with_email(from.as_str())
        .with_report_id(format!("{}.{}.{now}", counts.domain, counts.since))
        .with_date_range_begin(u64::try_from(counts.since).unwrap_or(0))
        .with_date_range_end(u64::try_from(now).unwrap_or(0))
        .with_policy_published(policy);
    for (record, count) in &counts.records {
        let Ok(record) = serde_json::from_str::<Record>(record) else {
            continue;
        };
        report.add_record(record.with_count(u32::try_from(*count).unwrap_or(u32::MAX)));
    }
    let body = report
        .to_rfc5322(
            hostname,
            ("DMARC reports", from.as_str()),
            to.iter().map(String::as_str),
        )
        .ok()?;
    let to: Vec<&str> = to.iter().map(String::as_str).collect();
    Some(NewMessage::generated(from, &to, body.into_bytes()))
}
