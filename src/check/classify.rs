//! Pure judgement of `postern check`: turns what the probes saw (probe.rs)
//! into one status word per port with a reason in plain words, decides which
//! answers came from the host's own server (port echo first, then names and
//! certificates), and writes the recommendation. No I/O: every rule is tested
//! below from plain data.

use std::collections::{BTreeMap, BTreeSet};

use super::probe::{ConnectError, PortProbe, Security, Step, Stop};
use super::tls::{CertVerdict, TlsSession, rfc3339};
use super::wire::WireError;

/// The classification of one port; the words are part of the JSON contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// An SMTP greeting from the host's server, and TLS a client accepts.
    Open,
    /// RST, ICMP reject, or a close without a greeting.
    Refused,
    /// No answer before the deadline: a silent drop.
    Filtered,
    /// Something answered, but not the host's server.
    Intercepted,
    /// The host's server answered, but STARTTLS or implicit TLS fails.
    TlsFailed,
    /// DNS failure or no route: the whole host, not one port.
    Unreachable,
}

impl Status {
    pub fn word(self) -> &'static str {
        match self {
            Status::Open => "open",
            Status::Refused => "refused",
            Status::Filtered => "filtered",
            Status::Intercepted => "intercepted",
            Status::TlsFailed => "tls-failed",
            Status::Unreachable => "unreachable",
        }
    }
}

/// How much TLS a target must offer to count as working.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsPolicy {
    /// A certificate valid for the host: what a mail client demands.
    Valid,
    /// Encryption with any certificate (a relay with `tls_verify = false`).
    Encrypted,
    /// Reachability only (MX hosts for `--outbound`: STARTTLS is opportunistic).
    Optional,
}

/// One port's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub status: Status,
    pub reason: String,
    /// What the port echo said: `Some(true)` the host's server saw this probe.
    pub echo: Option<bool>,
}

impl Verdict {
    fn new(status: Status, reason: impl Into<String>) -> Verdict {
        Verdict {
            status,
            reason: reason.into(),
            echo: None,
        }
    }
}

/// The host cannot be reached at all: every port failed for lack of a route.
pub fn host_unreachable(probes: &[PortProbe]) -> Option<String> {
    let mut reason = None;
    for p in probes {
        match &p.stop {
            Some(Stop::Connect(ConnectError::NoRoute(e))) => reason = Some(e.clone()),
            _ => return None,
        }
    }
    reason.map(|e| format!("no route to the host ({e})"))
}

/// Sentence for a probe that stopped, whatever the policy.
pub fn describe_stop(stop: &Stop) -> String {
    match stop {
        Stop::Connect(ConnectError::Refused) => {
            "connection refused (RST): nothing listens, or a firewall rejects it".into()
        }
        Stop::Connect(ConnectError::TimedOut) => {
            "no answer before the deadline: the packets are dropped on the way (a silent block)"
                .into()
        }
        Stop::Connect(ConnectError::NoRoute(e)) => format!("rejected on the way ({e})"),
        Stop::Connect(ConnectError::Other(e)) => format!("the connection failed: {e}"),
        Stop::Greeting(WireError::Timeout) => "the connection opened, but nothing spoke, not even \
             after an EHLO: a firewall or proxy holds it, or a service that is not SMTP"
            .into(),
        Stop::Greeting(WireError::Closed) => {
            "the connection was accepted, then closed without a greeting".into()
        }
        Stop::Greeting(WireError::NotSmtp { sample }) => {
            format!("it answered{}, not SMTP: {sample:?}", looks_like(sample))
        }
        Stop::Greeting(WireError::Oversized(n)) => {
            format!("it answered with something that is not SMTP (a reply over {n} octets)")
        }
        Stop::Greeting(WireError::Io(e)) => format!("the connection failed: {e}"),
        Stop::Rejected { step, reply } => {
            format!(
                "the server refused {}: {}",
                step_words(*step),
                reply.summary()
            )
        }
        Stop::NoStartTls => "the server does not offer STARTTLS on this port".into(),
        Stop::Injected => "the server sent data right after agreeing to STARTTLS (a plaintext \
             injection): the connection was dropped"
            .into(),
        Stop::Tls(f) => f.to_string(),
        Stop::Wire { step, error } => format!("{} failed: {error}", step_words(*step)),
    }
}

fn step_words(step: Step) -> &'static str {
    match step {
        Step::Greeting => "the session",
        other => other.word(),
    }
}

fn looks_like(sample: &str) -> &'static str {
    let lower = sample.to_ascii_lowercase();
    if lower.starts_with("http/") || lower.contains("<html") || lower.contains("<!doctype") {
        " in HTTP"
    } else if lower.starts_with("ssh-") {
        " in SSH"
    } else {
        ""
    }
}

/// Why a certificate would be refused, in words.
pub fn verdict_words(tls: &TlsSession, host: &str) -> String {
    let names = tls
        .cert
        .as_ref()
        .map(|c| c.names.join(", "))
        .unwrap_or_default();
    match &tls.verdict {
        CertVerdict::Valid => "the certificate is valid".into(),
        CertVerdict::Expired => format!(
            "the certificate expired on {}",
            tls.cert
                .as_ref()
                .map(|c| rfc3339(c.not_after))
                .unwrap_or_default()
        ),
        CertVerdict::NotYetValid => "the certificate is not valid yet".into(),
        CertVerdict::SelfSigned => format!("the certificate ({names}) is self-signed"),
        CertVerdict::UnknownIssuer => format!(
            "the certificate ({names}) is issued by an unknown authority ({})",
            tls.cert.as_ref().map(|c| c.issuer.as_str()).unwrap_or("?")
        ),
        CertVerdict::NameMismatch => {
            format!("the certificate is for {names}, not for {host}")
        }
        CertVerdict::Other(e) => format!("the certificate is refused ({e})"),
    }
}

/// The ports the host's server says saw our token, from the echo answers
/// (`(asked port, ports)`). An answer counts only if it includes the port it
/// was asked on (a server that did not see the probe there is not the one we
/// probed); of those, the one that saw the most ports wins.
pub fn echo_home(answers: &[(u16, Vec<u16>)]) -> Option<BTreeSet<u16>> {
    answers
        .iter()
        .filter(|(asked, seen)| seen.contains(asked))
        .max_by_key(|(asked, seen)| (seen.len(), std::cmp::Reverse(*asked)))
        .map(|(_, seen)| seen.iter().copied().collect())
}

/// Classifies the ports of one host, as a mail client would need them.
pub fn classify(host: &str, probes: &[PortProbe], echo: Option<&BTreeSet<u16>>) -> Vec<Verdict> {
    let any_connected = probes.iter().any(|p| p.latency.is_some());
    let mut verdicts: Vec<Verdict> = probes
        .iter()
        .map(|p| base(p, TlsPolicy::Valid, host, any_connected))
        .collect();
    identify(host, probes, echo, &mut verdicts);
    verdicts
}

/// The verdict from this port's own dialogue, before comparing ports.
pub fn base(p: &PortProbe, policy: TlsPolicy, host: &str, any_connected: bool) -> Verdict {
    let reachable_only = policy == TlsPolicy::Optional;
    let Some(stop) = &p.stop else {
        return completed(p, policy, host);
    };
    let status = match stop {
        Stop::Connect(ConnectError::Refused | ConnectError::Other(_)) => Status::Refused,
        Stop::Connect(ConnectError::TimedOut) | Stop::Greeting(WireError::Timeout) => {
            Status::Filtered
        }
        // A route to the host exists (another port connected): an ICMP
        // reject from a firewall for this port alone.
        Stop::Connect(ConnectError::NoRoute(_)) if any_connected => Status::Refused,
        Stop::Connect(ConnectError::NoRoute(_)) => Status::Unreachable,
        Stop::Greeting(WireError::Closed | WireError::Io(_)) => Status::Refused,
        Stop::Greeting(WireError::NotSmtp { .. } | WireError::Oversized(_)) => {
            if p.tls.as_ref().is_some_and(|t| t.verdict.is_valid()) {
                // The certificate proves the host's own server answers: it
                // just does not offer SMTP here (a web server on 443).
                return Verdict::new(
                    Status::Refused,
                    format!(
                        "{host}'s own server answers here, but {}",
                        describe_stop(stop)
                    ),
                );
            }
            Status::Intercepted
        }
        Stop::Rejected {
            step: Step::Greeting,
            ..
        } if reachable_only => {
            return Verdict::new(Status::Open, format!("port open; {}", describe_stop(stop)));
        }
        Stop::Rejected {
            step: Step::StartTls,
            ..
        }
        | Stop::Wire {
            step: Step::StartTls | Step::Tls,
            ..
        }
        | Stop::NoStartTls
        | Stop::Injected
        | Stop::Tls(_) => {
            if reachable_only {
                return Verdict::new(
                    Status::Open,
                    format!("port open; TLS does not work: {}", describe_stop(stop)),
                );
            }
            Status::TlsFailed
        }
        Stop::Rejected { .. } | Stop::Wire { .. } => Status::Refused,
    };
    Verdict::new(status, describe_stop(stop))
}

/// A dialogue that reached its end: open, unless the certificate fails.
fn completed(p: &PortProbe, policy: TlsPolicy, host: &str) -> Verdict {
    let tls_words = match (&p.tls, policy) {
        (Some(tls), TlsPolicy::Valid) if !tls.verdict.is_valid() => {
            return Verdict::new(Status::TlsFailed, verdict_words(tls, host));
        }
        (None, TlsPolicy::Valid | TlsPolicy::Encrypted) if p.security != Security::Plain => {
            return Verdict::new(Status::TlsFailed, "no TLS on this port");
        }
        (Some(tls), _) if tls.verdict.is_valid() => format!("{}, valid certificate", tls.version),
        (Some(tls), _) => format!("{} ({})", tls.version, verdict_words(tls, host)),
        (None, _) => "no TLS".into(),
    };
    let greeting = p.greeting.as_ref().map(|g| g.summary()).unwrap_or_default();
    Verdict::new(Status::Open, format!("{greeting}; {tls_words}"))
}

/// The names a port's answerer gave for itself.
fn names_of(p: &PortProbe) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = p.ehlo_names.iter().cloned().collect();
    names.extend(p.greeting.as_ref().and_then(|g| g.first_word()));
    names
}

fn cert_valid(p: &PortProbe) -> bool {
    p.tls.as_ref().is_some_and(|t| t.verdict.is_valid())
}

fn cert_id(p: &PortProbe) -> Option<&str> {
    Some(p.tls.as_ref()?.cert.as_ref()?.id.as_str())
}

/// Marks the ports whose answer did not come from the host's server.
fn identify(host: &str, probes: &[PortProbe], echo: Option<&BTreeSet<u16>>, v: &mut [Verdict]) {
    let host = host.to_ascii_lowercase();
    // Ports whose answerer is an SMTP server (greeting read) and not yet
    // judged intercepted for speaking something else.
    let answered: Vec<usize> = (0..probes.len())
        .filter(|&i| probes.get(i).is_some_and(|p| p.greeting.is_some()))
        .filter(|&i| v.get(i).is_some_and(|v| v.status != Status::Intercepted))
        .collect();
    let mut confirmed = BTreeSet::new();
    if let Some(seen) = echo {
        for &i in &answered {
            let (Some(p), Some(verdict)) = (probes.get(i), v.get_mut(i)) else {
                continue;
            };
            if !p.token_sent {
                continue;
            }
            let was_seen = seen.contains(&p.port);
            verdict.echo = Some(was_seen);
            if was_seen {
                confirmed.insert(i);
            } else {
                *verdict = Verdict {
                    status: Status::Intercepted,
                    reason: format!(
                        "{host}'s server never saw this connection (port echo): something on \
                         the way answered in its place{}",
                        greets_as(p)
                    ),
                    echo: Some(false),
                };
            }
        }
    }
    by_names(&host, probes, &answered, &confirmed, echo.is_none(), v);
}

/// Without the echo's word, compares names and certificates: with the
/// other ports (the host's server is what most of them show), and with the
/// host itself when nothing else vouches for the answerer.
fn by_names(
    host: &str,
    probes: &[PortProbe],
    answered: &[usize],
    confirmed: &BTreeSet<usize>,
    no_echo: bool,
    v: &mut [Verdict],
) {
    let home = home_ports(host, probes, answered, confirmed);
    let home_names: BTreeSet<String> = home
        .iter()
        .filter_map(|&i| probes.get(i))
        .flat_map(names_of)
        .chain([host.to_string()])
        .collect();
    let home_certs: BTreeSet<&str> = home
        .iter()
        .filter_map(|&i| probes.get(i).and_then(cert_id))
        .collect();
    let reference = home.first().and_then(|&i| probes.get(i));
    let host_is_name = host.parse::<std::net::IpAddr>().is_err();
    for &i in answered {
        let (Some(p), Some(verdict)) = (probes.get(i), v.get_mut(i)) else {
            continue;
        };
        if confirmed.contains(&i) || verdict.echo == Some(false) || cert_valid(p) {
            continue;
        }
        let names = names_of(p);
        let vouched = p.tls.as_ref().is_some_and(|t| t.verdict.chain_ok());
        let what = if !names.is_empty() && names.is_disjoint(&home_names) {
            let home_words = reference
                .map(|r| format!(", while port {} greets as {}", r.port, join(&names_of(r))))
                .unwrap_or_default();
            format!("it greets as {}{home_words}", join(&names))
        } else if cert_id(p).is_some_and(|id| !home_certs.is_empty() && !home_certs.contains(id)) {
            "its certificate differs from the other ports'".to_string()
        } else if no_echo
            && host_is_name
            && !vouched
            && !names.is_empty()
            && !names.iter().any(|n| related(n, host))
        {
            format!(
                "it greets as {}, a name unrelated to {host}, and no trusted certificate vouches \
                 for it",
                join(&names)
            )
        } else {
            continue;
        };
        *verdict = Verdict {
            status: Status::Intercepted,
            reason: format!("not {host}'s server: {what}"),
            echo: verdict.echo,
        };
    }
}

/// Two names of one organisation: the same registered domain, roughly (the
/// last two labels, three under a country's second level like co.uk).
fn related(a: &str, b: &str) -> bool {
    fn base(name: &str) -> Vec<&str> {
        let labels: Vec<&str> = name.trim_end_matches('.').rsplit('.').collect();
        let country_second = labels.first().is_some_and(|tld| tld.len() == 2)
            && labels.get(1).is_some_and(|l| {
                matches!(
                    *l,
                    "co" | "com" | "net" | "org" | "ac" | "gov" | "edu" | "ne" | "or"
                )
            });
        labels
            .into_iter()
            .take(if country_second { 3 } else { 2 })
            .collect()
    }
    base(&a.to_ascii_lowercase()) == base(&b.to_ascii_lowercase())
}

fn greets_as(p: &PortProbe) -> String {
    let names = names_of(p);
    if names.is_empty() {
        String::new()
    } else {
        format!(" (it greets as {})", join(&names))
    }
}

fn join(names: &BTreeSet<String>) -> String {
    names.iter().cloned().collect::<Vec<_>>().join(" / ")
}

/// The ports that show the host's own server, strongest evidence first:
/// confirmed by the echo; a certificate valid for the host; a name equal to
/// the host; else the name most ports give (ties go to the submission ports,
/// which ISPs redirect less often than 25).
fn home_ports(
    host: &str,
    probes: &[PortProbe],
    answered: &[usize],
    confirmed: &BTreeSet<usize>,
) -> Vec<usize> {
    let pick = |f: &dyn Fn(&PortProbe) -> bool| -> Vec<usize> {
        answered
            .iter()
            .copied()
            .filter(|&i| probes.get(i).is_some_and(f))
            .collect()
    };
    if !confirmed.is_empty() {
        return confirmed.iter().copied().collect();
    }
    let by_cert = pick(&cert_valid);
    if !by_cert.is_empty() {
        return by_cert;
    }
    let by_name = pick(&|p| names_of(p).contains(host));
    if !by_name.is_empty() {
        return by_name;
    }
    let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for &i in answered {
        if let Some(name) = probes
            .get(i)
            .and_then(|p| p.greeting.as_ref()?.first_word())
        {
            groups.entry(name).or_default().push(i);
        }
    }
    let rank = |ports: &Vec<usize>| {
        let best = ports
            .iter()
            .filter_map(|&i| probes.get(i))
            .map(|p| preference(p.port))
            .min()
            .unwrap_or(u16::MAX);
        (ports.len(), std::cmp::Reverse(best))
    };
    groups.into_values().max_by_key(rank).unwrap_or_default()
}

/// The order in which ports are recommended: 465 (implicit TLS), 587, 26,
/// then the others, and 25 last (the port ISPs block first).
pub fn preference(port: u16) -> u16 {
    match port {
        465 => 0,
        587 => 1,
        26 => 2,
        25 => u16::MAX - 1,
        other => 3 + other / 1024,
    }
}

/// For `--outbound`: several unrelated mail servers that all greet with one
/// name are one server: port 25 is redirected to the network's own relay.
pub fn outbound_interception(targets: &[(String, PortProbe)], verdicts: &mut [Verdict]) {
    let mut by_name: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    for (host, p) in targets {
        if let Some(name) = p.greeting.as_ref().and_then(|g| g.first_word()) {
            by_name.entry(name).or_default().insert(host.as_str());
        }
    }
    for ((_, p), verdict) in targets.iter().zip(verdicts.iter_mut()) {
        let Some(name) = p.greeting.as_ref().and_then(|g| g.first_word()) else {
            continue;
        };
        let hosts = by_name.get(&name).map(BTreeSet::len).unwrap_or(0);
        if hosts >= 2 {
            *verdict = Verdict::new(
                Status::Intercepted,
                format!(
                    "{hosts} unrelated mail servers all greet as {name}: port 25 is redirected \
                     to one server on the way"
                ),
            );
        }
    }
}

#[cfg(test)]
#[path = "classify_tests.rs"]
mod tests;
