//! The side `postern sendmail` runs: connects to the running server's
//! submission socket, sends one request and reads its answers. Nothing is
//! queued here: with no server, the caller is told to try again later.

use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use super::{Answer, Envelope, Request, Sysexit, socket_path};
use crate::config::Config;

/// How long the whole exchange may take: the server answers once the
/// message is on disk, which a busy spool may take a while to make true.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(300);

/// Why there is no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "the mail server is not running (nothing answers on {path}); the message was not sent, try again later"
    )]
    NotRunning { path: PathBuf },
    #[error(
        "cannot reach {path}: permission denied; the server's data_dir and its run/ must be searchable by other users (chmod o+x)"
    )]
    NoAccess { path: PathBuf },
    #[error("lost the connection to the server on {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("no answer from the server on {path} within {} s", EXCHANGE_TIMEOUT.as_secs())]
    Timeout { path: PathBuf },
    #[error("the server on {path} answered what this command does not understand: {what}")]
    Protocol { path: PathBuf, what: String },
}

impl ClientError {
    /// sendmail's exit status for it: a server that is down or lost may be
    /// there again later; an unreachable socket needs the admin.
    pub fn status(&self) -> Sysexit {
        match self {
            ClientError::NotRunning { .. }
            | ClientError::Io { .. }
            | ClientError::Timeout { .. } => Sysexit::TempFail,
            ClientError::NoAccess { .. } => Sysexit::Config,
            ClientError::Protocol { .. } => Sysexit::Software,
        }
    }
}

/// Sends `message` (`envelope.size` octets of it, unless it is over the
/// limit and only counted) and returns the server's last answer:
/// `Queued` or `Refused`.
pub async fn send(
    config: &Config,
    envelope: Envelope,
    message: &[u8],
) -> Result<Answer, ClientError> {
    let size = envelope.size;
    let mut c = Connection::open(config).await?;
    let path = c.path.clone();
    let exchange = async {
        c.ask(&Request::Send(envelope)).await;
        match c.read().await? {
            Answer::Proceed {} if message.len() as u64 == size => {
                // A server that stopped reading (it refused) has said why.
                let _ = c.write.write_all(message).await;
                c.read().await
            }
            Answer::Proceed {} => Err(c.protocol(format!(
                "it would take a message of {size} octets, over [limits] max_message_size here; \
                 it runs on another configuration"
            ))),
            answer => Ok(answer),
        }
    };
    within(path, exchange).await
}

/// Asks whether each of `addresses` would be accepted (`Verified`, or
/// `Refused` for the whole request).
pub async fn verify(config: &Config, addresses: Vec<String>) -> Result<Answer, ClientError> {
    let mut c = Connection::open(config).await?;
    let path = c.path.clone();
    let exchange = async {
        c.ask(&Request::Verify { addresses }).await;
        c.read().await
    };
    within(path, exchange).await
}

async fn within(
    path: PathBuf,
    exchange: impl Future<Output = Result<Answer, ClientError>>,
) -> Result<Answer, ClientError> {
    tokio::time::timeout(EXCHANGE_TIMEOUT, exchange)
        .await
        .unwrap_or(Err(ClientError::Timeout { path }))
}

struct Connection {
    read: BufReader<OwnedReadHalf>,
    write: OwnedWriteHalf,
    path: PathBuf,
}

impl Connection {
    async fn open(config: &Config) -> Result<Connection, ClientError> {
        // Absolute in what is said: a relative data_dir is taken from the
        // working directory, which for a program calling sendmail may not
        // be the server's.
        let path = socket_path(config);
        let path = std::path::absolute(&path).unwrap_or(path);
        match UnixStream::connect(&path).await {
            Ok(stream) => {
                let (read, write) = stream.into_split();
                Ok(Connection {
                    read: BufReader::new(read),
                    write,
                    path,
                })
            }
            Err(e) => Err(match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                    ClientError::NotRunning { path }
                }
                std::io::ErrorKind::PermissionDenied => ClientError::NoAccess { path },
                _ => ClientError::Io { path, error: e },
            }),
        }
    }

    /// Sends the request line. A write that fails is not yet a failure:
    /// a server that refused at once has closed, and its answer is there
    /// to read.
    async fn ask(&mut self, request: &Request) {
        let mut line = serde_json::to_vec(request).unwrap_or_default();
        line.push(b'\n');
        let _ = self.write.write_all(&line).await;
    }

    async fn read(&mut self) -> Result<Answer, ClientError> {
        let mut line = String::new();
        match self.read.read_line(&mut line).await {
            // A server that closed with our message unread resets the
            // connection after its answer: what came first still counts.
            Err(e) if line.is_empty() && e.kind() != std::io::ErrorKind::ConnectionReset => {
                return Err(self.io(e));
            }
            _ => {}
        }
        if line.is_empty() {
            return Err(self.io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "it closed the connection without an answer",
            )));
        }
        serde_json::from_str(&line).map_err(|e| self.protocol(format!("{e}")))
    }

    fn io(&self, error: std::io::Error) -> ClientError {
        ClientError::Io {
            path: self.path.clone(),
            error,
        }
    }

    fn protocol(&self, what: String) -> ClientError {
        ClientError::Protocol {
            path: self.path.clone(),
            what,
        }
    }
}
