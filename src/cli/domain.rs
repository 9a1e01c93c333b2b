//! `postern domain add|del|list`.

use std::io::Write;

use super::ConfigArg;
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
                    key.path.display(),
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
        DomainCommand::List => {
            let config = config.load()?;
            for d in Store::open(&config.data_dir).await?.domains().await? {
                writeln!(out, "{d}")?;
            }
        }
    }
    Ok(())
}
