//! The server's side of the control socket: binds it owner-only, answers one
//! request per connection, logs each action with its queue id, and removes the
//! socket when the server stops.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use super::{ControlError, Request, Response, perform};
use crate::scheduler::ActiveQueue;

/// A request is one short line; anything longer is not one.
const MAX_REQUEST: u64 = 4096;
/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The bound socket, ready to serve.
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
}

/// Binds the control socket at `path`. Its directory is made owner-only
/// (0700) before the socket exists, and the socket 0600. A socket left by a
/// server that died is replaced; one that answers belongs to a running
/// server, and is an error.
pub async fn bind(path: &Path) -> Result<ControlSocket, ControlError> {
    let shown = || path.display().to_string();
    let failed = |source| ControlError::Bind {
        path: shown(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(failed)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(failed)?;
    }
    if UnixStream::connect(path).await.is_ok() {
        return Err(ControlError::InUse { path: shown() });
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(failed(e)),
        _ => {}
    }
    let listener = UnixListener::bind(path).map_err(failed)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(failed)?;
    Ok(ControlSocket {
        listener,
        path: path.to_path_buf(),
    })
}

/// Answers requests until `shutdown`, then removes the socket. Each action is
/// performed on `queue`'s spool and reported to it.
pub async fn serve(socket: ControlSocket, queue: ActiveQueue, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = socket.listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(answer(stream, queue.clone()));
                }
                Err(e) => {
                    tracing::warn!(event = "control_accept_failed", error = %e);
                    // Out of descriptors, say: do not spin on it.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    let _ = std::fs::remove_file(&socket.path);
}

async fn answer(stream: UnixStream, queue: ActiveQueue) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_REQUEST));
    let response = match tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line)).await {
        Ok(Ok(_)) => match serde_json::from_str::<Request>(&line) {
            Ok(request) => act(&queue, &request).await,
            Err(e) => Response::Failed {
                error: format!("not a request: {e}"),
            },
        },
        Ok(Err(e)) => Response::Failed {
            error: format!("cannot read the request: {e}"),
        },
        Err(_) => return,
    };
    let mut out = serde_json::to_vec(&response).unwrap_or_default();
    out.push(b'\n');
    let _ = write.write_all(&out).await;
}

/// Performs `request` and logs it: `event="queue_…" qid=…` (`qid="all"` for
/// a retry of everything).
async fn act(queue: &ActiveQueue, request: &Request) -> Response {
    let event = request.event();
    let qid = request.id().map_or("all", |id| id.as_str());
    match perform(queue.spool(), Some(queue), request).await {
        Ok(count) => {
            tracing::info!(event, qid = %qid, count, "done at the operator's request");
            Response::Done { count }
        }
        Err(e) => {
            tracing::warn!(event = "control_failed", command = event, qid = %qid, error = %e);
            Response::Failed {
                error: e.to_string(),
            }
        }
    }
}
