//! The delivery side of the file: `[delivery]`, `[relay]`, `[fallback_relay]`
//! and `[[route]]`.

use std::net::{IpAddr, SocketAddr};

use crate::config::checker::{Checker, KeyPath};
use crate::config::defaults as def;
use crate::config::file::*;
use crate::config::{Delivery, Relay, RelayTls, Route, RouteMatch};

pub(super) fn delivery(c: &mut Checker<'_>, d: DeliveryFile) -> Delivery {
    let p = KeyPath::default().key("delivery");
    let mut nameservers = Vec::new();
    for (i, ns) in d.nameservers.unwrap_or_default().iter().enumerate() {
        match ns
            .parse::<SocketAddr>()
            .or_else(|_| ns.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
        {
            Ok(a) => nameservers.push(a),
            Err(_) => c.error(
                &p.key("nameservers").index(i),
                format!(
                    "{ns:?} is not a nameserver address; write \"192.0.2.53\" or \"127.0.0.1:5353\""
                ),
            ),
        }
    }
    Delivery {
        mx_port: c.number(p.key("mx_port"), d.mx_port, def::MX_PORT.into(), 1, 65535) as u16,
        nameservers,
        dane: d.dane.unwrap_or(true),
        dnssec_trust_anchor: d
            .dnssec_trust_anchor
            .map(|f| c.existing_file(p.key("dnssec_trust_anchor"), &f)),
        max_lifetime: c.seconds(
            p.key("max_lifetime"),
            d.max_lifetime,
            def::MAX_LIFETIME_SECS,
            1,
            60 * 24 * 3600,
        ),
        retry_min: c.seconds(
            p.key("retry_min"),
            d.retry_min,
            def::RETRY_MIN_SECS,
            1,
            86_400,
        ),
        retry_max: c.seconds(
            p.key("retry_max"),
            d.retry_max,
            def::RETRY_MAX_SECS,
            1,
            7 * 86_400,
        ),
        concurrency: c.number(
            p.key("concurrency"),
            d.concurrency,
            def::CONCURRENCY,
            1,
            10_000,
        ) as usize,
        destination_concurrency: c.number(
            p.key("destination_concurrency"),
            d.destination_concurrency,
            def::DESTINATION_CONCURRENCY,
            1,
            1000,
        ) as usize,
        hold: d.hold.unwrap_or(false),
        mta_sts: d.mta_sts.unwrap_or(true),
        tls_reports: d.tls_reports.unwrap_or(false).then_some(c.seconds(
            p.key("tls_report_interval"),
            d.tls_report_interval,
            86_400,
            1,
            7 * 86_400,
        )),
        mta_sts_port: c.number(p.key("mta_sts_port"), d.mta_sts_port, 443, 1, 65535) as u16,
        connect_timeout: c.seconds(
            p.key("connect_timeout"),
            d.connect_timeout,
            def::CONNECT_TIMEOUT_SECS,
            1,
            600,
        ),
        timeout: c.seconds(
            p.key("timeout"),
            d.timeout,
            def::REPLY_TIMEOUT_SECS,
            1,
            3600,
        ),
    }
}

pub(super) fn relay(c: &mut Checker<'_>, path: KeyPath, r: RelayFile) -> Option<Relay> {
    let tls = match r.tls.as_deref() {
        None | Some("starttls") => RelayTls::StartTls,
        Some("implicit") => RelayTls::Implicit,
        Some("none") => RelayTls::None,
        Some(other) => {
            c.error(
                &path.key("tls"),
                format!("{other:?} is not valid; use \"starttls\", \"implicit\" or \"none\""),
            );
            RelayTls::StartTls
        }
    };
    let default_port = match tls {
        RelayTls::StartTls => 587,
        RelayTls::Implicit => 465,
        RelayTls::None => 25,
    };
    let port = c.number(path.key("port"), r.port, default_port, 1, 65535) as u16;
    let password_file = r
        .password_file
        .map(|f| c.existing_file(path.key("password_file"), &f));
    if r.username.is_some() != password_file.is_some() {
        c.error(&path, "username and password_file go together: set both to authenticate to the relay, or neither");
    }
    let allow_plaintext_auth = r.allow_plaintext_auth.unwrap_or(false);
    if tls == RelayTls::None && r.username.is_some() && !allow_plaintext_auth {
        c.error(
            &path.key("tls"),
            "\"none\" would send the relay password in clear text; set tls = \"starttls\" or \"implicit\", or allow_plaintext_auth = true if the link is private",
        );
    }
    let Some(host) = r.host else {
        c.error(
            &path,
            "needs host, the relay's name, e.g. host = \"smtp.isp.example\"",
        );
        return None;
    };
    Some(Relay {
        host,
        port,
        tls,
        tls_verify: r.tls_verify.unwrap_or(true),
        username: r.username,
        password_file,
        allow_plaintext_auth,
    })
}

pub(super) fn routes(c: &mut Checker<'_>, raw: Vec<RouteFile>) -> Vec<Route> {
    let base = KeyPath::default().key("route");
    let mut out = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        let path = base.index(i);
        let matches = match (r.domain.clone(), r.sender_domain.clone()) {
            (Some(d), None) => Some(RouteMatch::RecipientDomain(d.to_ascii_lowercase())),
            (None, Some(d)) => Some(RouteMatch::SenderDomain(d.to_ascii_lowercase())),
            _ => {
                c.error(
                    &path,
                    "needs exactly one of domain (recipient's domain) or sender_domain",
                );
                None
            }
        };
        let keys = RelayFile {
            host: r.host,
            port: r.port,
            tls: r.tls,
            tls_verify: r.tls_verify,
            username: r.username,
            password_file: r.password_file,
            allow_plaintext_auth: r.allow_plaintext_auth,
        };
        if let (Some(matches), Some(relay)) = (matches, relay(c, path, keys)) {
            out.push(Route { matches, relay });
        }
    }
    out
}
