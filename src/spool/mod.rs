//! The spool: the only module that touches queue storage. `put` makes a message
//! durable before the session may answer 250; `claim_due` and `record` serve the
//! scheduler; `list`, `get`, `body`, `retry` and `delete` serve `postern queue`.
//!
//! Storage is SQLite in WAL mode with `synchronous=FULL` in `data_dir/spool`: a
//! commit appends to the WAL and syncs it (and the directory when the WAL is new),
//! so a committed message survives a crash or SIGKILL. One writer task commits
//! the messages of all concurrent sessions together (group commit), so one sync
//! covers a whole batch. Bodies of 8 KiB and more are appended to segment
//! files instead, synced before the commit that refers to them
//! (`segments.rs`). The SQL is plain enough to move to PostgreSQL as is.

mod claims;
mod envelope;
mod id;
mod segments;
mod space;
mod spill;
mod writer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sqlx::sqlite::SqlitePoolOptions;
use sqlx::{Connection, Row, SqliteConnection, SqlitePool};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::clock::now_unix;
use claims::Claims;
pub use claims::{Fresh, FreshBody};
pub use envelope::{
    DsnEnvelope, NewMessage, NewRecipient, QueuedMessage, QueuedRecipient, RecipientStatus,
};
pub use id::QueueId;
pub use space::LowSpace;
use space::SpaceFloor;
pub use spill::SpillFile;
use writer::{DatabaseFile, Request, Write};
pub use writer::{RecipientUpdate, WriteError};

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("cannot create the spool directory {path}: {source}")]
    CreateDir {
        path: String,
        source: std::io::Error,
    },
    #[error("spool database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("spool migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("cannot read a message body from the spool: {0}")]
    Body(std::io::Error),
    #[error("the spool writer has stopped")]
    WriterGone,
}

/// A handle to the spool; cheap to clone and share between sessions.
#[derive(Clone)]
pub struct Spool {
    pool: SqlitePool,
    writer: mpsc::Sender<Request>,
    queued: Arc<Notify>,
    claims: Claims,
    /// Where segment files with large bodies are.
    bodies: PathBuf,
    numbers: segments::Numbers,
    space: Arc<SpaceFloor>,
    /// The spool may hold due recipients that nobody has claimed: set when a
    /// message or bounce is queued without being handed over, taken by the
    /// scheduler before it looks.
    backlog: Arc<AtomicBool>,
}

impl Spool {
    /// Opens (creating if needed) the spool under `data_dir` and starts its writer
    /// task. Must run inside a tokio runtime.
    pub async fn open(data_dir: &Path) -> Result<Spool, SpoolError> {
        let dir = data_dir.join("spool");
        std::fs::create_dir_all(&dir).map_err(|source| SpoolError::CreateDir {
            path: dir.display().to_string(),
            source,
        })?;
        let path = dir.join("queue.sqlite");
        let options = crate::sqlite::options(&path);
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations/spool").run(&pool).await?;
        let conn = SqliteConnection::connect_with(&options).await?;
        let database = DatabaseFile::identify(path, options);
        let bodies = segments::dir(&dir);
        let numbers = segments::Numbers::after_existing(&bodies);
        let (writer, rx) = mpsc::channel(4096);
        tokio::spawn(writer::run(
            conn,
            database,
            rx,
            dir.clone(),
            numbers.clone(),
        ));
        Ok(Spool {
            pool,
            writer,
            numbers,
            space: Arc::new(SpaceFloor::new(data_dir.to_path_buf(), 0)),
            queued: Arc::new(Notify::new()),
            claims: Claims::default(),
            bodies,
            // Whatever a previous run left is due for a look.
            backlog: Arc::new(AtomicBool::new(true)),
        })
    }

    /// Refuses new mail below `min_free` free octets in `data_dir` (see
    /// [`Spool::has_room_for`]); 0 turns the floor off.
    pub fn with_free_space_floor(mut self, data_dir: &Path, min_free: u64) -> Spool {
        self.space = Arc::new(SpaceFloor::new(data_dir.to_path_buf(), min_free));
        self
    }

    /// Whether a new message of `size` octets (0: not declared) may come in:
    /// it must leave the free-space floor free. Logs the start and end of a
    /// low-space episode once each.
    pub fn has_room_for(&self, size: u64) -> Result<(), LowSpace> {
        self.space.check(size)
    }

    /// Makes `message` durable under `id`. When this returns `Ok`, the
    /// body, envelope and recipients are synced to disk.
    ///
    /// Cancel safety: if the future is dropped after the request was handed to the
    /// writer, the message may still be committed; the client then never saw 250
    /// and will resend, the duplicate RFC 5321 §6.1 accepts.
    ///
    /// Then, while the scheduler takes fresh messages ([`Spool::hand_off_to`])
    /// and has room, the message is claimed and handed to it with its body;
    /// otherwise the scheduler finds it in the spool.
    pub async fn put(&self, id: QueueId, message: NewMessage) -> Result<(), SpoolError> {
        let fresh = self.claims.prepare(&id, &message, now_unix());
        self.write(Write::Put {
            id,
            message,
            spilled: None,
        })
        .await?;
        if !fresh.is_some_and(|f| self.claims.hand_off(f)) {
            self.mark_backlog();
        }
        Ok(())
    }

    /// A new file for a body too large to hold in memory while it arrives.
    pub async fn spill(&self) -> std::io::Result<SpillFile> {
        SpillFile::create(self.bodies.clone(), self.numbers.take()).await
    }

    /// `put` for a message whose body was spilled: `message.body` holds what
    /// precedes the spilled octets (the new trace headers), and `body` must
    /// be finished. The message waits in the spool for the scheduler rather
    /// than being handed over in memory.
    pub async fn put_spilled(
        &self,
        id: QueueId,
        message: NewMessage,
        body: SpillFile,
    ) -> Result<(), SpoolError> {
        let spilled = Some(body.spilled());
        let committed = self
            .send(Write::Put {
                id,
                message,
                spilled,
            })
            .await?;
        // The writer has it: from here it removes the file if the commit
        // fails. (Dropped before the send, the request never reached it, and
        // `body` removes the file on its way out.)
        body.keep();
        Self::committed(committed).await?;
        self.mark_backlog();
        Ok(())
    }

    /// Fresh messages from `put`, for the scheduler, while fewer than
    /// `max_claimed` recipients are claimed. Only the first caller gets them.
    pub fn hand_off_to(&self, max_claimed: usize) -> Option<mpsc::UnboundedReceiver<Fresh>> {
        self.claims.hand_off_to(max_claimed)
    }

    /// Marks the spool as holding due recipients nobody has claimed, and wakes
    /// the scheduler.
    pub fn mark_backlog(&self) {
        self.backlog.store(true, Ordering::SeqCst);
        self.queued.notify_one();
    }

    /// Whether the spool may hold due recipients nobody has claimed; clears
    /// the mark, so a claim pass that follows sees everything queued before.
    pub fn take_backlog(&self) -> bool {
        self.backlog.swap(false, Ordering::SeqCst)
    }

    /// Records delivery outcomes for recipients of message `id`, together with
    /// the bounce they cause, durably and in one transaction; removes the
    /// message once no recipient is left to deliver.
    pub async fn record(
        &self,
        id: &QueueId,
        updates: Vec<RecipientUpdate>,
        bounce: Option<(QueueId, NewMessage)>,
    ) -> Result<(), SpoolError> {
        let idxs: Vec<u32> = updates.iter().map(|u| u.idx).collect();
        let bounced = bounce.is_some();
        let written = self
            .write(Write::Outcomes {
                id: id.clone(),
                updates,
                bounce,
            })
            .await;
        self.release(id, idxs);
        written?;
        if bounced {
            self.mark_backlog();
        } else if self.backlog.load(Ordering::SeqCst) {
            // Finished claims make room for what waits in the spool.
            self.queued.notify_one();
        }
        Ok(())
    }

    async fn write(&self, write: Write) -> Result<(), SpoolError> {
        Self::committed(self.send(write).await?).await
    }

    /// Hands `write` to the writer; the receiver says when it is committed.
    async fn send(
        &self,
        write: Write,
    ) -> Result<oneshot::Receiver<Result<(), WriteError>>, SpoolError> {
        let (done, committed) = oneshot::channel();
        self.writer
            .send(Request { write, done })
            .await
            .map_err(|_| SpoolError::WriterGone)?;
        Ok(committed)
    }

    async fn committed(
        committed: oneshot::Receiver<Result<(), WriteError>>,
    ) -> Result<(), SpoolError> {
        committed
            .await
            .map_err(|_| SpoolError::WriterGone)?
            .map_err(SpoolError::Write)
    }

    /// Claims up to `limit` recipients that are due at `now` and not already
    /// being delivered, grouped by message (with each message's envelope). A
    /// claim is held in memory until `record` or `release`: only this process
    /// delivers from this spool, and a crash releases every claim with it.
    /// One caller at a time (the scheduler).
    pub async fn claim_due(&self, now: i64, limit: u32) -> Result<Vec<QueuedMessage>, SpoolError> {
        let busy = self.claims.count();
        self.claims.begin_pass();
        // One query for recipients and their envelopes.
        let rows = sqlx::query(
            "SELECT r.message_id, r.idx, r.address, r.orcpt, r.notify, r.status, r.attempts, r.next_attempt, \
             r.last_reply, m.id, m.created, m.sender, m.size, m.auth_user, m.smtputf8, m.dsn_ret, m.dsn_envid \
             FROM recipient r JOIN message m ON m.id = r.message_id \
             WHERE r.status = 'queued' AND r.next_attempt <= ? ORDER BY r.next_attempt LIMIT ?",
        )
        .bind(now)
        .bind(i64::from(limit) + busy as i64)
        .fetch_all(&self.pool)
        .await;
        let rows = match rows {
            Ok(rows) => rows,
            Err(e) => {
                self.claims.finish_pass(Vec::new(), 0);
                return Err(e.into());
            }
        };
        let mut envelopes: HashMap<String, &sqlx::sqlite::SqliteRow> = HashMap::new();
        let read = rows
            .iter()
            .map(|row| {
                let id: String = row.get("message_id");
                envelopes.entry(id.clone()).or_insert(row);
                (id, recipient_from_row(row))
            })
            .collect();
        let mut by_message: HashMap<String, QueuedMessage> = HashMap::new();
        for (id, r) in self.claims.finish_pass(read, limit as usize) {
            let envelope = envelopes[&id];
            by_message
                .entry(id)
                .or_insert_with(|| message_from_row(envelope, Vec::new()))
                .recipients
                .push(r);
        }
        let mut out: Vec<QueuedMessage> = by_message.into_values().collect();
        for m in &mut out {
            m.recipients.sort_by_key(|r| r.idx);
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Gives up claims without recording anything (the recipients stay due).
    pub fn release(&self, id: &QueueId, idxs: impl IntoIterator<Item = u32>) {
        self.claims.release(id, idxs);
    }

    /// How many recipients are claimed and not yet recorded or released.
    pub fn claimed(&self) -> usize {
        self.claims.count()
    }

    /// When the next recipient falls due after `now` (unix seconds), if any.
    pub async fn next_due(&self, now: i64) -> Result<Option<i64>, SpoolError> {
        Ok(sqlx::query_scalar(
            "SELECT MIN(next_attempt) FROM recipient WHERE status = 'queued' AND next_attempt > ?",
        )
        .bind(now)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Makes the queued recipients of one message (or of all, with `None`) due
    /// now; returns how many. A running scheduler picks them up at its next look.
    pub async fn retry(&self, id: Option<&QueueId>) -> Result<u64, SpoolError> {
        let now = now_unix();
        let done = match id {
            Some(id) => sqlx::query(
                "UPDATE recipient SET next_attempt = ? WHERE status = 'queued' AND message_id = ?",
            )
            .bind(now)
            .bind(id.as_str())
            .execute(&self.pool)
            .await?,
            None => {
                sqlx::query("UPDATE recipient SET next_attempt = ? WHERE status = 'queued'")
                    .bind(now)
                    .execute(&self.pool)
                    .await?
            }
        };
        self.mark_backlog();
        Ok(done.rows_affected())
    }

    /// Woken after every `put` and `record`, for the scheduler.
    pub fn queued_signal(&self) -> Arc<Notify> {
        self.queued.clone()
    }

    /// Every message with its recipients, oldest first.
    pub async fn list(&self) -> Result<Vec<QueuedMessage>, SpoolError> {
        let rows = sqlx::query(
            "SELECT id, created, sender, size, auth_user, smtputf8, dsn_ret, dsn_envid FROM message ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut recipients = self.recipients(None).await?;
        Ok(rows
            .iter()
            .map(|row| {
                let id: String = row.get("id");
                let rcpts = recipients.remove(&id).unwrap_or_default();
                message_from_row(row, rcpts)
            })
            .collect())
    }

    /// One message without its body.
    pub async fn get(&self, id: &QueueId) -> Result<Option<QueuedMessage>, SpoolError> {
        let row = sqlx::query(
            "SELECT id, created, sender, size, auth_user, smtputf8, dsn_ret, dsn_envid FROM message WHERE id = ?",
        )
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let mut recipients = self.recipients(Some(id)).await?;
        Ok(Some(message_from_row(
            &row,
            recipients.remove(id.as_str()).unwrap_or_default(),
        )))
    }

    /// The stored message text, exactly as it will be relayed.
    pub async fn body(&self, id: &QueueId) -> Result<Option<Vec<u8>>, SpoolError> {
        let mut moved = None;
        // Twice at most: a body can move from its segment into its row (and the
        // segment go) between reading the row and reading the segment.
        for _ in 0..2 {
            let row =
                sqlx::query("SELECT body, segment, segment_offset, size FROM message WHERE id = ?")
                    .bind(id.as_str())
                    .fetch_optional(&self.pool)
                    .await?;
            let Some(row) = row else { return Ok(None) };
            let mut body: Vec<u8> = row.get("body");
            let Some(segment) = row.get::<Option<i64>, _>("segment") else {
                return Ok(Some(body));
            };
            // The row holds what precedes the segment's part (a spilled
            // body's trace headers), or nothing.
            let (offset, size): (i64, i64) = (row.get("segment_offset"), row.get("size"));
            let tail = (size as usize).saturating_sub(body.len());
            match segments::read(&self.bodies, segment, offset, tail).await {
                Ok(rest) => {
                    body.extend_from_slice(&rest);
                    return Ok(Some(body));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => moved = Some(e),
                Err(e) => return Err(SpoolError::Body(e)),
            }
        }
        Err(SpoolError::Body(
            moved.unwrap_or_else(|| std::io::ErrorKind::NotFound.into()),
        ))
    }

    /// Removes a message and its recipients; false if there was none.
    pub async fn delete(&self, id: &QueueId) -> Result<bool, SpoolError> {
        let done = sqlx::query("DELETE FROM message WHERE id = ?")
            .bind(id.as_str())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn recipients(
        &self,
        only: Option<&QueueId>,
    ) -> Result<HashMap<String, Vec<QueuedRecipient>>, SpoolError> {
        macro_rules! select {
            ($rest:literal) => {
                concat!(
                    "SELECT message_id, idx, address, orcpt, notify, status, attempts, next_attempt, last_reply FROM recipient ",
                    $rest
                )
            };
        }
        let rows = match only {
            Some(id) => {
                sqlx::query(select!("WHERE message_id = ? ORDER BY idx"))
                    .bind(id.as_str())
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                sqlx::query(select!("ORDER BY message_id, idx"))
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        let mut out: HashMap<String, Vec<QueuedRecipient>> = HashMap::new();
        for row in &rows {
            out.entry(row.get("message_id"))
                .or_default()
                .push(recipient_from_row(row));
        }
        Ok(out)
    }
}

fn recipient_from_row(row: &sqlx::sqlite::SqliteRow) -> QueuedRecipient {
    let status: String = row.get("status");
    QueuedRecipient {
        idx: row.get::<i64, _>("idx") as u32,
        address: row.get("address"),
        orcpt: row.get("orcpt"),
        notify: row.get("notify"),
        status: RecipientStatus::parse(&status).unwrap_or(RecipientStatus::Queued),
        attempts: row.get::<i64, _>("attempts") as u32,
        next_attempt: row.get("next_attempt"),
        last_reply: row.get("last_reply"),
    }
}

fn message_from_row(
    row: &sqlx::sqlite::SqliteRow,
    recipients: Vec<QueuedRecipient>,
) -> QueuedMessage {
    let id: String = row.get("id");
    QueuedMessage {
        id: QueueId::parse(&id).unwrap_or_else(QueueId::generate),
        created: row.get("created"),
        sender: row.get("sender"),
        size: row.get::<i64, _>("size") as u64,
        auth_user: row.get("auth_user"),
        smtputf8: row.get::<i64, _>("smtputf8") != 0,
        dsn: DsnEnvelope {
            ret: row.get("dsn_ret"),
            envid: row.get("dsn_envid"),
        },
        recipients,
    }
}

#[cfg(test)]
mod tests;
