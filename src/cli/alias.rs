//! `postern alias add|del|list`: addresses that forward to other addresses,
//! and per-domain catch-alls (`@example.com`).

use std::io::Write;

use super::ConfigArg;
use crate::store::Store;

#[derive(Debug, clap::Subcommand)]
pub enum AliasCommand {
    /// Send mail for SOURCE (user@domain, or @domain for a catch-all) to each TARGET.
    Add {
        source: String,
        #[arg(required = true)]
        targets: Vec<String>,
    },
    /// Remove one target of an alias, or the whole alias.
    Del {
        source: String,
        target: Option<String>,
    },
    /// List aliases and their targets.
    List,
}

pub async fn run(cmd: AliasCommand, config: &ConfigArg) -> anyhow::Result<()> {
    let mut out = std::io::stdout();
    match cmd {
        AliasCommand::Add { source, targets } => {
            let store = Store::open(&config.load()?.data_dir).await?;
            let source = store.add_alias(&source, &targets).await?;
            writeln!(
                out,
                "{source} -> {}",
                store.alias_targets(&source).await?.join(", ")
            )?;
        }
        AliasCommand::Del { source, target } => {
            Store::open(&config.load()?.data_dir)
                .await?
                .delete_alias(&source, target.as_deref())
                .await?;
            writeln!(out, "deleted")?;
        }
        AliasCommand::List => {
            for (source, targets) in Store::open(&config.load()?.data_dir)
                .await?
                .aliases()
                .await?
            {
                writeln!(out, "{source} -> {}", targets.join(", "))?;
            }
        }
    }
    Ok(())
}
