//! `postern queue list|show|delete`: works on the spool directly, so it works
//! whether or not the server is running. Addresses and remote replies came
//! from outside and are printed escaped (`telemetry::printable`).

use std::borrow::Cow;
use std::io::Write;

use anyhow::Context;

use super::ConfigArg;
use crate::clock::now_unix;
use crate::scheduler::DeliveryStatus;
use crate::spool::{QueueId, QueuedMessage, Spool};
use crate::telemetry::printable;

#[derive(Debug, clap::Subcommand)]
pub enum QueueCommand {
    /// List queued messages.
    List {
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Show one message: envelope, recipients and their state.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
        /// Print the stored message text instead of the envelope.
        #[arg(long, conflicts_with = "json")]
        body: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Make deferred messages due now (a running server picks them up within seconds).
    Retry {
        /// The message to retry.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        /// Retry every queued message.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Delete a message from the queue without delivering it.
    Delete {
        id: String,
        #[command(flatten)]
        config: ConfigArg,
    },
}

fn parse_id(id: &str) -> anyhow::Result<QueueId> {
    QueueId::parse(id).with_context(|| {
        format!("{id:?} is not a queue id (14 letters and digits, as in `postern queue list`)")
    })
}

fn age(created: i64) -> String {
    let secs = (now_unix() - created).max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn sender(m: &QueuedMessage) -> Cow<'_, str> {
    if m.sender.is_empty() {
        Cow::Borrowed("<>")
    } else {
        printable(&m.sender)
    }
}

pub async fn run(cmd: QueueCommand) -> anyhow::Result<()> {
    let mut out = std::io::stdout();
    match cmd {
        QueueCommand::List { json, config } => {
            let config = config.load()?;
            let spool = Spool::open(&config.data_dir).await?;
            if !json && DeliveryStatus::read(&config).is_some_and(|s| s.port25_blocked) {
                writeln!(
                    out,
                    "warning: outbound port {} looks blocked (connections to several mail servers failed); \
                     set [fallback_relay] or [relay] to send through a relay on another port",
                    config.delivery.mx_port
                )?;
            }
            let messages = spool.list().await?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&messages)?)?;
                return Ok(());
            }
            writeln!(
                out,
                "{:<14}  {:>8}  {:>5}  {:<8}  {:<30}  recipients",
                "id", "size", "age", "state", "sender"
            )?;
            for m in &messages {
                let rcpts: Vec<Cow<'_, str>> =
                    m.recipients.iter().map(|r| printable(&r.address)).collect();
                writeln!(
                    out,
                    "{:<14}  {:>8}  {:>5}  {:<8}  {:<30}  {}",
                    m.id,
                    m.size,
                    age(m.created),
                    m.state(),
                    sender(m),
                    rcpts.join(", ")
                )?;
            }
            writeln!(
                out,
                "{} message{}",
                messages.len(),
                if messages.len() == 1 { "" } else { "s" }
            )?;
        }
        QueueCommand::Show {
            id,
            json,
            body,
            config,
        } => {
            let id = parse_id(&id)?;
            let spool = Spool::open(&config.load()?.data_dir).await?;
            let missing = || format!("no message {id} in the queue");
            if body {
                out.write_all(&spool.body(&id).await?.with_context(missing)?)?;
                return Ok(());
            }
            let m = spool.get(&id).await?.with_context(missing)?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&m)?)?;
                return Ok(());
            }
            writeln!(
                out,
                "id:       {}\nsender:   {}\nsize:     {}\nage:      {}\nstate:    {}",
                m.id,
                sender(&m),
                m.size,
                age(m.created),
                m.state()
            )?;
            if let Some(user) = &m.auth_user {
                writeln!(out, "auth:     {}", printable(user))?;
            }
            for r in &m.recipients {
                write!(
                    out,
                    "rcpt:     {} ({}, {} attempts",
                    printable(&r.address),
                    r.status.as_str(),
                    r.attempts
                )?;
                if let Some(reply) = &r.last_reply {
                    write!(out, ", last reply: {}", printable(reply))?;
                }
                writeln!(out, ")")?;
            }
        }
        QueueCommand::Retry { id, all: _, config } => {
            let id = id.as_deref().map(parse_id).transpose()?;
            let spool = Spool::open(&config.load()?.data_dir).await?;
            let n = spool.retry(id.as_ref()).await?;
            if let Some(id) = &id {
                anyhow::ensure!(n > 0, "no queued recipient of {id} to retry");
            }
            writeln!(
                out,
                "{n} recipient{} due now",
                if n == 1 { "" } else { "s" }
            )?;
        }
        QueueCommand::Delete { id, config } => {
            let id = parse_id(&id)?;
            let spool = Spool::open(&config.load()?.data_dir).await?;
            anyhow::ensure!(spool.delete(&id).await?, "no message {id} in the queue");
            writeln!(out, "deleted {id}")?;
        }
    }
    Ok(())
}
