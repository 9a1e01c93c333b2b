//! The spool's single writer task. Every change that must be durable (a new
//! message, delivery outcomes) is sent here; the task commits everything that
//! is waiting in one transaction, so one WAL sync covers the whole batch
//! (group commit), then answers each sender. While it commits, new requests
//! queue up and form the next batch.

use std::path::PathBuf;
use std::time::Duration;

use sqlx::{Connection, Row, SqliteConnection};
use tokio::sync::{mpsc, oneshot};

use super::segments::{Placement, Segments};
use super::{NewMessage, NewRecipient, QueueId, RecipientStatus, now_unix};

/// Most requests committed in one transaction; bounds a batch's latency.
const MAX_BATCH: usize = 512;
/// Most body octets committed in one transaction.
const MAX_BATCH_BYTES: usize = 16 << 20;

/// The new state of one recipient after a delivery attempt.
#[derive(Debug, Clone)]
pub struct RecipientUpdate {
    pub idx: u32,
    pub status: RecipientStatus,
    pub next_attempt: i64,
    pub reply: String,
}

pub(super) enum Write {
    Put {
        id: QueueId,
        message: NewMessage,
    },
    /// Outcomes for some recipients of one message, with the bounce they cause
    /// (committed together, so a failure is never recorded without its DSN);
    /// the message is removed once no recipient is left to deliver.
    Outcomes {
        id: QueueId,
        updates: Vec<RecipientUpdate>,
        bounce: Option<(QueueId, NewMessage)>,
    },
}

impl Write {
    fn bytes(&self) -> usize {
        match self {
            Write::Put { message, .. }
            | Write::Outcomes {
                bounce: Some((_, message)),
                ..
            } => message.body.len(),
            Write::Outcomes { bounce: None, .. } => 0,
        }
    }
}

pub(super) struct Request {
    pub write: Write,
    pub done: oneshot::Sender<Result<(), String>>,
}

/// After this long without writes, the current segment is retired and finished
/// segments are looked at once more.
const IDLE: Duration = Duration::from_secs(1);

pub(super) async fn run(
    mut conn: SqliteConnection,
    mut rx: mpsc::Receiver<Request>,
    spool_dir: PathBuf,
) {
    let mut segments = Segments::new(&spool_dir);
    loop {
        let first = match tokio::time::timeout(IDLE, rx.recv()).await {
            Ok(Some(first)) => first,
            Ok(None) => return,
            Err(_) => {
                segments.retire_current();
                sweep(&mut segments, &mut conn, true).await;
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
        let result = commit(&mut conn, &mut segments, &batch)
            .await
            .map_err(|e| e.to_string());
        if let Err(e) = &result {
            tracing::error!(event = "spool_commit_failed", error = %e, writes = batch.len());
        }
        let outcomes = batch
            .iter()
            .any(|req| matches!(req.write, Write::Outcomes { .. }));
        for req in batch {
            let _ = req.done.send(result.clone());
        }
        if outcomes {
            sweep(&mut segments, &mut conn, false).await;
        }
    }
}

async fn sweep(segments: &mut Segments, conn: &mut SqliteConnection, now: bool) {
    if let Err(e) = segments.sweep(conn, now).await {
        tracing::warn!(event = "segment_sweep_failed", error = %e);
    }
}

/// Commits the batch in one transaction, after the large bodies among its new
/// messages are durable in a segment.
async fn commit(
    conn: &mut SqliteConnection,
    segments: &mut Segments,
    batch: &[Request],
) -> Result<(), sqlx::Error> {
    let now = now_unix();
    // New messages (and the bounces outcomes cause) go in with a few multi-row
    // INSERTs: sqlx runs each statement on its worker thread, so one statement
    // per row would cost a round trip per message.
    let new: Vec<(&QueueId, &NewMessage)> = batch
        .iter()
        .filter_map(|req| match &req.write {
            Write::Put { id, message }
            | Write::Outcomes {
                bounce: Some((id, message)),
                ..
            } => Some((id, message)),
            Write::Outcomes { bounce: None, .. } => None,
        })
        .collect();
    segments.start()?;
    let (placement, appending) =
        segments.append(new.iter().map(|(_, m)| m.body.clone()).collect())?;
    let rows = async {
        let mut tx = conn.begin().await?;
        insert(&mut tx, &new, &placement, now).await?;
        record_outcomes(&mut tx, segments, batch).await?;
        Ok::<_, sqlx::Error>(tx)
    }
    .await;
    // Whatever became of the rows, the segment write is waited for: it holds
    // the current segment.
    if let Some(appending) = appending {
        segments.finish_append(appending).await?;
    }
    rows?.commit().await
}

/// Applies every outcome of the batch with one UPDATE (a VALUES list joined by
/// UPDATE … FROM) and removes the messages left with nothing to deliver with one
/// DELETE per chunk, rather than statements per recipient and per message.
async fn record_outcomes(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    segments: &Segments,
    batch: &[Request],
) -> Result<(), sqlx::Error> {
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
        let values = vec!["(?, ?, ?, ?, ?)"; chunk.len()].join(", ");
        // SQLite names a VALUES list's columns column1, column2, …
        let sql = format!(
            "UPDATE recipient SET status = v.column3, attempts = attempts + 1, next_attempt = v.column4, \
             last_reply = v.column5 FROM (VALUES {values}) AS v \
             WHERE recipient.message_id = v.column1 AND recipient.idx = v.column2"
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (id, u) in chunk {
            query = query
                .bind(*id)
                .bind(i64::from(u.idx))
                .bind(u.status.as_str())
                .bind(u.next_attempt)
                .bind(&u.reply);
        }
        query.execute(&mut **tx).await?;
    }
    let mut ids: Vec<&str> = updates.iter().map(|(id, _)| *id).collect();
    ids.dedup();
    for chunk in ids.chunks(RECIPIENTS_PER_INSERT) {
        let sql = format!(
            "DELETE FROM message WHERE id IN ({}) AND NOT EXISTS \
             (SELECT 1 FROM recipient WHERE recipient.message_id = message.id AND recipient.status = 'queued')",
            vec!["?"; chunk.len()].join(", ")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in chunk {
            query = query.bind(*id);
        }
        query.execute(&mut **tx).await?;
    }
    let mut deferred: Vec<&str> = updates
        .iter()
        .filter(|(_, u)| u.status == RecipientStatus::Queued)
        .map(|(id, _)| *id)
        .collect();
    deferred.dedup();
    move_into_rows(tx, segments, &deferred).await
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
            "SELECT id, segment, segment_offset, size FROM message WHERE segment IS NOT NULL AND id IN ({})",
            vec!["?"; chunk.len()].join(", ")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in chunk {
            query = query.bind(*id);
        }
        for row in query.fetch_all(&mut **tx).await? {
            let body = segments
                .read(
                    row.get("segment"),
                    row.get("segment_offset"),
                    row.get::<i64, _>("size") as usize,
                )
                .await?;
            sqlx::query(
                "UPDATE message SET body = ?, segment = NULL, segment_offset = NULL WHERE id = ?",
            )
            .bind(body)
            .bind(row.get::<String, _>("id"))
            .execute(&mut **tx)
            .await?;
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
fn multi_row_insert(table: &str, columns: &[&str], rows: usize) -> sqlx::AssertSqlSafe<String> {
    let row = format!("({})", vec!["?"; columns.len()].join(", "));
    sqlx::AssertSqlSafe(format!(
        "INSERT INTO {table} ({}) VALUES {}",
        columns.join(", "),
        vec![row; rows].join(", ")
    ))
}

async fn insert(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    new: &[(&QueueId, &NewMessage)],
    placement: &Placement,
    now: i64,
) -> Result<(), sqlx::Error> {
    const MESSAGE: [&str; 11] = [
        "id",
        "created",
        "sender",
        "size",
        "auth_user",
        "smtputf8",
        "dsn_ret",
        "dsn_envid",
        "body",
        "segment",
        "segment_offset",
    ];
    const RECIPIENT: [&str; 6] = [
        "message_id",
        "idx",
        "address",
        "orcpt",
        "notify",
        "next_attempt",
    ];
    // A body stays in its row unless it went to a segment.
    let in_row = |i: usize| match placement[i] {
        Some(_) => &[][..],
        None => &new[i].1.body[..],
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
        for i in start..end {
            let (id, m) = new[i];
            let at = placement[i];
            query = query
                .bind(id.as_str())
                .bind(now)
                .bind(&m.sender)
                .bind(m.body.len() as i64)
                .bind(&m.auth_user)
                .bind(i64::from(m.smtputf8))
                .bind(&m.dsn.ret)
                .bind(&m.dsn.envid)
                .bind(in_row(i))
                .bind(at.map(|(segment, _)| segment))
                .bind(at.map(|(_, offset)| offset));
        }
        query.execute(&mut **tx).await?;
        start = end;
    }
    let recipients: Vec<(&str, i64, &NewRecipient)> = new
        .iter()
        .flat_map(|(id, m)| {
            m.recipients
                .iter()
                .enumerate()
                .map(move |(idx, r)| (id.as_str(), idx as i64, r))
        })
        .collect();
    for chunk in recipients.chunks(RECIPIENTS_PER_INSERT) {
        let mut query = sqlx::query(multi_row_insert("recipient", &RECIPIENT, chunk.len()));
        for (id, idx, r) in chunk {
            query = query
                .bind(*id)
                .bind(*idx)
                .bind(&r.address)
                .bind(&r.orcpt)
                .bind(&r.notify)
                .bind(now);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}
