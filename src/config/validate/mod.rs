//! ConfigFile → Config: the rules of each section. Collects every error of a
//! file (Stalwart's Config.errors) instead of stopping at the first, through the
//! `Checker` of checker.rs, which names file, line and key for each.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use toml::de::DeTable;

use crate::config::ListenerRole;
use crate::config::checker::{Checker, ConfigError, ConfigErrors, KeyPath, valid_keys};
use crate::config::defaults as def;
use crate::config::file::*;
use crate::config::{Auth, Config, Dkim, DmarcMode, Limits, ListenerConfig, Rspamd, TlsFiles};
use crate::policy::sending::Burst;
use crate::smtp::data::BareNewlines;

mod accounts;
mod acme;
mod delivery;
mod http;
mod local;
mod sendmail;
use accounts::run_as;
use delivery::{delivery, relay, routes};
use http::http;

pub(super) fn from_text(text: &str, file: Option<&Path>) -> Result<Config, ConfigErrors> {
    from_text_checking(text, file, Files::Look)
}

/// Whether validation looks at the files the configuration names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Files {
    Look,
    /// For a command that reads none of them (`postern sendmail`), run by
    /// users who may not be allowed to see them.
    Skip,
}

pub(super) fn from_text_checking(
    text: &str,
    file: Option<&Path>,
    files: Files,
) -> Result<Config, ConfigErrors> {
    let doc = match DeTable::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            return Err(ConfigErrors::single(ConfigError {
                file: file.map(Path::to_path_buf),
                line,
                key: String::new(),
                message: format!("not valid TOML: {}", e.message().trim()),
            }));
        }
    };
    let mut checker = Checker {
        text,
        file,
        doc,
        errors: Vec::new(),
        look_at_files: files == Files::Look,
    };

    let mut unknown = Vec::new();
    let parsed = toml::de::Deserializer::parse(text)
        .and_then(|de| serde_ignored::deserialize(de, |p| unknown.push(KeyPath::from_ignored(&p))));
    let raw: ConfigFile = match parsed {
        Ok(raw) => raw,
        Err(e) => {
            checker.toml_error(&e);
            return Err(ConfigErrors(checker.errors));
        }
    };
    for path in unknown {
        let keys = valid_keys(path.parent_table());
        checker.error(
            &path,
            format!("unknown key; valid keys here are: {}", keys.join(", ")),
        );
    }

    let config = build(&mut checker, raw, file);
    if checker.errors.is_empty() {
        Ok(config)
    } else {
        checker.errors.sort_by_key(|e| e.line.unwrap_or(0));
        Err(ConfigErrors(checker.errors))
    }
}

fn build(c: &mut Checker<'_>, raw: ConfigFile, file: Option<&Path>) -> Config {
    let root = KeyPath::default();
    let hostname = match raw.hostname {
        Some(h) if is_hostname(&h) => h.to_ascii_lowercase(),
        Some(h) => {
            c.error(&root.key("hostname"), format!("{h:?} is not a host name; write a fully qualified name such as \"mail.example.com\""));
            h
        }
        None => system_hostname(),
    };
    let data_dir = PathBuf::from(raw.data_dir.as_deref().unwrap_or(def::DATA_DIR));
    let run_as = run_as(c, raw.user, raw.group);

    let trusted_networks = networks(
        c,
        &root.key("trusted_networks"),
        raw.trusted_networks.unwrap_or_default(),
    );

    let listeners = listeners(c, raw.listener);
    let tls = raw.tls.and_then(|t| {
        let path = root.key("tls");
        match (t.cert, t.key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: c.existing_file(path.key("cert"), &cert),
                key: c.existing_file(path.key("key"), &key),
            }),
            _ => {
                c.error(&path, "needs both cert and key (PEM files); remove [tls] to use a generated self-signed certificate");
                None
            }
        }
    });
    let limits = limits(c, raw.limits.unwrap_or_default());
    let auth = auth(c, raw.auth.unwrap_or_default());
    let smtp = raw.smtp.unwrap_or_default();
    let tls_detect = Duration::from_millis(c.number(
        root.key("smtp").key("tls_detect_ms"),
        smtp.tls_detect_ms,
        def::TLS_DETECT_MS,
        0,
        10_000,
    ));
    let bare_newlines = match smtp.bare_newlines.as_deref() {
        None | Some("reject") => BareNewlines::Reject,
        Some("normalize") => BareNewlines::Normalize,
        Some(other) => {
            c.error(
                &root.key("smtp").key("bare_newlines"),
                format!("{other:?} is not valid; use \"reject\" or \"normalize\""),
            );
            BareNewlines::Reject
        }
    };
    let delivery = delivery(c, raw.delivery.unwrap_or_default());
    let main_relay = raw.relay.and_then(|r| relay(c, root.key("relay"), r));
    let fallback_relay = raw
        .fallback_relay
        .and_then(|r| relay(c, root.key("fallback_relay"), r));
    let routes = routes(c, raw.route.unwrap_or_default());
    let http = http(
        c,
        raw.http.unwrap_or_default(),
        &hostname,
        &trusted_networks,
    );
    let sendmail = sendmail::users(c, raw.sendmail.unwrap_or_default());
    let acme = acme::acme(c, raw.acme, tls.as_ref(), &http);
    let store_url = raw.store.and_then(|s| s.url);
    if let Some(url) = &store_url {
        c.error(
            &root.key("store").key("url"),
            format!(
                "{url:?}: only the embedded store is available in this version; remove [store] url"
            ),
        );
    }

    let local = local::local(c, raw.local.unwrap_or_default(), run_as.as_ref());
    let dkim = dkim(c, raw.dkim.unwrap_or_default());
    let filter = raw.filter.unwrap_or_default();
    let rspamd = rspamd(c, &filter);
    let dnsbl = filter
        .dnsbl
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|zone| zone.trim_end_matches('.').to_ascii_lowercase())
        .filter(|zone| {
            let valid = zone.contains('.')
                && zone.split('.').all(|l| {
                    !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
            if !valid {
                c.error(
                    &root.key("filter").key("dnsbl"),
                    format!("{zone:?} is not a DNS zone; write the list's zone, e.g. \"zen.spamhaus.org\""),
                );
            }
            valid
        })
        .collect();
    let dmarc = match filter.dmarc.as_deref() {
        None | Some("enforce") => DmarcMode::Enforce,
        Some("tag") => DmarcMode::Tag,
        Some("off") => DmarcMode::Off,
        Some(other) => {
            c.error(
                &root.key("filter").key("dmarc"),
                format!("{other:?} is not valid; use \"enforce\", \"tag\" or \"off\""),
            );
            DmarcMode::Enforce
        }
    };

    let report_interval = c.seconds(
        root.key("filter").key("dmarc_report_interval"),
        filter.dmarc_report_interval,
        def::DMARC_REPORT_INTERVAL,
        1,
        7 * 86_400,
    );
    let dmarc_reports = filter
        .dmarc_reports
        .unwrap_or(false)
        .then_some(report_interval);

    Config {
        source: file.map(Path::to_path_buf),
        hostname,
        data_dir,
        run_as,
        trusted_networks,
        listeners,
        tls,
        limits,
        auth,
        bare_newlines,
        tls_detect,
        delivery,
        relay: main_relay,
        routes,
        fallback_relay,
        http,
        store_url,
        local,
        sendmail,
        acme,
        dkim,
        dmarc,
        rspamd,
        dnsbl,
        dmarc_reports,
    }
}

fn rspamd(c: &mut Checker<'_>, f: &FilterFile) -> Option<Rspamd> {
    let p = KeyPath::default().key("filter");
    let url = f.rspamd.as_deref()?;
    let addr = url
        .strip_prefix("http://")
        .map(|rest| rest.trim_end_matches('/'))
        .filter(|a| !a.is_empty() && !a.contains('/') && a.contains(':'));
    let Some(addr) = addr else {
        c.error(
            &p.key("rspamd"),
            format!("{url:?} is not an http URL with a port; write rspamd's address, e.g. \"http://127.0.0.1:11333\""),
        );
        return None;
    };
    let fail_open = match f.rspamd_fail.as_deref() {
        None | Some("open") => true,
        Some("closed") => false,
        Some(other) => {
            c.error(
                &p.key("rspamd_fail"),
                format!("{other:?} is not valid; use \"open\" or \"closed\""),
            );
            true
        }
    };
    Some(Rspamd {
        addr: addr.to_string(),
        timeout: c.seconds(
            p.key("rspamd_timeout"),
            f.rspamd_timeout,
            def::RSPAMD_TIMEOUT_SECS,
            1,
            300,
        ),
        fail_open,
        outgoing: f.rspamd_outgoing.unwrap_or(false),
    })
}

fn dkim(c: &mut Checker<'_>, d: DkimFile) -> Dkim {
    let p = KeyPath::default().key("dkim");
    Dkim {
        retire_after: c.seconds(
            p.key("retire_after"),
            d.retire_after,
            def::DKIM_RETIRE_AFTER_SECS,
            0,
            365 * 86_400,
        ),
        check_interval: c.seconds(
            p.key("check_interval"),
            d.check_interval,
            def::DKIM_CHECK_INTERVAL_SECS,
            1,
            86_400,
        ),
    }
}

fn listeners(c: &mut Checker<'_>, raw: Option<Vec<ListenerFile>>) -> Vec<ListenerConfig> {
    let Some(raw) = raw else {
        return def::LISTENERS
            .iter()
            .filter_map(|(addr, role)| {
                Some(ListenerConfig {
                    addr: addr.parse().ok()?,
                    role: *role,
                })
            })
            .collect();
    };
    let base = KeyPath::default().key("listener");
    let mut out: Vec<ListenerConfig> = Vec::new();
    for (i, l) in raw.into_iter().enumerate() {
        let path = base.index(i);
        let addr = match l.addr {
            Some(a) => c.socket_addr(path.key("addr"), &a),
            None => {
                c.error(&path, "needs addr, e.g. addr = \"0.0.0.0:587\"");
                None
            }
        };
        let role = match l.role.as_deref() {
            Some(r) => {
                match r.parse::<ListenerRole>() {
                    Ok(role) => Some(role),
                    Err(()) => {
                        c.error(&path.key("role"), format!("{r:?} is not a role; use \"mta\", \"submission\" or \"submissions\""));
                        None
                    }
                }
            }
            None => {
                c.error(
                    &path,
                    "needs role: \"mta\", \"submission\" or \"submissions\"",
                );
                None
            }
        };
        if let (Some(addr), Some(role)) = (addr, role) {
            if out.iter().any(|o| o.addr == addr && addr.port() != 0) {
                c.error(
                    &path.key("addr"),
                    format!("{addr} is used by two listeners"),
                );
            }
            out.push(ListenerConfig { addr, role });
        }
    }
    out
}

/// `[limits]`' burst keys; checked even when `hold_on_burst` is off.
fn burst(c: &mut Checker<'_>, p: &KeyPath, l: &LimitsFile) -> Option<Burst> {
    let mut floor = |key: &str, value: Option<u64>, default: u64| {
        c.number(p.key(key), value, default, 1, 100_000_000)
    };
    let burst = Burst {
        factor: floor("burst_factor", l.burst_factor, def::BURST_FACTOR),
        messages_per_hour: floor(
            "burst_messages_per_hour",
            l.burst_messages_per_hour,
            def::BURST_MESSAGES_PER_HOUR,
        ),
        new_recipients_per_hour: floor(
            "burst_new_recipients_per_hour",
            l.burst_new_recipients_per_hour,
            def::BURST_NEW_RECIPIENTS_PER_HOUR,
        ),
        bounces_per_hour: floor(
            "burst_bounces_per_hour",
            l.burst_bounces_per_hour,
            def::BURST_BOUNCES_PER_HOUR,
        ),
    };
    l.hold_on_burst.unwrap_or(true).then_some(burst)
}

fn limits(c: &mut Checker<'_>, l: LimitsFile) -> Limits {
    let p = KeyPath::default().key("limits");
    let max_message_size = c.number(
        p.key("max_message_size"),
        l.max_message_size,
        def::MAX_MESSAGE_SIZE,
        1024,
        1 << 31,
    );
    Limits {
        max_message_size,
        min_free_space: c.number(
            p.key("min_free_space"),
            l.min_free_space,
            def::min_free_space(max_message_size),
            0,
            1 << 50,
        ),
        max_recipients: c.number(
            p.key("max_recipients"),
            l.max_recipients,
            def::MAX_RECIPIENTS as u64,
            1,
            100_000,
        ) as usize,
        // RFC 5321 §4.5.3.1: these are minimums a server must accept.
        max_command_line: c.number(
            p.key("max_command_line"),
            l.max_command_line,
            def::MAX_COMMAND_LINE as u64,
            512,
            65_536,
        ) as usize,
        max_text_line: c.number(
            p.key("max_text_line"),
            l.max_text_line,
            def::MAX_TEXT_LINE as u64,
            1000,
            1 << 20,
        ) as usize,
        max_errors: c.number(
            p.key("max_errors"),
            l.max_errors,
            def::MAX_ERRORS.into(),
            1,
            1000,
        ) as u32,
        messages_per_hour_per_user: c.number(
            p.key("messages_per_hour_per_user"),
            l.messages_per_hour_per_user,
            def::MESSAGES_PER_HOUR_PER_USER,
            1,
            10_000_000,
        ),
        recipients_per_day_per_user: c.number(
            p.key("recipients_per_day_per_user"),
            l.recipients_per_day_per_user,
            def::RECIPIENTS_PER_DAY_PER_USER,
            1,
            100_000_000,
        ),
        new_recipients_per_day_per_user: c.number(
            p.key("new_recipients_per_day_per_user"),
            l.new_recipients_per_day_per_user,
            def::NEW_RECIPIENTS_PER_DAY_PER_USER,
            1,
            100_000_000,
        ),
        burst: burst(c, &p, &l),
        max_connections: c.number(
            p.key("max_connections"),
            l.max_connections,
            def::MAX_CONNECTIONS as u64,
            1,
            1_000_000,
        ) as usize,
        max_connections_per_ip: c.number(
            p.key("max_connections_per_ip"),
            l.max_connections_per_ip,
            def::MAX_CONNECTIONS_PER_IP as u64,
            1,
            1_000_000,
        ) as usize,
        command_timeout: c.seconds(
            p.key("command_timeout"),
            l.command_timeout,
            def::COMMAND_TIMEOUT_SECS,
            1,
            3600,
        ),
        data_timeout: c.seconds(
            p.key("data_timeout"),
            l.data_timeout,
            def::DATA_TIMEOUT_SECS,
            1,
            3600,
        ),
        auth_failures_per_connection: c.number(
            p.key("auth_failures_per_connection"),
            l.auth_failures_per_connection,
            def::AUTH_FAILURES_PER_CONNECTION.into(),
            1,
            100,
        ) as u32,
        auth_failures_per_ip_per_hour: c.number(
            p.key("auth_failures_per_ip_per_hour"),
            l.auth_failures_per_ip_per_hour,
            def::AUTH_FAILURES_PER_IP_PER_HOUR.into(),
            1,
            100_000,
        ) as u32,
        shutdown_grace: c.seconds(
            p.key("shutdown_grace"),
            l.shutdown_grace,
            def::SHUTDOWN_GRACE_SECS,
            0,
            3600,
        ),
    }
}

fn auth(c: &mut Checker<'_>, a: AuthFile) -> Auth {
    let p = KeyPath::default().key("auth");
    Auth {
        cache_ttl: c.seconds(
            p.key("cache_ttl"),
            a.cache_ttl,
            def::AUTH_CACHE_TTL_SECS,
            0,
            86_400,
        ),
        cache_size: c.number(
            p.key("cache_size"),
            a.cache_size,
            def::AUTH_CACHE_SIZE,
            1,
            10_000_000,
        ) as usize,
    }
}

/// A list of networks (`trusted_networks`, `metrics_from`): CIDR or a single address.
fn networks(c: &mut Checker<'_>, path: &KeyPath, list: Vec<String>) -> Vec<IpNet> {
    let mut out = Vec::new();
    for (i, net) in list.iter().enumerate() {
        match parse_network(net) {
            Some(n) => out.push(n),
            None => c.error(
                &path.index(i),
                format!("{net:?} is not a network; write an address or CIDR such as \"127.0.0.1/32\" or \"::1\""),
            ),
        }
    }
    out
}

fn parse_network(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

fn is_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn system_hostname() -> String {
    let name = gethostname::gethostname()
        .to_string_lossy()
        .to_ascii_lowercase();
    if is_hostname(&name) {
        name
    } else {
        "localhost".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RelayTls, RouteMatch};

    pub(super) fn errors(text: &str) -> Vec<String> {
        match from_text(text, Some(Path::new("p.toml"))) {
            Ok(_) => vec![],
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn defaults_are_valid_and_match_design() {
        let c = from_text("", None).expect("defaults");
        let ports: Vec<u16> = c.listeners.iter().map(|l| l.addr.port()).collect();
        assert_eq!(ports, [25, 26, 587, 465]);
        assert_eq!(c.limits.max_message_size, 26_214_400);
        assert_eq!(c.limits.max_recipients, 100);
        assert!(c.trusted_networks.is_empty());
        assert_eq!(c.bare_newlines, BareNewlines::Reject);
    }

    #[test]
    fn every_error_is_reported_with_line_and_key() {
        let text = "hostnam = \"x\"\n[[listener]]\naddr = \"nope\"\nrole = \"smtp\"\n[limits]\nmax_recipients = 0\ncolour = 1\n";
        let errs = errors(text);
        assert_eq!(errs.len(), 5, "{errs:#?}");
        assert!(
            errs[0].starts_with(
                "p.toml:1: hostnam: unknown key; valid keys here are: hostname, data_dir"
            ),
            "{}",
            errs[0]
        );
        assert!(
            errs[1].starts_with("p.toml:3: listener[0].addr: \"nope\" is not an address"),
            "{}",
            errs[1]
        );
        assert!(
            errs[2].starts_with("p.toml:4: listener[0].role: \"smtp\" is not a role"),
            "{}",
            errs[2]
        );
        assert!(
            errs[3].starts_with("p.toml:6: limits.max_recipients: 0 is out of range"),
            "{}",
            errs[3]
        );
        assert!(
            errs[4].starts_with(
                "p.toml:7: limits.colour: unknown key; valid keys here are: max_message_size"
            ),
            "{}",
            errs[4]
        );
    }

    #[test]
    fn type_and_syntax_errors_name_the_line() {
        let errs = errors("hostname = \"a.b\"\n[limits]\nmax_recipients = \"many\"\n");
        assert_eq!(errs.len(), 1);
        assert!(errs[0].starts_with("p.toml:3: "), "{}", errs[0]);
        let errs = errors("hostname = \n");
        assert!(
            errs[0].starts_with("p.toml:1: not valid TOML"),
            "{}",
            errs[0]
        );
    }

    /// `postern sendmail` reads the settings only: a file the caller cannot
    /// see is no error there, but stays one for everything else.
    #[test]
    fn files_are_looked_at_unless_only_the_settings_are_wanted() {
        let text = "[tls]\ncert = \"/nonexistent/cert.pem\"\nkey = \"/nonexistent/key.pem\"\n";
        assert_eq!(errors(text).len(), 2);
        let c = from_text_checking(text, None, Files::Skip).expect("settings only");
        assert_eq!(
            c.tls.map(|t| t.cert),
            Some(PathBuf::from("/nonexistent/cert.pem"))
        );
    }

    #[test]
    fn limits_are_checked_at_the_limit() {
        assert!(errors("[limits]\nmax_command_line = 512\nmax_text_line = 1000\n").is_empty());
        assert_eq!(errors("[limits]\nmax_command_line = 511\n").len(), 1);
        assert_eq!(errors("[limits]\nmax_text_line = 999\n").len(), 1);
    }

    #[test]
    fn the_login_cache_is_on_by_default_and_off_at_zero() {
        let c = from_text("", None).expect("defaults");
        assert_eq!(c.auth.cache_ttl, Duration::from_secs(300));
        assert_eq!(c.auth.cache_size, 10_000);
        let c = from_text("[auth]\ncache_ttl = 0\ncache_size = 1\n", None).expect("valid");
        assert_eq!((c.auth.cache_ttl, c.auth.cache_size), (Duration::ZERO, 1));
        assert!(errors("[auth]\ncache_ttl = 86400\ncache_size = 10000000\n").is_empty());
        let errs = errors("[auth]\ncache_ttl = 86401\ncache_size = 0\ncolour = 1\n");
        assert_eq!(errs.len(), 3, "{errs:#?}");
        assert!(
            errs[2]
                .contains("auth.colour: unknown key; valid keys here are: cache_ttl, cache_size"),
            "{errs:?}"
        );
    }

    #[test]
    fn relay_and_routes() {
        let c = from_text("[relay]\nhost = \"smtp.isp.example\"\ntls = \"implicit\"\n[[route]]\nsender_domain = \"Customer.example\"\nhost = \"r\"\nport = 2525\ntls = \"none\"\n", None).expect("valid");
        let relay = c.relay.expect("relay");
        assert_eq!((relay.port, relay.tls), (465, RelayTls::Implicit));
        assert_eq!(
            c.routes[0].matches,
            RouteMatch::SenderDomain("customer.example".into())
        );
        assert_eq!(c.routes[0].relay.port, 2525);
        let errs = errors("[[route]]\nhost = \"r\"\n");
        assert!(
            errs[0].contains("route[0]: needs exactly one of domain"),
            "{errs:?}"
        );
    }

    /// Issue #9 item 12: a relay password never goes over a plaintext link
    /// unless the operator says the link is private.
    #[test]
    fn plaintext_auth_to_a_relay_needs_an_explicit_yes() {
        let pw = tempfile::NamedTempFile::new().expect("temp file");
        let auth = format!(
            "host = \"r\"\ntls = \"none\"\nusername = \"u\"\npassword_file = \"{}\"\n",
            pw.path().display()
        );
        let text = format!(
            "[relay]\n{auth}[fallback_relay]\n{auth}[[route]]\ndomain = \"d.example\"\n{auth}"
        );
        let errs = errors(&text);
        assert_eq!(errs.len(), 3, "{errs:#?}");
        for (err, key) in errs
            .iter()
            .zip(["relay.tls", "fallback_relay.tls", "route[0].tls"])
        {
            assert!(
                err.contains(&format!("{key}: \"none\" would send the relay password in clear text; set tls = \"starttls\" or \"implicit\", or allow_plaintext_auth = true if the link is private")),
                "{err}"
            );
        }
        let allowed = text.replace(
            "tls = \"none\"\n",
            "tls = \"none\"\nallow_plaintext_auth = true\n",
        );
        let c = from_text(&allowed, None).expect("allowed explicitly");
        assert!(c.relay.expect("relay").allow_plaintext_auth);
        assert!(c.routes[0].relay.allow_plaintext_auth);
        // Without a username there is no password to protect.
        assert!(errors("[relay]\nhost = \"r\"\ntls = \"none\"\n").is_empty());
    }
}
