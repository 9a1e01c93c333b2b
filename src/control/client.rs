//! The CLI's side of the control socket: one request, one answer; or, when
//! no server runs, the lock that lets the CLI change the files itself.

use std::fs::File;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::listen::Lock;
use super::{ControlError, Request, Response, lock_path, socket_path, try_lock};
use crate::config::Config;

/// How long the server may take to answer: a retry of a million messages
/// is one large UPDATE.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// What asking came to.
pub enum Asked {
    /// The running server did it, or says why not.
    Answer(Response),
    /// No server runs on this data directory; while this lock is held, none
    /// starts, and the CLI may change the files itself.
    NoServer(File),
}

/// Sends `request` to the server of `config`'s data directory.
pub async fn ask(config: &Config, request: &Request) -> Result<Asked, ControlError> {
    ask_within(config, request, ANSWER_TIMEOUT).await
}

/// `ask`, waiting at most `patience` for the answer.
pub(super) async fn ask_within(
    config: &Config,
    request: &Request,
    patience: Duration,
) -> Result<Asked, ControlError> {
    let path = socket_path(config);
    let shown = || path.display().to_string();
    let failed = |error| ControlError::Io {
        path: shown(),
        error,
    };
    let stream = match UnixStream::connect(&path).await {
        Ok(stream) => stream,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            let lock = lock_path(config);
            return match try_lock(&lock, Lock::Shared) {
                Ok(Some(file)) => Ok(Asked::NoServer(file)),
                Ok(None) => Err(ControlError::Silent {
                    path: shown(),
                    lock: lock.display().to_string(),
                }),
                Err(error) => Err(ControlError::Lock {
                    path: lock.display().to_string(),
                    error,
                }),
            };
        }
        Err(e) => return Err(failed(e)),
    };
    let exchange = async {
        let (read, mut write) = stream.into_split();
        let mut line = serde_json::to_vec(request).unwrap_or_default();
        line.push(b'\n');
        write.write_all(&line).await.map_err(failed)?;
        let mut answer = String::new();
        let read = BufReader::new(read).read_line(&mut answer).await;
        // A server that closes without reading the request resets the
        // connection: that too is no answer.
        match read {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => {
                other.map_err(failed)?;
            }
        }
        if answer.is_empty() {
            return Err(ControlError::NoAnswer { path: shown() });
        }
        serde_json::from_str(&answer)
            .map(Asked::Answer)
            .map_err(|error| ControlError::Answer {
                path: shown(),
                error,
            })
    };
    tokio::time::timeout(patience, exchange)
        .await
        .unwrap_or_else(|_| {
            Err(ControlError::Timeout {
                path: shown(),
                seconds: patience.as_secs(),
            })
        })
}
