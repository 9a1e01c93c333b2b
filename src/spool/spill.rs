//! A message body written to disk while it arrives, once it has grown past
//! what a session may hold in memory: each session then holds a bounded head,
//! whatever the message size, so a few hundred clients sending large messages
//! cannot exhaust memory.
//!
//! The file is a segment of its own under `spool/bodies/`, numbered by the
//! writer's numbering (`segments::Numbers`), so that the commit that queues
//! the message only points its row at it: no copy. Until that commit the
//! session owns the file and removes it if the message is not queued; after
//! it, the writer's sweep removes it once nothing refers to it (a crash's
//! leftovers go at the next start).

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;

use super::segments;

/// A spilled body on disk, as the spool's commit refers to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spilled {
    pub segment: i64,
    pub len: u64,
}

/// A body being written to its own segment. Removed on drop unless `keep` is
/// called after the message was queued.
pub struct SpillFile {
    path: PathBuf,
    segment: i64,
    /// `None` while a write runs on a blocking thread, and once finished.
    file: Option<File>,
    len: u64,
    kept: bool,
}

impl SpillFile {
    pub(super) async fn create(dir: PathBuf, segment: i64) -> std::io::Result<SpillFile> {
        let path = segments::path(&dir, segment);
        let create = path.clone();
        let file = blocking(move || {
            segments::ensure_dir(&dir)?;
            File::options().write(true).create_new(true).open(create)
        })
        .await?;
        Ok(SpillFile {
            path,
            segment,
            file: Some(file),
            len: 0,
            kept: false,
        })
    }

    /// Appends the next octets of the body. Takes them by value: they are
    /// written from where they are and freed, with no copy kept in a buffer
    /// (tokio's File keeps one as large as the largest write, per session).
    pub async fn write(&mut self, bytes: Vec<u8>) -> std::io::Result<()> {
        let mut file = self.file.take().ok_or_else(closed)?;
        let len = bytes.len() as u64;
        self.file = Some(
            blocking(move || {
                file.write_all(&bytes)?;
                Ok(file)
            })
            .await?,
        );
        self.len += len;
        Ok(())
    }

    /// Makes the whole body durable (data, then the file's name in its
    /// directory) and closes it; the commit may refer to it after this.
    pub async fn finish(&mut self) -> std::io::Result<()> {
        let file = self.file.take().ok_or_else(closed)?;
        let dir = self.path.parent().map(PathBuf::from);
        blocking(move || {
            file.sync_data()?;
            match dir {
                Some(dir) => File::open(dir)?.sync_all(),
                None => Ok(()),
            }
        })
        .await
    }

    /// Where the body is, for the commit.
    pub(super) fn spilled(&self) -> Spilled {
        Spilled {
            segment: self.segment,
            len: self.len,
        }
    }

    /// Octets written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reads the whole body back, for the rare message that must be
    /// rewritten after it arrived.
    pub async fn read_all(&self) -> std::io::Result<Vec<u8>> {
        tokio::fs::read(&self.path).await
    }

    /// The file is handed to the spool's writer, which removes it if the
    /// commit fails: from here on a dropped session must not remove it, or a
    /// commit it did not wait for would point at nothing.
    pub(super) fn keep(mut self) {
        self.kept = true;
    }
}

async fn blocking<T: Send + 'static>(
    job: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(job)
        .await
        .map_err(std::io::Error::other)?
}

fn closed() -> std::io::Error {
    std::io::Error::other("the spilled body is already finished")
}

impl Drop for SpillFile {
    fn drop(&mut self) {
        if !self.kept {
            // A quick unlink; the message was refused or the client left.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
