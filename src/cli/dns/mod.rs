//! `postern dns DOMAIN [--check [--via HOST]] [--json]`: the records to publish,
//! ready to paste into a zone, and with --check what the DNS says about each
//! and whether each way out (and a client's own relay, with --via) passes DMARC.

use std::io::Write;

use hickory_resolver::proto::rr::RecordType;

use super::ConfigArg;
use crate::config::Config;
use crate::dkim;
use crate::dmarc::sending;
use crate::dns::Dns;
pub(crate) mod paths;
pub(crate) mod publish;

use crate::http::endpoints::submission_endpoints;
use crate::store::Store;
use publish::{Finding, Record};

#[derive(Debug, clap::Args)]
pub struct Args {
    domain: String,
    /// Look each record up and say what is missing or wrong (exit 1 if any).
    #[arg(long)]
    check: bool,
    /// JSON instead of zone-file lines.
    #[arg(long)]
    json: bool,
    /// With --check: also judge mail that a user's mail client sends through
    /// this relay instead of this server (their ISP's, when every port to
    /// this server is blocked): nothing signs it with the domain's DKIM key,
    /// so only SPF can make DMARC pass.
    #[arg(long, value_name = "HOST", requires = "check")]
    via: Vec<String>,
}

fn kind(record: &Record) -> RecordType {
    match record.kind {
        "MX" => RecordType::MX,
        "SRV" => RecordType::SRV,
        "CNAME" => RecordType::CNAME,
        _ => RecordType::TXT,
    }
}

async fn find(dns: &Dns, record: &Record) -> anyhow::Result<Finding> {
    let found = dns.lookup_values(&record.name, kind(record)).await?;
    let finding = publish::compare(record, &found);
    if finding == Finding::Missing && record.kind == "CNAME" {
        // An address record instead of the alias serves as well.
        let v4 = dns.lookup_values(&record.name, RecordType::A).await?;
        let v6 = dns.lookup_values(&record.name, RecordType::AAAA).await?;
        if !v4.is_empty() || !v6.is_empty() {
            return Ok(Finding::Ok);
        }
    }
    Ok(finding)
}

pub async fn run(args: Args, config: &ConfigArg) -> anyhow::Result<()> {
    let config = config.load()?;
    let store = Store::open(&config.data_dir).await?;
    let domain = args.domain.trim_end_matches('.').to_lowercase();
    anyhow::ensure!(
        store.is_hosted_domain(&domain).await?,
        "domain {domain} is not hosted here; add it first with `postern domain add {domain}`"
    );
    let mut ports: Vec<_> = config
        .listeners
        .iter()
        .map(|l| (l.addr.port(), l.role))
        .collect();
    ports.dedup();
    let https = config
        .http
        .tls_addr
        .filter(|_| config.http.submission_on_tls)
        .map(|a| a.port());
    let endpoints = submission_endpoints(&ports, https);
    let dkim = dkim::public_records(&config.data_dir, &domain)?;
    let ways = paths::paths(&config, &domain);
    let records = publish::records(
        &domain,
        &config.hostname,
        &paths::spf_record(&ways),
        &dkim,
        &endpoints,
        &crate::http::mta_sts_policy(&config),
    );

    let (findings, verdicts) = if args.check {
        let dns = Dns::new(&config.delivery.nameservers)?;
        let mut out = Vec::with_capacity(records.len());
        for r in &records {
            out.push(Some(find(&dns, r).await?));
        }
        let dkim_published = records
            .iter()
            .zip(&out)
            .any(|(r, f)| signs_now(&dkim, &domain, &r.name) && *f == Some(Finding::Ok));
        let mut verdicts = judge_ways(&config, &dns, &domain, dkim_published).await;
        for relay in &args.via {
            let name = format!("through {relay} (a mail client's own relay, --via)");
            verdicts.push(
                sending::judge(
                    &dns,
                    &config.hostname,
                    &domain,
                    &name,
                    Some(relay),
                    sending::Dkim::NotSigned,
                )
                .await,
            );
        }
        (out, verdicts)
    } else {
        (vec![None; records.len()], Vec::new())
    };

    let mut out = std::io::stdout();
    if args.json {
        let mut items: Vec<serde_json::Value> = records
            .iter()
            .zip(&findings)
            .map(|(r, f)| {
                let mut v = serde_json::to_value(r).unwrap_or_default();
                if let (Some(f), Some(obj)) = (f, v.as_object_mut())
                    && let Ok(serde_json::Value::Object(finding)) = serde_json::to_value(f)
                {
                    obj.extend(finding);
                }
                v
            })
            .collect();
        // With --check, each way out follows the records, as "type": "PATH".
        items.extend(verdicts.iter().map(sending::Verdict::as_json));
        writeln!(out, "{}", serde_json::to_string_pretty(&items)?)?;
    } else {
        writeln!(
            out,
            "; DNS records for {domain}, served by {}\n",
            config.hostname
        )?;
        for (r, f) in records.iter().zip(&findings) {
            writeln!(out, "{}", r.zone_line())?;
            match f {
                Some(Finding::Ok) => writeln!(out, ";   check: ok")?,
                Some(Finding::Missing) => writeln!(out, ";   check: MISSING")?,
                Some(Finding::Wrong(found)) => writeln!(out, ";   check: WRONG, found: {found}")?,
                None => {}
            }
        }
        writeln!(out, "\n; How mail of {domain} leaves this server:")?;
        if verdicts.is_empty() {
            for way in &ways {
                writeln!(out, ";   {}", way.name)?;
            }
        }
        for verdict in &verdicts {
            let mark = if verdict.dmarc_passes { "ok" } else { "FAILS" };
            writeln!(out, ";   {mark}: {}", verdict.sentence)?;
        }
    }
    let wrong = findings
        .iter()
        .filter(|f| matches!(f, Some(Finding::Missing | Finding::Wrong(_))))
        .count();
    let failing = verdicts.iter().filter(|v| !v.dmarc_passes).count();
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    anyhow::ensure!(
        wrong == 0 && failing == 0,
        "{wrong} record{} missing or wrong; {failing} way{} out where DMARC will fail",
        plural(wrong),
        plural(failing)
    );
    Ok(())
}

/// Whether `name` is the DKIM record of the RSA key that signs now: the one
/// every receiver can check (many do not check Ed25519 signatures).
fn signs_now(keys: &[(dkim::DomainKey, String)], domain: &str, name: &str) -> bool {
    keys.iter().any(|(key, _)| {
        key.state == dkim::KeyState::Active
            && key.algorithm == dkim::Algorithm::Rsa
            && name == format!("{}._domainkey.{domain}.", key.selector)
    })
}

/// What a receiver will make of `domain`'s mail on each way out of this
/// server, given whether its signing key is published.
async fn judge_ways(
    config: &Config,
    dns: &Dns,
    domain: &str,
    dkim_published: bool,
) -> Vec<sending::Verdict> {
    let mut verdicts = Vec::new();
    for way in &paths::paths(config, domain) {
        verdicts.push(paths::judge(dns, &config.hostname, domain, way, dkim_published).await);
    }
    verdicts
}

/// The ways out of every hosted domain, judged as `postern dns --check`
/// judges them (for `postern check --outbound`); empty when this machine
/// hosts nothing yet.
pub async fn every_domains_ways(
    config: &Config,
) -> anyhow::Result<Vec<(String, Vec<sending::Verdict>)>> {
    if !config.data_dir.join("store.sqlite").exists() {
        return Ok(Vec::new());
    }
    let store = Store::open(&config.data_dir).await?;
    let dns = Dns::new(&config.delivery.nameservers)?;
    let mut out = Vec::new();
    for domain in store.domains().await? {
        let keys = dkim::public_records(&config.data_dir, &domain)?;
        let mut dkim_published = false;
        for record in publish::dkim_records(&domain, &keys) {
            if signs_now(&keys, &domain, &record.name) && find(&dns, &record).await? == Finding::Ok
            {
                dkim_published = true;
            }
        }
        let verdicts = judge_ways(config, &dns, &domain, dkim_published).await;
        out.push((domain, verdicts));
    }
    Ok(out)
}
