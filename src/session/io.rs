//! The session's connection: buffered input, batched output, timeouts. Replies
//! are flushed only when no complete command is waiting in the input, so a
//! pipelined group (RFC 2920) gets its replies in one write. Both buffers are
//! sized by what they hold: an idle session keeps a small input buffer and no
//! output buffer (issue #11: 10,000 idle sessions in about 10 KiB each).

use std::time::{Duration, Instant};

use bytes::BufMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::incoming::IncomingBody;
use crate::smtp::reply::Reply;

pub use crate::smtp::Stream;

/// Why a session stops reading; logged in words with `event="disconnected"`.
#[derive(Debug, thiserror::Error)]
pub enum SessionEnd {
    #[error("the client closed the connection")]
    Eof,
    /// The client sent nothing (or not enough) in time.
    #[error("the client sent nothing in time")]
    Timeout,
    /// The client did not read its replies in time: nothing more can be
    /// said to it.
    #[error("the client did not read its replies in time")]
    WriteTimeout,
    #[error("the server is stopping")]
    Shutdown,
    #[error("connection error: {0}")]
    Io(std::io::Error),
}

/// A line read from the client, CRLF included, or the fact that it was too long.
pub enum Line {
    Complete(Vec<u8>),
    TooLong,
}

/// What one read asks for while a command is awaited: room for a command line
/// of RFC 5321's 512 octets. Longer lines and pipelined groups grow the buffer
/// as they arrive.
const COMMAND_READ: usize = 512;

/// What one read asks for while a body arrives: bodies come in large pieces,
/// and a larger read means fewer calls per message.
const BODY_READ: usize = 16 * 1024;

pub struct Connection {
    pub stream: Box<dyn Stream>,
    input: Vec<u8>,
    output: Vec<u8>,
    /// How long replies may take to be written: a client that sends and never
    /// reads would otherwise hold its session forever.
    write_timeout: Duration,
}

impl Connection {
    pub fn new(stream: Box<dyn Stream>, write_timeout: Duration) -> Connection {
        Connection {
            stream,
            input: Vec::new(),
            output: Vec::new(),
            write_timeout,
        }
    }

    pub fn queue(&mut self, reply: &Reply) {
        reply.write_to(&mut self.output);
    }

    pub async fn flush(&mut self) -> Result<(), SessionEnd> {
        if !self.output.is_empty() {
            // Given back once written: a session spends most of its life
            // waiting for the client, and would keep the capacity meanwhile.
            let output = std::mem::take(&mut self.output);
            let write = async {
                self.stream.write_all(&output).await?;
                self.stream.flush().await
            };
            tokio::time::timeout(self.write_timeout, write)
                .await
                .map_err(|_| SessionEnd::WriteTimeout)?
                .map_err(SessionEnd::Io)?;
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

    /// Reads up to `size` more octets of input, flushing pending replies
    /// first; gives up at `deadline`. `stop` ends the wait early (server
    /// shutdown) when given.
    async fn fill(
        &mut self,
        size: usize,
        deadline: Instant,
        stop: Option<&CancellationToken>,
    ) -> Result<(), SessionEnd> {
        self.flush().await?;
        // The read goes straight into `input`, so the session's future holds
        // no buffer of its own while it waits. A buffer that grew for a body
        // or a long line is given back once it has been read out.
        if self.input.is_empty() && self.input.capacity() > size {
            self.input = Vec::new();
        }
        self.input.reserve(size);
        let mut room = (&mut self.input).limit(size);
        let read = tokio::time::timeout_at(deadline.into(), self.stream.read_buf(&mut room));
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
        Ok(())
    }

    /// Reads one line of at most `max` octets. A longer line is consumed up to
    /// its LF and reported as `TooLong`, so its tail is never taken for a command.
    /// The whole line must arrive within `timeout`: a client that sends a
    /// byte now and then does not hold its session past it (slowloris).
    pub async fn read_line(
        &mut self,
        max: usize,
        timeout: Duration,
        stop: Option<&CancellationToken>,
    ) -> Result<Line, SessionEnd> {
        let deadline = Instant::now() + timeout;
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
            self.fill(COMMAND_READ, deadline, stop).await?;
        }
    }

    /// Feeds DATA input to `body` until the terminating CRLF.CRLF; what
    /// follows it stays buffered for the next command.
    pub async fn read_data(
        &mut self,
        body: &mut IncomingBody,
        pace: &mut BodyPace,
    ) -> Result<(), SessionEnd> {
        loop {
            if let Some(end) = body.feed(&self.input) {
                self.input.drain(..end);
                return Ok(());
            }
            pace.received(self.input.len());
            self.input.clear();
            body.absorb().await;
            self.fill(BODY_READ, pace.deadline(), None).await?;
        }
    }

    /// Reads exactly `size` octets of a BDAT chunk into `body`, or reads and
    /// drops them when `body` is `None` (a refused BDAT must still consume its
    /// chunk, RFC 3030 §4, or the chunk would be read as commands).
    pub async fn read_chunk(
        &mut self,
        mut size: usize,
        mut body: Option<&mut IncomingBody>,
        pace: &mut BodyPace,
    ) -> Result<(), SessionEnd> {
        loop {
            let take = size.min(self.input.len());
            if let Some(b) = body.as_deref_mut() {
                b.feed(&self.input[..take]);
                b.absorb().await;
            }
            pace.received(take);
            self.input.drain(..take);
            size -= take;
            if size == 0 {
                // Chunks that arrive whole never wait here: the pace of the
                // body as a whole is checked between them too.
                return if pace.missed() {
                    Err(SessionEnd::Timeout)
                } else {
                    Ok(())
                };
            }
            self.fill(BODY_READ, pace.deadline(), None).await?;
        }
    }
}

/// The least average rate of a message body in octets per second, after its
/// first `data_timeout` (Postfix's smtpd_min_data_rate): a client that sends
/// a byte now and then is dropped instead of holding its session for days.
const MIN_DATA_RATE: u64 = 500;

/// When the next part of a body must have arrived: within `data_timeout` of
/// the last (RFC 5321 §4.5.3.2.6), and no later than the minimum rate allows
/// for the whole body so far.
pub struct BodyPace {
    idle: Duration,
    overall: Instant,
}

impl BodyPace {
    pub fn new(data_timeout: Duration) -> BodyPace {
        BodyPace {
            idle: data_timeout,
            overall: Instant::now() + data_timeout,
        }
    }

    fn received(&mut self, octets: usize) {
        self.overall += Duration::from_millis(octets as u64 * 1000 / MIN_DATA_RATE);
    }

    fn deadline(&self) -> Instant {
        self.overall.min(Instant::now() + self.idle)
    }

    /// The body so far came slower than the minimum rate allows.
    fn missed(&self) -> bool {
        Instant::now() > self.overall
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    const WAIT: Duration = Duration::from_secs(5);

    async fn line(conn: &mut Connection) -> Vec<u8> {
        match conn.read_line(12_288, WAIT, None).await {
            Ok(Line::Complete(line)) => line,
            Ok(Line::TooLong) => panic!("too long"),
            Err(e) => panic!("{e:?}"),
        }
    }

    /// Issue #11: a waiting session holds one small read's room and no
    /// reply buffer, whatever the earlier commands needed.
    #[tokio::test]
    async fn buffers_are_given_back_before_the_session_waits() {
        let (server, mut client) = tokio::io::duplex(64 * 1024);
        let mut conn = Connection::new(Box::new(server), WAIT);
        let long = format!("NOOP {}\r\n", "x".repeat(10_000));
        client.write_all(long.as_bytes()).await.expect("send");
        assert_eq!(line(&mut conn).await.len(), long.len());
        assert!(conn.input.capacity() >= long.len());
        conn.queue(&Reply::ok());
        client.write_all(b"QUIT\r\n").await.expect("send");
        assert_eq!(line(&mut conn).await, b"QUIT\r\n");
        assert!(
            conn.input.capacity() <= COMMAND_READ,
            "{}",
            conn.input.capacity()
        );
        assert_eq!(conn.output.capacity(), 0);
    }
}
