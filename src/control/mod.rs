//! The control socket (OpenSMTPD's smtpctl model): while the server runs,
//! `postern queue retry|delete|hold|release` ask it over a Unix socket,
//! `data_dir/run/control.sock` (owner only), and the server makes the change,
//! tells its scheduler and logs it with the queue id; the CLI never writes the
//! spool behind its back. With no server listening, the CLI makes the same
//! change on the files itself ([`perform`] without a queue).
//!
//! The protocol is one JSON object per line: the client sends a [`Request`],
//! the server answers with a [`Response`] and closes the connection.

mod client;
mod listen;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::scheduler::ActiveQueue;
use crate::spool::{QueueId, Spool, SpoolError};

pub use client::ask;
pub use listen::{ControlSocket, bind, serve};

/// Where the running server listens.
pub fn socket_path(config: &Config) -> PathBuf {
    config.run_dir().join("control.sock")
}

/// An action on the queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Make the queued recipients of a message, or of all without `id`, due
    /// now (held ones excepted).
    Retry { id: Option<QueueId> },
    /// Remove a message without delivering it.
    Delete { id: QueueId },
    /// Keep a message from delivery until it is released.
    Hold { id: QueueId },
    /// Release a held message, due now.
    Release { id: QueueId },
}

impl Request {
    /// The `event` the server logs for it.
    fn event(&self) -> &'static str {
        match self {
            Request::Retry { .. } => "queue_retry",
            Request::Delete { .. } => "queue_delete",
            Request::Hold { .. } => "queue_hold",
            Request::Release { .. } => "queue_release",
        }
    }

    /// The message it is about; `None` for all of them.
    fn id(&self) -> Option<&QueueId> {
        match self {
            Request::Retry { id } => id.as_ref(),
            Request::Delete { id } | Request::Hold { id } | Request::Release { id } => Some(id),
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
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot set up the control socket {path}: {source}")]
    Bind {
        path: String,
        source: std::io::Error,
    },
    #[error("another server already answers on {path}; two servers cannot share one data_dir")]
    InUse { path: String },
    #[error("cannot talk to the server over {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("the server's answer on {path} is not understood: {source}")]
    Answer {
        path: String,
        source: serde_json::Error,
    },
}

/// Performs `request` on the spool and, inside the server, tells the
/// scheduler's `queue`: a held or deleted message that waits for a delivery
/// slot is not delivered, and what became due is looked at now. Returns how
/// many recipients it concerned (messages, for a delete).
pub async fn perform(
    spool: &Spool,
    queue: Option<&ActiveQueue>,
    request: &Request,
) -> Result<u64, SpoolError> {
    match request {
        Request::Retry { id } => {
            let n = spool.retry(id.as_ref()).await?;
            if let Some(queue) = queue {
                queue.changed();
            }
            Ok(n)
        }
        Request::Delete { id } => {
            // Withdrawn first: a fresh message's delivery reads its body
            // from memory, not from the spool it is about to leave.
            if let Some(queue) = queue {
                queue.withdraw(id);
            }
            Ok(u64::from(spool.delete(id).await?))
        }
        Request::Hold { id } => {
            if let Some(queue) = queue {
                queue.withdraw(id);
            }
            spool.hold(id).await
        }
        Request::Release { id } => {
            let n = spool.release_held(id).await?;
            if let Some(queue) = queue {
                queue.restore(id);
                queue.changed();
            }
            Ok(n)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_responses_are_one_json_line_each() {
        let id = QueueId::generate();
        let requests = [
            Request::Retry { id: None },
            Request::Retry {
                id: Some(id.clone()),
            },
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
            r#"{"command":"retry","id":null,"all":true}"#,
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
}
