//! The session's connection: buffered input, batched output, timeouts. Replies
//! are flushed only when no complete command is waiting in the input, so a
//! pipelined group (RFC 2920) gets its replies in one write.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::smtp::data::BodyReader;
use crate::smtp::reply::Reply;

pub use crate::smtp::Stream;

/// Why a session stops reading.
#[derive(Debug)]
pub enum SessionEnd {
    Eof,
    Timeout,
    Shutdown,
    Io(std::io::Error),
}

/// A line read from the client, CRLF included, or the fact that it was too long.
pub enum Line {
    Complete(Vec<u8>),
    TooLong,
}

pub struct Connection {
    pub stream: Box<dyn Stream>,
    input: Vec<u8>,
    output: Vec<u8>,
}

impl Connection {
    pub fn new(stream: Box<dyn Stream>) -> Connection {
        Connection {
            stream,
            input: Vec::with_capacity(4096),
            output: Vec::with_capacity(1024),
        }
    }

    pub fn queue(&mut self, reply: &Reply) {
        reply.write_to(&mut self.output);
    }

    pub async fn flush(&mut self) -> Result<(), SessionEnd> {
        if !self.output.is_empty() {
            self.stream
                .write_all(&self.output)
                .await
                .map_err(SessionEnd::Io)?;
            self.stream.flush().await.map_err(SessionEnd::Io)?;
            self.output.clear();
        }
        Ok(())
    }

    /// Throws away whatever the client sent ahead. Used at STARTTLS: bytes that
    /// arrived in plaintext must never be read as commands of the TLS session
    /// (CVE-2011-0411, RFC 3207 §4.2).
    pub fn discard_input(&mut self) {
        self.input.clear();
    }

    /// Swaps the underlying stream (for the TLS upgrade), returning the old one.
    pub fn take_stream(&mut self) -> Box<dyn Stream> {
        std::mem::replace(&mut self.stream, Box::new(tokio::io::duplex(1).0))
    }

    /// Reads more input, flushing pending replies first. `stop` ends the wait
    /// early (server shutdown) when given.
    async fn fill(
        &mut self,
        timeout: Duration,
        stop: Option<&CancellationToken>,
    ) -> Result<(), SessionEnd> {
        self.flush().await?;
        let mut chunk = [0u8; 16 * 1024];
        let read = tokio::time::timeout(timeout, self.stream.read(&mut chunk));
        let n = match stop {
            Some(token) => tokio::select! {
                r = read => r,
                () = token.cancelled() => return Err(SessionEnd::Shutdown),
            },
            None => read.await,
        }
        .map_err(|_| SessionEnd::Timeout)?
        .map_err(SessionEnd::Io)?;
        if n == 0 {
            return Err(SessionEnd::Eof);
        }
        self.input.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// Reads one line of at most `max` octets. A longer line is consumed up to
    /// its LF and reported as `TooLong`, so its tail is never taken for a command.
    pub async fn read_line(
        &mut self,
        max: usize,
        timeout: Duration,
        stop: Option<&CancellationToken>,
    ) -> Result<Line, SessionEnd> {
        let mut too_long = false;
        loop {
            if let Some(pos) = self.input.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.input.drain(..=pos).collect();
                return Ok(if too_long || line.len() > max {
                    Line::TooLong
                } else {
                    Line::Complete(line)
                });
            }
            if self.input.len() > max {
                too_long = true;
                self.input.clear();
            }
            self.fill(timeout, stop).await?;
        }
    }

    /// Feeds DATA input to `reader` until the terminating CRLF.CRLF; what
    /// follows it stays buffered for the next command.
    pub async fn read_data(
        &mut self,
        reader: &mut BodyReader,
        timeout: Duration,
    ) -> Result<(), SessionEnd> {
        loop {
            if let Some(end) = reader.feed(&self.input) {
                self.input.drain(..end);
                return Ok(());
            }
            self.input.clear();
            self.fill(timeout, None).await?;
        }
    }

    /// Reads exactly `size` octets of a BDAT chunk into `reader`, or reads and
    /// drops them when `reader` is `None` (a refused BDAT must still consume its
    /// chunk, RFC 3030 §4, or the chunk would be read as commands).
    pub async fn read_chunk(
        &mut self,
        mut size: usize,
        mut reader: Option<&mut BodyReader>,
        timeout: Duration,
    ) -> Result<(), SessionEnd> {
        loop {
            let take = size.min(self.input.len());
            if let Some(r) = reader.as_deref_mut() {
                r.feed(&self.input[..take]);
            }
            self.input.drain(..take);
            size -= take;
            if size == 0 {
                return Ok(());
            }
            self.fill(timeout, None).await?;
        }
    }
}
