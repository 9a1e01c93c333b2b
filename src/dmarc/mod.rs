//! Who really sent a message that arrives from another server: SPF (RFC
//! 7208) for the envelope sender, or the HELO name for a bounce; the DKIM
//! signatures (RFC 6376); DMARC (RFC 7489), which asks that one of them
//! pass for the domain in From:; and whether the client's address and name
//! point at each other (iprev, RFC 8601 §3: recorded, not acted on); and the
//! ARC chain (RFC 8617) of servers that forwarded it, recorded, and sealed
//! once more when an alias here forwards it. Checked with mail-auth, recorded in an
//! Authentication-Results: field (RFC 8601) that `prepare` puts on top, and,
//! with `[filter] dmarc = "enforce"`, acted on: the From: domain's policy
//! (reject: 550 at the end of DATA; quarantine: the Junk folder), and no mail
//! claiming a domain hosted here without passing (the spoofing case).

pub mod report;
pub mod sending;

use std::net::IpAddr;

use mail_auth::dmarc::Policy;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::report::ActionDisposition;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    AuthenticatedMessage, AuthenticationResults, DkimResult, DmarcResult, MessageAuthenticator,
    SpfResult,
};

use crate::config::DmarcMode;
use crate::smtp::reply::Reply;

/// The mark that files a message into its mailbox's Junk folder (`local`):
/// put first, where no sender can put anything, since this server's own
/// fields go on top of what arrives.
pub const JUNK_MARK: &[u8] = b"X-Spam: Yes\r\n";

/// The checks, with the resolver they ask through.
pub struct Checks {
    authenticator: MessageAuthenticator,
    /// Whether results are counted for DMARC aggregate reports.
    reports: bool,
    /// This server's name in Authentication-Results: (the authserv-id).
    authserv_id: String,
    mode: DmarcMode,
}

/// What the checks need to know about one arrival.
pub struct Arrival<'a> {
    pub client_ip: IpAddr,
    pub helo: &'a str,
    /// The reverse-path; empty for a bounce.
    pub sender: &'a str,
    /// The whole message as received.
    pub message: &'a [u8],
    /// Which domains are hosted here: a From: in one of them must prove itself.
    pub store: &'a crate::store::Store,
    /// For a message an alias forwards: the signer and the forwarding
    /// domain that seal what was found (ARC).
    pub seal_as: Option<(&'a crate::dkim::Signer, &'a str)>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Take it, with this Authentication-Results: field on top; into the
    /// Junk folder when `junk` (the domain's policy is quarantine); with
    /// `seal`, the ARC set of a forward, above the field (empty when none).
    Accept {
        field: Vec<u8>,
        junk: bool,
        seal: Vec<u8>,
    },
    Refuse(Reply),
}

impl Checks {
    pub fn new(authenticator: MessageAuthenticator, hostname: &str, mode: DmarcMode) -> Checks {
        Checks {
            authenticator,
            reports: false,
            authserv_id: hostname.to_string(),
            mode,
        }
    }

    /// Counts results for DMARC aggregate reports (`report`).
    pub fn with_reports(mut self, reports: bool) -> Checks {
        self.reports = reports;
        self
    }

    pub fn enabled(&self) -> bool {
        self.mode != DmarcMode::Off
    }

    /// Whether the checks act on what they find (`enforce`).
    pub fn enforcing(&self) -> bool {
        self.mode == DmarcMode::Enforce
    }

    pub fn authserv_id(&self) -> &str {
        &self.authserv_id
    }

    pub async fn check(&self, arrival: &Arrival<'_>) -> Outcome {
        let Some(message) = AuthenticatedMessage::parse(arrival.message) else {
            // Nothing that parses as a message: nothing to check against.
            let results = AuthenticationResults::new(&self.authserv_id);
            return Outcome::Accept {
                field: field(&results, true).into_bytes(),
                junk: false,
                seal: Vec::new(),
            };
        };
        let auth = &self.authenticator;
        let dkim = auth.verify_dkim(&message).await;
        let (spf, mail_from_domain) = if arrival.sender.is_empty() {
            let params =
                SpfParameters::verify_ehlo(arrival.client_ip, arrival.helo, &self.authserv_id);
            (auth.verify_spf(params).await, arrival.helo)
        } else {
            let params = SpfParameters::verify_mail_from(
                arrival.client_ip,
                arrival.helo,
                &self.authserv_id,
                arrival.sender,
            );
            let domain = arrival.sender.rsplit_once('@').map_or("", |(_, d)| d);
            (auth.verify_spf(params).await, domain)
        };
        let dmarc = auth
            .verify_dmarc(DmarcParameters::new(
                &message,
                &dkim,
                mail_from_domain,
                &spf,
            ))
            .await;
        let iprev = auth.verify_iprev(arrival.client_ip).await;
        let arc = auth.verify_arc(&message).await;
        let header_from = message.from();
        let mut results =
            AuthenticationResults::new(&self.authserv_id).with_dkim_results(&dkim, header_from);
        results = if arrival.sender.is_empty() {
            results.with_spf_ehlo_result(&spf, arrival.client_ip, arrival.helo)
        } else {
            results.with_spf_mailfrom_result(&spf, arrival.client_ip, arrival.sender, arrival.helo)
        };
        let results = results
            .with_dmarc_result(&dmarc)
            .with_arc_result(&arc, arrival.client_ip)
            .with_iprev_result(&iprev, arrival.client_ip);
        let accepted = |junk: bool| Outcome::Accept {
            field: field(&results, dkim.is_empty()).into_bytes(),
            junk,
            seal: arrival
                .seal_as
                .map(|(signer, domain)| {
                    off_the_runtime(|| signer.seal(domain, &message, &results, &arc))
                })
                .unwrap_or_default(),
        };
        let from_domain = dmarc.domain().to_ascii_lowercase();
        // Every address of From:, as mail-auth reads them (every field, and
        // what this server's stricter reader refuses): a hosted domain must
        // prove itself, whether or not it publishes DMARC, which computes
        // alignment only for domains that do and skips a From: of several
        // domains. A store that cannot say counts as hosted.
        let mut unproven = None;
        let mut store_failed = false;
        for address in message.froms() {
            let Some((_, domain)) = address.rsplit_once('@') else {
                continue;
            };
            let domain = domain.trim_end_matches('.').to_ascii_lowercase();
            let hosted = arrival
                .store
                .is_hosted_domain(&domain)
                .await
                .unwrap_or_else(|_| {
                    store_failed = true;
                    true
                });
            let proven = dkim.iter().any(|d| {
                d.result() == &DkimResult::Pass
                    && d.signature().is_some_and(|s| aligned(&s.d, &domain))
            }) || (spf.result() == SpfResult::Pass
                && aligned(mail_from_domain, &domain));
            if hosted && !proven {
                unproven = Some(domain);
                break;
            }
        }
        let unanswered = store_failed
            || spf.result() == SpfResult::TempError
            || matches!(dmarc.result(), DmarcResult::TempError(_))
            || dkim
                .iter()
                .any(|d| matches!(d.result(), DkimResult::TempError(_)));
        tracing::info!(
            event = "authenticated",
            from_domain,
            dkim = dkim.iter().filter(|d| d.result() == &DkimResult::Pass).count(),
            spf = %spf.result(),
            dmarc = ?dmarc.result(),
            policy = ?dmarc.policy(),
            arc = %arc_word(arc.result()),
        );
        let enforce = self.mode == DmarcMode::Enforce;
        let outcome = match unproven {
            Some(domain) if enforce => Outcome::Refuse(if unanswered {
                Reply::new(
                    451,
                    (7, 1),
                    format!(
                        "{domain} is hosted here, and the questions that prove this message \
                         comes from it got no answer; try again later"
                    ),
                )
            } else {
                Reply::new(
                    550,
                    (7, 1),
                    format!(
                        "{domain} is hosted here, and this message from another server \
                         has no valid signature or SPF authorisation of it"
                    ),
                )
            }),
            _ if enforce && matches!(dmarc.result(), DmarcResult::Fail(_)) => {
                match dmarc.policy() {
                    Policy::Reject => Outcome::Refuse(Reply::new(
                        550,
                        (7, 1),
                        format!(
                            "{from_domain}'s DMARC policy rejects mail that fails its checks, \
                         and this message did"
                        ),
                    )),
                    Policy::Quarantine => accepted(true),
                    Policy::None | Policy::Unspecified => accepted(false),
                }
            }
            _ => accepted(false),
        };
        // A temporary refusal is counted when the message comes again.
        let temporary = matches!(&outcome, Outcome::Refuse(reply) if reply.code < 500);
        if self.reports && !temporary {
            let disposition = match &outcome {
                Outcome::Refuse(_) => ActionDisposition::Reject,
                Outcome::Accept { junk: true, .. } => ActionDisposition::Quarantine,
                Outcome::Accept { .. } => ActionDisposition::None,
            };
            let results = report::Results {
                dmarc: &dmarc,
                dkim: &dkim,
                spf: &spf,
                arc: &arc,
                helo_scope: arrival.sender.is_empty(),
                client_ip: arrival.client_ip,
                envelope_from: mail_from_domain,
            };
            if let Some(counted) = report::counted(&results, disposition) {
                report::count(arrival.store, counted, crate::clock::now_unix()).await;
            }
        }
        outcome
    }
}

/// Runs `work` (blocking: signatures, key files) where it holds up no other
/// task: the server's multi-threaded runtime hands this worker's tasks to
/// another meanwhile. It borrows the parsed message, which `spawn_blocking`
/// could not take; a single-threaded runtime (tests) runs it in place.
fn off_the_runtime<T>(work: impl FnOnce() -> T) -> T {
    let flavor = tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor());
    match flavor {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}

/// The word RFC 8617 §7 uses for an ARC chain's result.
fn arc_word(result: &DkimResult) -> &'static str {
    match result {
        DkimResult::Pass => "pass",
        DkimResult::None => "none",
        _ => "fail",
    }
}

/// Relaxed alignment (RFC 7489 §3.1), near enough: the same domain, or one
/// below the other (a list of public suffixes would draw the line exactly).
fn aligned(domain: &str, from_domain: &str) -> bool {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    !from_domain.is_empty()
        && (domain == from_domain
            || domain.ends_with(&format!(".{from_domain}"))
            || from_domain.ends_with(&format!(".{domain}")))
}

/// The Authentication-Results: field, with `dkim=none` when the message had
/// no signature (RFC 8601 §2.7.1), which mail-auth leaves out.
fn field(results: &AuthenticationResults<'_>, unsigned: bool) -> String {
    let text = results.to_string();
    let (id, methods) = text.split_once(';').unwrap_or((&text, ""));
    let mut out = format!("Authentication-Results: {id}");
    if unsigned {
        out.push_str(";\r\n\tdkim=none");
    }
    if !methods.is_empty() {
        out.push(';');
        out.push_str(methods);
    } else if !unsigned {
        out.push_str("; none");
    }
    out.push_str("\r\n");
    out
}

/// `message` without the Authentication-Results: fields that claim to come
/// from `authserv_id` (RFC 8601 §5: a sender must not be able to hand in
/// results in this server's name); `None` when it has none.
pub fn without_our_results(message: &[u8], authserv_id: &str) -> Option<Vec<u8>> {
    use crate::smtp::headers::{Entry, entries, header_section};
    let forged: Vec<std::ops::Range<usize>> = entries(header_section(message))
        .filter_map(|entry| match entry {
            Entry::Field(f) if f.name.eq_ignore_ascii_case(b"Authentication-Results") => {
                let value = f.value();
                let id = authserv_id_of(&String::from_utf8_lossy(&value));
                id.eq_ignore_ascii_case(authserv_id.trim_end_matches('.'))
                    .then_some(f.raw)
            }
            _ => None,
        })
        .collect();
    if forged.is_empty() {
        return None;
    }
    let mut kept = Vec::with_capacity(message.len());
    let mut at = 0;
    for range in forged {
        kept.extend_from_slice(&message[at..range.start]);
        at = range.end;
    }
    kept.extend_from_slice(&message[at..]);
    Some(kept)
}

/// The authserv-id an Authentication-Results value starts with, as RFC 8601
/// parsers read it: comments (CFWS) skipped, a quoted string unquoted, a
/// final dot dropped.
fn authserv_id_of(value: &str) -> String {
    let mut plain = String::new();
    let mut depth = 0usize;
    for c in value.chars() {
        match c {
            '(' => depth += 1,
            ')' if depth > 0 => depth -= 1,
            _ if depth > 0 => {}
            '"' => {}
            c => plain.push(c),
        }
    }
    let id = plain
        .trim_start()
        .split([';', ' ', '\t'])
        .next()
        .unwrap_or("");
    id.trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_in_our_name_are_removed_and_others_kept() {
        let message = b"Authentication-Results: mx.example.com;\r\n\tdkim=pass\r\n\
            Authentication-Results: other.example; spf=pass\r\n\
            Subject: hi\r\n\
            authentication-results:   MX.example.com; dmarc=pass\r\n\r\n\
            Authentication-Results: mx.example.com; in the body\r\n";
        let kept = without_our_results(message, "mx.example.com").expect("removed");
        assert_eq!(
            String::from_utf8(kept).expect("utf8"),
            "Authentication-Results: other.example; spf=pass\r\nSubject: hi\r\n\r\n\
             Authentication-Results: mx.example.com; in the body\r\n"
        );
        assert_eq!(
            without_our_results(b"Subject: hi\r\n\r\nbody\r\n", "mx.example.com"),
            None
        );
        // Quoted, after a comment, with a final dot: still ours.
        for disguised in [
            "Authentication-Results: \"mx.example.com\"; dkim=pass\r\n\r\n",
            "Authentication-Results: (trust me) mx.example.com; dkim=pass\r\n\r\n",
            "Authentication-Results: mx.example.com.; dkim=pass\r\n\r\n",
        ] {
            assert_eq!(
                without_our_results(disguised.as_bytes(), "mx.example.com"),
                Some(b"\r\n".to_vec()),
                "{disguised}"
            );
        }
        // A longer name that starts with ours is someone else's.
        assert_eq!(
            without_our_results(
                b"Authentication-Results: mx.example.com.evil; x=1\r\n\r\n",
                "mx.example.com"
            ),
            None
        );
    }
}
