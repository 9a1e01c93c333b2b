//! Where a recipient's mail goes: the only place that decides. `route` is
//! pure: it is told whether the domain is hosted here and whether port 25 is
//! blocked. `facts.rs` gathers those facts for the scheduler.
//!
//! Order (DESIGN.md): hosted domain → local mailbox; a `[[route]]` for the
//! recipient's domain; a `[[route]]` for the sender's domain; `[relay]`; MX —
//! through `[fallback_relay]` while port 25 is blocked.

mod facts;

use std::fmt;

use crate::config::{Config, Relay, RouteMatch};

pub use facts::destination;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Local,
    Smarthost(Relay),
    Mx(String),
    /// A domain's MX hosts for mail that says "TLS-Required: No" (RFC 8689
    /// §3): its MTA-STS policy and the hosts' TLSA records are not
    /// applied, and TLS is used when offered.
    MxPolicyWaived(String),
}

impl Destination {
    /// One name per destination: recipients with the same key travel together
    /// and share the destination's concurrency limit.
    pub fn key(&self) -> String {
        match self {
            Destination::Local => "local".to_string(),
            Destination::Smarthost(r) => format!("relay:{}:{}", r.host, r.port),
            Destination::Mx(domain) => format!("mx:{domain}"),
            Destination::MxPolicyWaived(domain) => format!("mx:{domain}:tls-required-no"),
        }
    }
}

impl Destination {
    /// Which way out it is, for the metrics: `local`, `direct` (an MX),
    /// `fallback` (`[fallback_relay]`, port 25 being blocked; a `[[route]]`
    /// to that same relay counts here too) or `relay`.
    pub fn path(&self, config: &Config) -> &'static str {
        match self {
            Destination::Local => "local",
            Destination::Mx(_) | Destination::MxPolicyWaived(_) => "direct",
            Destination::Smarthost(r) if mx_fallback(config) == Some(r) => "fallback",
            Destination::Smarthost(_) => "relay",
        }
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key())
    }
}

/// The facts routing depends on besides the configuration.
#[derive(Debug, Clone, Copy)]
pub struct RouteFacts<'a> {
    pub recipient_domain: &'a str,
    /// `None` for the null sender.
    pub sender_domain: Option<&'a str>,
    pub hosted: bool,
    /// Outbound port 25 looks blocked (`outbound::port25`).
    pub port25_blocked: bool,
    /// The message says "TLS-Required: No".
    pub tls_policy_waived: bool,
}

/// The relay MX-bound mail takes while port 25 is blocked: `[fallback_relay]`,
/// unless `[relay]` takes all mail anyway.
pub fn mx_fallback(config: &Config) -> Option<&Relay> {
    config
        .fallback_relay
        .as_ref()
        .filter(|_| config.relay.is_none())
}

/// The destination of a recipient.
pub fn route(config: &Config, facts: RouteFacts<'_>) -> Destination {
    if facts.hosted {
        return Destination::Local;
    }
    let by =
        |wanted: &dyn Fn(&RouteMatch) -> bool| config.routes.iter().find(|r| wanted(&r.matches));
    let route = by(&|m| matches!(m, RouteMatch::RecipientDomain(d) if d == facts.recipient_domain))
        .or_else(|| {
            facts
                .sender_domain
                .and_then(|sd| by(&|m| matches!(m, RouteMatch::SenderDomain(d) if d == sd)))
        });
    if let Some(r) = route {
        return Destination::Smarthost(r.relay.clone());
    }
    if let Some(relay) = &config.relay {
        return Destination::Smarthost(relay.clone());
    }
    match mx_fallback(config) {
        Some(fallback) if facts.port25_blocked => Destination::Smarthost(fallback.clone()),
        _ if facts.tls_policy_waived => {
            Destination::MxPolicyWaived(facts.recipient_domain.to_string())
        }
        _ => Destination::Mx(facts.recipient_domain.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        Config::from_text(extra, None).expect("valid")
    }

    fn dest(c: &Config, rcpt: &str, sender: Option<&str>, hosted: bool, blocked: bool) -> String {
        let facts = RouteFacts {
            recipient_domain: rcpt,
            sender_domain: sender,
            hosted,
            port25_blocked: blocked,
            tls_policy_waived: false,
        };
        route(c, facts).key()
    }

    #[test]
    fn order_of_rules() {
        let c = config(
            "[relay]\nhost = \"relay.example\"\n[[route]]\ndomain = \"org.example\"\nhost = \"r1\"\n\
             [[route]]\nsender_domain = \"customer.example\"\nhost = \"isp\"\nport = 2525\n",
        );
        assert_eq!(dest(&c, "example.com", None, true, false), "local");
        assert_eq!(
            dest(&c, "org.example", Some("customer.example"), false, false),
            "relay:r1:587"
        );
        assert_eq!(
            dest(&c, "else.example", Some("customer.example"), false, false),
            "relay:isp:2525"
        );
        assert_eq!(
            dest(&c, "else.example", Some("other.example"), false, false),
            "relay:relay.example:587"
        );
        assert_eq!(
            dest(&c, "else.example", None, false, false),
            "relay:relay.example:587"
        );
    }

    #[test]
    fn mx_and_the_port_25_fallback() {
        let plain = config("");
        assert_eq!(
            dest(&plain, "else.example", None, false, true),
            "mx:else.example"
        );
        let c = config("[fallback_relay]\nhost = \"fb.example\"\nport = 2525\n");
        assert_eq!(
            dest(&c, "else.example", None, false, false),
            "mx:else.example"
        );
        assert_eq!(
            dest(&c, "else.example", None, false, true),
            "relay:fb.example:2525"
        );
        let facts = |port25_blocked| RouteFacts {
            recipient_domain: "else.example",
            sender_domain: None,
            hosted: false,
            port25_blocked,
            tls_policy_waived: false,
        };
        let paths = [false, true].map(|blocked| route(&c, facts(blocked)).path(&c));
        assert_eq!(paths, ["direct", "fallback"]);
        let relayed = config(
            "[relay]\nhost = \"fb.example\"\nport = 2525\n[fallback_relay]\nhost = \"fb.example\"\nport = 2525\n",
        );
        assert_eq!(route(&relayed, facts(true)).path(&relayed), "relay");
        assert_eq!(Destination::Local.path(&c), "local");
    }

    /// A blocked port 25 changes only MX-bound mail, and only where a
    /// fallback relay can take it (issue #10 found routed and local mail
    /// caught up in it).
    #[test]
    fn a_blocked_port_25_changes_only_mx_mail_with_a_fallback() {
        let c = config(
            "[fallback_relay]\nhost = \"fb.example\"\n[[route]]\ndomain = \"org.example\"\nhost = \"r1\"\n",
        );
        let changes = |hosted: bool, rcpt: &str, c: &Config| {
            dest(c, rcpt, None, hosted, true) != dest(c, rcpt, None, hosted, false)
        };
        assert!(!changes(true, "example.com", &c), "local");
        assert!(!changes(false, "org.example", &c), "a route");
        assert!(changes(false, "else.example", &c), "MX or the fallback");
        let relay = config("[fallback_relay]\nhost = \"fb.example\"\n[relay]\nhost = \"r\"\n");
        assert!(!changes(false, "else.example", &relay), "the relay");
        assert!(
            !changes(false, "else.example", &config("")),
            "MX, no fallback"
        );
    }
}
