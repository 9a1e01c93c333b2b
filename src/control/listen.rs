//! The server's side of the control socket: holds the data directory's
//! server lock, binds the socket owner-only, answers one request per
//! connection, logs each action with its queue id, and removes the socket
//! when the server stops.

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{ControlError, ReloadAsk, Request, Response, act, lock_path, socket_path};
use crate::config::Config;
use crate::scheduler::{ActiveQueue, Delivery};

/// A request is one short line; anything longer is not one.
const MAX_REQUEST: u64 = 4096;
/// How often, and how far apart, the server tries to take its lock.
const LOCK_TRIES: u32 = 30;
const LOCK_WAIT: Duration = Duration::from_millis(100);
/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The bound socket, ready to serve, and the server lock, held as long as it
/// lives.
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
    _lock: File,
}

/// Takes the server lock of `config`'s data directory and binds the control
/// socket, owner only. The lock (an exclusive `flock` on `run/server.lock`,
/// released by the kernel when the process ends, however it ends) is what
/// keeps a second server off the same data directory, and what tells the
/// CLI that a server runs.
pub async fn bind(config: &Config) -> Result<ControlSocket, ControlError> {
    let path = socket_path(config);
    let lock = take_server_lock(config).await?;
    let listener = bind_socket(&path, 0o600)?;
    Ok(ControlSocket {
        listener,
        path,
        _lock: lock,
    })
}

/// Binds a Unix socket at `path` with `mode`. It is made under a temporary
/// name, given its mode, and only then renamed into place, so it is never
/// reachable with other permissions. Only for a caller that holds the server
/// lock: a socket already there is a dead server's, and is replaced.
pub fn bind_socket(path: &Path, mode: u32) -> Result<UnixListener, ControlError> {
    let failed = |error| ControlError::Bind {
        path: path.display().to_string(),
        error,
    };
    let fresh = path.with_extension(format!("sock.{}", std::process::id()));
    // Left by a server that died: nobody holds the lock, so nobody uses them.
    for stale in [path, &fresh] {
        match std::fs::remove_file(stale) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(failed(e)),
            _ => {}
        }
    }
    let listener = UnixListener::bind(&fresh).map_err(failed)?;
    std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(mode))
        .and_then(|()| std::fs::rename(&fresh, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&fresh);
            failed(e)
        })?;
    Ok(listener)
}

/// The server lock, waited for a little: `postern queue` may hold it for
/// a moment while it changes the files of a stopped server.
async fn take_server_lock(config: &Config) -> Result<File, ControlError> {
    let path = lock_path(config);
    let failed = |error| ControlError::Lock {
        path: path.display().to_string(),
        error,
    };
    for _ in 0..LOCK_TRIES {
        if let Some(lock) = super::try_lock(&path, Lock::Exclusive).map_err(failed)? {
            return Ok(lock);
        }
        tokio::time::sleep(LOCK_WAIT).await;
    }
    Err(ControlError::InUse {
        path: config.data_dir.display().to_string(),
    })
}

/// How a lock is taken: the server's is exclusive; the CLI's, while it
/// changes the files with no server running, shared.
#[derive(Clone, Copy)]
pub(super) enum Lock {
    Exclusive,
    Shared,
}

/// Answers requests until `shutdown`, then removes the socket. Each action is
/// performed on `queue`'s spool and reported to it; a retry also makes
/// `delivery` try destinations it took to be down.
pub async fn serve(
    socket: ControlSocket,
    queue: ActiveQueue,
    delivery: Arc<Delivery>,
    reloads: mpsc::Sender<ReloadAsk>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = socket.listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(answer(stream, queue.clone(), Arc::clone(&delivery), reloads.clone()));
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

async fn answer(
    stream: UnixStream,
    queue: ActiveQueue,
    delivery: Arc<Delivery>,
    reloads: mpsc::Sender<ReloadAsk>,
) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_REQUEST));
    let read = tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line)).await;
    let response = match read {
        Ok(Ok(_)) if !line.ends_with('\n') && line.len() as u64 >= MAX_REQUEST => refused(format!(
            "a request is one line of at most {MAX_REQUEST} octets"
        )),
        Ok(Ok(_)) => match serde_json::from_str::<Request>(&line) {
            Ok(Request::Reload {}) => reload(&reloads).await,
            Ok(request) => act(&queue, &delivery, &request, "").await,
            Err(e) => refused(format!("not a request: {e}")),
        },
        Ok(Err(e)) => refused(format!("cannot read the request: {e}")),
        Err(_) => refused(format!("no request within {} s", REQUEST_TIMEOUT.as_secs())),
    };
    let mut out = serde_json::to_vec(&response).unwrap_or_default();
    out.push(b'\n');
    let _ = write.write_all(&out).await;
}

/// The answer to something that is not a request, logged.
fn refused(error: String) -> Response {
    tracing::warn!(event = "control_refused", error = %error);
    Response::Failed { error }
}

/// Hands a reload to the server's main loop and waits for its report.
async fn reload(reloads: &mpsc::Sender<ReloadAsk>) -> Response {
    let (ask, answer) = oneshot::channel();
    if reloads.send(ask).await.is_err() {
        return refused("the server is stopping".to_string());
    }
    match answer.await {
        Ok(Ok(report)) => Response::Reloaded { report },
        Ok(Err(error)) => Response::Failed { error },
        Err(_) => refused("the server is stopping".to_string()),
    }
}
