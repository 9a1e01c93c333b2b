//! Large bodies live outside SQLite, in append-only segment files under
//! `spool/bodies/`, while their rows say where (segment, offset; the length is
//! the message's size).
//!
//! Why: a body in a SQLite row is copied at bind time, written to the WAL,
//! written again by the checkpoint, and its overflow chain is read back page by
//! page to delete it. Relaying 100 KiB messages, that was two fifths of the
//! server's CPU time. Appended to a segment, a body is written once, and the
//! whole batch is made durable with one fdatasync before the SQLite commit that
//! refers to it, so the group commit stays one step. Small bodies (most mail)
//! stay in their rows, where they cost little.
//!
//! A segment is removed once no row refers to it: delivered messages go, and a
//! message that must wait for a retry has its body moved into its row (see
//! `writer`), so a slow recipient cannot keep a whole segment alive for days.
//! Only the process that writes segments (the server's spool writer) removes
//! them; what a crash left behind goes at the next start.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sqlx::SqliteConnection;

/// Bodies at least this large go to a segment; smaller ones stay in their row.
pub(super) const MIN_BODY: usize = 8 * 1024;
/// A segment takes new bodies until it is this large.
const SEGMENT_BYTES: u64 = 16 << 20;
/// Least time between two looks for segments nobody refers to.
const SWEEP_EVERY: Duration = Duration::from_millis(200);

pub(super) fn dir(spool_dir: &Path) -> PathBuf {
    spool_dir.join("bodies")
}

pub(super) fn path(dir: &Path, segment: i64) -> PathBuf {
    dir.join(format!("{segment:016x}"))
}

/// Creates the segment directory if needed, durably.
pub(super) fn ensure_dir(dir: &Path) -> std::io::Result<()> {
    if !dir.exists() {
        std::fs::create_dir_all(dir)?;
        if let Some(spool_dir) = dir.parent() {
            File::open(spool_dir)?.sync_all()?;
        }
    }
    Ok(())
}

/// Hands out segment numbers to the writer and to sessions that spill a body
/// (`spill.rs`). Numbers below `first_new` belong to files an earlier run left.
#[derive(Clone)]
pub(super) struct Numbers {
    first_new: i64,
    next: Arc<AtomicI64>,
}

impl Numbers {
    /// Starts after the highest segment in `dir` (none yet: 0). Only lists.
    pub fn after_existing(dir: &Path) -> Numbers {
        let highest = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(|e| segment_of(&e.ok()?.file_name()))
                    .max()
                    .unwrap_or(-1)
            })
            .unwrap_or(-1);
        Numbers {
            first_new: highest + 1,
            next: Arc::new(AtomicI64::new(highest + 1)),
        }
    }

    pub fn take(&self) -> i64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }
}

fn segment_of(name: &std::ffi::OsStr) -> Option<i64> {
    name.to_str().and_then(|n| i64::from_str_radix(n, 16).ok())
}

/// Reads `len` octets at `offset` of `segment`.
pub(super) async fn read(
    dir: &Path,
    segment: i64,
    offset: i64,
    len: usize,
) -> std::io::Result<Vec<u8>> {
    let path = path(dir, segment);
    let offset = u64::try_from(offset).map_err(std::io::Error::other)?;
    tokio::task::spawn_blocking(move || {
        let mut body = vec![0; len];
        File::open(path)?.read_exact_at(&mut body, offset)?;
        Ok(body)
    })
    .await
    .map_err(std::io::Error::other)?
}

/// A segment write in progress on a blocking thread.
pub(super) struct Appending {
    segment: i64,
    job: tokio::task::JoinHandle<std::io::Result<Current>>,
}

struct Current {
    segment: i64,
    file: File,
    len: u64,
}

/// The writer's side: where the next bodies go, and which segments may be
/// removable.
pub(super) struct Segments {
    dir: PathBuf,
    current: Option<Current>,
    /// Segments no longer written to, each removed once no row refers to it.
    done: BTreeSet<i64>,
    numbers: Numbers,
    last_sweep: Option<Instant>,
    /// Set up on the first write, so that a CLI command opening the spool
    /// (which writes nothing) never lists, let alone removes, the server's
    /// segments.
    started: bool,
}

/// Where each body of a batch goes: `Some((segment, offset))`, or `None` to
/// stay in its row.
pub(super) type Placement = Vec<Option<(i64, i64)>>;

impl Segments {
    pub fn new(spool_dir: &Path, numbers: Numbers) -> Segments {
        Segments {
            dir: dir(spool_dir),
            current: None,
            done: BTreeSet::new(),
            numbers,
            last_sweep: None,
            started: false,
        }
    }

    /// Lists what earlier runs left, once; called before the first write.
    pub fn start(&mut self) -> std::io::Result<()> {
        if self.started {
            return Ok(());
        }
        ensure_dir(&self.dir)?;
        // What an earlier run left is never appended to again, and removed
        // by the next sweep if nothing refers to it. Newer numbers are this
        // run's: bodies that sessions are spilling right now among them.
        for entry in std::fs::read_dir(&self.dir)? {
            if let Some(segment) = segment_of(&entry?.file_name())
                && segment < self.numbers.first_new
            {
                self.done.insert(segment);
            }
        }
        self.started = true;
        Ok(())
    }

    /// Starts appending the large bodies among `bodies` to the current segment
    /// (a new one when needed) on a blocking thread, and says at once where
    /// each will be, so that their rows are written meanwhile. Commit only after
    /// [`Segments::finish_append`]: then they are durable.
    pub fn append(
        &mut self,
        bodies: Vec<Bytes>,
    ) -> std::io::Result<(Placement, Option<Appending>)> {
        if bodies.iter().all(|b| b.len() < MIN_BODY) {
            return Ok((vec![None; bodies.len()], None));
        }
        self.start()?;
        if self
            .current
            .as_ref()
            .is_some_and(|c| c.len >= SEGMENT_BYTES)
            && let Some(full) = self.current.take()
        {
            self.done.insert(full.segment);
        }
        let current = self.current.take();
        let segment = current
            .as_ref()
            .map_or_else(|| self.numbers.take(), |c| c.segment);
        let mut end = current.as_ref().map_or(0, |c| c.len);
        let placement = bodies
            .iter()
            .map(|body| {
                (body.len() >= MIN_BODY).then(|| {
                    let at = (segment, end as i64);
                    end += body.len() as u64;
                    at
                })
            })
            .collect();
        let dir = self.dir.clone();
        let job = tokio::task::spawn_blocking(move || {
            let mut current = match current {
                Some(c) => c,
                None => Current {
                    segment,
                    file: File::options()
                        .append(true)
                        .create_new(true)
                        .open(path(&dir, segment))?,
                    len: 0,
                },
            };
            let created = current.len == 0;
            for body in bodies.iter().filter(|b| b.len() >= MIN_BODY) {
                current.file.write_all(body)?;
                current.len += body.len() as u64;
            }
            current.file.sync_data()?;
            if created {
                // The new file's name must survive a crash too.
                File::open(&dir)?.sync_all()?;
            }
            Ok(current)
        });
        Ok((placement, Some(Appending { segment, job })))
    }

    /// Waits for an append to be durable.
    pub async fn finish_append(&mut self, appending: Appending) -> std::io::Result<()> {
        match appending
            .job
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r)
        {
            Ok(current) => {
                self.current = Some(current);
                Ok(())
            }
            Err(e) => {
                // The segment may hold a partial write: the next append starts
                // a fresh one, and this one goes once nothing refers to it.
                self.done.insert(appending.segment);
                Err(e)
            }
        }
    }

    /// Takes charge of a segment a session spilled a body into, once the
    /// commit that refers to it is done (or failed): it goes when no row
    /// refers to it.
    pub fn adopt(&mut self, segment: i64) {
        self.done.insert(segment);
    }

    /// Stops appending to the current segment, so that it can go once nothing
    /// refers to it: on a quiet server, delivered bodies should not wait on
    /// disk until 16 MiB more mail has come.
    pub fn retire_current(&mut self) {
        if let Some(current) = self.current.take() {
            self.done.insert(current.segment);
        }
    }

    /// Removes finished segments that no committed row refers to any more. At
    /// most every `SWEEP_EVERY` unless `now` is set.
    pub async fn sweep(
        &mut self,
        conn: &mut SqliteConnection,
        now: bool,
    ) -> Result<(), sqlx::Error> {
        let recent = self.last_sweep.is_some_and(|t| t.elapsed() < SWEEP_EVERY);
        if self.done.is_empty() || (recent && !now) {
            return Ok(());
        }
        self.last_sweep = Some(Instant::now());
        // One indexed probe per finished segment (a handful), not a read of
        // every row that refers to a segment: with a large queue of big
        // bodies on hold, that read grew with the queue, five times a second.
        let mut dead = Vec::new();
        for &segment in &self.done {
            let referred: Option<i64> =
                sqlx::query_scalar("SELECT 1 FROM message WHERE segment = ? LIMIT 1")
                    .bind(segment)
                    .fetch_optional(&mut *conn)
                    .await?;
            if referred.is_none() {
                dead.push(segment);
            }
        }
        for segment in dead {
            match std::fs::remove_file(path(&self.dir, segment)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(event = "segment_remove_failed", segment, error = %e);
                    continue;
                }
            }
            self.done.remove(&segment);
        }
        Ok(())
    }

    /// Reads a body this writer (or an earlier run) put in a segment.
    pub async fn read(&self, segment: i64, offset: i64, len: usize) -> std::io::Result<Vec<u8>> {
        read(&self.dir, segment, offset, len).await
    }
}
