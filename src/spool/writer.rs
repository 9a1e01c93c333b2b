//! The spool's single writer task. Every change that must be durable (a new
//! message, delivery outcomes) is sent here; the task commits everything that
//! is waiting in one transaction, so one WAL sync covers the whole batch
//! (group commit), then answers each sender. While it commits, new requests
//! queue up and form the next batch.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, Row, SqliteConnection};
use tokio::sync::{mpsc, oneshot};

use super::chunks;
use super::segments::{Numbers, Placement, Segments};
use super::spill::Spilled;
use super::{
    QueueId, QueuedMessage, QueuedRecipient, RecipientStatus, RecipientUpdate, recipient_domain,
};

/// Most requests committed in one transaction; bounds a batch's latency.
const MAX_BATCH: usize = 512;
/// Most body octets committed in one transaction.
const MAX_BATCH_BYTES: usize = 16 << 20;

pub(super) enum Write {
    /// A new message: its rows are written from `message`, as it was accepted.
    Put {
        message: QueuedMessage,
        body: Bytes,
        /// The body's tail, already on disk in a segment of its own; `body`
        /// then holds only what comes before it.
        spilled: Option<Spilled>,
    },
    /// Outcomes for some recipients of one message, with the bounce they cause
    /// (committed together, so a failure is never recorded without its DSN);
    /// the message is removed once no recipient is left to deliver.
    Outcomes {
        id: QueueId,
        updates: Vec<RecipientUpdate>,
        bounce: Option<(QueuedMessage, Bytes)>,
    },
}

impl Write {
    fn bytes(&self) -> usize {
        match self {
            Write::Put { body, .. }
            | Write::Outcomes {
                bounce: Some((_, body)),
                ..
            } => body.len(),
            Write::Outcomes { bounce: None, .. } => 0,
        }
    }
}

pub(super) struct Request {
    pub write: Write,
    pub done: oneshot::Sender<Result<(), WriteError>>,
}

/// Why a batch was not committed; every request of the batch gets it, and
/// none of them was written.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    /// ENOSPC, a quota, or SQLITE_FULL.
    #[error("no space left on the spool's disk")]
    Full,
    #[error(
        "the spool database {0} was removed or replaced while the server runs; restart the server"
    )]
    DatabaseGone(String),
    /// Another failure of the database or the disk, shared by every request
    /// of the batch.
    #[error("the spool could not be written: {0}")]
    Failed(Arc<dyn std::error::Error + Send + Sync>),
}

impl WriteError {
    /// A failed write of spool data, by what it means for the client.
    pub fn of_io(e: std::io::Error) -> WriteError {
        // EDQUOT (122): a quota is a full disk to this user.
        if e.kind() == std::io::ErrorKind::StorageFull || e.raw_os_error() == Some(122) {
            WriteError::Full
        } else {
            WriteError::Failed(Arc::new(e))
        }
    }

    fn of(e: sqlx::Error) -> WriteError {
        match e {
            sqlx::Error::Io(io) => WriteError::of_io(io),
            // SQLITE_FULL is 13, also as the primary code of an extended one.
            sqlx::Error::Database(db)
                if db
                    .code()
                    .and_then(|c| c.parse::<i32>().ok())
                    .is_some_and(|c| c & 0xff == 13) =>
            {
                WriteError::Full
            }
            other => WriteError::Failed(Arc::new(other)),
        }
    }
}

/// After this long without writes, the current segment is retired and finished
/// segments are looked at once more.
const IDLE: Duration = Duration::from_secs(1);

/// The database file as the writer opened it: a batch is committed only while
/// the file at `path` is still that one. SQLite goes on writing to a file that
/// was removed or replaced under it, and what it "commits" there is gone at
/// the next start.
pub(super) struct DatabaseFile {
    pub path: PathBuf,
    pub options: SqliteConnectOptions,
    pub identity: Option<(u64, u64)>,
}

impl DatabaseFile {
    pub fn identify(path: PathBuf, options: SqliteConnectOptions) -> DatabaseFile {
        let identity = identity(&path);
        DatabaseFile {
            path,
            options,
            identity,
        }
    }

    fn still_there(&self) -> Result<(), WriteError> {
        if identity(&self.path) == self.identity {
            Ok(())
        } else {
            Err(WriteError::DatabaseGone(self.path.display().to_string()))
        }
    }
}

fn identity(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

pub(super) async fn run(
    conn: SqliteConnection,
    database: DatabaseFile,
    mut rx: mpsc::Receiver<Request>,
    spool_dir: PathBuf,
    numbers: Numbers,
) {
    let mut segments = Segments::new(&spool_dir, numbers);
    // `None` after a failed commit until a new connection is open.
    let mut conn = Some(conn);
    loop {
        let first = match tokio::time::timeout(IDLE, rx.recv()).await {
            Ok(Some(first)) => first,
            Ok(None) => return,
            Err(_) => {
                segments.retire_current();
                if let Some(conn) = conn.as_mut() {
                    sweep(&mut segments, conn, true).await;
                }
                continue;
            }
        };
        let mut bytes = first.write.bytes();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(req) => {
                    bytes += req.write.bytes();
                    batch.push(req);
                }
                Err(_) => break,
            }
        }
        // Spilled bodies are the writer's from here on, whatever becomes of
        // the batch: the sweep removes those no committed row refers to.
        for req in &batch {
            if let Write::Put {
                spilled: Some(s), ..
            } = &req.write
            {
                segments.adopt(s.segment);
            }
        }
        let mut opened = match conn.take() {
            Some(c) => Ok(c),
            None => reconnect(&database).await,
        };
        let result = match (&mut opened, database.still_there()) {
            (_, Err(gone)) => Err(gone),
            (Err(unopened), _) => Err(unopened.clone()),
            // Removed while the commit ran: what it wrote is gone with it.
            (Ok(c), Ok(())) => commit(c, &mut segments, &batch)
                .await
                .and_then(|removed| database.still_there().map(|()| removed)),
        };
        // Logged only once the commit is known to have reached the spool.
        let result = result.map(|removed| {
            for qid in removed {
                tracing::info!(event = "removed", qid = %qid);
            }
        });
        conn = match (&result, opened) {
            (Ok(()), Ok(c)) => Some(c),
            (Err(e), Ok(old)) => {
                tracing::error!(event = "spool_commit_failed", error = %e, writes = batch.len());
                // SQLite may have ended the transaction itself (it does on a
                // full disk) while sqlx still counts it as open; from then on
                // sqlx's "commits" would only release savepoints of a
                // transaction that never ends (see the test
                // sqlx_loses_commits_...). Closing the connection rolls back
                // whatever is open, and the next batch gets a fresh one.
                let _ = old.close().await;
                None
            }
            (_, Err(e)) => {
                tracing::error!(event = "spool_commit_failed", error = %e, writes = batch.len());
                None
            }
        };
        let outcomes = batch
            .iter()
            .any(|req| matches!(req.write, Write::Outcomes { .. }));
        for req in batch {
            let _ = req.done.send(result.clone());
        }
        if outcomes && let Some(conn) = conn.as_mut() {
            sweep(&mut segments, conn, false).await;
        }
    }
}

async fn reconnect(database: &DatabaseFile) -> Result<SqliteConnection, WriteError> {
    // Never a new, empty database where the spool's was removed: that would
    // take mail into a file without the queue's tables, or without the queue.
    let options = database.options.clone().create_if_missing(false);
    SqliteConnection::connect_with(&options)
        .await
        .map_err(WriteError::of)
}

async fn sweep(segments: &mut Segments, conn: &mut SqliteConnection, now: bool) {
    if let Err(e) = segments.sweep(conn, now).await {
        tracing::warn!(event = "segment_sweep_failed", error = %e);
    }
}

/// Commits the batch in one transaction, after the large bodies among its new
/// messages are durable in a segment; returns the ids of the messages it
/// removed (nothing left to deliver).
async fn commit(
    conn: &mut SqliteConnection,
    segments: &mut Segments,
    batch: &[Request],
) -> Result<Vec<String>, WriteError> {
    write_batch(conn, segments, batch)
        .await
        .map_err(WriteError::of)
}

async fn write_batch(
    conn: &mut SqliteConnection,
    segments: &mut Segments,
    batch: &[Request],
) -> Result<Vec<String>, sqlx::Error> {
    // New messages (and the bounces outcomes cause) go in with a few multi-row
    // INSERTs: sqlx runs each statement on its worker thread, so one statement
    // per row would cost a round trip per message.
    let new: Vec<New<'_>> = batch
        .iter()
        .filter_map(|req| match &req.write {
            Write::Put {
                message,
                body,
                spilled,
            } => Some((message, body, *spilled)),
            Write::Outcomes {
                bounce: Some((message, body)),
                ..
            } => Some((message, body, None)),
            Write::Outcomes { bounce: None, .. } => None,
        })
        .collect();
    segments.start()?;
    // A spilled body has its segment already; its row holds what precedes it.
    let (mut placement, appending) = segments.append(
        new.iter()
            .map(|(_, body, spilled)| match spilled {
                Some(_) => Bytes::new(),
                None => (*body).clone(),
            })
            .collect(),
    )?;
    for (at, (_, _, spilled)) in placement.iter_mut().zip(&new) {
        if let Some(s) = spilled {
            *at = Some((s.segment, 0));
        }
    }
    let rows = async {
        let mut tx = conn.begin().await?;
        insert(&mut tx, &new, &placement).await?;
        let removed = record_outcomes(&mut tx, segments, batch).await?;
        Ok::<_, sqlx::Error>((tx, removed))
    }
    .await;
    // Whatever became of the rows, the segment write is waited for: it holds
    // the current segment.
    if let Some(appending) = appending {
        segments.finish_append(appending).await?;
    }
    let (tx, removed) = rows?;
    tx.commit().await?;
    Ok(removed)
}

/// Applies every outcome of the batch with one UPDATE (a VALUES list joined by
/// UPDATE … FROM) and removes the messages left with nothing to deliver with one
/// DELETE per chunk, rather than statements per recipient and per message.
/// Returns the ids of the messages removed.
async fn record_outcomes(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    segments: &Segments,
    batch: &[Request],
) -> Result<Vec<String>, sqlx::Error> {
    let updates: Vec<(&str, &RecipientUpdate)> = batch
        .iter()
        .filter_map(|req| match &req.write {
            Write::Outcomes { id, updates, .. } => {
                Some(updates.iter().map(move |u| (id.as_str(), u)))
            }
            Write::Put { .. } => None,
        })
        .flatten()
        .collect();
    for chunk in updates.chunks(RECIPIENTS_PER_INSERT) {
        let values = vec!["(?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ");
        // SQLite names a VALUES list's columns column1, column2, …
        let sql = format!(
            "UPDATE recipient SET status = v.column3, attempts = attempts + 1, next_attempt = v.column4, \
             last_reply = v.column5, last_kind = v.column6 FROM (VALUES {values}) AS v \
             WHERE recipient.message_id = v.column1 AND recipient.idx = v.column2"
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (id, u) in chunk {
            query = query
                .bind(*id)
                .bind(i64::from(u.idx))
                .bind(u.status.as_str())
                .bind(u.next_attempt)
                .bind(&u.reply)
                .bind(u.kind.map(|k| k.token()));
        }
        query.execute(&mut **tx).await?;
    }
    let mut ids: Vec<&str> = updates.iter().map(|(id, _)| *id).collect();
    ids.dedup();
    let mut removed = Vec::new();
    for chunk in ids.chunks(RECIPIENTS_PER_INSERT) {
        let sql = format!(
            "DELETE FROM message WHERE id IN ({}) AND NOT EXISTS \
             (SELECT 1 FROM recipient WHERE recipient.message_id = message.id AND recipient.status = 'queued') \
             RETURNING id",
            vec!["?"; chunk.len()].join(", ")
        );
        let mut query = sqlx::query_scalar(sqlx::AssertSqlSafe(sql));
        for id in chunk {
            query = query.bind(*id);
        }
        removed.extend(query.fetch_all(&mut **tx).await?);
    }
    let mut deferred: Vec<&str> = updates
        .iter()
        .filter(|(_, u)| u.status == RecipientStatus::Queued)
        .map(|(id, _)| *id)
        .collect();
    deferred.dedup();
    move_into_rows(tx, segments, &deferred).await?;
    Ok(removed)
}

/// Moves the bodies of messages that wait for a retry from their segments into
/// their rows, so that the segments can go.
async fn move_into_rows(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    segments: &Segments,
    ids: &[&str],
) -> Result<(), sqlx::Error> {
    for chunk in ids.chunks(RECIPIENTS_PER_INSERT) {
        let sql = format!(
            // A row with a prefix owns its segment alone (a spilled body):
            // moving it would free nothing.
            "SELECT id, segment, segment_offset, size FROM message \
             WHERE segment IS NOT NULL AND length(body) = 0 AND id IN ({})",
            vec!["?"; chunk.len()].join(", ")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in chunk {
            query = query.bind(*id);
        }
        for row in query.fetch_all(&mut **tx).await? {
            let place = (|| {
                let size: i64 = row.try_get("size")?;
                Ok::<_, sqlx::Error>((
                    row.try_get::<String, _>("id")?,
                    row.try_get::<i64, _>("segment")?,
                    row.try_get::<i64, _>("segment_offset")?,
                    usize::try_from(size).map_err(|e| sqlx::Error::Decode(e.into()))?,
                ))
            })();
            // A damaged row keeps its body where it is (its segment stays):
            // the outcomes of the batch are committed all the same.
            let (id, segment, offset, size) = match place {
                Ok(place) => place,
                Err(e) => {
                    tracing::error!(event = "spool_corrupt_row", error = %e);
                    continue;
                }
            };
            let body = segments.read(segment, offset, size).await?;
            let chunked = chunks::chunked(&body);
            sqlx::query(
                "UPDATE message SET body = ?, segment = NULL, segment_offset = NULL WHERE id = ?",
            )
            .bind(if chunked { &[][..] } else { &body[..] })
            .bind(&id)
            .execute(&mut **tx)
            .await?;
            if chunked {
                chunks::insert(tx, &[(&id, &body)]).await?;
            }
        }
    }
    Ok(())
}

/// Rows per multi-row INSERT, well under SQLite's limit of 32766 bound values.
const MESSAGES_PER_INSERT: usize = 100;
const RECIPIENTS_PER_INSERT: usize = 500;
/// Body octets per INSERT: sqlx and SQLite each copy every bound body for the
/// time of the statement, so this bounds that extra memory, not the batch.
const BODY_BYTES_PER_INSERT: usize = 1 << 20;

/// `INSERT INTO <table> (<columns>) VALUES (?, …), (?, …) …` for `rows` rows.
pub(super) fn multi_row_insert(
    table: &str,
    columns: &[&str],
    rows: usize,
) -> sqlx::AssertSqlSafe<String> {
    let row = format!("({})", vec!["?"; columns.len()].join(", "));
    sqlx::AssertSqlSafe(format!(
        "INSERT INTO {table} ({}) VALUES {}",
        columns.join(", "),
        vec![row; rows].join(", ")
    ))
}

/// A message of the batch to insert, with its body (or what precedes its
/// spilled tail) and the spilled tail if it has one.
type New<'a> = (&'a QueuedMessage, &'a Bytes, Option<Spilled>);

/// Writes the rows of new messages from their accepted state, field by field,
/// so that reading them back gives that state again.
async fn insert(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    new: &[New<'_>],
    placement: &Placement,
) -> Result<(), sqlx::Error> {
    const MESSAGE: [&str; 13] = [
        "id",
        "created",
        "sender",
        "size",
        "auth_user",
        "smtputf8",
        "requiretls",
        "tls_policy_waived",
        "dsn_ret",
        "dsn_envid",
        "body",
        "segment",
        "segment_offset",
    ];
    const RECIPIENT: [&str; 12] = [
        "message_id",
        "idx",
        "address",
        "orcpt",
        "notify",
        "status",
        "attempts",
        "next_attempt",
        "last_reply",
        "last_kind",
        "held",
        "domain",
    ];
    // A body stays in its row unless it went to a segment or into chunk
    // rows; a spilled one keeps in its row what precedes its segment.
    let chunked = |i: usize| placement[i].is_none() && chunks::chunked(new[i].1);
    let in_row = |i: usize| match (placement[i], new[i].2) {
        (Some(_), None) => &[][..],
        (None, None) if chunked(i) => &[][..],
        _ => &new[i].1[..],
    };
    let mut start = 0;
    while start < new.len() {
        let mut end = start;
        let mut bytes = 0;
        while end < new.len()
            && end - start < MESSAGES_PER_INSERT
            && (end == start || bytes + in_row(end).len() <= BODY_BYTES_PER_INSERT)
        {
            bytes += in_row(end).len();
            end += 1;
        }
        let mut query = sqlx::query(multi_row_insert("message", &MESSAGE, end - start));
        for (i, (m, _, _)) in new.iter().enumerate().take(end).skip(start) {
            let at = placement[i];
            query = query
                .bind(m.id.as_str())
                .bind(m.created)
                .bind(&m.sender)
                .bind(m.size as i64)
                .bind(&m.auth_user)
                .bind(i64::from(m.smtputf8))
                .bind(m.requiretls)
                .bind(m.tls_policy_waived)
                .bind(&m.dsn.ret)
                .bind(&m.dsn.envid)
                .bind(in_row(i))
                .bind(at.map(|(segment, _)| segment))
                .bind(at.map(|(_, offset)| offset));
        }
        query.execute(&mut **tx).await?;
        start = end;
    }
    let recipients: Vec<(&str, &QueuedRecipient)> = new
        .iter()
        .flat_map(|(m, _, _)| m.recipients.iter().map(|r| (m.id.as_str(), r)))
        .collect();
    for chunk in recipients.chunks(RECIPIENTS_PER_INSERT) {
        let mut query = sqlx::query(multi_row_insert("recipient", &RECIPIENT, chunk.len()));
        for (id, r) in chunk {
            query = query
                .bind(*id)
                .bind(i64::from(r.idx))
                .bind(&r.address)
                .bind(&r.orcpt)
                .bind(&r.notify)
                .bind(r.status.as_str())
                .bind(i64::from(r.attempts))
                .bind(r.next_attempt)
                .bind(&r.last_reply)
                .bind(r.last_kind.map(|k| k.token()))
                .bind(r.held)
                .bind(recipient_domain(&r.address));
        }
        query.execute(&mut **tx).await?;
    }
    let bodies: Vec<(&str, &[u8])> = (0..new.len())
        .filter(|i| chunked(*i))
        .map(|i| (new[i].0.id.as_str(), &new[i].1[..]))
        .collect();
    chunks::insert(tx, &bodies).await
}
