//! The command tree of DESIGN.md (clap). Each subcommand lives in its own thin
//! file; `anyhow` is used here and in main.rs only.

mod alias;
mod check;
mod config_check;
mod dns;
mod domain;
mod queue;
mod serve;
mod user;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigErrors};

#[derive(Debug, Parser)]
#[command(
    name = "postern",
    version,
    about = "A mail server that gets through when port 25 is blocked"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
pub struct ConfigArg {
    /// Configuration file (default: postern.toml in the working directory if
    /// present, else the built-in defaults).
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server.
    Serve(serve::Args),
    /// Manage user accounts.
    #[command(subcommand)]
    User(user::UserCommand),
    /// Manage aliases and catch-alls.
    #[command(subcommand)]
    Alias(alias::AliasCommand),
    /// The DNS records a hosted domain should publish; --check looks them up.
    Dns(dns::Args),
    /// Manage hosted domains.
    #[command(subcommand)]
    Domain(domain::DomainCommand),
    /// Inspect and manage the mail queue.
    #[command(subcommand)]
    Queue(queue::QueueCommand),
    /// Work with configuration files.
    #[command(subcommand)]
    Config(config_check::ConfigCommand),
    /// Which ports reach a mail server from this network, and what to type
    /// into a mail client (or, with --outbound, this machine's way out).
    Check(check::Args),
}

/// Failures the user must act on (exit 1), as opposed to usage errors (exit 2,
/// from clap).
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::User(cmd) => user::run(cmd).await,
        Command::Domain(cmd) => domain::run(cmd).await,
        Command::Alias(cmd) => alias::run(cmd).await,
        Command::Dns(args) => dns::run(args).await,
        Command::Queue(cmd) => queue::run(cmd).await,
        Command::Config(cmd) => config_check::run(cmd),
        Command::Check(args) => check::run(args).await,
    }
}

impl ConfigArg {
    /// The configuration this command works on, per DESIGN.md's rule.
    fn load(&self) -> anyhow::Result<Config> {
        self.try_load()
            .map_err(|errors| anyhow::anyhow!("{errors}"))
    }

    fn try_load(&self) -> Result<Config, ConfigErrors> {
        let path = match &self.config {
            Some(p) => Some(p.clone()),
            None => Some(PathBuf::from("postern.toml")).filter(|p| p.exists()),
        };
        match path {
            Some(p) => Config::load(&p),
            None => Ok(Config::builtin()),
        }
    }
}

/// Reads a password: from standard input when asked, else from the terminal
/// twice without echo.
fn read_password(from_stdin: bool) -> anyhow::Result<String> {
    let password = if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("cannot read the password from standard input")?;
        line.trim_end_matches(['\r', '\n']).to_string()
    } else {
        let first = rpassword::prompt_password("Password: ")
            .context("cannot read the password from the terminal")?;
        let again = rpassword::prompt_password("Password again: ")
            .context("cannot read the password from the terminal")?;
        anyhow::ensure!(
            first == again,
            "the two passwords differ; nothing was changed"
        );
        first
    };
    anyhow::ensure!(
        !password.is_empty(),
        "the password is empty; nothing was changed"
    );
    Ok(password)
}
