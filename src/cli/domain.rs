//! `postern domain add|del|list`.

use std::io::Write;

use super::ConfigArg;
use super::dns::publish::dkim_records;
use crate::clock::now_unix;
use crate::dkim;
use crate::store::Store;

#[derive(Debug, clap::Subcommand)]
pub enum DomainCommand {
    /// Host a domain here (also makes its DKIM key).
    Add { domain: String },
    /// Stop hosting a domain; its accounts are removed.
    Del { domain: String },
    /// List hosted domains.
    List,
    /// The domain's DKIM keys.
    Dkim {
        #[command(subcommand)]
        command: DkimCommand,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum DkimCommand {
    /// Make new keys (RSA and Ed25519) and print their records; the running
    /// server signs with them once DNS serves both.
    Rotate { domain: String },
}

pub async fn run(cmd: DomainCommand, config: &ConfigArg) -> anyhow::Result<()> {
    let mut out = std::io::stdout();
    match cmd {
        DomainCommand::Add { domain } => {
            let config = config.load()?;
            let store = Store::open(&config.data_dir).await?;
            let name = store.add_domain(&domain).await?;
            writeln!(out, "added domain {name}")?;
            for key in dkim::ensure_keys(&config.data_dir, &name)? {
                writeln!(
                    out,
                    "DKIM key {} (selector {}, {})",
                    key.path(&config.data_dir).display(),
                    key.selector,
                    key.algorithm.tag()
                )?;
            }
        }
        DomainCommand::Del { domain } => {
            let config = config.load()?;
            Store::open(&config.data_dir)
                .await?
                .delete_domain(&domain)
                .await?;
            writeln!(out, "deleted domain {domain}")?;
        }
        DomainCommand::Dkim {
            command: DkimCommand::Rotate { domain },
        } => {
            let config = config.load()?;
            let store = Store::open(&config.data_dir).await?;
            let domain = domain.trim_end_matches('.').to_lowercase();
            anyhow::ensure!(
                store.is_hosted_domain(&domain).await?,
                "domain {domain} is not hosted here; add it first with `postern domain add {domain}`"
            );
            let made = dkim::rotation::rotate(&config.data_dir, &domain, now_unix())?;
            let records: Vec<_> = dkim::public_records(&config.data_dir, &domain)?
                .into_iter()
                .filter(|(key, _)| made.contains(key))
                .collect();
            writeln!(
                out,
                "; New DKIM keys for {domain}. Publish these records; the running server \
                 checks DNS every {} s and signs with them once DNS serves both.\n\
                 ; The keys signing now stay published for {} days after that \
                 (`postern dns {domain}` lists every record to keep).\n",
                config.dkim.check_interval.as_secs(),
                config.dkim.retire_after.as_secs().div_ceil(86_400)
            )?;
            for record in dkim_records(&domain, &records) {
                writeln!(out, "{}", record.zone_line())?;
            }
        }
        DomainCommand::List => {
            let config = config.load()?;
            for d in Store::open(&config.data_dir).await?.domains().await? {
                writeln!(out, "{d}")?;
            }
        }
    }
    Ok(())
}
