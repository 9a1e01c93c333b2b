//! `postern user add|del|passwd|list|limits|hold|release|purge-held`.

use std::io::Write;

use super::queue::change;
use super::{ConfigArg, read_password};
use crate::auth::hash_password;
use crate::check::tls::rfc3339;
use crate::config::Config;
use crate::control::Request;
use crate::store::{OwnLimits, Store};

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
    /// Change an account's password (this ends a hold for new mail).
    Passwd {
        address: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List accounts, with the hold on any whose outgoing mail is held.
    List,
    /// Show or set what a user may send (its own limits over those of `[limits]`).
    Limits {
        address: String,
        #[arg(long)]
        messages_per_hour: Option<u64>,
        #[arg(long)]
        recipients_per_day: Option<u64>,
        /// Recipients the user never wrote to before.
        #[arg(long)]
        new_recipients_per_day: Option<u64>,
    },
    /// Hold an account's outgoing mail: what it queued and what it sends
    /// stays queued, undelivered, until `release` (as a burst does).
    Hold { address: String },
    /// End an account's hold and deliver the mail it held.
    Release { address: String },
    /// Delete the mail an account's hold kept (the hold stays: `release`
    /// or a new password ends it).
    PurgeHeld { address: String },
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
            new_recipients_per_day,
        } => {
            let config = config.load()?;
            let asked = OwnLimits {
                messages_per_hour,
                recipients_per_day,
                new_recipients_per_day,
            };
            anyhow::ensure!(
                [
                    messages_per_hour,
                    recipients_per_day,
                    new_recipients_per_day
                ]
                .iter()
                .all(|l| *l != Some(0)),
                "a limit of 0 would stop the user's mail for good; use `postern user hold` instead"
            );
            let store = Store::open(&config.data_dir).await?;
            let canonical = store.set_sending_limits(&address, asked).await?;
            let own = store.standing(&canonical).await?.limits;
            let shown = |own: Option<u64>, default: u64| match own {
                Some(n) => format!("{n}"),
                None => format!("{default} (the default)"),
            };
            let limits = &config.limits;
            writeln!(
                out,
                "{canonical}: messages per hour {}, recipients per day {}, new recipients per day {}",
                shown(own.messages_per_hour, limits.messages_per_hour_per_user),
                shown(own.recipients_per_day, limits.recipients_per_day_per_user),
                shown(
                    own.new_recipients_per_day,
                    limits.new_recipients_per_day_per_user
                )
            )?;
        }
        UserCommand::List => {
            let config = config.load()?;
            let store = Store::open(&config.data_dir).await?;
            let held: std::collections::HashMap<String, _> =
                store.held_users().await?.into_iter().collect();
            for u in store.users().await? {
                match held.get(&u) {
                    Some(hold) => writeln!(
                        out,
                        "{u}  HELD since {}: {}",
                        rfc3339(hold.since),
                        hold.reason
                    )?,
                    None => writeln!(out, "{u}")?,
                }
            }
        }
        UserCommand::Hold { address } => {
            let config = config.load()?;
            let store = Store::open(&config.data_dir).await?;
            let user = canonical_user(&store, &address).await?;
            let now = crate::clock::now_unix();
            let newly = store
                .hold_user(&user, "held by the administrator", now)
                .await?;
            let n = change(&config, Request::HoldUser { user: user.clone() }).await?;
            let already = if newly { "" } else { " (it was held already)" };
            writeln!(
                out,
                "held the outgoing mail of {user}{already}: {n} queued recipient(s) kept"
            )?;
        }
        UserCommand::Release { address } => {
            let config = config.load()?;
            let store = Store::open(&config.data_dir).await?;
            let user = canonical_user(&store, &address).await?;
            let was_held = store.release_user(&user, crate::clock::now_unix()).await?;
            let n = change(&config, Request::ReleaseUser { user: user.clone() }).await?;
            let hold = if was_held {
                "ended the hold on"
            } else {
                "no hold was on"
            };
            writeln!(
                out,
                "{hold} {user}; released {n} held recipient(s) for delivery"
            )?;
        }
        UserCommand::PurgeHeld { address } => {
            let config = config.load()?;
            let user = purge_target(&config, &address).await?;
            let n = change(&config, Request::PurgeHeld { user: user.clone() }).await?;
            writeln!(out, "deleted {n} held message(s) of {user}")?;
        }
    }
    Ok(())
}

/// The account `address` names, as stored (an error when there is none).
async fn canonical_user(store: &Store, address: &str) -> anyhow::Result<String> {
    let mailbox = crate::smtp::address::Mailbox::parse(address, true)
        .map_err(|_| crate::store::StoreError::BadAddress(address.into()))?;
    anyhow::ensure!(
        store.mailbox_exists(&mailbox).await?,
        crate::store::StoreError::NoSuchUser(mailbox.canonical())
    );
    Ok(mailbox.canonical())
}

/// The account whose held mail `purge-held` deletes: one that exists, or
/// one deleted since (its mail may still be queued).
async fn purge_target(config: &Config, address: &str) -> anyhow::Result<String> {
    let store = Store::open(&config.data_dir).await?;
    match canonical_user(&store, address).await {
        Ok(user) => Ok(user),
        Err(_) => Ok(address.to_lowercase()),
    }
}
