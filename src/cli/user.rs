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
    /// Show or set what a user may send (its own limits over those of `[limits]`).
    Limits {
        address: String,
        #[arg(long)]
        messages_per_hour: Option<u64>,
        #[arg(long)]
        recipients_per_day: Option<u64>,
    },
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
        UserCommand::Limits {
            address,
            messages_per_hour,
            recipients_per_day,
        } => {
            let config = config.load()?;
            anyhow::ensure!(
                messages_per_hour != Some(0) && recipients_per_day != Some(0),
                "a limit of 0 would stop the user's mail for good; delete the account instead"
            );
            let store = Store::open(&config.data_dir).await?;
            let canonical = store
                .set_sending_limits(&address, messages_per_hour, recipients_per_day)
                .await?;
            let (messages, recipients) = store.sending_limits(&canonical).await?;
            let shown = |own: Option<u64>, default: u64| match own {
                Some(n) => format!("{n}"),
                None => format!("{default} (the default)"),
            };
            writeln!(
                out,
                "{canonical}: messages per hour {}, recipients per day {}",
                shown(messages, config.limits.messages_per_hour_per_user),
                shown(recipients, config.limits.recipients_per_day_per_user)
            )?;
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
