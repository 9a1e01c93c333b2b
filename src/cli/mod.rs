//! The command tree of DESIGN.md (clap). Each subcommand lives in its own thin
//! file; `anyhow` is used here and in main.rs only.

mod admin;
mod alias;
mod check;
mod config_check;
mod dns;
mod domain;
mod queue;
mod sendmail;
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
    #[command(flatten)]
    config: ConfigArg,
}

/// Where the configuration is looked for when `--config` is not given.
const SYSTEM_CONFIG: &str = "/etc/postern/postern.toml";
const LOCAL_CONFIG: &str = "postern.toml";

/// `--config`, accepted before or after the subcommand.
#[derive(Debug, clap::Args)]
pub struct ConfigArg {
    /// Configuration file (default: $POSTERN_CONFIG, then
    /// /etc/postern/postern.toml, then postern.toml in the working directory,
    /// else the built-in defaults).
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server.
    Serve,
    /// Have the running server read its configuration and certificates again
    /// (as SIGHUP does).
    Reload,
    /// Manage user accounts.
    #[command(subcommand)]
    User(user::UserCommand),
    /// Manage who may sign in to the web dashboard.
    #[command(subcommand)]
    Admin(admin::AdminCommand),
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
    /// Print the postern(8) manual page (roff), for installing.
    #[command(hide = true)]
    Manpage,
    /// Send the message on standard input through the running server, as
    /// sendmail does (for PHP's mail(), cron and scripts); also when this
    /// binary is run as `sendmail`. Exits with sendmail's codes (sysexits).
    Sendmail(sendmail::Args),
}

/// Failures the user must act on (exit 1), as opposed to usage errors (exit 2,
/// from clap).
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = &cli.config;
    match cli.command {
        Command::Serve => serve::run(config).await,
        Command::Reload => serve::reload(config).await,
        Command::User(cmd) => user::run(cmd, config).await,
        Command::Domain(cmd) => domain::run(cmd, config).await,
        Command::Alias(cmd) => alias::run(cmd, config).await,
        Command::Admin(cmd) => admin::run(cmd, config).await,
        Command::Dns(args) => dns::run(args, config).await,
        Command::Queue(cmd) => queue::run(cmd, config).await,
        Command::Config(cmd) => config_check::run(cmd, config),
        Command::Check(args) => check::run(args, config).await,
        Command::Manpage => manpage(),
        Command::Sendmail(args) => sendmail::run(args, config).await,
    }
}

/// Writes postern(8) to standard output: the command tree as clap knows it,
/// so the manual cannot fall behind `--help`.
fn manpage() -> anyhow::Result<()> {
    use clap::CommandFactory;
    let mut page = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .section("8")
        .render(&mut page)?;
    // One page for the whole tree: each command, nested ones too, follows
    // under a heading of its own with its options.
    fn section(page: &mut Vec<u8>, path: &str, cmd: &clap::Command) -> std::io::Result<()> {
        for sub in cmd
            .get_subcommands()
            .filter(|c| !c.is_hide_set() && c.get_name() != "help")
        {
            let path = format!("{path} {}", sub.get_name());
            page.extend_from_slice(format!(".SH \"{}\"\n", path.to_uppercase()).as_bytes());
            let man = clap_mangen::Man::new(sub.clone());
            man.render_description_section(page)?;
            man.render_options_section(page)?;
            section(page, &path, sub)?;
        }
        Ok(())
    }
    section(&mut page, "postern", &Cli::command())?;
    std::io::Write::write_all(&mut std::io::stdout(), &page)?;
    Ok(())
}

impl Cli {
    /// The command line of this process: clap's, or sendmail's when the
    /// binary was run as `sendmail` (a link such as /usr/sbin/sendmail).
    pub fn from_env() -> Cli {
        let mut args = std::env::args();
        let invoked_as = args.next().unwrap_or_default();
        if std::path::Path::new(&invoked_as)
            .file_name()
            .is_some_and(|name| name == "sendmail")
        {
            return Cli {
                command: Command::Sendmail(sendmail::Args::from_argv(args.collect())),
                config: ConfigArg { config: None },
            };
        }
        Cli::parse()
    }
}

/// The exit code for a failed command: sendmail's status for `postern
/// sendmail`, else 1 (clap has already exited with 2 on a usage error).
pub fn exit_code(error: &anyhow::Error) -> u8 {
    error
        .downcast_ref::<sendmail::Failed>()
        .map_or(1, |f| f.status.code())
}

impl ConfigArg {
    /// The configuration this command works on, per DESIGN.md's rule. Run
    /// by root with `user` set, the command becomes that user first, as the
    /// server does, so that the files it makes in data_dir are the server's.
    fn load(&self) -> anyhow::Result<Config> {
        let config = self.load_to_serve()?;
        crate::server::privileges::drop_root(&config)?;
        Ok(config)
    }

    /// `load` for `serve`, which gives up root itself once its ports are bound.
    fn load_to_serve(&self) -> anyhow::Result<Config> {
        self.try_load()
            .map_err(|errors| anyhow::anyhow!("{errors}"))
    }

    /// `load` for a command that keeps no state (`check`, run on the users'
    /// own machines, where no configuration is the rule): no word about a
    /// data_dir it does not use.
    fn load_settings(&self) -> anyhow::Result<Config> {
        self.load_settings_with(Config::load)
    }

    /// `load_settings` with `load` reading the file.
    fn load_settings_with(
        &self,
        load: fn(&std::path::Path) -> Result<Config, ConfigErrors>,
    ) -> anyhow::Result<Config> {
        match self.path() {
            Some(p) => load(&p).map_err(|errors| anyhow::anyhow!("{errors}")),
            None => Ok(Config::builtin()),
        }
    }

    fn try_load(&self) -> Result<Config, ConfigErrors> {
        match self.path() {
            Some(p) => Config::load(&p),
            None => {
                let config = Config::builtin();
                // Otherwise a command run in the wrong directory quietly
                // makes and uses an empty data_dir of its own.
                eprintln!(
                    "postern: no configuration file ($POSTERN_CONFIG, {SYSTEM_CONFIG} and ./{LOCAL_CONFIG} \
                     are absent): built-in defaults, data_dir {}",
                    config.data_dir.display()
                );
                Ok(config)
            }
        }
    }

    /// `--config`, else `$POSTERN_CONFIG` (both must exist), else the first of
    /// the system-wide and the working directory's file that exists.
    fn path(&self) -> Option<PathBuf> {
        if let Some(p) = &self.config {
            return Some(p.clone());
        }
        if let Some(p) = std::env::var_os("POSTERN_CONFIG").filter(|p| !p.is_empty()) {
            return Some(PathBuf::from(p));
        }
        [SYSTEM_CONFIG, LOCAL_CONFIG]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
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
