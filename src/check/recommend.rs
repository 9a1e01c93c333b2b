//! The closing advice of `postern check` (pure): from the classified ports,
//! the settings to type into a mail client, in the order 465 (implicit TLS),
//! 587, 26, others; or what to do when no port works. Tested in
//! classify_tests.rs with the classification it follows.

use super::classify::{Status, Verdict, preference};
use super::probe::{AuthOutcome, PortProbe, Security};
use super::tls::CertVerdict;

/// The settings to type into a mail client.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Settings {
    pub server: String,
    pub port: u16,
    /// "SSL/TLS" or "STARTTLS", as mail clients name them.
    pub security: String,
}

/// The closing advice, and whether a submission path works (the exit code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recommendation {
    pub works: bool,
    pub settings: Option<Settings>,
    pub text: String,
    /// Nothing of the host's got through: the way out is elsewhere
    /// (wayout.rs finds it).
    pub blocked: bool,
}

/// The first words for a network that lets nothing through.
pub const ALL_BLOCKED: &str = "Every submission port is blocked from this network";

/// Writes the recommendation for a user's mail client.
pub fn recommend(
    host: &str,
    probes: &[PortProbe],
    verdicts: &[Verdict],
    unreachable: Option<&str>,
    with_password: bool,
) -> Recommendation {
    let fail = |text: String| Recommendation {
        works: false,
        settings: None,
        text,
        blocked: false,
    };
    if let Some(why) = unreachable {
        return fail(format!(
            "{host} cannot be reached from this network: {why}. Check the server name and the \
             network connection."
        ));
    }
    let mut open: Vec<&PortProbe> = probes
        .iter()
        .zip(verdicts)
        .filter(|(p, v)| v.status == Status::Open && p.security != Security::Plain)
        .map(|(p, _)| p)
        .collect();
    open.sort_by_key(|p| preference(p.port));
    let submission: Vec<&PortProbe> = open
        .iter()
        .copied()
        .filter(|p| p.ehlo.as_ref().is_some_and(|e| !e.auth.is_empty()))
        .collect();
    let usable: Vec<&PortProbe> = if with_password {
        submission
            .iter()
            .copied()
            .filter(|p| matches!(p.auth, Some(AuthOutcome::Accepted { .. })))
            .collect()
    } else {
        submission.clone()
    };
    if let Some(best) = usable.first() {
        return works(host, best, usable.get(1..).unwrap_or_default());
    }
    if let Some(p) = submission.first() {
        let why = match &p.auth {
            Some(AuthOutcome::Refused { reply }) => {
                format!("it refused the password: {}", reply.summary())
            }
            Some(AuthOutcome::NotTried(why)) => why.clone(),
            _ => "the password was not tried".into(),
        };
        return fail(format!(
            "{host}'s server answers on port {} ({}), but {why}. Check the user name (your full \
             address) and the password.\n{}",
            p.port,
            p.security.client_words(),
            client_settings(host, p.port, p.security.client_words(), OWN_ACCOUNT)
        ));
    }
    if let Some(p) = open.first() {
        return fail(format!(
            "{host}'s server answers on port {}, but offers no authentication there: it takes \
             mail for its own domains, not from mail clients.",
            p.port
        ));
    }
    let reached = probes
        .iter()
        .zip(verdicts)
        .filter(|(_, v)| v.status == Status::TlsFailed)
        .min_by_key(|(p, _)| preference(p.port));
    if let Some((p, v)) = reached {
        return fail(format!(
            "port {} reaches {host}'s server, but {}. A mail client will refuse it or warn: {}",
            p.port,
            v.reason,
            tls_fix(p, host)
        ));
    }
    let mut text = format!("{ALL_BLOCKED}.");
    let intercepted: Vec<String> = probes
        .iter()
        .zip(verdicts)
        .filter(|(_, v)| v.status == Status::Intercepted)
        .map(|(p, _)| p.port.to_string())
        .collect();
    if !intercepted.is_empty() {
        text.push_str(&format!(
            " Something on the way answers in place of {host} on port {}.",
            intercepted.join(", ")
        ));
    }
    text.push_str(
        " If this used to work, the network has started blocking these ports. The way out is \
         your ISP's own outgoing mail server (SMTP):",
    );
    Recommendation {
        blocked: true,
        ..fail(text)
    }
}

/// The user name line for this server's own accounts.
const OWN_ACCOUNT: &str = "your full address; authentication: normal password";

/// The settings block every recommendation that names a server ends with.
pub fn client_settings(server: &str, port: u16, security: &str, user: &str) -> String {
    format!(
        "Outgoing mail server (SMTP) for your mail client:\n  server:    {server}\n  port:      \
         {port}\n  security:  {security}\n  user name: {user}"
    )
}

fn works(host: &str, best: &PortProbe, others: &[&PortProbe]) -> Recommendation {
    let security = best.security.client_words();
    let mut text = client_settings(host, best.port, security, OWN_ACCOUNT);
    if !others.is_empty() {
        let list: Vec<String> = others
            .iter()
            .map(|p| format!("{} ({})", p.port, p.security.client_words()))
            .collect();
        text.push_str(&format!("\nAlso working: {}.", list.join(", ")));
    }
    Recommendation {
        works: true,
        blocked: false,
        settings: Some(Settings {
            server: host.to_string(),
            port: best.port,
            security: security.to_string(),
        }),
        text,
    }
}

fn tls_fix(p: &PortProbe, host: &str) -> String {
    let Some(tls) = &p.tls else {
        return "the server's administrator must enable TLS (STARTTLS) for it.".into();
    };
    match &tls.verdict {
        CertVerdict::NameMismatch => format!(
            "use one of the certificate's names ({}) as the server name, or the administrator \
             must install a certificate for {host}.",
            tls.cert
                .as_ref()
                .map(|c| c.names.join(", "))
                .unwrap_or_default()
        ),
        CertVerdict::Expired | CertVerdict::NotYetValid => {
            "the server's administrator must renew the certificate.".into()
        }
        _ => format!(
            "the server's administrator must install a certificate for {host} from a public \
             authority (for example Let's Encrypt)."
        ),
    }
}
