//! The DNS records a hosted domain should publish, for `postern dns`: MX, SPF,
//! DKIM, DMARC, the submission SRV records (RFC 6186 / 8314, in the same order
//! as the autoconfig lists ports), autoconfig and autodiscover names, MTA-STS
//! and TLS-RPT. Pure: the caller supplies the DKIM record text.

use crate::dkim::{DomainKey, KeyState};
use crate::http::endpoints::SubmissionEndpoint;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Record {
    /// Fully qualified, with the trailing dot.
    pub name: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The record data in zone-file form (TXT: the text, unquoted and whole).
    pub value: String,
    /// One line saying what the record is for.
    pub comment: String,
}

/// TXT strings hold at most 255 octets (RFC 1035 §3.3.14): long values, such as
/// an RSA-2048 DKIM key, are published as several strings.
pub fn txt_strings(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = value;
    while rest.len() > 255 {
        let mut cut = 255;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        out.push(&rest[..cut]);
        rest = &rest[cut..];
    }
    out.push(rest);
    out
}

impl Record {
    /// One zone-file line, preceded by its comment.
    pub fn zone_line(&self) -> String {
        let data = if self.kind == "TXT" {
            txt_strings(&self.value)
                .iter()
                .map(|s| format!("\"{}\"", s.replace('"', "\\\"")))
                .collect::<Vec<_>>()
                .join(" ")
        } else {
            self.value.clone()
        };
        format!(
            "; {}\n{:<40} 3600 IN {:<5} {}",
            self.comment, self.name, self.kind, data
        )
    }
}

/// A stable id for the MTA-STS policy text: it changes when the policy does,
/// as RFC 8461 §3.1 requires. FNV-1a, because any stable hash will do.
fn policy_id(policy: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in policy.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// A TXT record per DKIM key, saying what its state asks of the admin.
pub fn dkim_records(domain: &str, keys: &[(DomainKey, String)]) -> Vec<Record> {
    keys.iter()
        .map(|(key, value)| {
            let comment = match (key.state, key.retire_at) {
                (KeyState::Pending, _) => format!(
                    "DKIM public key ({}), new: signing switches to it once DNS serves it",
                    key.algorithm.tag()
                ),
                (KeyState::Retired, Some(at)) => format!(
                    "DKIM public key ({}), replaced: keep it published until {}, then remove it",
                    key.algorithm.tag(),
                    time::OffsetDateTime::from_unix_timestamp(at as i64)
                        .map(|t| t.date().to_string())
                        .unwrap_or_default()
                ),
                _ => format!(
                    "DKIM public key ({}; long keys are split into 255-octet strings)",
                    key.algorithm.tag()
                ),
            };
            Record {
                name: format!("{}._domainkey.{domain}.", key.selector),
                kind: "TXT",
                value: value.clone(),
                comment,
            }
        })
        .collect()
}

pub fn records(
    domain: &str,
    hostname: &str,
    spf: &str,
    dkim: &[(DomainKey, String)],
    endpoints: &[SubmissionEndpoint],
    mta_sts_policy: &str,
) -> Vec<Record> {
    let d = format!("{domain}.");
    let host = format!("{hostname}.");
    let rec = |name: String, kind: &'static str, value: String, comment: &str| Record {
        name,
        kind,
        value,
        comment: comment.to_string(),
    };
    let mut out = vec![
        rec(
            d.clone(),
            "MX",
            format!("10 {host}"),
            "mail for the domain goes to this server",
        ),
        rec(
            d.clone(),
            "TXT",
            spf.to_string(),
            "SPF: this server (the domain's MX) and each relay its mail goes through may send it",
        ),
    ];
    out.extend(dkim_records(domain, dkim));
    out.push(rec(
        format!("_dmarc.{d}"),
        "TXT",
        format!("v=DMARC1; p=quarantine; rua=mailto:postmaster@{domain}"),
        "DMARC: what receivers do with mail that fails SPF and DKIM",
    ));
    for (i, e) in endpoints.iter().enumerate() {
        let service = if e.implicit_tls {
            "_submissions"
        } else {
            "_submission"
        };
        let what = if e.implicit_tls {
            "implicit TLS"
        } else {
            "STARTTLS"
        };
        out.push(rec(
            format!("{service}._tcp.{d}"),
            "SRV",
            format!("{} 1 {} {host}", i * 10, e.port),
            &format!(
                "mail clients may submit on port {} ({what}); lower priority first",
                e.port
            ),
        ));
    }
    out.extend([
        rec(
            format!("autoconfig.{d}"),
            "CNAME",
            host.clone(),
            "Thunderbird autoconfiguration (needs [http] on this host)",
        ),
        rec(
            format!("autodiscover.{d}"),
            "CNAME",
            host.clone(),
            "Outlook Autodiscover (needs [http] on this host)",
        ),
        rec(
            format!("_autodiscover._tcp.{d}"),
            "SRV",
            format!("0 1 443 {host}"),
            "Outlook Autodiscover over HTTPS",
        ),
        rec(
            format!("mta-sts.{d}"),
            "CNAME",
            host.clone(),
            "MTA-STS policy host (needs [http] tls_addr on port 443)",
        ),
        rec(
            format!("_mta-sts.{d}"),
            "TXT",
            format!("v=STSv1; id={}", policy_id(mta_sts_policy)),
            "MTA-STS: a policy is published",
        ),
        rec(
            format!("_smtp._tls.{d}"),
            "TXT",
            format!("v=TLSRPTv1; rua=mailto:postmaster@{domain}"),
            "TLS-RPT: where to send TLS failure reports",
        ),
    ]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_txt_values_are_split_at_255_octets() {
        let long = "p".repeat(600);
        let parts = txt_strings(&long);
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [255, 255, 90]
        );
        assert_eq!(parts.concat(), long);
        let r = Record {
            name: "x.".into(),
            kind: "TXT",
            value: long,
            comment: "c".into(),
        };
        assert_eq!(r.zone_line().matches('"').count(), 6);
    }

    #[test]
    fn srv_priorities_follow_the_client_order() {
        let e = [
            SubmissionEndpoint {
                port: 465,
                implicit_tls: true,
            },
            SubmissionEndpoint {
                port: 587,
                implicit_tls: false,
            },
            SubmissionEndpoint {
                port: 26,
                implicit_tls: false,
            },
        ];
        let r = records(
            "example.com",
            "mx.example.com",
            "v=spf1 mx ~all",
            &[],
            &e,
            "policy",
        );
        let srv: Vec<String> = r
            .iter()
            .filter(|r| r.kind == "SRV" && r.name.starts_with("_sub"))
            .map(|r| format!("{} {}", r.name, r.value))
            .collect();
        assert_eq!(
            srv,
            [
                "_submissions._tcp.example.com. 0 1 465 mx.example.com.",
                "_submission._tcp.example.com. 10 1 587 mx.example.com.",
                "_submission._tcp.example.com. 20 1 26 mx.example.com.",
            ]
        );
        assert_eq!(r[0].value, "10 mx.example.com.");
    }
}

/// What `postern dns --check` found for one record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase", tag = "status", content = "found")]
pub enum Finding {
    Ok,
    Missing,
    /// Something else is published there (what was found).
    Wrong(String),
}

/// Compares a record with the values found at its name and type. SPF, DMARC and
/// TLS-RPT records only need to exist (a site may have its own policy); the
/// others must match.
pub fn compare(expected: &Record, found: &[String]) -> Finding {
    let norm = |s: &str| {
        s.split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase()
    };
    let want = norm(&expected.value);
    if found.iter().any(|f| norm(f) == want) {
        return Finding::Ok;
    }
    let tag = want
        .split(';')
        .next()
        .unwrap_or("")
        .split(' ')
        .next()
        .unwrap_or("")
        .to_string();
    let same_kind: Vec<&String> = found
        .iter()
        .filter(|f| expected.kind != "TXT" || norm(f).starts_with(&tag))
        .collect();
    if same_kind.is_empty() {
        return Finding::Missing;
    }
    let lenient =
        expected.kind == "TXT" && ["v=spf1", "v=dmarc1", "v=tlsrptv1"].contains(&tag.as_str());
    if lenient && same_kind.len() == 1 {
        return Finding::Ok;
    }
    Finding::Wrong(
        same_kind
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(" | "),
    )
}

#[cfg(test)]
mod compare_tests {
    use super::*;

    fn rec(kind: &'static str, value: &str) -> Record {
        Record {
            name: "example.com.".into(),
            kind,
            value: value.into(),
            comment: String::new(),
        }
    }

    #[test]
    fn findings() {
        assert_eq!(
            compare(
                &rec("MX", "10 mx.example.com."),
                &["10 MX.example.com.".into()]
            ),
            Finding::Ok
        );
        assert_eq!(
            compare(&rec("MX", "10 mx.example.com."), &[]),
            Finding::Missing
        );
        assert_eq!(
            compare(
                &rec("MX", "10 mx.example.com."),
                &["10 other.example.".into()]
            ),
            Finding::Wrong("10 other.example.".into())
        );
        assert_eq!(
            compare(
                &rec("TXT", "v=spf1 mx ~all"),
                &[
                    "v=spf1 include:x -all".into(),
                    "google-site-verification=1".into()
                ]
            ),
            Finding::Ok
        );
        assert!(matches!(
            compare(
                &rec("TXT", "v=spf1 mx ~all"),
                &["v=spf1 a".into(), "v=spf1 mx".into()]
            ),
            Finding::Wrong(_)
        ));
        assert!(matches!(
            compare(
                &rec("TXT", "v=DKIM1; k=rsa; p=AAA"),
                &["v=DKIM1; k=rsa; p=BBB".into()]
            ),
            Finding::Wrong(_)
        ));
        assert_eq!(
            compare(&rec("TXT", "v=DKIM1; k=rsa; p=AAA"), &["unrelated".into()]),
            Finding::Missing
        );
    }
}
