//! `postern check`: the port-block diagnostic, run from the user's network.
//! Resolves the host, probes every port in parallel under one deadline
//! (probe.rs), asks the server which probes reached it (port echo), classifies
//! each port (classify.rs, pure) and hands a `Report` to report.rs for the
//! table or JSON. `run_outbound` does the same for a server's way out.
//!
//! Time budget: the probes get four fifths of `--timeout`, the port echo the
//! rest; `--send-to` then gets up to one more `--timeout` of its own.

pub mod classify;
pub mod probe;
pub mod recommend;
pub mod report;
pub mod tls;
pub mod wayout;
pub mod wire;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout_at};

use classify::{Status, TlsPolicy, Verdict};
use probe::{Context, Credentials, PortProbe, Progress, Security, SendOutcome, Target};
use report::{OutboundReport, Report, TargetKind};
use tls::TlsSetup;

/// Failures of the command itself, before any probe.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(
        "{0:?} is not a port list: write ports as 25,587,465 (optionally 2465/tls or 2587/starttls)"
    )]
    Ports(String),
    #[error("cannot read CA certificates from {path}: {reason}")]
    CaFile { path: String, reason: String },
}

/// The ports probed when `--ports` is not given.
pub const DEFAULT_PORTS: [u16; 6] = [25, 26, 465, 587, 2525, 443];

/// Parses `--ports`: `25,587,465`, each optionally `/tls` or `/starttls`
/// (default: implicit TLS on 465 and 443, STARTTLS elsewhere).
pub fn parse_ports(list: &str) -> Result<Vec<(u16, Security)>, CheckError> {
    let bad = || CheckError::Ports(list.to_string());
    let mut ports: Vec<(u16, Security)> = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (number, mode) = item.split_once('/').unwrap_or((item, ""));
        let port: u16 = number.parse().map_err(|_| bad())?;
        let security = match mode.to_ascii_lowercase().as_str() {
            "" => Security::for_port(port),
            "tls" | "ssl" | "implicit" => Security::Implicit,
            "starttls" => Security::StartTls,
            _ => return Err(bad()),
        };
        if port == 0 {
            return Err(bad());
        }
        if !ports.iter().any(|(p, _)| *p == port) {
            ports.push((port, security));
        }
    }
    if ports.is_empty() {
        return Err(bad());
    }
    Ok(ports)
}

/// Reads extra trusted roots (PEM) for certificates from a private CA.
pub fn load_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, CheckError> {
    let err = |reason: String| CheckError::CaFile {
        path: path.display().to_string(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no certificate in the file".into()));
    }
    Ok(certs)
}

/// What the user asked for.
pub struct Options {
    pub host: String,
    pub ports: Vec<(u16, Security)>,
    pub timeout: Duration,
    pub credentials: Option<Credentials>,
    pub send_to: Option<String>,
    /// The domain the user sends as: what SPF/DMARC make of mail through
    /// the ISP relay, when that is the way out.
    pub domain: Option<String>,
    pub extra_roots: Vec<CertificateDer<'static>>,
    pub progress: Option<UnboundedSender<Progress>>,
}

/// Runs the diagnostic. Never fails: an unreachable host is a result too.
pub async fn run(opts: Options) -> Report {
    let started = Instant::now();
    let deadline = started + opts.timeout;
    let probe_deadline = started + opts.timeout * 4 / 5;
    let host = opts
        .host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let token = format!("{:032x}", rand::random::<u128>());
    let addrs = match resolve(&host, probe_deadline).await {
        Ok(addrs) => addrs,
        Err(why) => return Report::unreachable(&host, &opts.ports, why, started.elapsed()),
    };
    let ctx = Context {
        tls: TlsSetup::new(opts.extra_roots),
        ehlo_name: format!("check-{token}.postern.invalid"),
        started,
        deadline: probe_deadline,
        credentials: opts.credentials,
        auth_needs_valid_cert: true,
        progress: opts.progress,
    };
    let targets: Vec<Target> = opts
        .ports
        .iter()
        .enumerate()
        .map(|(index, &(port, security))| Target {
            index,
            host: host.clone(),
            addrs: addrs.clone(),
            port,
            security,
        })
        .collect();
    let ctx = Arc::new(ctx);
    let probes = probe_all(&ctx, &targets).await;
    let echo_ctx = Arc::new(Context {
        deadline,
        progress: None,
        ..Context::clone(&ctx)
    });
    let (echo_asked, echo) = ask_echo(&echo_ctx, &targets, &probes, &token).await;
    let unreachable = classify::host_unreachable(&probes);
    let mut verdicts = classify::classify(&host, &probes, echo.as_ref());
    if unreachable.is_some() {
        for v in &mut verdicts {
            v.status = Status::Unreachable;
        }
    }
    let with_password = ctx.credentials.is_some();
    let recommendation = recommend::recommend(
        &host,
        &probes,
        &verdicts,
        unreachable.as_deref(),
        with_password,
    );
    let send = match (&opts.send_to, &ctx.credentials, &recommendation.settings) {
        (Some(to), Some(creds), Some(best)) => {
            let target = targets.iter().find(|t| t.port == best.port).cloned();
            let send_ctx = Arc::new(Context {
                deadline: Instant::now() + opts.timeout,
                ..Context::clone(&ctx)
            });
            match target {
                Some(t) => Some(probe::send_test(send_ctx, t, &creds.user, to).await),
                None => None,
            }
        }
        (Some(_), _, _) => Some(SendOutcome {
            port: None,
            accepted: false,
            queue_id: None,
            detail: "not sent: no port works for sending from this network".into(),
            stopped: None,
        }),
        _ => None,
    };
    // Nothing of the host's got through: look for the way out, with a
    // --timeout of its own (as --send-to has).
    let way_out = if recommendation.blocked {
        let way_ctx = Arc::new(Context {
            deadline: Instant::now() + opts.timeout,
            credentials: None,
            auth_needs_valid_cert: false,
            progress: None,
            ..Context::clone(&ctx)
        });
        let deadline = way_ctx.deadline;
        Some(
            wayout::find(
                &way_ctx,
                &host,
                &addrs,
                &token,
                opts.domain.clone(),
                deadline,
            )
            .await,
        )
    } else {
        None
    };
    drop(ctx);
    Report::build(report::Parts {
        host,
        addrs,
        probes,
        verdicts,
        echo,
        echo_asked,
        unreachable,
        recommendation,
        send,
        way_out,
        elapsed: started.elapsed(),
    })
}

/// Resolves a host name (or takes an address as it is) before `deadline`.
async fn resolve(host: &str, deadline: Instant) -> Result<Vec<IpAddr>, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    match timeout_at(deadline, tokio::net::lookup_host((host, 0))).await {
        Err(_) => Err("the name server did not answer before the deadline".into()),
        Ok(Err(e)) => Err(format!("the name does not resolve ({e})")),
        Ok(Ok(addrs)) => {
            let mut ips: Vec<IpAddr> = Vec::new();
            for a in addrs {
                if !ips.contains(&a.ip()) {
                    ips.push(a.ip());
                }
            }
            if ips.is_empty() {
                Err("the name has no address".into())
            } else {
                Ok(ips)
            }
        }
    }
}

/// Runs one probe per target at once; results in the targets' order.
async fn probe_all(ctx: &Arc<Context>, targets: &[Target]) -> Vec<PortProbe> {
    let mut set = JoinSet::new();
    for t in targets {
        let (ctx, t) = (ctx.clone(), t.clone());
        set.spawn(async move { (t.index, probe::probe(ctx, t).await) });
    }
    let mut results: Vec<Option<PortProbe>> = vec![None; targets.len()];
    while let Some(joined) = set.join_next().await {
        if let Ok((i, p)) = joined
            && let Some(slot) = results.get_mut(i)
        {
            *slot = Some(p);
        }
    }
    // A probe task cannot panic by design; if one did, its port shows as a
    // failed connection rather than vanishing from the report.
    targets
        .iter()
        .zip(results)
        .map(|(t, r)| {
            r.unwrap_or_else(|| {
                let mut p = PortProbe::new(t.port, t.security);
                p.stop = Some(probe::Stop::Connect(probe::ConnectError::Other(
                    "the probe failed".into(),
                )));
                p
            })
        })
        .collect()
}

/// Asks, on every port where a Postern greeted, which ports saw the token.
/// Returns whether anything was asked, and the host's answer if one counts.
async fn ask_echo(
    ctx: &Arc<Context>,
    targets: &[Target],
    probes: &[PortProbe],
    token: &str,
) -> (bool, Option<BTreeSet<u16>>) {
    let mut set = JoinSet::new();
    for (t, p) in targets.iter().zip(probes) {
        let postern = p
            .greeting
            .as_ref()
            .is_some_and(|g| g.lines.join(" ").to_ascii_lowercase().contains("postern"));
        if postern && p.token_sent {
            let (ctx, t, token) = (ctx.clone(), t.clone(), token.to_string());
            set.spawn(async move { (t.port, probe::echo(ctx, t, token).await) });
        }
    }
    let set_was_empty = set.is_empty();
    let mut answers = Vec::new();
    while let Some(joined) = set.join_next().await {
        if let Ok((port, Some(seen))) = joined {
            answers.push((port, seen));
        }
    }
    (!set_was_empty, classify::echo_home(&answers))
}

/// One destination for `--outbound`.
#[derive(Debug, Clone)]
pub struct OutboundTarget {
    pub kind: TargetKind,
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub policy: TlsPolicy,
    pub credentials: Option<Credentials>,
}

/// Probes port 25 of MX hosts (well-known ones unless others are named) and
/// the configured relays from this machine, with the server's own name in EHLO.
pub async fn run_outbound(
    targets: Vec<OutboundTarget>,
    timeout: Duration,
    ehlo_name: String,
    extra_roots: Vec<CertificateDer<'static>>,
    progress: Option<UnboundedSender<Progress>>,
) -> OutboundReport {
    let started = Instant::now();
    let deadline = started + timeout;
    let tls = TlsSetup::new(extra_roots);
    let mut set = JoinSet::new();
    for (index, t) in targets.iter().cloned().enumerate() {
        let ctx = Arc::new(Context {
            tls: tls.clone(),
            ehlo_name: ehlo_name.clone(),
            started,
            deadline,
            credentials: t.credentials.clone(),
            auth_needs_valid_cert: t.policy == TlsPolicy::Valid,
            progress: progress.clone(),
        });
        set.spawn(async move {
            let probe = match resolve(&t.host, deadline).await {
                Ok(addrs) => {
                    let target = Target {
                        index,
                        host: t.host.clone(),
                        addrs,
                        port: t.port,
                        security: t.security,
                    };
                    probe::probe(ctx, target).await
                }
                Err(why) => {
                    let mut p = PortProbe::new(t.port, t.security);
                    p.stop = Some(probe::Stop::Connect(probe::ConnectError::NoRoute(why)));
                    p
                }
            };
            (index, probe)
        });
    }
    let mut probes: Vec<Option<PortProbe>> = vec![None; targets.len()];
    while let Some(joined) = set.join_next().await {
        if let Ok((i, p)) = joined
            && let Some(slot) = probes.get_mut(i)
        {
            *slot = Some(p);
        }
    }
    drop(progress);
    let pairs: Vec<(String, PortProbe)> = targets
        .iter()
        .zip(probes)
        .map(|(t, p)| {
            (
                t.host.clone(),
                p.unwrap_or_else(|| PortProbe::new(t.port, t.security)),
            )
        })
        .collect();
    let mut verdicts: Vec<Verdict> = targets
        .iter()
        .zip(&pairs)
        .map(|(t, (host, p))| classify::base(p, t.policy, host, p.latency.is_some()))
        .collect();
    let mx: Vec<usize> = (0..targets.len())
        .filter(|&i| targets.get(i).is_some_and(|t| t.kind == TargetKind::Mx))
        .collect();
    let mx_pairs: Vec<(String, PortProbe)> =
        mx.iter().filter_map(|&i| pairs.get(i).cloned()).collect();
    let mut mx_verdicts: Vec<Verdict> = mx
        .iter()
        .filter_map(|&i| verdicts.get(i).cloned())
        .collect();
    classify::outbound_interception(&mx_pairs, &mut mx_verdicts);
    for (&i, v) in mx.iter().zip(mx_verdicts) {
        if let Some(slot) = verdicts.get_mut(i) {
            *slot = v;
        }
    }
    OutboundReport::build(targets, pairs, verdicts, started.elapsed())
}
