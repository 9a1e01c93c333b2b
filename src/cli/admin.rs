//! `postern admin add|passwd|del|list`: who may sign in to the web
//! dashboard (`[http] dashboard = true`).

use std::io::Write;

use super::{ConfigArg, read_password};
use crate::auth::hash_password;
use crate::clock::now_unix;
use crate::store::Store;

#[derive(Debug, clap::Subcommand)]
pub enum AdminCommand {
    /// Create a dashboard administrator, or give one a new password.
    Add {
        name: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Delete a dashboard administrator.
    Del { name: String },
    /// List dashboard administrators.
    List,
}

pub async fn run(cmd: AdminCommand, config: &ConfigArg) -> anyhow::Result<()> {
    let config = config.load()?;
    let store = Store::open(&config.data_dir).await?;
    let mut out = std::io::stdout();
    match cmd {
        AdminCommand::Add {
            name,
            password_stdin,
        } => {
            anyhow::ensure!(
                !name.is_empty()
                    && name.len() <= 64
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c)),
                "the name {name:?} is not one: use 1 to 64 letters, digits, '.', '_', '-' or '@'"
            );
            let password = read_password(password_stdin)?;
            anyhow::ensure!(!password.is_empty(), "the password is empty");
            let hash = hash_password(&password)?;
            if store.set_admin(&name, &hash, now_unix()).await? {
                writeln!(out, "added administrator {name}")?;
            } else {
                writeln!(out, "changed the password of administrator {name}")?;
            }
        }
        AdminCommand::Del { name } => {
            anyhow::ensure!(
                store.delete_admin(&name).await?,
                "there is no administrator {name}"
            );
            writeln!(out, "deleted administrator {name}")?;
        }
        AdminCommand::List => {
            for name in store.admins().await? {
                writeln!(out, "{name}")?;
            }
        }
    }
    Ok(())
}
