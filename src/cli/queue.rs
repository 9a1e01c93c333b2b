//! `postern queue`: `list` and `show` read the spool directly, whether or not
//! the server runs; `retry`, `delete`, `hold` and `release` ask the running
//! server over its control socket, and work on the spool themselves only when
//! no server listens. Addresses and remote replies came from outside and are
//! printed escaped (`telemetry::printable`).

use std::borrow::Cow;
use std::io::Write;

use anyhow::Context;

use super::ConfigArg;
use crate::clock::age;
use crate::config::Config;
use crate::control::{self, Asked, Request, Response};
use crate::scheduler::DeliveryStatus;
use crate::spool::{
    LIST_PAGE, ListFilter, MessageState, Pages, QueueId, QueuedMessage, Spool, Summary,
};
use crate::telemetry::printable;

/// Destinations `list --summary` names; the rest are counted together.
const SUMMARY_DESTINATIONS: usize = 20;

#[derive(Debug, clap::Subcommand)]
pub enum QueueCommand {
    /// List queued messages.
    List {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Counts only: recipients by state and by destination, the oldest
        /// message's age (fast with millions queued).
        #[arg(long, conflicts_with_all = ["limit", "state", "to_domain", "user"])]
        summary: bool,
        /// At most N messages, the oldest first (default: all, printed as
        /// they are read).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        limit: Option<u64>,
        /// Only messages in this state (as `queue show` names it).
        #[arg(long, value_enum)]
        state: Option<StateArg>,
        /// Only messages with a recipient still to deliver at this domain
        /// (any case).
        #[arg(long, value_name = "DOMAIN")]
        to_domain: Option<String>,
        /// Only messages this account submitted (`--state held --user
        /// ADDRESS`: what its hold keeps).
        #[arg(long, value_name = "ADDRESS")]
        user: Option<String>,
    },
    /// Show one message: envelope, recipients and their state.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
        /// Print the stored message text instead of the envelope.
        #[arg(long, conflicts_with = "json")]
        body: bool,
    },
    /// Make deferred messages due now (a running server looks at them at once).
    Retry {
        /// The message to retry.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        /// Retry every queued message.
        #[arg(long)]
        all: bool,
    },
    /// Delete a message from the queue without delivering it.
    Delete { id: String },
    /// Keep a message in the queue without delivering it, until released.
    Hold { id: String },
    /// Let a held message be delivered (due now).
    Release { id: String },
}

/// The states `list --state` selects (see `QueuedMessage::state`).
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum StateArg {
    /// Not tried yet.
    Queued,
    /// Tried before, waiting for the next attempt.
    Deferred,
    /// Kept by `postern queue hold`, or by its sender's hold (`postern user list`).
    Held,
}

impl From<StateArg> for MessageState {
    fn from(s: StateArg) -> MessageState {
        match s {
            StateArg::Queued => MessageState::Queued,
            StateArg::Deferred => MessageState::Deferred,
            StateArg::Held => MessageState::Held,
        }
    }
}

fn parse_id(id: &str) -> anyhow::Result<QueueId> {
    QueueId::parse(id).with_context(|| {
        format!("{id:?} is not a queue id (14 letters and digits, as in `postern queue list`)")
    })
}

fn sender(m: &QueuedMessage) -> Cow<'_, str> {
    if m.sender.is_empty() {
        Cow::Borrowed("<>")
    } else {
        printable(&m.sender)
    }
}

fn plural(n: u64, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

pub async fn run(cmd: QueueCommand, config: &ConfigArg) -> anyhow::Result<()> {
    let mut out = std::io::stdout();
    match cmd {
        QueueCommand::List {
            json,
            summary,
            limit,
            state,
            to_domain,
            user,
        } => {
            let config = config.load()?;
            let spool = Spool::open(&config.data_dir).await?;
            match DeliveryStatus::read(&config) {
                Some(status) if status.port25_blocked && !json => {
                    let port = config.delivery.mx_port;
                    match status.fallback {
                        Some(fallback) => writeln!(
                            out,
                            "note: outbound port {port} looks blocked (connections to several mail servers failed); \
                             mail for MX hosts goes through [fallback_relay] {fallback} until port {port} answers again"
                        )?,
                        None => writeln!(
                            out,
                            "warning: outbound port {port} looks blocked (connections to several mail servers failed); \
                             set [fallback_relay] or [relay] to send through a relay on another port"
                        )?,
                    }
                }
                _ => {}
            }
            if summary {
                let summary = spool.summary().await?;
                if json {
                    writeln!(out, "{}", serde_json::to_string_pretty(&summary)?)?;
                } else {
                    print_summary(&mut out, &summary)?;
                }
                return Ok(());
            }
            let filter = ListFilter {
                state: state.map(MessageState::from),
                domain: to_domain,
                user: user.map(|u| u.to_lowercase()),
            };
            let pages = spool.pages(filter, limit, LIST_PAGE);
            // Buffered, and flushed after each page: a large queue prints as
            // it is read, without a write per line.
            let mut out = std::io::BufWriter::new(out.lock());
            let printed = if json {
                print_json(&mut out, pages).await
            } else {
                print_table(&mut out, pages).await
            };
            // `queue list | head` closes the pipe early: that ends the
            // listing, and is no failure.
            match printed.and_then(|()| Ok(out.flush()?)) {
                Err(e) if broken_pipe(&e) => {}
                other => other?,
            }
        }
        QueueCommand::Show { id, json, body } => {
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
            if m.requiretls {
                writeln!(out, "requiretls: every hop over verified TLS (RFC 8689)")?;
            }
            if m.tls_policy_waived {
                writeln!(
                    out,
                    "tls-required: no: the recipients' MTA-STS and DANE are not applied (RFC 8689)"
                )?;
            }
            for r in &m.recipients {
                write!(
                    out,
                    "rcpt:     {} ({}{}, {} attempts",
                    printable(&r.address),
                    r.status.as_str(),
                    if r.held { ", held" } else { "" },
                    r.attempts
                )?;
                if let Some(reply) = &r.last_reply {
                    write!(out, ", last reply: {}", printable(reply))?;
                }
                writeln!(out, ")")?;
                if let Some(kind) = &r.last_kind {
                    writeln!(out, "why:      {}", kind.describe())?;
                }
            }
        }
        QueueCommand::Retry { id, all: _ } => {
            let id = id.as_deref().map(parse_id).transpose()?;
            let request = match &id {
                Some(id) => Request::Retry { id: id.clone() },
                None => Request::RetryAll {},
            };
            let n = change(&config.load()?, request).await?;
            if let Some(id) = &id {
                anyhow::ensure!(n > 0, "no queued recipient of {id} to retry");
            }
            writeln!(out, "{} due now", plural(n, "recipient"))?;
        }
        QueueCommand::Delete { id } => {
            let id = parse_id(&id)?;
            let n = change(&config.load()?, Request::Delete { id: id.clone() }).await?;
            anyhow::ensure!(n > 0, "no message {id} in the queue");
            writeln!(out, "deleted {id}")?;
        }
        QueueCommand::Hold { id } => {
            let id = parse_id(&id)?;
            let n = change(&config.load()?, Request::Hold { id: id.clone() }).await?;
            anyhow::ensure!(n > 0, "no queued recipient of {id} to hold");
            writeln!(out, "held {id} ({})", plural(n, "recipient"))?;
        }
        QueueCommand::Release { id } => {
            let id = parse_id(&id)?;
            let n = change(&config.load()?, Request::Release { id: id.clone() }).await?;
            anyhow::ensure!(n > 0, "{id} is not held");
            writeln!(out, "released {id} ({} due now)", plural(n, "recipient"))?;
        }
    }
    Ok(())
}

fn broken_pipe(e: &anyhow::Error) -> bool {
    let kind = e
        .downcast_ref::<std::io::Error>()
        .map(std::io::Error::kind)
        .or_else(|| e.downcast_ref::<serde_json::Error>()?.io_error_kind());
    kind == Some(std::io::ErrorKind::BrokenPipe)
}

/// One JSON array, as before paging, so that scripts parse it as they did;
/// one message per line, so that it can also be read line by line.
async fn print_json(out: &mut impl Write, mut pages: Pages) -> anyhow::Result<()> {
    let mut first = true;
    write!(out, "[")?;
    while let Some(page) = pages.next().await? {
        for m in &page {
            write!(out, "{}", if first { "\n" } else { ",\n" })?;
            serde_json::to_writer(&mut *out, m)?;
            first = false;
        }
        out.flush()?;
    }
    writeln!(out, "{}]", if first { "" } else { "\n" })?;
    Ok(())
}

async fn print_table(out: &mut impl Write, mut pages: Pages) -> anyhow::Result<()> {
    writeln!(
        out,
        "{:<14}  {:>8}  {:>5}  {:<8}  {:<30}  recipients",
        "id", "size", "age", "state", "sender"
    )?;
    let mut count = 0u64;
    while let Some(page) = pages.next().await? {
        for m in &page {
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
        count += page.len() as u64;
        out.flush()?;
    }
    if pages.more() {
        writeln!(out, "{} (the limit; more match)", plural(count, "message"))?;
    } else {
        writeln!(out, "{}", plural(count, "message"))?;
    }
    Ok(())
}

/// Has the running server make a change to the queue, or makes it on the
/// spool when no server listens; returns what it concerned (see
/// `control::Response`).
/// Has the running server make `request`'s change, or makes it on the
/// files when none runs.
pub(super) async fn change(config: &Config, request: Request) -> anyhow::Result<u64> {
    match control::ask(config, &request).await? {
        Asked::Answer(Response::Done { count }) => Ok(count),
        Asked::Answer(Response::Failed { error }) => {
            anyhow::bail!("the server could not do it: {error}")
        }
        Asked::Answer(Response::Reloaded { .. }) => {
            anyhow::bail!("the server answered a queue change as a reload")
        }
        Asked::NoServer(_lock) => {
            let spool = Spool::open(&config.data_dir).await?;
            Ok(control::perform(&spool, None, &request).await?)
        }
    }
}

fn print_summary(out: &mut impl Write, s: &Summary) -> std::io::Result<()> {
    let oldest = s.oldest.map_or_else(|| "-".to_string(), age);
    writeln!(
        out,
        "{}, the oldest {oldest} old",
        plural(s.messages, "message")
    )?;
    writeln!(out, "recipients to deliver:")?;
    for (state, n) in [
        ("queued", s.queued),
        ("deferred", s.deferred),
        ("held", s.held),
    ] {
        writeln!(out, "  {state:<30}  {n:>10}")?;
    }
    if s.destinations.is_empty() {
        return Ok(());
    }
    writeln!(out, "by destination:")?;
    for d in s.destinations.iter().take(SUMMARY_DESTINATIONS) {
        let domain = if d.domain.is_empty() {
            Cow::Borrowed("(no domain)")
        } else {
            printable(&d.domain)
        };
        writeln!(out, "  {domain:<30}  {:>10}", d.recipients)?;
    }
    let rest = &s.destinations[SUMMARY_DESTINATIONS.min(s.destinations.len())..];
    if !rest.is_empty() {
        let n: u64 = rest.iter().map(|d| d.recipients).sum();
        let others = plural(rest.len() as u64, "other domain");
        writeln!(out, "  {others:<30}  {n:>10}")?;
    }
    Ok(())
}
