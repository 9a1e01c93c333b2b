//! The ways a hosted domain's mail leaves this server (straight to the
//! recipients' MX, `[relay]`, a `[[route]]`, `[fallback_relay]`) and, for
//! `postern dns --check`, whether each passes at the receiving end: SPF of
//! the domain for the addresses mail leaves from, DKIM published for the
//! keys this server signs with, and so DMARC. When mail has to go through
//! an ISP's relay, SPF of the user's domain fails unless it names the relay;
//! only the aligned signature then keeps DMARC passing, and no other mail
//! server says so before the mail is junked.

use std::net::IpAddr;

use mail_auth::SpfResult;
use mail_auth::spf::verify::SpfParameters;

use crate::config::{Config, RouteMatch};
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
        let term = spf_term(relay);
        if !terms.contains(&term) {
            terms.push(term);
        }
    }
    terms.push("~all".to_string());
    terms.join(" ")
}

/// The SPF term that authorises a relay: its address records, or the
/// address itself when the config names one. (A provider's relay may send
/// from other addresses: its own `include:` is then the term to publish.)
fn spf_term(relay: &str) -> String {
    match relay.trim_matches(['[', ']']).parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => format!("ip4:{ip}"),
        Ok(IpAddr::V6(ip)) => format!("ip6:{ip}"),
        Err(_) => format!("a:{relay}"),
    }
}

/// What a receiver will make of the domain's mail on one path.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Verdict {
    pub path: String,
    pub addresses: Vec<IpAddr>,
    /// SPF's result for the worst of the addresses ("pass", "softfail", …).
    pub spf: String,
    pub dkim_published: bool,
    pub dmarc_passes: bool,
    /// One sentence for the admin.
    pub sentence: String,
}

impl Verdict {
    /// The verdict as an element of `postern dns --check --json`'s list.
    pub fn as_json(&self) -> serde_json::Value {
        serde_json::json!({
            "type": "PATH",
            "name": self.path,
            "value": self.sentence,
            "addresses": self.addresses,
            "spf": self.spf,
            "dkim_published": self.dkim_published,
            "dmarc_passes": self.dmarc_passes,
        })
    }
}

/// Asks DNS what a receiver would: the path's addresses, and the domain's
/// SPF for each (mail-auth, as receivers evaluate it).
pub async fn judge(
    dns: &Dns,
    hostname: &str,
    domain: &str,
    path: &Path,
    dkim_published: bool,
) -> Verdict {
    let host = path.relay.as_deref().unwrap_or(hostname);
    let addresses = dns.addresses(host).await.unwrap_or_default();
    let authenticator = dns.authenticator();
    let sender = format!("postmaster@{domain}");
    let mut spf = if addresses.is_empty() {
        SpfResult::TempError
    } else {
        SpfResult::Pass
    };
    for ip in &addresses {
        let output = authenticator
            .verify_spf(SpfParameters::verify_mail_from(
                *ip, hostname, hostname, &sender,
            ))
            .await;
        if output.result() != SpfResult::Pass {
            spf = output.result();
            break;
        }
    }
    let spf_passes = spf == SpfResult::Pass;
    let spf = spf.to_string().to_lowercase();
    let dmarc_passes = spf_passes || dkim_published;
    let shown: Vec<String> = addresses.iter().map(ToString::to_string).collect();
    let start = format!("mail of {domain} {} ({})", path.name, shown.join(", "));
    let sentence = match (spf_passes, dkim_published) {
        (true, true) => format!("{start} passes SPF and is DKIM-signed: DMARC passes"),
        (true, false) => format!(
            "{start} passes SPF, so DMARC passes; publish DKIM too, or mail forwarded on will fail"
        ),
        (false, true) => format!(
            "{start} fails SPF ({spf}); DKIM is aligned, so DMARC passes{}",
            path.relay
                .as_deref()
                .map(|r| format!(" (add {} to the SPF record for SPF too)", spf_term(r)))
                .unwrap_or_default()
        ),
        (false, false) => format!(
            "{start} fails SPF ({spf}), and DMARC will fail: publish DKIM (the records above){}",
            path.relay
                .as_deref()
                .map(|r| format!(" or add {} to the SPF record", spf_term(r)))
                .unwrap_or_default()
        ),
    };
    Verdict {
        path: path.name.clone(),
        addresses,
        spf,
        dkim_published,
        dmarc_passes,
        sentence,
    }
}
