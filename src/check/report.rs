//! What `postern check` prints: the `Report` (serialized as the documented
//! `--json` object; the field names are a contract, see README.md) and its
//! one-screen table. Receives the probes and verdicts from mod.rs.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;

use serde::Serialize;

use super::classify::{self, Status, Verdict};
use super::probe::{AuthOutcome, PortProbe, Security, SendOutcome, Stop};
use super::recommend::{Recommendation, Settings};
use super::tls::{TlsSession, rfc3339};
use super::wayout::WayOut;
use super::wire::millis;
use super::{OutboundTarget, recommend};
use crate::clock::now_unix;

/// The `--json` object of `postern check HOST`.
#[derive(Debug, Serialize)]
pub struct Report {
    pub host: String,
    pub addresses: Vec<String>,
    /// Why the host cannot be reached at all (then every port says
    /// "unreachable"), else null.
    pub unreachable: Option<String>,
    pub elapsed_ms: u64,
    pub echo: EchoReport,
    pub ports: Vec<PortReport>,
    pub send: Option<SendReport>,
    /// At least one submission path works (exit code 0).
    pub ok: bool,
    pub settings: Option<Settings>,
    pub recommendation: String,
    /// When nothing of the host's gets through: the ISP relay found from
    /// this network, else null.
    pub way_out: Option<WayOut>,
}

#[derive(Debug, Serialize)]
pub struct EchoReport {
    /// A Postern server greeted, so the port echo was asked.
    pub asked: bool,
    /// The server answered: `ports` is what it saw, and interception was
    /// judged by it rather than by names.
    pub answered: bool,
    pub ports: Vec<u16>,
}

/// One port: always `port` and `status`; the rest as far as the probe got.
#[derive(Debug, Serialize)]
pub struct PortReport {
    pub port: u16,
    pub status: Status,
    pub reason: String,
    /// "implicit" (TLS from the first byte), "starttls" or "none".
    pub tls_mode: &'static str,
    pub address: Option<String>,
    pub latency_ms: Option<u64>,
    pub greeting: Option<String>,
    pub ehlo_name: Option<String>,
    pub tls: Option<TlsReport>,
    pub auth_mechanisms: Vec<String>,
    /// SIZE from EHLO, in octets; 0 means no fixed limit.
    pub size: Option<u64>,
    /// Port echo: true the server saw this probe, false it did not.
    pub seen_by_server: Option<bool>,
    pub auth: Option<AuthReport>,
}

#[derive(Debug, Serialize)]
pub struct TlsReport {
    pub version: String,
    pub cipher: String,
    /// "valid", "expired", "not-yet-valid", "self-signed", "unknown-issuer",
    /// "name-mismatch" or "invalid".
    pub certificate_status: &'static str,
    pub certificate: Option<CertReport>,
}

#[derive(Debug, Serialize)]
pub struct CertReport {
    pub names: Vec<String>,
    pub issuer: String,
    pub not_after: String,
    pub days_left: i64,
    pub self_signed: bool,
}

#[derive(Debug, Serialize)]
pub struct AuthReport {
    /// "accepted", "refused" or "not-tried".
    pub result: &'static str,
    pub mechanism: Option<String>,
    pub detail: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct SendReport {
    /// Null when no port could be tried.
    pub port: Option<u16>,
    pub accepted: bool,
    pub queue_id: Option<String>,
    pub reply: String,
}

/// Everything `Report::build` needs.
pub struct Parts {
    pub host: String,
    pub addrs: Vec<IpAddr>,
    pub probes: Vec<PortProbe>,
    pub verdicts: Vec<Verdict>,
    pub echo: Option<BTreeSet<u16>>,
    pub echo_asked: bool,
    pub unreachable: Option<String>,
    pub recommendation: Recommendation,
    pub send: Option<SendOutcome>,
    pub way_out: Option<WayOut>,
    pub elapsed: Duration,
}

fn tls_mode(s: Security) -> &'static str {
    match s {
        Security::Implicit => "implicit",
        Security::StartTls => "starttls",
        Security::Plain => "none",
    }
}

fn tls_report(t: &TlsSession, now: i64) -> TlsReport {
    TlsReport {
        version: t.version.clone(),
        cipher: t.cipher.clone(),
        certificate_status: t.verdict.word(),
        certificate: t.cert.as_ref().map(|c| CertReport {
            names: c.names.clone(),
            issuer: c.issuer.clone(),
            not_after: rfc3339(c.not_after),
            days_left: (c.not_after - now).div_euclid(86_400),
            self_signed: c.self_signed,
        }),
    }
}

fn auth_report(a: &AuthOutcome) -> AuthReport {
    match a {
        AuthOutcome::Accepted { mechanism } => AuthReport {
            result: "accepted",
            mechanism: Some(mechanism.clone()),
            detail: None,
        },
        AuthOutcome::Refused { reply } => AuthReport {
            result: "refused",
            mechanism: None,
            detail: Some(reply.summary()),
        },
        AuthOutcome::NotTried(why) => AuthReport {
            result: "not-tried",
            mechanism: None,
            detail: Some(why.clone()),
        },
    }
}

/// One port's JSON object.
pub fn port_report(p: &PortProbe, v: &Verdict, now: i64) -> PortReport {
    // The TLS of a probe stopped by a TLS failure is in the reason; one that
    // completed shows its certificate even when a client would refuse it.
    let tls = match &p.stop {
        Some(Stop::Tls(_)) => None,
        _ => p.tls.as_ref().map(|t| tls_report(t, now)),
    };
    PortReport {
        port: p.port,
        status: v.status,
        reason: v.reason.clone(),
        tls_mode: tls_mode(p.security),
        address: p.address.map(|a| a.to_string()),
        latency_ms: p.latency.map(millis),
        greeting: p.greeting.as_ref().map(|g| g.summary()),
        ehlo_name: p.ehlo.as_ref().and_then(|e| e.name.clone()),
        tls,
        auth_mechanisms: p.ehlo.as_ref().map(|e| e.auth.clone()).unwrap_or_default(),
        size: p.ehlo.as_ref().and_then(|e| e.size),
        seen_by_server: v.echo,
        auth: p.auth.as_ref().map(auth_report),
    }
}

impl Report {
    pub fn build(parts: Parts) -> Report {
        let now = now_unix();
        let ports = parts
            .probes
            .iter()
            .zip(&parts.verdicts)
            .map(|(p, v)| port_report(p, v, now))
            .collect();
        let send_ok = parts.send.as_ref().is_none_or(|s| s.accepted);
        Report {
            host: parts.host,
            addresses: parts.addrs.iter().map(ToString::to_string).collect(),
            unreachable: parts.unreachable,
            elapsed_ms: millis(parts.elapsed),
            echo: EchoReport {
                asked: parts.echo_asked,
                answered: parts.echo.is_some(),
                ports: parts.echo.into_iter().flatten().collect(),
            },
            ports,
            send: parts.send.map(|s| SendReport {
                port: s.port,
                accepted: s.accepted,
                queue_id: s.queue_id,
                reply: s.stopped.as_ref().map_or(s.detail, classify::describe_stop),
            }),
            ok: parts.recommendation.works && send_ok,
            settings: parts.recommendation.settings,
            recommendation: match &parts.way_out {
                Some(way) => format!("{}\n{}", parts.recommendation.text, way.text),
                None => parts.recommendation.text,
            },
            way_out: parts.way_out,
        }
    }

    /// The report for a host whose name does not resolve.
    pub fn unreachable(
        host: &str,
        ports: &[(u16, Security)],
        why: String,
        elapsed: Duration,
    ) -> Report {
        let probes: Vec<PortProbe> = ports.iter().map(|&(p, s)| PortProbe::new(p, s)).collect();
        let verdicts: Vec<Verdict> = probes
            .iter()
            .map(|_| Verdict {
                status: Status::Unreachable,
                reason: why.clone(),
                echo: None,
            })
            .collect();
        let recommendation = recommend::recommend(host, &probes, &verdicts, Some(&why), false);
        Report::build(Parts {
            host: host.to_string(),
            addrs: Vec::new(),
            probes,
            verdicts,
            echo: None,
            echo_asked: false,
            unreachable: Some(why),
            recommendation,
            send: None,
            way_out: None,
            elapsed,
        })
    }

    /// The one-screen table.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let addrs = if self.addresses.is_empty() {
            String::new()
        } else {
            format!(" ({})", self.addresses.join(", "))
        };
        let _ = writeln!(
            out,
            "postern check {}{addrs}: {:.1} s\n",
            self.host,
            self.elapsed_ms as f64 / 1000.0
        );
        if let Some(why) = &self.unreachable {
            let _ = writeln!(out, "{}: unreachable: {why}\n", self.host);
        } else {
            table(&mut out, self.ports.iter().map(|p| (String::new(), p)));
            echo_line(&mut out, &self.echo);
        }
        if let Some(s) = &self.send {
            let port = s.port.unwrap_or_default();
            let what = match (&s.queue_id, s.accepted) {
                (Some(id), true) => format!("accepted on port {port}, queue id {id}"),
                (None, true) => format!("accepted on port {port} ({})", s.reply),
                _ => format!("not accepted: {}", s.reply),
            };
            let _ = writeln!(out, "Test message: {what}\n");
        }
        let _ = writeln!(out, "{}", self.recommendation);
        out
    }
}

fn echo_line(out: &mut String, echo: &EchoReport) {
    let line = match (echo.asked, echo.answered) {
        (false, _) => return,
        (true, true) => format!(
            "Port echo: the server saw this check on port {}.",
            echo.ports
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        (true, false) => "Port echo: no answer (an older server); interception judged by names \
                          and certificates."
            .into(),
    };
    let _ = writeln!(out, "{line}\n");
}

/// The details column: for an open port what a user wants to know, else
/// the reason.
fn details(p: &PortReport) -> String {
    if p.status != Status::Open {
        return p.reason.clone();
    }
    let mut parts = Vec::new();
    parts.extend(p.ehlo_name.clone());
    if let Some(tls) = &p.tls {
        let mut words = tls.version.clone();
        if let Some(c) = &tls.certificate {
            let _ = write!(
                words,
                ", certificate {} until {} ({} days)",
                c.names.join(" "),
                c.not_after.get(..10).unwrap_or_default(),
                c.days_left
            );
        }
        if tls.certificate_status != "valid" {
            let _ = write!(words, " [{}]", tls.certificate_status);
        }
        parts.push(words);
    }
    if !p.auth_mechanisms.is_empty() {
        parts.push(format!("AUTH {}", p.auth_mechanisms.join(" ")));
    }
    match p.size {
        Some(0) => parts.push("SIZE unlimited".into()),
        Some(n) => parts.push(format!("SIZE {} MB", n / 1_000_000)),
        None => {}
    }
    if let Some(a) = &p.auth {
        parts.push(match a.result {
            "accepted" => "password accepted".to_string(),
            _ => format!(
                "password {}: {}",
                a.result,
                a.detail.clone().unwrap_or_default()
            ),
        });
    }
    parts.join("; ")
}

/// Renders rows of (label, port); the label column appears when non-empty.
fn table<'a>(out: &mut String, rows: impl Iterator<Item = (String, &'a PortReport)>) {
    let rows: Vec<(String, &PortReport)> = rows.collect();
    let label_width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    let label_head = if label_width > 0 {
        format!("{:label_width$}  ", "HOST")
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "{label_head}{:<5} {:<9} {:<12} {:>7}  DETAILS",
        "PORT", "TLS", "STATUS", "TIME"
    );
    for (label, p) in rows {
        let label = if label_width > 0 {
            format!("{label:label_width$}  ")
        } else {
            String::new()
        };
        let mode = match p.tls_mode {
            "implicit" => "SSL/TLS",
            "starttls" => "STARTTLS",
            _ => "none",
        };
        let time = p
            .latency_ms
            .map(|ms| format!("{ms} ms"))
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "{label}{:<5} {:<9} {:<12} {:>7}  {}",
            p.port,
            mode,
            p.status.word(),
            time,
            details(p)
        );
    }
    out.push('\n');
}

/// What an `--outbound` target is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    Mx,
    Relay,
    FallbackRelay,
}

/// The `--json` object of `postern check --outbound`.
#[derive(Debug, Serialize)]
pub struct OutboundReport {
    pub mode: &'static str,
    pub elapsed_ms: u64,
    pub targets: Vec<TargetReport>,
    /// No MX host tried (well-known ones, or those named) answered on port 25.
    pub port25_blocked: bool,
    /// Mail can leave: port 25 works, or a configured relay does.
    pub ok: bool,
    pub recommendation: String,
}

#[derive(Debug, Serialize)]
pub struct TargetReport {
    /// "mx", "relay" or "fallback_relay".
    pub kind: TargetKind,
    pub host: String,
    #[serde(flatten)]
    pub port: PortReport,
}

impl OutboundReport {
    pub fn build(
        targets: Vec<OutboundTarget>,
        probes: Vec<(String, PortProbe)>,
        verdicts: Vec<Verdict>,
        elapsed: Duration,
    ) -> OutboundReport {
        let now = now_unix();
        let rows: Vec<TargetReport> = targets
            .iter()
            .zip(probes.iter().zip(&verdicts))
            .map(|(t, ((host, p), v))| TargetReport {
                kind: t.kind,
                host: host.clone(),
                port: port_report(p, v, now),
            })
            .collect();
        let works = |kind: TargetKind| {
            rows.iter()
                .any(|r| r.kind == kind && r.port.status == Status::Open)
        };
        let has = |kind: TargetKind| rows.iter().any(|r| r.kind == kind);
        let first = |kind: TargetKind| rows.iter().find(|r| r.kind == kind);
        let port25 = works(TargetKind::Mx);
        let port25_blocked = has(TargetKind::Mx) && !port25;
        let describe = |r: &TargetReport| {
            format!(
                "{}:{} is {}: {}",
                r.host,
                r.port.port,
                r.port.status.word(),
                r.port.reason
            )
        };
        let mut text = Vec::new();
        if port25 {
            text.push(
                "This machine reaches port 25 of other mail servers: direct delivery works."
                    .to_string(),
            );
        } else if port25_blocked {
            let tried: Vec<String> = rows
                .iter()
                .filter(|r| r.kind == TargetKind::Mx)
                .map(|r| format!("{}:{}", r.host, r.port.port))
                .collect();
            text.push(format!(
                "Outbound port 25 appears to be blocked from this machine (none of the mail \
                 servers tried answered on it: {}): direct delivery to MX hosts will fail.",
                tried.join(", ")
            ));
        }
        for (kind, key) in [
            (TargetKind::Relay, "[relay]"),
            (TargetKind::FallbackRelay, "[fallback_relay]"),
        ] {
            match first(kind) {
                Some(r) if r.port.status == Status::Open => text.push(format!(
                    "{key} {}:{} works{}.",
                    r.host,
                    r.port.port,
                    r.port
                        .auth
                        .as_ref()
                        .map(|a| format!(" (AUTH {})", a.result))
                        .unwrap_or_default()
                )),
                Some(r) => text.push(format!("{key} does not work: {}.", describe(r))),
                None => {}
            }
        }
        let relay_ok = works(TargetKind::Relay) || works(TargetKind::FallbackRelay);
        if port25_blocked && !relay_ok {
            text.push(
                "Set [relay] (a smarthost on port 587, 465 or 2525, for example your provider's) \
                 or [fallback_relay] in the configuration, so mail can leave."
                    .to_string(),
            );
        }
        let auth_refused = rows.iter().any(|r| {
            r.kind != TargetKind::Mx && r.port.auth.as_ref().is_some_and(|a| a.result == "refused")
        });
        OutboundReport {
            mode: "outbound",
            elapsed_ms: millis(elapsed),
            targets: rows,
            port25_blocked,
            ok: (port25 || relay_ok) && !auth_refused,
            recommendation: text.join("\n"),
        }
    }

    pub fn render(&self) -> String {
        let mut out = format!(
            "postern check --outbound: {:.1} s\n\n",
            self.elapsed_ms as f64 / 1000.0
        );
        table(
            &mut out,
            self.targets.iter().map(|t| {
                let kind = match t.kind {
                    TargetKind::Mx => "",
                    TargetKind::Relay => " [relay]",
                    TargetKind::FallbackRelay => " [fallback_relay]",
                };
                (format!("{}{kind}", t.host), &t.port)
            }),
        );
        let _ = writeln!(out, "{}", self.recommendation);
        out
    }
}
