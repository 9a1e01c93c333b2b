//! The control socket (OpenSMTPD's smtpctl model): while the server runs,
//! `postern queue retry|delete|hold|release`, `postern user
//! hold|release|purge-held` and `postern reload` ask it over a Unix socket,
//! `data_dir/run/control.sock` (owner only), and the server makes the change,
//! tells its scheduler and logs it with the queue id; the CLI never writes the
//! spool behind its back. With no server listening, the CLI makes the same
//! change on the files itself ([`perform`] without a queue).
//!
//! The protocol is one JSON object per line: the client sends a [`Request`],
//! the server answers with a [`Response`] (also to what is not a request)
//! and closes the connection.
//!
//! Whether a server runs is told by a lock, not by the socket: the server
//! holds `run/server.lock` for its whole life. A socket that does not answer
//! while the lock is held is an error, never a reason to change the files
//! behind the server's back.

mod client;
mod listen;

use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::scheduler::{ActiveQueue, Delivery};
use crate::spool::{ListFilter, MessageState, QueueId, Spool, SpoolError};

pub use client::{Asked, ask};
use listen::Lock;
pub use listen::{ControlSocket, bind, bind_socket, serve};

/// Where the running server listens.
pub fn socket_path(config: &Config) -> PathBuf {
    config.run_dir().join("control.sock")
}

/// The file whose lock a running server holds.
fn lock_path(config: &Config) -> PathBuf {
    config.run_dir().join("server.lock")
}

/// Takes `how` lock on `path` (created if needed) without waiting; `None`
/// when another process holds a conflicting one.
fn try_lock(path: &Path, how: Lock) -> std::io::Result<Option<File>> {
    use rustix::fs::{FlockOperation, flock};
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    let operation = match how {
        Lock::Exclusive => FlockOperation::NonBlockingLockExclusive,
        Lock::Shared => FlockOperation::NonBlockingLockShared,
    };
    match flock(&file, operation) {
        Ok(()) => Ok(Some(file)),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// An action on the queue, or a reload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Make the queued recipients of a message due now (held ones excepted).
    Retry { id: QueueId },
    /// The same for every message: a request of its own, so that a `retry`
    /// without its id is an error, not "everything".
    RetryAll {},
    /// Remove a message without delivering it.
    Delete { id: QueueId },
    /// Keep a message from delivery until it is released.
    Hold { id: QueueId },
    /// Release a held message, due now.
    Release { id: QueueId },
    /// Keep every message an account submitted from delivery (its outgoing
    /// mail is on hold: `postern user hold`).
    HoldUser { user: String },
    /// Release every held message an account submitted (`postern user release`).
    ReleaseUser { user: String },
    /// Remove every held message an account submitted (`postern user purge-held`).
    PurgeHeld { user: String },
    /// Read the configuration and certificates again (`postern reload`).
    Reload {},
}

impl Request {
    /// The `event` the server logs for it.
    fn event(&self) -> &'static str {
        match self {
            Request::Retry { .. } | Request::RetryAll {} => "queue_retry",
            Request::Delete { .. } => "queue_delete",
            Request::Hold { .. } => "queue_hold",
            Request::Release { .. } => "queue_release",
            Request::HoldUser { .. } => "user_hold",
            Request::ReleaseUser { .. } => "user_release",
            Request::PurgeHeld { .. } => "user_purge_held",
            Request::Reload {} => "reload",
        }
    }

    /// The message it is about; `None` for all of them, or for a user's.
    fn id(&self) -> Option<&QueueId> {
        match self {
            Request::RetryAll {}
            | Request::Reload {}
            | Request::HoldUser { .. }
            | Request::ReleaseUser { .. }
            | Request::PurgeHeld { .. } => None,
            Request::Retry { id }
            | Request::Delete { id }
            | Request::Hold { id }
            | Request::Release { id } => Some(id),
        }
    }
}

impl Request {
    /// The account whose mail it is about, for a user's request.
    fn user(&self) -> Option<&str> {
        match self {
            Request::HoldUser { user }
            | Request::ReleaseUser { user }
            | Request::PurgeHeld { user } => Some(user),
            _ => None,
        }
    }
}

/// The server's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    /// Done: how many recipients it concerned (messages, for a delete).
    Done { count: u64 },
    /// Not done, and why.
    Failed { error: String },
    /// The configuration was read again: what changed and what did not.
    Reloaded { report: String },
}

/// A reload asked through the socket, for the server's main loop, which
/// answers with its report or with why the new configuration was refused.
pub type ReloadAsk = tokio::sync::oneshot::Sender<Result<String, String>>;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot set up the control socket {path}: {error}")]
    Bind { path: String, error: std::io::Error },
    #[error("another server runs on {path}; two servers cannot share one data_dir")]
    InUse { path: String },
    #[error("cannot talk to the server over {path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("the server's answer on {path} is not understood: {error}")]
    Answer {
        path: String,
        error: serde_json::Error,
    },
    #[error("the server closed {path} without answering")]
    NoAnswer { path: String },
    #[error(
        "the server did not answer on {path} within {seconds} s; it may be stuck (see its log)"
    )]
    Timeout { path: String, seconds: u64 },
    #[error(
        "a server runs on this data_dir (it holds {lock}) but does not answer on {path}; \
         try again once it has started, or restart it"
    )]
    Silent { path: String, lock: String },
    #[error("cannot take the lock {path}: {error}")]
    Lock { path: String, error: std::io::Error },
}

/// Performs `request` inside the server and logs it: `event="queue_…"
/// qid=…` (`qid="all"` for a retry of everything), `event="user_…" user=…`,
/// and `admin=…`, the dashboard administrator who asked (empty for the
/// control socket, whose client is the server's own Unix user).
pub async fn act(
    queue: &ActiveQueue,
    delivery: &Delivery,
    request: &Request,
    admin: &str,
) -> Response {
    let event = request.event();
    // An empty user: not a user's request; a user's is about their messages.
    let user = request.user().unwrap_or_default();
    let every = if user.is_empty() { "all" } else { "theirs" };
    let qid = request.id().map_or(every, |id| id.as_str());
    if matches!(request, Request::Retry { .. } | Request::RetryAll {}) {
        delivery.retry_destinations();
    }
    match perform(queue.spool(), Some(queue), request).await {
        Ok(count) => {
            tracing::info!(event, qid = %qid, user, admin, count, "done at the operator's request");
            Response::Done { count }
        }
        Err(e) => {
            tracing::warn!(event = "control_failed", command = event, qid = %qid, user, admin, error = %e);
            Response::Failed {
                error: e.to_string(),
            }
        }
    }
}

/// Performs `request` on the spool and, inside the server, tells the
/// scheduler's `queue`: a held or deleted message that waits for a delivery
/// slot is not delivered, and what became due is looked at now. Returns how
/// many recipients it concerned (messages, for a delete or a purge).
pub async fn perform(
    spool: &Spool,
    queue: Option<&ActiveQueue>,
    request: &Request,
) -> Result<u64, SpoolError> {
    match request {
        Request::Retry { .. } | Request::RetryAll {} => {
            let n = spool.retry(request.id()).await?;
            if let Some(queue) = queue {
                queue.changed();
            }
            Ok(n)
        }
        Request::Delete { id } => on_message(spool, queue, id, Change::Delete).await,
        Request::Hold { id } => on_message(spool, queue, id, Change::Hold).await,
        Request::Release { id } => on_message(spool, queue, id, Change::Release).await,
        Request::HoldUser { user } => on_user(spool, queue, user, None, Change::Hold).await,
        Request::ReleaseUser { user } => {
            on_user(
                spool,
                queue,
                user,
                Some(MessageState::Held),
                Change::Release,
            )
            .await
        }
        Request::PurgeHeld { user } => {
            on_user(spool, queue, user, Some(MessageState::Held), Change::Delete).await
        }
        // Not a queue change: the server answers it before it gets here,
        // and without a server there is nothing to reload.
        Request::Reload {} => Ok(0),
    }
}

#[derive(Debug, Clone, Copy)]
enum Change {
    Delete,
    Hold,
    Release,
}

async fn on_message(
    spool: &Spool,
    queue: Option<&ActiveQueue>,
    id: &QueueId,
    change: Change,
) -> Result<u64, SpoolError> {
    match change {
        Change::Delete | Change::Hold => {
            // Withdrawn before the change, so that a claimed message's
            // delivery does not start meanwhile (a fresh one reads its body
            // from memory, not from the spool it leaves), and after it, so
            // that a claim pass that read the rows before the change does
            // not claim the message from them.
            let withdraw = || {
                if let Some(queue) = queue {
                    queue.withdraw(id);
                }
            };
            withdraw();
            let changed = match change {
                Change::Delete => spool.delete(id).await.map(u64::from),
                _ => spool.hold(id).await,
            };
            withdraw();
            changed
        }
        Change::Release => {
            let n = spool.release_held(id).await?;
            if let Some(queue) = queue {
                queue.restore(id);
                queue.changed();
            }
            Ok(n)
        }
    }
}

/// `change` on every message `user` submitted that is in `state`. The ids
/// are read first, a page at a time, so that a change does not move the
/// listing under its feet.
async fn on_user(
    spool: &Spool,
    queue: Option<&ActiveQueue>,
    user: &str,
    state: Option<MessageState>,
    change: Change,
) -> Result<u64, SpoolError> {
    let filter = ListFilter {
        state,
        domain: None,
        user: Some(user.to_string()),
    };
    let mut ids = Vec::new();
    let mut pages = spool.pages(filter, None, crate::spool::LIST_PAGE);
    while let Some(page) = pages.next().await? {
        ids.extend(page.into_iter().map(|m| m.id));
    }
    let mut n = 0;
    for id in &ids {
        n += on_message(spool, queue, id, change).await?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_responses_are_one_json_line_each() {
        let id = QueueId::generate();
        let requests = [
            Request::RetryAll {},
            Request::Retry { id: id.clone() },
            Request::Delete { id: id.clone() },
            Request::Hold { id: id.clone() },
            Request::Release { id: id.clone() },
        ];
        for request in requests {
            let line = serde_json::to_string(&request).expect("json");
            assert!(!line.contains('\n'));
            assert_eq!(
                serde_json::from_str::<Request>(&line).expect("parse"),
                request
            );
        }
        assert_eq!(
            serde_json::to_string(&Request::Hold { id: id.clone() }).expect("json"),
            format!(r#"{{"command":"hold","id":"{id}"}}"#)
        );
        for bad in [
            r#"{"command":"hold","id":"../etc"}"#,
            r#"{"command":"reboot"}"#,
            r#"{"command":"delete"}"#,
            r#"{"command":"retry"}"#,
            r#"{"command":"retry","id":null}"#,
            r#"{"command":"retry_all","id":"x"}"#,
        ] {
            assert!(serde_json::from_str::<Request>(bad).is_err(), "{bad}");
        }
        let done = Response::Done { count: 3 };
        let line = serde_json::to_string(&done).expect("json");
        assert_eq!(line, r#"{"done":{"count":3}}"#);
        assert_eq!(
            serde_json::from_str::<Response>(&line).expect("parse"),
            done
        );
    }

    /// A server that is stuck, one that hangs up without answering, and one
    /// whose socket is gone while it holds the lock: each is an error that
    /// says so, and none lets the CLI change the files behind it.
    #[tokio::test]
    async fn a_server_that_does_not_answer_is_an_error_not_a_fallback() {
        use std::time::Duration;
        let dir = tempfile::tempdir().expect("dir");
        let text = format!(
            "hostname = \"mx.test.example\"\ndata_dir = {:?}\n",
            dir.path()
        );
        let config = Config::from_text(&text, None).expect("config");
        std::fs::create_dir_all(config.run_dir()).expect("run dir");
        let lock = try_lock(&lock_path(&config), listen::Lock::Exclusive)
            .expect("lock")
            .expect("free");
        let listener = tokio::net::UnixListener::bind(socket_path(&config)).expect("bind");
        let request = Request::RetryAll {};
        let patience = Duration::from_millis(200);
        // Accepts, reads, never answers.
        let stuck = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(stream);
            listener
        });
        let asked = client::ask_within(&config, &request, patience).await;
        assert!(
            matches!(asked, Err(ControlError::Timeout { .. })),
            "{:?}",
            asked.err()
        );
        stuck.abort();
        // Hangs up at once.
        let _ = std::fs::remove_file(socket_path(&config));
        let listener = tokio::net::UnixListener::bind(socket_path(&config)).expect("bind");
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            drop(stream);
        });
        let asked = client::ask_within(&config, &request, patience).await;
        assert!(
            matches!(asked, Err(ControlError::NoAnswer { .. })),
            "{:?}",
            asked.err()
        );
        // No socket, and the lock held.
        let _ = std::fs::remove_file(socket_path(&config));
        let asked = client::ask_within(&config, &request, patience).await;
        assert!(
            matches!(asked, Err(ControlError::Silent { .. })),
            "{:?}",
            asked.err()
        );
        // The lock free: the CLI may work on the files.
        drop(lock);
        let asked = client::ask_within(&config, &request, patience).await;
        assert!(matches!(asked, Ok(Asked::NoServer(_))), "{:?}", asked.err());
    }
}
