//! The spool: the only module that touches queue storage. `put` makes a message
//! durable before the session may answer 250; `list`, `get`, `body` and `delete`
//! serve `postern queue` and, later, the scheduler.
//!
//! Storage is SQLite in WAL mode with `synchronous=FULL` in `data_dir/spool`: a
//! commit appends to the WAL and syncs it (and the directory when the WAL is new),
//! so a committed message survives a crash or SIGKILL. One writer task commits
//! the messages of all concurrent sessions together (group commit), so one sync
//! covers a whole batch. The SQL is plain enough to move to PostgreSQL as is.

mod envelope;
mod id;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, Row, SqliteConnection, SqlitePool};
use tokio::sync::{Notify, mpsc, oneshot};

pub use envelope::{
    DsnEnvelope, NewMessage, NewRecipient, QueuedMessage, QueuedRecipient, RecipientStatus,
};
pub use id::QueueId;

/// Most messages committed in one transaction; bounds the latency of a batch.
const MAX_BATCH_MESSAGES: usize = 512;
/// Most body octets committed in one transaction.
const MAX_BATCH_BYTES: usize = 16 << 20;

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
    #[error("spool commit failed: {0}")]
    Commit(String),
    #[error("the spool writer has stopped")]
    WriterGone,
}

struct PutRequest {
    id: QueueId,
    message: NewMessage,
    done: oneshot::Sender<Result<(), String>>,
}

/// A handle to the spool; cheap to clone and share between sessions.
#[derive(Clone)]
pub struct Spool {
    pool: SqlitePool,
    writer: mpsc::Sender<PutRequest>,
    queued: Arc<Notify>,
}

pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
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
        let options = SqliteConnectOptions::new()
            .filename(dir.join("queue.sqlite"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: every commit syncs the WAL; this is what "accepted" rests on.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations/spool").run(&pool).await?;
        let conn = SqliteConnection::connect_with(&options).await?;
        let (writer, rx) = mpsc::channel(4096);
        tokio::spawn(write_batches(conn, rx));
        Ok(Spool {
            pool,
            writer,
            queued: Arc::new(Notify::new()),
        })
    }

    /// Makes `message` durable under `id`. When this returns `Ok`, the
    /// body, envelope and recipients are synced to disk.
    ///
    /// Cancel safety: if the future is dropped after the request was handed to the
    /// writer, the message may still be committed; the client then never saw 250
    /// and will resend, the duplicate RFC 5321 §6.1 accepts.
    pub async fn put(&self, id: QueueId, message: NewMessage) -> Result<(), SpoolError> {
        let (done, committed) = oneshot::channel();
        self.writer
            .send(PutRequest { id, message, done })
            .await
            .map_err(|_| SpoolError::WriterGone)?;
        committed
            .await
            .map_err(|_| SpoolError::WriterGone)?
            .map_err(SpoolError::Commit)?;
        self.queued.notify_one();
        Ok(())
    }

    /// Woken after every `put`, for the scheduler.
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
        Ok(sqlx::query_scalar("SELECT body FROM message WHERE id = ?")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?)
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
                    "SELECT message_id, address, orcpt, notify, status, attempts, next_attempt, last_reply FROM recipient ",
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
        for row in rows {
            let status: String = row.get("status");
            out.entry(row.get("message_id"))
                .or_default()
                .push(QueuedRecipient {
                    address: row.get("address"),
                    orcpt: row.get("orcpt"),
                    notify: row.get("notify"),
                    status: RecipientStatus::parse(&status).unwrap_or(RecipientStatus::Queued),
                    attempts: row.get::<i64, _>("attempts") as u32,
                    next_attempt: row.get("next_attempt"),
                    last_reply: row.get("last_reply"),
                });
        }
        Ok(out)
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

/// The writer task: takes every request waiting in the channel, commits them in
/// one transaction (one WAL sync), then answers each. While it commits, new
/// requests queue up and form the next batch.
async fn write_batches(mut conn: SqliteConnection, mut rx: mpsc::Receiver<PutRequest>) {
    while let Some(first) = rx.recv().await {
        let mut bytes = first.message.body.len();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_MESSAGES && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(req) => {
                    bytes += req.message.body.len();
                    batch.push(req);
                }
                Err(_) => break,
            }
        }
        let result = commit(&mut conn, &batch).await.map_err(|e| e.to_string());
        if let Err(e) = &result {
            tracing::error!(event = "spool_commit_failed", error = %e, messages = batch.len());
        }
        for req in batch {
            let _ = req.done.send(result.clone());
        }
    }
}

async fn commit(conn: &mut SqliteConnection, batch: &[PutRequest]) -> Result<(), sqlx::Error> {
    let now = now_unix();
    let mut tx = conn.begin().await?;
    for req in batch {
        let m = &req.message;
        sqlx::query(
            "INSERT INTO message (id, created, sender, size, auth_user, smtputf8, dsn_ret, dsn_envid, body) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(req.id.as_str())
        .bind(now)
        .bind(&m.sender)
        .bind(m.body.len() as i64)
        .bind(&m.auth_user)
        .bind(i64::from(m.smtputf8))
        .bind(&m.dsn.ret)
        .bind(&m.dsn.envid)
        .bind(&m.body)
        .execute(&mut *tx)
        .await?;
        for (idx, r) in m.recipients.iter().enumerate() {
            sqlx::query(
                "INSERT INTO recipient (message_id, idx, address, orcpt, notify, next_attempt) VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(req.id.as_str())
            .bind(idx as i64)
            .bind(&r.address)
            .bind(&r.orcpt)
            .bind(&r.notify)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(n: usize) -> NewMessage {
        NewMessage {
            sender: format!("s{n}@example.com"),
            recipients: vec![
                NewRecipient {
                    address: "a@example.org".into(),
                    orcpt: Some("rfc822;a@example.org".into()),
                    notify: None,
                },
                NewRecipient {
                    address: "b@example.org".into(),
                    orcpt: None,
                    notify: Some("FAILURE,DELAY".into()),
                },
            ],
            dsn: DsnEnvelope {
                ret: Some("HDRS".into()),
                envid: Some(format!("env{n}")),
            },
            auth_user: None,
            smtputf8: false,
            body: format!("Subject: {n}\r\n\r\nbody\r\n").into_bytes(),
        }
    }

    #[tokio::test]
    async fn concurrent_puts_are_all_stored_and_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(dir.path()).await.expect("open");
        let mut tasks = Vec::new();
        for n in 0..200 {
            let s = spool.clone();
            tasks.push(tokio::spawn(async move {
                let id = QueueId::generate();
                s.put(id.clone(), message(n)).await.map(|()| id)
            }));
        }
        let mut ids = Vec::new();
        for t in tasks {
            ids.push(t.await.expect("join").expect("put"));
        }
        drop(spool);
        let spool = Spool::open(dir.path()).await.expect("reopen");
        let listed = spool.list().await.expect("list");
        assert_eq!(listed.len(), 200);
        let m = spool.get(&ids[7]).await.expect("get").expect("present");
        assert_eq!(m.sender, "s7@example.com");
        assert_eq!(m.recipients.len(), 2);
        assert_eq!(m.recipients[1].notify.as_deref(), Some("FAILURE,DELAY"));
        assert_eq!(m.dsn.envid.as_deref(), Some("env7"));
        assert_eq!(
            spool.body(&ids[7]).await.expect("body").expect("present"),
            b"Subject: 7\r\n\r\nbody\r\n"
        );
        assert!(spool.delete(&ids[7]).await.expect("delete"));
        assert!(!spool.delete(&ids[7]).await.expect("delete again"));
        assert_eq!(spool.list().await.expect("list").len(), 199);
    }
}
