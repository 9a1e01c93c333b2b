//! `postern domain add|del|list`.

use std::io::Write;

use super::ConfigArg;
use crate::dkim;
use crate::store::Store;

#[derive(Debug, clap::Subcommand)]
pub enum DomainCommand {
    /// Host a domain here (also makes its DKIM key).
    Add {
        domain: String,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Stop hosting a domain; its accounts are removed.
    Del {
        domain: String,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// List hosted domains.
    List {
        #[command(flatten)]
        config: ConfigArg,
    },
}

pub async fn run(cmd: DomainCommand) -> anyhow::Result<()> {
    let mut out = std::io::stdout();
    match cmd {
        DomainCommand::Add { domain, config } => {
            let config = config.load()?;
            let store = Store::open(&config.data_dir).await?;
            let name = store.add_domain(&domain).await?;
            let key = dkim::ensure_key(&config.data_dir, &name)?;
            writeln!(
                out,
                "added domain {name}; DKIM key {} (selector {})",
                key.display(),
                dkim::SELECTOR
            )?;
        }
        DomainCommand::Del { domain, config } => {
            let config = config.load()?;
            Store::open(&config.data_dir)
                .await?
                .delete_domain(&domain)
                .await?;
            writeln!(out, "deleted domain {domain}")?;
        }
        DomainCommand::List { config } => {
            let config = config.load()?;
            for d in Store::open(&config.data_dir).await?.domains().await? {
                writeln!(out, "{d}")?;
            }
        }
    }
    Ok(())
}
