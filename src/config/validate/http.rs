//! `[http]`: the listeners for autoconfig, MTA-STS, metrics and the port
//! echo, and who may read `/metrics`.

use ipnet::IpNet;

use super::{is_hostname, networks};
use crate::config::checker::{Checker, KeyPath};
use crate::config::defaults as def;
use crate::config::file::HttpFile;
use crate::config::{Http, MtaStsMode};

pub(super) fn http(c: &mut Checker<'_>, h: HttpFile, hostname: &str, trusted: &[IpNet]) -> Http {
    let p = KeyPath::default().key("http");
    // This host and the trusted networks, unless the file says.
    let mut from = |key: &str, list: Option<Vec<String>>| match list {
        Some(list) => networks(c, &p.key(key), list),
        None => def::METRICS_FROM
            .into_iter()
            .chain(trusted.iter().copied())
            .collect(),
    };
    let metrics_from = from("metrics_from", h.metrics_from);
    let dashboard_from = from("dashboard_from", h.dashboard_from);
    let (imap_host, imap_port) = match h.imap.as_deref() {
        None => (hostname.to_string(), 993),
        Some(v) => match v
            .rsplit_once(':')
            .map(|(host, port)| (host, port.parse::<u16>()))
        {
            Some((host, Ok(port))) if is_hostname(host) => (host.to_ascii_lowercase(), port),
            _ => {
                c.error(
                    &p.key("imap"),
                    format!("{v:?} is not host:port; write e.g. \"imap.example.com:993\""),
                );
                (hostname.to_string(), 993)
            }
        },
    };
    let mta_sts_mode = match h.mta_sts_mode.as_deref() {
        None | Some("testing") => MtaStsMode::Testing,
        Some("enforce") => MtaStsMode::Enforce,
        Some("none") => MtaStsMode::None,
        Some(other) => {
            c.error(
                &p.key("mta_sts_mode"),
                format!("{other:?} is not valid; use \"testing\", \"enforce\" or \"none\""),
            );
            MtaStsMode::Testing
        }
    };
    Http {
        imap_host,
        imap_port,
        mta_sts_mode,
        addr: h.addr.and_then(|a| c.socket_addr(p.key("addr"), &a)),
        tls_addr: h
            .tls_addr
            .and_then(|a| c.socket_addr(p.key("tls_addr"), &a)),
        submission_on_tls: h.submission_on_tls.unwrap_or(false),
        ports_by_network: h.ports_by_network.unwrap_or(true),
        metrics_from,
        dashboard: h.dashboard.unwrap_or(false),
        dashboard_from,
        metrics_token: h
            .metrics_token_file
            .and_then(|f| c.secret_file(p.key("metrics_token_file"), &f)),
        request_timeout: c.seconds(
            p.key("request_timeout"),
            h.request_timeout,
            def::HTTP_REQUEST_TIMEOUT_SECS,
            1,
            300,
        ),
        max_connections: c.number(
            p.key("max_connections"),
            h.max_connections,
            def::HTTP_MAX_CONNECTIONS,
            1,
            100_000,
        ) as usize,
        max_connections_per_ip: c.number(
            p.key("max_connections_per_ip"),
            h.max_connections_per_ip,
            def::HTTP_MAX_CONNECTIONS_PER_IP,
            1,
            100_000,
        ) as usize,
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::super::from_text;
    use super::super::tests::errors;

    #[test]
    fn metrics_are_for_loopback_and_trusted_networks_by_default() {
        let c = from_text("trusted_networks = [\"192.0.2.0/24\"]\n", None).expect("valid");
        let may = |ip: [u8; 4]| {
            c.http
                .metrics_from
                .iter()
                .any(|n| n.contains(&IpAddr::from(ip)))
        };
        assert!(may([127, 0, 0, 1]) && may([127, 9, 9, 9]) && may([192, 0, 2, 7]));
        assert!(!may([198, 51, 100, 1]));
        assert!(
            c.http
                .metrics_from
                .iter()
                .any(|n| n.contains(&IpAddr::from(std::net::Ipv6Addr::LOCALHOST)))
        );
        let c = from_text("[http]\nmetrics_from = []\n", None).expect("valid");
        assert!(c.http.metrics_from.is_empty());
        let errs = errors("[http]\nmetrics_from = [\"nope\"]\n");
        assert!(
            errs[0].contains("http.metrics_from[0]: \"nope\" is not a network"),
            "{errs:?}"
        );
    }
}
