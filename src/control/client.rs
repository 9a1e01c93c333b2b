//! The CLI's side of the control socket: one request, one answer, or word
//! that no server listens (then the CLI works on the files itself).

use std::path::Path;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::{ControlError, Request, Response};

/// Sends `request` to the server listening at `path` and returns its answer;
/// `Ok(None)` when no server listens there (no socket, or one left by a
/// server that stopped).
pub async fn ask(path: &Path, request: &Request) -> Result<Option<Response>, ControlError> {
    let failed = |source| ControlError::Io {
        path: path.display().to_string(),
        source,
    };
    let stream = match UnixStream::connect(path).await {
        Ok(stream) => stream,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(failed(e)),
    };
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_vec(request).unwrap_or_default();
    line.push(b'\n');
    write.write_all(&line).await.map_err(failed)?;
    let mut answer = String::new();
    BufReader::new(read)
        .read_line(&mut answer)
        .await
        .map_err(failed)?;
    serde_json::from_str(&answer)
        .map(Some)
        .map_err(|source| ControlError::Answer {
            path: path.display().to_string(),
            source,
        })
}
