//! `postern check HOST` and `postern check --outbound`: reads the options and
//! the password, shows live progress on a terminal, prints the table or the
//! JSON, and turns "no way works" into exit code 1.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::mpsc;

use super::ConfigArg;
use crate::check::classify::TlsPolicy;
use crate::check::probe::{Credentials, Progress, Security};
use crate::check::report::TargetKind;
use crate::check::{self, OutboundTarget};
use crate::config::{Relay, RelayTls};

/// Port 25 of these answers from any network that does not block it; each
/// belongs to a different large provider, so one redirecting relay shows.
const WELL_KNOWN_MX: [&str; 4] = [
    "gmail-smtp-in.l.google.com",
    "mx01.mail.icloud.com",
    "mta5.am0.yahoodns.net",
    "mx1.mail.ovh.net",
];

#[derive(Debug, Clone)]
struct PortList(Vec<(u16, Security)>);

fn port_list(s: &str) -> Result<PortList, String> {
    check::parse_ports(s)
        .map(PortList)
        .map_err(|e| e.to_string())
}

fn seconds(s: &str) -> Result<Duration, String> {
    match s.parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs <= 600.0 => Ok(Duration::from_secs_f64(secs)),
        _ => Err(format!(
            "{s:?} is not a number of seconds between 0 and 600"
        )),
    }
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The mail server to check, as you would type it into a mail client.
    #[arg(required_unless_present = "outbound")]
    host: Option<String>,
    /// Ports to probe [default: 25,26,465,587,2525,443]; add /tls or
    /// /starttls to choose the mode (default: implicit TLS on 465 and 443).
    #[arg(long, value_name = "LIST", value_parser = port_list)]
    ports: Option<PortList>,
    /// Print one JSON object (fields documented in README.md).
    #[arg(long)]
    json: bool,
    /// Also authenticate as this user (the full address) on each working port.
    #[arg(long, value_name = "ADDRESS")]
    user: Option<String>,
    /// Read the password from standard input instead of the terminal.
    #[arg(long, requires = "user")]
    password_stdin: bool,
    /// Also send one short test message to this address through the best port.
    #[arg(long, value_name = "ADDRESS", requires = "user")]
    send_to: Option<String>,
    /// The domain you send as (default: that of --user): when every port
    /// is blocked, whether its SPF/DMARC pass through your ISP's relay.
    #[arg(long, value_name = "DOMAIN")]
    domain: Option<String>,
    /// Seconds for all probes together.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = seconds)]
    timeout: Duration,
    /// Also trust the CA certificates in this PEM file (a private CA).
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// Check this machine's way out instead: port 25 of well-known mail
    /// servers, and the configured `[relay]` and `[fallback_relay]`.
    #[arg(long, conflicts_with_all = ["host", "ports", "user", "send_to"])]
    outbound: bool,
    /// With --outbound: the mail servers to try on port 25 (HOST or HOST:PORT).
    #[arg(
        long,
        value_name = "HOSTS",
        value_delimiter = ',',
        requires = "outbound"
    )]
    mx_hosts: Vec<String>,
}

pub async fn run(args: Args, config: &ConfigArg) -> anyhow::Result<()> {
    let extra_roots = match &args.ca_file {
        Some(path) => check::load_ca_file(path)?,
        None => Vec::new(),
    };
    if args.outbound {
        return outbound(args, config, extra_roots).await;
    }
    let host = args.host.clone().unwrap_or_default();
    let credentials = match &args.user {
        Some(user) => Some(Credentials {
            user: user.clone(),
            password: password(user, args.password_stdin)?,
        }),
        None => None,
    };
    let ports = args.ports.clone().map(|p| p.0).unwrap_or_else(|| {
        check::DEFAULT_PORTS
            .iter()
            .map(|&p| (p, Security::for_port(p)))
            .collect()
    });
    let labels: Vec<String> = ports.iter().map(|(p, _)| p.to_string()).collect();
    let (progress, shown) = progress(!args.json, format!("checking {host}"), labels);
    let report = check::run(check::Options {
        host,
        ports,
        timeout: args.timeout,
        credentials,
        send_to: args.send_to.clone(),
        domain: args.domain.clone().or_else(|| {
            args.user
                .as_deref()
                .and_then(|u| u.rsplit_once('@'))
                .map(|(_, d)| d.to_ascii_lowercase())
        }),
        extra_roots,
        progress,
    })
    .await;
    finish(shown).await;
    print(&render(args.json, &report, report.render())?)?;
    anyhow::ensure!(
        report.ok,
        "no way to send mail through {} works from this network (see above)",
        report.host
    );
    Ok(())
}

fn password(user: &str, from_stdin: bool) -> anyhow::Result<String> {
    if from_stdin {
        return super::read_password(true);
    }
    let password = rpassword::prompt_password(format!("Password for {user}: "))
        .context("cannot read the password from the terminal")?;
    anyhow::ensure!(!password.is_empty(), "the password is empty");
    Ok(password)
}

/// The report as JSON with --json, else as its one-screen table.
fn render(json: bool, report: &impl serde::Serialize, table: String) -> anyhow::Result<String> {
    Ok(if json {
        serde_json::to_string_pretty(report)?
    } else {
        table
    })
}

fn print(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", text.trim_end()).context("cannot write to standard output")?;
    Ok(())
}

async fn outbound(
    args: Args,
    config: &ConfigArg,
    extra_roots: Vec<rustls_pki_types::CertificateDer<'static>>,
) -> anyhow::Result<()> {
    let config = config.load_settings()?;
    let mx: Vec<String> = if args.mx_hosts.is_empty() {
        WELL_KNOWN_MX.iter().map(ToString::to_string).collect()
    } else {
        args.mx_hosts.clone()
    };
    let mut targets = Vec::new();
    for item in &mx {
        let (host, port) = split_host_port(item, config.delivery.mx_port)?;
        targets.push(OutboundTarget {
            kind: TargetKind::Mx,
            host,
            port,
            security: Security::StartTls,
            policy: TlsPolicy::Optional,
            credentials: None,
        });
    }
    for (kind, relay) in [
        (TargetKind::Relay, &config.relay),
        (TargetKind::FallbackRelay, &config.fallback_relay),
    ] {
        if let Some(relay) = relay {
            targets.push(relay_target(kind, relay)?);
        }
    }
    let labels: Vec<String> = targets
        .iter()
        .map(|t| format!("{}:{}", t.host, t.port))
        .collect();
    let (progress, shown) = progress(!args.json, "checking the way out".into(), labels);
    let report = check::run_outbound(
        targets,
        args.timeout,
        config.hostname.clone(),
        extra_roots,
        progress,
    )
    .await;
    finish(shown).await;
    // Then whether what leaves is believed: each hosted domain's ways out.
    let routes = super::dns::every_domains_ways(&config).await?;
    if args.json {
        let mut value = serde_json::to_value(&report)?;
        if let Some(object) = value.as_object_mut() {
            let routes: Vec<serde_json::Value> = routes
                .iter()
                .map(|(domain, verdicts)| {
                    serde_json::json!({
                        "domain": domain,
                        "paths": verdicts.iter().map(crate::dmarc::sending::Verdict::as_json).collect::<Vec<_>>(),
                    })
                })
                .collect();
            object.insert("routes".into(), routes.into());
        }
        print(&serde_json::to_string_pretty(&value)?)?;
    } else {
        let mut text = report.render();
        for (domain, verdicts) in &routes {
            text.push_str(&format!("\nHow mail of {domain} leaves:\n"));
            for verdict in verdicts {
                let mark = if verdict.dmarc_passes { "ok" } else { "FAILS" };
                text.push_str(&format!("  {mark}: {}\n", verdict.sentence));
            }
        }
        print(&text)?;
    }
    anyhow::ensure!(report.ok, "mail cannot leave this machine (see above)");
    Ok(())
}

fn split_host_port(item: &str, default: u16) -> anyhow::Result<(String, u16)> {
    // "[2001:db8::1]:25", "mx.example:2525", "192.0.2.1", "2001:db8::1".
    if let Some(rest) = item.strip_prefix('[') {
        let (host, port) = rest.split_once(']').context("unclosed [ in --mx-hosts")?;
        let port = match port.strip_prefix(':') {
            Some(p) => p.parse().with_context(|| format!("bad port in {item:?}"))?,
            None => default,
        };
        return Ok((host.to_string(), port));
    }
    match item.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => Ok((
            host.to_string(),
            port.parse()
                .with_context(|| format!("bad port in {item:?}"))?,
        )),
        _ => Ok((item.to_string(), default)),
    }
}

fn relay_target(kind: TargetKind, relay: &Relay) -> anyhow::Result<OutboundTarget> {
    let credentials = match (&relay.username, &relay.password_file) {
        (Some(user), Some(file)) => {
            let password = std::fs::read_to_string(file).with_context(|| {
                format!("cannot read the relay password file {}", file.display())
            })?;
            Some(Credentials {
                user: user.clone(),
                password: password.trim_end_matches(['\r', '\n']).to_string(),
            })
        }
        _ => None,
    };
    let (security, policy) = match (relay.tls, relay.tls_verify) {
        (RelayTls::None, _) => (Security::Plain, TlsPolicy::Optional),
        (RelayTls::StartTls, true) => (Security::StartTls, TlsPolicy::Valid),
        (RelayTls::StartTls, false) => (Security::StartTls, TlsPolicy::Encrypted),
        (RelayTls::Implicit, true) => (Security::Implicit, TlsPolicy::Valid),
        (RelayTls::Implicit, false) => (Security::Implicit, TlsPolicy::Encrypted),
    };
    Ok(OutboundTarget {
        kind,
        host: relay.host.clone(),
        port: relay.port,
        security,
        policy,
        credentials,
    })
}

type Shown = Option<tokio::task::JoinHandle<()>>;

/// A one-line live display of each probe's step, redrawn in place; only on a
/// terminal and not for --json, so pipes and scripts see the result alone.
fn progress(
    wanted: bool,
    title: String,
    labels: Vec<String>,
) -> (Option<mpsc::UnboundedSender<Progress>>, Shown) {
    if !wanted || !std::io::stdout().is_terminal() {
        return (None, None);
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<Progress>();
    let task = tokio::spawn(async move {
        let mut steps: Vec<Option<&'static str>> = vec![Some("waiting"); labels.len()];
        while let Some(event) = rx.recv().await {
            if let Some(slot) = steps.get_mut(event.index) {
                *slot = event.step.map(|s| s.word());
            }
            let done = steps.iter().filter(|s| s.is_none()).count();
            // Only the ports still running, so the line stays short.
            let running: Vec<String> = labels
                .iter()
                .zip(&steps)
                .filter_map(|(l, s)| s.map(|s| format!("{l} {s}")))
                .collect();
            // One line that never wraps, or "\r" could not redraw it.
            let text: String = format!(
                "{title} [{done}/{} done] {}",
                labels.len(),
                running.join(" · ")
            )
            .chars()
            .take(79)
            .collect();
            let mut out = std::io::stdout().lock();
            let _ = write!(out, "\r\x1b[2K{text}");
            let _ = out.flush();
        }
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "\r\x1b[2K");
        let _ = out.flush();
    });
    (Some(tx), Some(task))
}

async fn finish(shown: Shown) {
    if let Some(task) = shown {
        let _ = task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mx_host_items() {
        let cases = [
            ("mx.example", ("mx.example", 25)),
            ("mx.example:2525", ("mx.example", 2525)),
            ("192.0.2.1", ("192.0.2.1", 25)),
            ("2001:db8::1", ("2001:db8::1", 25)),
            ("[2001:db8::1]:26", ("2001:db8::1", 26)),
        ];
        for (item, (host, port)) in cases {
            assert_eq!(split_host_port(item, 25).unwrap(), (host.to_string(), port));
        }
        assert!(split_host_port("mx:x", 25).is_err());
    }
}
