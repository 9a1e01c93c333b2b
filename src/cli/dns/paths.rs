//! The ways a hosted domain's mail leaves this server (straight to the
//! recipients' MX, `[relay]`, a `[[route]]`, `[fallback_relay]`) and, for
//! `postern dns --check`, whether each passes at the receiving end: SPF of
//! the domain for the addresses mail leaves from, DKIM published for the
//! keys this server signs with, and so DMARC. When mail has to go through
//! an ISP's relay, SPF of the user's domain fails unless it names the relay;
//! only the aligned signature then keeps DMARC passing, and no other mail
//! server says so before the mail is junked.

use crate::config::{Config, RouteMatch};
use crate::dmarc::sending::{self, Dkim, Verdict};
use crate::dns::Dns;

/// One way out for the domain's mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    /// How it is named in the config, for the sentence.
    pub name: String,
    /// The host the mail is handed to: a relay, or `None` for this server
    /// itself (straight to the recipients' MX).
    pub relay: Option<String>,
}

/// The ways `domain`'s mail leaves, in the router's order of precedence:
/// routes for recipient domains (for that part of its mail), its own
/// sender-domain route, else `[relay]`, else the recipients' MX with
/// `[fallback_relay]` when port 25 is blocked.
pub fn paths(config: &Config, domain: &str) -> Vec<Path> {
    let mut out = Vec::new();
    let mut own_route = None;
    for route in &config.routes {
        match &route.matches {
            RouteMatch::RecipientDomain(to) => out.push(Path {
                name: format!("through {} ([[route]] for mail to {to})", route.relay.host),
                relay: Some(route.relay.host.clone()),
            }),
            RouteMatch::SenderDomain(from) if from.eq_ignore_ascii_case(domain) => {
                own_route = Some(Path {
                    name: format!(
                        "through {} ([[route]] for sender domain {from})",
                        route.relay.host
                    ),
                    relay: Some(route.relay.host.clone()),
                });
            }
            RouteMatch::SenderDomain(_) => {}
        }
    }
    if let Some(route) = own_route {
        out.push(route);
        return out;
    }
    if let Some(relay) = &config.relay {
        out.push(Path {
            name: format!("through {} ([relay])", relay.host),
            relay: Some(relay.host.clone()),
        });
        return out;
    }
    out.push(Path {
        name: format!("straight from {} to each recipient's MX", config.hostname),
        relay: None,
    });
    if let Some(fallback) = &config.fallback_relay {
        out.push(Path {
            name: format!(
                "through {} ([fallback_relay], while port 25 is blocked)",
                fallback.host
            ),
            relay: Some(fallback.host.clone()),
        });
    }
    out
}

/// The SPF record that authorises every path: this server as the domain's
/// MX, and each relay host by its address records.
pub fn spf_record(paths: &[Path]) -> String {
    let mut terms = vec!["v=spf1".to_string(), "mx".to_string()];
    for relay in paths.iter().filter_map(|p| p.relay.as_deref()) {
        let term = sending::spf_term(relay);
        if !terms.contains(&term) {
            terms.push(term);
        }
    }
    terms.push("~all".to_string());
    terms.join(" ")
}

/// What a receiver will make of `domain`'s mail on `path`, given whether
/// its signing key is published.
pub async fn judge(
    dns: &Dns,
    hostname: &str,
    domain: &str,
    path: &Path,
    dkim_published: bool,
) -> Verdict {
    let dkim = if dkim_published {
        Dkim::Published
    } else {
        Dkim::NotPublished
    };
    sending::judge(
        dns,
        hostname,
        domain,
        &path.name,
        path.relay.as_deref(),
        dkim,
    )
    .await
}
