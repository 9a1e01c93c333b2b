//! `postern user add|del|passwd|list`.

use std::io::Write;

use super::{ConfigArg, read_password};
use crate::auth::hash_password;
use crate::store::Store;

#[derive(Debug, clap::Subcommand)]
pub enum UserCommand {
    /// Create an account; its domain must be hosted here.
    Add {
        address: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Delete an account.
    Del { address: String },
    /// Change an account's password.
    Passwd {
        address: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List accounts.
    List,
}

pub async fn run(cmd: UserCommand, config: &ConfigArg) -> anyhow::Result<()> {
    let mut out = std::io::stdout();
    match cmd {
        UserCommand::Add {
            address,
            password_stdin,
        } => {
            let config = config.load()?;
            let store = Store::open(&config.data_dir).await?;
            store.check_new_user(&address).await?;
            let hash = hash_password(&read_password(password_stdin)?)?;
            let canonical = store.add_user(&address, &hash).await?;
            writeln!(out, "added user {canonical}")?;
        }
        UserCommand::Del { address } => {
            let config = config.load()?;
            Store::open(&config.data_dir)
                .await?
                .delete_user(&address)
                .await?;
            writeln!(out, "deleted user {address}")?;
        }
        UserCommand::Passwd {
            address,
            password_stdin,
        } => {
            let config = config.load()?;
            let store = Store::open(&config.data_dir).await?;
            let hash = hash_password(&read_password(password_stdin)?)?;
            store.set_password(&address, &hash).await?;
            writeln!(out, "changed the password of {address}")?;
        }
        UserCommand::List => {
            let config = config.load()?;
            for u in Store::open(&config.data_dir).await?.users().await? {
                writeln!(out, "{u}")?;
            }
        }
    }
    Ok(())
}
