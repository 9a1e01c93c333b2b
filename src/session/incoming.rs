//! A message body while it arrives: the DATA/BDAT reader's output is held in
//! memory up to `SPILL_AT`, and past it written to a spool file as it comes,
//! so that a session holds about that much whatever the message size. The
//! first `SPILL_AT` octets stay in memory too: the header checks need them.

use crate::prepare::{ReceivedBody, SPILL_AT};
use crate::smtp::data::{BodyReader, BodyViolation};
use crate::spool::{SpillFile, Spool};

/// The most one read of the connection adds before `absorb` runs.
const READ_AHEAD: usize = 32 * 1024;

pub struct IncomingBody {
    reader: BodyReader,
    spool: Spool,
    /// Set once the body went to disk: the first `SPILL_AT` octets, and the file.
    spilled: Option<(Vec<u8>, SpillFile)>,
    /// Writing the spill failed: the rest is read and dropped, and the
    /// message refused with 4xx at the end.
    failed: Option<std::io::Error>,
}

/// Why a received body cannot be queued.
pub enum Unreceived {
    Violation(BodyViolation),
    /// The disk would not take it.
    Storage(std::io::Error),
}

impl IncomingBody {
    pub fn new(mut reader: BodyReader, spool: Spool) -> IncomingBody {
        // The reader holds up to SPILL_AT and one read more before `absorb`
        // takes it; without the room, its buffer would double to 512 KiB on
        // the way.
        reader.reserve(SPILL_AT + READ_AHEAD);
        IncomingBody {
            reader,
            spool,
            spilled: None,
            failed: None,
        }
    }

    /// See [`BodyReader::feed`].
    pub fn feed(&mut self, input: &[u8]) -> Option<usize> {
        self.reader.feed(input)
    }

    /// Moves what the reader holds to disk once the body has outgrown memory.
    /// A write error is kept for `finish`; reading goes on to the end of the
    /// body either way, so the client gets its answer in sequence.
    pub async fn absorb(&mut self) {
        if self.failed.is_some() {
            let _ = self.reader.take_held();
            return;
        }
        if self.spilled.is_none() && self.reader.held() <= SPILL_AT {
            return;
        }
        if let Err(e) = self.spill().await {
            self.failed = Some(e);
            self.spilled = None;
        }
    }

    async fn spill(&mut self) -> std::io::Result<()> {
        let held = self.reader.take_held();
        match &mut self.spilled {
            Some((_, file)) => file.write(held).await,
            None => {
                let mut file = self.spool.spill().await?;
                let head = held[..SPILL_AT.min(held.len())].to_vec();
                file.write(held).await?;
                self.spilled = Some((head, file));
                Ok(())
            }
        }
    }

    /// The body, durable on disk if it was spilled, or why not.
    pub async fn finish(self) -> Result<ReceivedBody, Unreceived> {
        let IncomingBody {
            reader,
            spilled,
            failed,
            ..
        } = self;
        let long_lines = reader.has_long_lines();
        let rest = reader.finish().map_err(Unreceived::Violation)?;
        if let Some(e) = failed {
            return Err(Unreceived::Storage(e));
        }
        match spilled {
            None => Ok(ReceivedBody {
                head: rest,
                file: None,
                long_lines,
            }),
            Some((head, mut file)) => {
                let written = async {
                    file.write(rest).await?;
                    file.finish().await
                };
                written.await.map_err(Unreceived::Storage)?;
                Ok(ReceivedBody {
                    head,
                    file: Some(file),
                    long_lines,
                })
            }
        }
    }
}
