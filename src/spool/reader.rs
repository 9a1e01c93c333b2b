//! Bodies read in groups. Every delivery reads its message's body, and each
//! statement is a trip to SQLite's worker thread and back; in a drain those
//! hand-offs, one per statement, took about a quarter of the server's time,
//! and the body read was the one statement left per message
//! (bench/README.md, the drain's profile). The reads asked for while a
//! statement runs are made together by the next one, as the writer commits
//! together what waits for it; a read alone waits for nothing. Rows are
//! streamed and each message answered as soon as its rows are in, so a
//! group holds one body at a time, and a large one does not hold up the
//! small ones read before it. Every body read goes through here (delivery,
//! DSNs, `queue show`), one statement at a time on one pool connection.

use std::collections::HashMap;

use futures_util::TryStreamExt;
use sqlx::SqlitePool;
use sqlx::sqlite::SqliteRow;
use tokio::sync::{mpsc, oneshot};

use super::sqlite::column;
use super::{QueueId, SpoolError};

/// Most messages read by one statement: a statement's parameters stay
/// far under SQLite's limit, and the statement cache holds one shape per
/// group size.
const MAX_GROUP: usize = 64;

/// A message's body as its rows hold it.
#[derive(Clone)]
pub(super) struct Stored {
    /// The row's body, and its chunk rows' after it; with a segment, what
    /// precedes the segment's part.
    pub inline: Vec<u8>,
    /// The segment holding the rest, and where in it the rest begins.
    pub segment: Option<(i64, i64)>,
    /// The whole body's size.
    pub size: i64,
}

type Answer = oneshot::Sender<Result<Option<Stored>, SpoolError>>;

struct Ask {
    id: QueueId,
    answer: Answer,
}

pub(super) struct Reader {
    asks: mpsc::Sender<Ask>,
}

impl Reader {
    /// Starts the task that reads from `pool`; it ends when the `Reader`
    /// is dropped.
    pub fn start(pool: SqlitePool) -> Reader {
        let (asks, waiting) = mpsc::channel(1024);
        tokio::spawn(run(pool, waiting));
        Reader { asks }
    }

    /// Message `id`'s body rows; `None` when there is no such message.
    pub async fn read(&self, id: &QueueId) -> Result<Option<Stored>, SpoolError> {
        let (answer, answered) = oneshot::channel();
        let ask = Ask {
            id: id.clone(),
            answer,
        };
        self.asks
            .send(ask)
            .await
            .map_err(|_| SpoolError::ReaderGone)?;
        answered.await.map_err(|_| SpoolError::ReaderGone)?
    }
}

/// The asks of one group by message id: one message may be asked for more
/// than once (the destinations of one round, its DSN).
type Waiting = HashMap<String, Vec<Answer>>;

async fn run(pool: SqlitePool, mut asks: mpsc::Receiver<Ask>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while asks.recv_many(&mut group, MAX_GROUP).await > 0 {
        let mut waiting = Waiting::new();
        for ask in group.drain(..) {
            // A delivery cancelled meanwhile needs nothing read.
            if !ask.answer.is_closed() {
                waiting
                    .entry(ask.id.as_str().to_string())
                    .or_default()
                    .push(ask.answer);
            }
        }
        let ids: Vec<String> = waiting.keys().cloned().collect();
        if ids.is_empty() {
            continue;
        }
        let Err(e) = read(&pool, &ids, &mut waiting).await else {
            continue;
        };
        // The statement failed as a whole: the messages not answered yet are
        // read alone, so that one damaged message does not fail the others;
        // but not a message read alone already, and none once the pool
        // itself failed (each would wait for it in turn).
        let mut failed = (ids.len() == 1 || pool_failed(&e)).then_some(e);
        for (id, answers) in waiting {
            if let Some(e) = &failed {
                answer(answers, Err(copy(e)));
                continue;
            }
            let mut alone = Waiting::from([(id.clone(), answers)]);
            let Err(e) = read(&pool, &[id], &mut alone).await else {
                continue;
            };
            let Some(answers) = alone.into_values().next() else {
                continue;
            };
            if pool_failed(&e) {
                answer(answers, Err(copy(&e)));
                failed = Some(e);
            } else {
                answer(answers, Err(e));
            }
        }
    }
}

/// A failure of the pool, not of a statement: every read would meet it.
fn pool_failed(e: &SpoolError) -> bool {
    matches!(
        e,
        SpoolError::Database(
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed
        )
    )
}

/// Reads the bodies of `ids` and answers their asks in `waiting` (removing
/// them) as each message's rows are in; those not found get `None`. On an
/// error of the statement, the asks not answered yet are left in `waiting`.
async fn read(pool: &SqlitePool, ids: &[String], waiting: &mut Waiting) -> Result<(), SpoolError> {
    // A message's row and its chunk rows in one statement: one snapshot of
    // both.
    let sql = format!(
        "SELECT m.id, m.body, m.segment, m.segment_offset, m.size, c.data AS chunk \
         FROM message m LEFT JOIN body_chunk c ON c.message_id = m.id \
         WHERE m.id IN ({}) ORDER BY m.id, c.seq",
        vec!["?"; ids.len()].join(", ")
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for id in ids {
        query = query.bind(id.as_str());
    }
    let mut rows = query.fetch(pool);
    // The message whose rows are coming in, as far as they go.
    let mut current: Option<(String, Result<Stored, SpoolError>)> = None;
    while let Some(row) = rows.try_next().await? {
        let id: String = column(&row, "id", "?")?;
        match &mut current {
            Some((at, assembled)) if *at == id => {
                if let Ok(stored) = assembled
                    && let Err(e) = add_chunk(stored, &row, &id)
                {
                    *assembled = Err(e);
                }
            }
            _ => {
                if let Some((done, result)) = current.take() {
                    finish(waiting, &done, result.map(Some));
                }
                let first = first_row(&row, &id);
                current = Some((id, first));
            }
        }
    }
    if let Some((done, result)) = current {
        finish(waiting, &done, result.map(Some));
    }
    for answers in std::mem::take(waiting).into_values() {
        answer(answers, Ok(None));
    }
    Ok(())
}

/// A message's first row: its own columns, and its first chunk if any.
fn first_row(row: &SqliteRow, id: &str) -> Result<Stored, SpoolError> {
    let segment = match column::<Option<i64>>(row, "segment", id)? {
        Some(segment) => Some((segment, column(row, "segment_offset", id)?)),
        None => None,
    };
    let mut stored = Stored {
        inline: column(row, "body", id)?,
        segment,
        size: column(row, "size", id)?,
    };
    add_chunk(&mut stored, row, id)?;
    Ok(stored)
}

/// Appends the row's chunk to a body kept in rows (a body in a segment has
/// none).
fn add_chunk(stored: &mut Stored, row: &SqliteRow, id: &str) -> Result<(), SpoolError> {
    if stored.segment.is_none()
        && let Some(chunk) = column::<Option<&[u8]>>(row, "chunk", id)?
    {
        stored.inline.extend_from_slice(chunk);
    }
    Ok(())
}

fn finish(waiting: &mut Waiting, id: &str, result: Result<Option<Stored>, SpoolError>) {
    if let Some(answers) = waiting.remove(id) {
        answer(answers, result);
    }
}

/// Gives `result` to each ask of one message: a copy to all but the last.
fn answer(mut answers: Vec<Answer>, result: Result<Option<Stored>, SpoolError>) {
    let Some(last) = answers.pop() else {
        return;
    };
    for other in answers {
        let _ = other.send(match &result {
            Ok(stored) => Ok(stored.clone()),
            Err(e) => Err(copy(e)),
        });
    }
    let _ = last.send(result);
}

/// An error for another ask of the same read (sqlx's errors do not clone).
fn copy(e: &SpoolError) -> SpoolError {
    SpoolError::Body(std::io::Error::other(e.to_string()))
}
