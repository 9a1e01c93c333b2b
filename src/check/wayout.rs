//! `postern check`'s answer when no submission port of the host gets
//! through from the user's network: the ISP's own relay, found from the
//! network itself. The public address this network sends from (the host's
//! port echo over HTTP says what it saw, so NAT does not hide it; else this
//! machine's own address when it is public), its reverse name, the ISP's
//! registrable domain (the public-suffix list), then the usual relay names of
//! that domain probed on 587, 465 and 25. The best that offers AUTH is
//! recommended by name, with the consequence said plainly: mail through it
//! does not pass this server, so nothing signs it with the domain's DKIM
//! key, and SPF of the user's domain (looked up live) decides DMARC.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use hickory_resolver::proto::rr::{Name, RecordType};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout_at};

use super::probe::{self, Context, PortProbe, Security, Target};
use super::recommend::client_settings;
use super::tls::CertVerdict;
use crate::dmarc::sending::{self, Dkim, Verdict};
use crate::dns::Dns;

/// The names ISPs give their relays, most common first.
const RELAY_NAMES: [&str; 5] = ["smtp", "mail", "smtp-relay", "relay", "mx"];
/// The ports a mail client can submit on, in the order recommended.
const RELAY_PORTS: [u16; 3] = [587, 465, 25];
/// The most the HTTP port echo may take, per address of the host.
const ECHO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// What `postern check` found beyond the host (`way_out` in `--json`).
#[derive(Debug, Serialize)]
pub struct WayOut {
    /// The address this network sends from, and how it was learned
    /// ("port echo": the host saw it; "local": this machine's own).
    pub public_address: Option<IpAddr>,
    pub address_source: Option<&'static str>,
    pub reverse_name: Option<String>,
    /// The ISP's registrable domain, from the reverse name.
    pub isp_domain: Option<String>,
    /// Every relay name and port that answered.
    pub relays: Vec<Relay>,
    /// The one recommended, if any answered.
    pub best: Option<Relay>,
    /// The domain the user sends as, and what its SPF/DMARC make of mail
    /// sent through `best`.
    pub domain: Option<String>,
    pub verdict: Option<RelayVerdict>,
    /// The advice, ending with the client settings when a relay answered.
    pub text: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Relay {
    pub host: String,
    pub port: u16,
    /// "SSL/TLS", "STARTTLS" or "none": what the client must set.
    pub security: &'static str,
    /// AUTH mechanisms offered (after TLS where there was TLS).
    pub auth: Vec<String>,
    /// TLS with a certificate valid for the name (a mail client accepts
    /// it without a warning).
    pub certificate_valid: bool,
}

#[derive(Debug, Serialize)]
pub struct RelayVerdict {
    pub spf: String,
    pub dmarc_passes: bool,
    pub sentence: String,
}

impl From<Verdict> for RelayVerdict {
    fn from(v: Verdict) -> RelayVerdict {
        RelayVerdict {
            spf: v.spf,
            dmarc_passes: v.dmarc_passes,
            sentence: v.sentence,
        }
    }
}

/// Looks for the way out from this network, before `deadline`. `addrs` are
/// the host's, `token` the run's port-echo token, `domain` the one the user
/// sends as (for the SPF verdict).
pub async fn find(
    ctx: &Arc<Context>,
    host: &str,
    addrs: &[IpAddr],
    token: &str,
    domain: Option<String>,
    deadline: Instant,
) -> WayOut {
    let (public_address, address_source) = match echoed_address(host, addrs, token, deadline).await
    {
        Some(ip) => (Some(ip), Some("port echo")),
        None => match local_public_address(addrs) {
            Some(ip) => (Some(ip), Some("local")),
            None => (None, None),
        },
    };
    let dns = Dns::new(&[]).ok();
    let reverse_name = match (&dns, public_address) {
        (Some(dns), Some(ip)) => timeout_at(deadline, reverse(dns, ip)).await.ok().flatten(),
        _ => None,
    };
    let isp_domain = reverse_name
        .as_deref()
        .and_then(psl::domain_str)
        .map(str::to_string);
    let relays = match (&dns, &isp_domain) {
        (Some(dns), Some(isp)) => probe_relays(ctx, dns, isp, deadline).await,
        _ => Vec::new(),
    };
    // A password goes only over TLS: a relay that asks for one in the clear
    // is named last.
    let best = relays
        .iter()
        .find(|r| !r.auth.is_empty() && r.security != "none")
        .or_else(|| relays.iter().find(|r| r.auth.is_empty()))
        .or(relays.first())
        .cloned();
    let verdict = match (&dns, &best, &domain) {
        (Some(dns), Some(relay), Some(domain)) => {
            let name = format!("through {} (your ISP's relay)", relay.host);
            let judged = sending::judge(
                dns,
                &relay.host,
                domain,
                &name,
                Some(&relay.host),
                Dkim::NotSigned,
            );
            timeout_at(deadline, judged)
                .await
                .ok()
                .map(RelayVerdict::from)
        }
        _ => None,
    };
    let mut way = WayOut {
        public_address,
        address_source,
        reverse_name,
        isp_domain,
        relays,
        best,
        domain,
        verdict,
        text: String::new(),
    };
    way.text = advice(&way);
    way
}

/// The advice: which relay, what it asks for, what SPF/DMARC will make of
/// it, and the client settings.
pub fn advice(way: &WayOut) -> String {
    let address = way
        .domain
        .as_deref()
        .map_or("you@yourdomain".to_string(), |d| format!("you@{d}"));
    let network = match (&way.public_address, &way.reverse_name) {
        (Some(ip), Some(name)) => format!("This network sends from {ip} ({name})"),
        (Some(ip), None) => format!("This network sends from {ip}, which has no reverse name"),
        (None, _) => "This network's public address could not be learned".to_string(),
    };
    let Some(relay) = &way.best else {
        let isp = match &way.isp_domain {
            Some(isp) => format!(
                "; no relay of {isp} answered on 587, 465 or 25 ({} tried)",
                RELAY_NAMES.map(|n| format!("{n}.{isp}")).join(", ")
            ),
            None => String::new(),
        };
        return format!(
            "{network}{isp}. Ask your ISP for the name of its outgoing mail server (SMTP) and \
             set it in your mail client, with port 587 and STARTTLS if it offers them; your \
             address can stay {address}."
        );
    };
    let isp = way.isp_domain.as_deref().unwrap_or("your ISP");
    let mut auth = if relay.auth.is_empty() {
        "it offers no authentication (it may take mail from its own customers' addresses \
         without a password)"
            .to_string()
    } else if relay.security == "none" {
        "it asks for a password without TLS, so your ISP account's password would cross the \
         network readable: ask your ISP for its secure settings"
            .to_string()
    } else {
        "it will ask for your ISP account's user name and password, not your mail password"
            .to_string()
    };
    if relay.security != "none" && !relay.certificate_valid {
        auth.push_str(
            " (its certificate is not valid for that name: your mail client may warn, and \
             should refuse to send the password)",
        );
    }
    let mut text = format!(
        "{network}, so your ISP is {isp}. Its relay {} answers on {} with {}; {auth}. Your \
         address can stay {address}.",
        relay.host,
        relay.port,
        match relay.security {
            "none" => "no TLS".to_string(),
            words => words.to_string(),
        },
    );
    match &way.verdict {
        Some(v) if v.dmarc_passes => text.push_str(&format!(" SPF/DMARC: {}.", v.sentence)),
        Some(v) => text.push_str(&format!(
            " SPF/DMARC: {}; until then receivers may junk or refuse it.",
            v.sentence
        )),
        None => text.push_str(
            " Mail sent this way does not pass your own server, so nothing signs it with your \
             domain's DKIM key: unless your domain's SPF names this relay, DMARC will fail \
             (give --domain to have it checked).",
        ),
    }
    let user = if relay.auth.is_empty() {
        "none (no authentication)"
    } else {
        "your ISP account's; authentication: normal password"
    };
    text.push('\n');
    text.push_str(&client_settings(
        &relay.host,
        relay.port,
        relay.security,
        user,
    ));
    text
}

/// Asks the host's HTTP port echo (port 80) which address this request
/// came from.
async fn echoed_address(
    host: &str,
    addrs: &[IpAddr],
    token: &str,
    deadline: Instant,
) -> Option<IpAddr> {
    for ip in addrs {
        let ask = async {
            let tcp = tokio::net::TcpStream::connect(SocketAddr::new(*ip, 80))
                .await
                .ok()?;
            let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .ok()?;
            tokio::spawn(connection);
            let request = hyper::Request::get(format!("/.well-known/postern/echo/{token}"))
                .header("Host", host)
                .body(Empty::<Bytes>::new())
                .ok()?;
            let response = sender.send_request(request).await.ok()?;
            if !response.status().is_success() {
                return None;
            }
            let body = Limited::new(response.into_body(), 4096)
                .collect()
                .await
                .ok()?
                .to_bytes();
            let answer: serde_json::Value = serde_json::from_slice(&body).ok()?;
            answer["addr"].as_str()?.parse::<IpAddr>().ok()
        };
        // A dropped port 80 must not take the time the relays need.
        let budget = deadline.min(Instant::now() + ECHO_TIMEOUT);
        if let Ok(Some(found)) = timeout_at(budget, ask).await {
            // Behind a proxy on the host the echo sees the proxy, not us.
            if !found.is_loopback() && !found.is_unspecified() {
                return Some(found);
            }
        }
    }
    None
}

/// This machine's own address towards the host, when it is a public one
/// (no NAT in between). Nothing is sent: a UDP socket's connect only picks
/// the route.
fn local_public_address(addrs: &[IpAddr]) -> Option<IpAddr> {
    let target = addrs.first()?;
    let bind: SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0".parse().ok()?
    } else {
        "[::]:0".parse().ok()?
    };
    let socket = std::net::UdpSocket::bind(bind).ok()?;
    socket.connect(SocketAddr::new(*target, 9)).ok()?;
    let ip = socket.local_addr().ok()?.ip();
    is_public(ip).then_some(ip)
}

fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => {
            !(v6.is_loopback()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80)
        }
    }
}

/// The reverse name of `ip`, without its final dot.
async fn reverse(dns: &Dns, ip: IpAddr) -> Option<String> {
    let name = Name::from(ip).to_ascii();
    let names = dns.lookup_values(&name, RecordType::PTR).await.ok()?;
    names
        .first()
        .map(|n| n.trim_end_matches('.').to_ascii_lowercase())
}

/// Probes every usual relay name of `isp` that resolves, on every relay
/// port at once; the ones that answered, in order of preference (port,
/// then name).
async fn probe_relays(ctx: &Arc<Context>, dns: &Dns, isp: &str, deadline: Instant) -> Vec<Relay> {
    let mut lookups = JoinSet::new();
    for (rank, name) in RELAY_NAMES.iter().enumerate() {
        let (dns, host) = (dns.clone(), format!("{name}.{isp}"));
        lookups.spawn(async move {
            let addrs = timeout_at(deadline, dns.addresses(&host)).await;
            (
                rank,
                host,
                addrs.ok().and_then(Result::ok).unwrap_or_default(),
            )
        });
    }
    let mut probes = JoinSet::new();
    while let Some(Ok((rank, host, addrs))) = lookups.join_next().await {
        if addrs.is_empty() {
            continue;
        }
        for port in RELAY_PORTS {
            let target = Target {
                index: 0,
                host: host.clone(),
                addrs: addrs.clone(),
                port,
                security: Security::for_port(port),
            };
            let ctx = Arc::clone(ctx);
            probes.spawn(async move { (rank, host_probe(ctx, target).await) });
        }
    }
    let mut answered: Vec<(usize, usize, Relay)> = Vec::new();
    while let Some(Ok((rank, (probe, host)))) = probes.join_next().await {
        if let Some(relay) = relay_of(&host, &probe) {
            let port_rank = RELAY_PORTS
                .iter()
                .position(|p| *p == relay.port)
                .unwrap_or(9);
            answered.push((port_rank, rank, relay));
        }
    }
    answered.sort_by_key(|(port, name, _)| (*port, *name));
    answered.into_iter().map(|(_, _, r)| r).collect()
}

async fn host_probe(ctx: Arc<Context>, target: Target) -> (PortProbe, String) {
    let host = target.host.clone();
    (probe::probe(ctx, target).await, host)
}

/// What a mail client needs to know of a relay that answered: a greeting
/// and an EHLO reply; TLS as it was had.
fn relay_of(host: &str, probe: &PortProbe) -> Option<Relay> {
    let ehlo = probe.ehlo.as_ref()?;
    if probe.greeting.as_ref().is_none_or(|g| g.code != 220) {
        return None;
    }
    let security = match (probe.security, &probe.tls) {
        (Security::Implicit, Some(_)) => Security::Implicit,
        (Security::StartTls, Some(_)) => Security::StartTls,
        (Security::Implicit, None) => return None,
        _ => Security::Plain,
    };
    Some(Relay {
        host: host.to_string(),
        port: probe.port,
        security: security.client_words(),
        auth: ehlo.auth.clone(),
        certificate_valid: probe
            .tls
            .as_ref()
            .is_some_and(|t| t.verdict == CertVerdict::Valid),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_isp_is_the_registrable_domain_of_the_reverse_name() {
        for (name, isp) in [
            ("dsl-2.customers.isp.example", "isp.example"),
            ("host-1-2-3-4.dynamic.example.co.uk", "example.co.uk"),
            ("p5b0a1c2d.dip0.t-ipconnect.de", "t-ipconnect.de"),
        ] {
            assert_eq!(psl::domain_str(name), Some(isp), "{name}");
        }
    }

    #[test]
    fn private_and_shared_addresses_are_not_public() {
        for ip in [
            "10.1.2.3",
            "192.168.1.1",
            "100.64.0.1",
            "127.0.0.1",
            "fd00::1",
            "fe80::1",
        ] {
            assert!(!is_public(ip.parse().expect("ip")), "{ip}");
        }
        for ip in ["192.0.2.1", "100.128.0.1", "2001:db8::1"] {
            assert!(is_public(ip.parse().expect("ip")), "{ip}");
        }
    }

    fn way(best: Option<Relay>, verdict: Option<RelayVerdict>) -> WayOut {
        WayOut {
            public_address: Some("192.0.2.7".parse().expect("ip")),
            address_source: Some("port echo"),
            reverse_name: Some("dsl-7.isp.example".into()),
            isp_domain: Some("isp.example".into()),
            relays: best.clone().into_iter().collect(),
            best,
            domain: Some("example.com".into()),
            verdict,
            text: String::new(),
        }
    }

    #[test]
    fn the_advice_names_the_relay_says_the_consequence_and_ends_with_settings() {
        let relay = Relay {
            host: "smtp.isp.example".into(),
            port: 587,
            security: "STARTTLS",
            auth: vec!["PLAIN".into()],
            certificate_valid: true,
        };
        let verdict = RelayVerdict {
            spf: "fail".into(),
            dmarc_passes: false,
            sentence: "mail of example.com through smtp.isp.example (your ISP's relay) \
                       (192.0.2.25) fails SPF (fail), and nothing on this path signs it with \
                       DKIM, so DMARC will fail: add a:smtp.isp.example to the SPF record of \
                       example.com"
                .into(),
        };
        let text = advice(&way(Some(relay), Some(verdict)));
        assert!(
            text.starts_with(
                "This network sends from 192.0.2.7 (dsl-7.isp.example), so your ISP is \
                 isp.example. Its relay smtp.isp.example answers on 587 with STARTTLS; it will \
                 ask for your ISP account's user name and password, not your mail password. \
                 Your address can stay you@example.com. SPF/DMARC: "
            ),
            "{text}"
        );
        assert!(text.contains("add a:smtp.isp.example to the SPF record of example.com"));
        assert!(
            text.ends_with(
                "\nOutgoing mail server (SMTP) for your mail client:\n  server:    \
                 smtp.isp.example\n  port:      587\n  security:  STARTTLS\n  user name: your \
                 ISP account's; authentication: normal password"
            ),
            "{text}"
        );
        let none = advice(&way(None, None));
        assert!(
            none.contains("no relay of isp.example answered on 587, 465 or 25 (smtp.isp.example, mail.isp.example"),
            "{none}"
        );
    }
}
