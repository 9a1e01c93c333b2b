//! What a receiving server will make of a domain's mail sent from given
//! hosts: SPF of the domain for their addresses, whether a DKIM signature of
//! the domain travels with it, and so DMARC. `postern dns --check` judges
//! each way out of this server with it, and `postern check` the ISP relay a
//! user would fall back to: SPF of the user's domain fails there unless it
//! names the relay, and no other mail server says so before the mail is junked.

use std::net::IpAddr;

use mail_auth::SpfResult;
use mail_auth::spf::verify::SpfParameters;

use crate::dns::Dns;

/// The SPF term that authorises a relay: its address records, or the
/// address itself when the config names one. (A provider's relay may send
/// from other addresses: its own `include:` is then the term to publish.)
pub fn spf_term(relay: &str) -> String {
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

/// Whether the mail on a path carries a DKIM signature of the domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dkim {
    /// This server signs it and the key is published.
    Published,
    /// This server signs it, but the key is not (yet) in DNS.
    NotPublished,
    /// The path does not go through this server (a mail client sending
    /// through its ISP's relay): nothing signs it for the domain.
    NotSigned,
}

/// Asks DNS what a receiver would: the addresses of `relay` (or of
/// `hostname`, this server, when the mail goes straight to the MX), and
/// `domain`'s SPF for each (mail-auth, as receivers evaluate it). `name`
/// says which path it is, for the sentence.
pub async fn judge(
    dns: &Dns,
    hostname: &str,
    domain: &str,
    name: &str,
    relay: Option<&str>,
    dkim: Dkim,
) -> Verdict {
    let host = relay.unwrap_or(hostname);
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
            .verify_spf(SpfParameters::verify_mail_from(*ip, host, host, &sender))
            .await;
        if output.result() != SpfResult::Pass {
            spf = output.result();
            break;
        }
    }
    let spf_passes = spf == SpfResult::Pass;
    let spf = spf.to_string().to_lowercase();
    let dkim_published = dkim == Dkim::Published;
    let dmarc_passes = spf_passes || dkim_published;
    let shown: Vec<String> = addresses.iter().map(ToString::to_string).collect();
    let start = format!("mail of {domain} {name} ({})", shown.join(", "));
    let add_term = |lead: &str| {
        relay
            .map(|r| format!("{lead}{} to the SPF record of {domain}", spf_term(r)))
            .unwrap_or_default()
    };
    let sentence = match (spf_passes, dkim) {
        (true, Dkim::Published) => format!("{start} passes SPF and is DKIM-signed: DMARC passes"),
        (true, Dkim::NotPublished) => format!(
            "{start} passes SPF, so DMARC passes; publish DKIM too, or mail forwarded on will fail"
        ),
        (true, Dkim::NotSigned) => format!(
            "{start} passes SPF, so DMARC passes (nothing on this path signs it with DKIM: \
             mail forwarded on may fail)"
        ),
        (false, Dkim::Published) => format!(
            "{start} fails SPF ({spf}); DKIM is aligned, so DMARC passes{}",
            relay
                .map(|r| format!(" (add {} to the SPF record for SPF too)", spf_term(r)))
                .unwrap_or_default()
        ),
        (false, Dkim::NotPublished) => format!(
            "{start} fails SPF ({spf}), and DMARC will fail: publish DKIM (the records above){}",
            add_term(" or add ")
        ),
        (false, Dkim::NotSigned) => format!(
            "{start} fails SPF ({spf}), and nothing on this path signs it with DKIM, so DMARC \
             will fail: add {}",
            relay
                .map(|r| format!("{} to the SPF record of {domain}", spf_term(r)))
                .unwrap_or_else(|| "this host to the SPF record".into())
        ),
    };
    Verdict {
        path: name.to_string(),
        addresses,
        spf,
        dkim_published,
        dmarc_passes,
        sentence,
    }
}
