//! The embedded spool backend: SQLite in `data_dir/spool/queue.sqlite` (WAL,
//! `synchronous=FULL`), so a committed message survives a crash or SIGKILL.
//! Durable changes from the server go through the single writer task
//! (`writer.rs`), which commits concurrent requests together; bodies are
//! read in groups too (`reader.rs`); other reads and the operator's changes
//! use a small pool. Large bodies live in segment files (`segments.rs`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use sqlx::sqlite::{SqlitePoolOptions, SqliteRow};
use sqlx::{Connection, Row, SqliteConnection, SqlitePool};
use tokio::sync::{mpsc, oneshot};

use super::reader::{Reader, Stored};
use super::segments;
use super::writer::{self, DatabaseFile, Request, Write};
use super::{
    DomainCount, DsnEnvelope, ListFilter, MessageState, NewMessage, QueueId, QueuedMessage,
    QueuedRecipient, RecipientStatus, RecipientUpdate, SpillFile, SpoolError, Storage, StuckGroup,
    Summary, WriteError,
};
use crate::clock::now_unix;
use crate::failure::FailureKind;

/// The spool in SQLite; see the module documentation.
pub struct SqliteSpool {
    pool: SqlitePool,
    writer: mpsc::Sender<Request>,
    /// Reads bodies (deliveries, DSNs, `queue show`), several with one
    /// statement.
    reader: Reader,
    /// Where segment files with large bodies are.
    bodies: PathBuf,
    numbers: segments::Numbers,
}

/// The columns `message_from_row` reads.
const MESSAGE_COLUMNS: &str = "m.id, m.created, m.sender, m.size, m.auth_user, m.smtputf8, m.requiretls, \
     m.tls_policy_waived, m.dsn_ret, m.dsn_envid";
/// The columns `recipient_from_row` reads.
const RECIPIENT_COLUMNS: &str = "r.message_id, r.idx, r.address, r.orcpt, r.notify, r.status, r.attempts, \
     r.next_attempt, r.last_reply, r.last_kind, r.held";

impl SqliteSpool {
    /// Opens (creating if needed) the spool under `data_dir` and starts its
    /// writer task. Must run inside a tokio runtime.
    pub async fn open(data_dir: &Path) -> Result<SqliteSpool, SpoolError> {
        let dir = data_dir.join("spool");
        crate::sqlite::create_data_dir(data_dir)
            .and_then(|()| std::fs::create_dir_all(&dir))
            .map_err(|source| SpoolError::CreateDir {
                path: dir.display().to_string(),
                source,
            })?;
        let path = dir.join("queue.sqlite");
        let options = crate::sqlite::options(&path);
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options.clone())
            .await?;
        crate::sqlite::restrict(&path).map_err(|source| SpoolError::Restrict {
            path: path.display().to_string(),
            source,
        })?;
        sqlx::migrate!("./migrations/spool").run(&pool).await?;
        let conn = SqliteConnection::connect_with(&options).await?;
        let database = DatabaseFile::identify(path, options);
        let bodies = segments::dir(&dir);
        let numbers = segments::Numbers::after_existing(&bodies);
        let (writer, rx) = mpsc::channel(4096);
        tokio::spawn(writer::run(conn, database, rx, dir, numbers.clone()));
        Ok(SqliteSpool {
            reader: Reader::start(pool.clone()),
            pool,
            writer,
            bodies,
            numbers,
        })
    }

    async fn write(&self, write: Write) -> Result<(), SpoolError> {
        committed(self.send(write).await?).await
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

    /// Every recipient of one message, in order.
    async fn recipients(&self, id: &QueueId) -> Result<Vec<QueuedRecipient>, SpoolError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RECIPIENT_COLUMNS} FROM recipient r WHERE r.message_id = ? ORDER BY r.idx"
        )))
        .bind(id.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(recipient_from_row).collect()
    }
}

async fn committed(committed: oneshot::Receiver<Result<(), WriteError>>) -> Result<(), SpoolError> {
    committed
        .await
        .map_err(|_| SpoolError::WriterGone)?
        .map_err(SpoolError::Write)
}

#[async_trait::async_trait]
impl Storage for SqliteSpool {
    async fn spill(&self) -> std::io::Result<SpillFile> {
        SpillFile::create(self.bodies.clone(), self.numbers.take()).await
    }

    async fn put(
        &self,
        id: QueueId,
        message: NewMessage,
        spilled: Option<SpillFile>,
    ) -> Result<QueuedMessage, SpoolError> {
        let size = message.body.len() as u64 + spilled.as_ref().map_or(0, SpillFile::len);
        let queued = QueuedMessage::accepted(id, &message, size, now_unix());
        let write = Write::Put {
            message: queued.clone(),
            body: message.body,
            spilled: spilled.as_ref().map(SpillFile::spilled),
        };
        let sent = self.send(write).await?;
        if let Some(file) = spilled {
            // The writer has it: from here it removes the file if the commit
            // fails. (Dropped before the send, the request never reached it,
            // and `file` removes itself on its way out.)
            file.keep();
        }
        committed(sent).await?;
        Ok(queued)
    }

    async fn due(&self, now: i64, limit: u32) -> Result<Vec<QueuedMessage>, SpoolError> {
        // One query for recipients and their envelopes.
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RECIPIENT_COLUMNS}, {MESSAGE_COLUMNS} \
             FROM recipient r JOIN message m ON m.id = r.message_id \
             WHERE r.status = 'queued' AND r.held = FALSE AND r.next_attempt <= ? \
             ORDER BY r.next_attempt LIMIT ?"
        )))
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut out: Vec<QueuedMessage> = Vec::new();
        let mut at: HashMap<String, usize> = HashMap::new();
        for row in &rows {
            // A damaged row is left where it is, and said so: the rest of the
            // queue is still delivered.
            let decoded = column::<String>(row, "message_id", "?").and_then(|id| {
                let message = match at.get(&id) {
                    Some(_) => None,
                    None => Some(message_from_row(row, Vec::new())?),
                };
                Ok((id, message, recipient_from_row(row)?))
            });
            let (id, message, recipient) = match decoded {
                Ok(decoded) => decoded,
                Err(e) => {
                    tracing::error!(event = "spool_corrupt_row", error = %e);
                    continue;
                }
            };
            let i = *at.entry(id).or_insert_with(|| {
                out.extend(message);
                out.len() - 1
            });
            out[i].recipients.push(recipient);
        }
        for m in &mut out {
            m.recipients.sort_by_key(|r| r.idx);
        }
        Ok(out)
    }

    async fn next_due(&self, now: i64) -> Result<Option<i64>, SpoolError> {
        Ok(sqlx::query_scalar(
            "SELECT MIN(next_attempt) FROM recipient \
             WHERE status = 'queued' AND held = FALSE AND next_attempt > ?",
        )
        .bind(now)
        .fetch_one(&self.pool)
        .await?)
    }

    async fn record(
        &self,
        id: &QueueId,
        updates: Vec<RecipientUpdate>,
        bounce: Option<(QueueId, NewMessage)>,
    ) -> Result<(), SpoolError> {
        let bounce = bounce.map(|(id, m)| {
            let size = m.body.len() as u64;
            (QueuedMessage::accepted(id, &m, size, now_unix()), m.body)
        });
        self.write(Write::Outcomes {
            id: id.clone(),
            updates,
            bounce,
        })
        .await
    }

    async fn body(&self, id: &QueueId) -> Result<Option<Vec<u8>>, SpoolError> {
        let mut moved = None;
        // Twice at most: a body can move from its segment into its row (and the
        // segment go) between reading the row and reading the segment.
        for _ in 0..2 {
            let Some(Stored {
                inline: mut body,
                segment,
                size,
            }) = self.reader.read(id).await?
            else {
                return Ok(None);
            };
            let Some((segment, offset)) = segment else {
                if body.len() != size as usize {
                    return Err(SpoolError::Corrupt {
                        id: id.to_string(),
                        what: format!("{} of its {size} octets found", body.len()),
                    });
                }
                return Ok(Some(body));
            };
            // The row holds what precedes the segment's part (a spilled
            // body's trace headers), or nothing.
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

    async fn list(
        &self,
        filter: &ListFilter,
        after: Option<&QueueId>,
        limit: u32,
    ) -> Result<Vec<QueuedMessage>, SpoolError> {
        // The messages walk the id index from `after`, and each condition
        // looks at that message's recipients only (primary key prefix), so a
        // page costs its own rows whatever the queue holds. The recipients
        // then come by id, in the same read transaction: a message deleted
        // meanwhile cannot lose them between the two queries.
        let (conditions, bound) = list_conditions(filter, after.is_some());
        let mut tx = self.pool.begin().await?;
        let mut query = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {MESSAGE_COLUMNS} FROM message m {conditions} ORDER BY m.id LIMIT ?"
        )));
        if let Some(after) = after {
            query = query.bind(after.as_str());
        }
        for value in bound {
            query = query.bind(value);
        }
        let rows = query.bind(i64::from(limit)).fetch_all(&mut *tx).await?;
        let mut messages = rows
            .iter()
            .map(|row| message_from_row(row, Vec::new()))
            .collect::<Result<Vec<_>, _>>()?;
        if messages.is_empty() {
            return Ok(messages);
        }
        let marks = vec!["?"; messages.len()].join(", ");
        let mut query = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RECIPIENT_COLUMNS} FROM recipient r WHERE r.message_id IN ({marks}) \
             ORDER BY r.message_id, r.idx"
        )));
        for m in &messages {
            query = query.bind(m.id.as_str());
        }
        let rows = query.fetch_all(&mut *tx).await?;
        tx.commit().await?;
        let at: HashMap<&str, usize> = (0..)
            .zip(&messages)
            .map(|(i, m)| (m.id.as_str(), i))
            .collect();
        let mut recipients = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: String = column(row, "message_id", "?")?;
            let i = at
                .get(id.as_str())
                .copied()
                .ok_or_else(|| SpoolError::Corrupt {
                    id: id.clone(),
                    what: "a recipient not asked for".into(),
                })?;
            recipients.push((i, recipient_from_row(row)?));
        }
        drop(at);
        for (i, r) in recipients {
            messages[i].recipients.push(r);
        }
        Ok(messages)
    }

    async fn get(&self, id: &QueueId) -> Result<Option<QueuedMessage>, SpoolError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {MESSAGE_COLUMNS} FROM message m WHERE m.id = ?"
        )))
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        message_from_row(&row, self.recipients(id).await?).map(Some)
    }

    async fn summary(&self) -> Result<Summary, SpoolError> {
        // Both read an index only (message_created, recipient_summary),
        // which SQLite walks in order: no table rows, no sorting.
        let (messages, oldest): (i64, Option<i64>) =
            sqlx::query_as("SELECT COUNT(*), MIN(created) FROM message")
                .fetch_one(&self.pool)
                .await?;
        let groups = sqlx::query(
            "SELECT domain, held, attempts, COUNT(*) AS n FROM recipient \
             WHERE status = 'queued' GROUP BY domain, held, attempts",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut summary = Summary {
            messages: messages as u64,
            oldest,
            ..Summary::default()
        };
        let mut by_domain: HashMap<String, u64> = HashMap::new();
        for row in &groups {
            let n = column::<i64>(row, "n", "?")? as u64;
            let state = if column::<bool>(row, "held", "?")? {
                &mut summary.held
            } else if column::<i64>(row, "attempts", "?")? > 0 {
                &mut summary.deferred
            } else {
                &mut summary.queued
            };
            *state += n;
            *by_domain.entry(column(row, "domain", "?")?).or_default() += n;
        }
        summary.destinations = by_domain
            .into_iter()
            .map(|(domain, recipients)| DomainCount { domain, recipients })
            .collect();
        summary.destinations.sort_by(|a, b| {
            b.recipients
                .cmp(&a.recipients)
                .then_with(|| a.domain.cmp(&b.domain))
        });
        Ok(summary)
    }

    async fn stuck(&self, limit: u32) -> Result<Vec<StuckGroup>, SpoolError> {
        // Named, since without statistics SQLite prefers recipient_summary
        // (status first) and reads each deferred recipient's row.
        let rows: Vec<(String, Option<String>, i64)> = sqlx::query_as(
            "SELECT domain, last_kind, COUNT(*) AS n FROM recipient INDEXED BY recipient_stuck \
             WHERE status = 'queued' AND held = FALSE AND attempts > 0 \
             GROUP BY domain, last_kind ORDER BY n DESC, domain LIMIT ?",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(domain, kind, n)| StuckGroup {
                domain,
                kind,
                recipients: u64::try_from(n).unwrap_or(0),
            })
            .collect())
    }

    async fn delete(&self, id: &QueueId) -> Result<bool, SpoolError> {
        let done = sqlx::query("DELETE FROM message WHERE id = ?")
            .bind(id.as_str())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn retry(&self, id: Option<&QueueId>) -> Result<u64, SpoolError> {
        let now = now_unix();
        let done = match id {
            Some(id) => {
                sqlx::query(
                    "UPDATE recipient SET next_attempt = ? \
                 WHERE status = 'queued' AND held = FALSE AND message_id = ?",
                )
                .bind(now)
                .bind(id.as_str())
                .execute(&self.pool)
                .await?
            }
            None => sqlx::query(
                "UPDATE recipient SET next_attempt = ? WHERE status = 'queued' AND held = FALSE",
            )
            .bind(now)
            .execute(&self.pool)
            .await?,
        };
        Ok(done.rows_affected())
    }

    async fn retry_kind(&self, kind: &str, id: Option<&QueueId>) -> Result<u64, SpoolError> {
        let now = now_unix();
        // The due index's range (queued, not held, due later) bounds the walk.
        let done = sqlx::query(
            "UPDATE recipient SET next_attempt = ? \
             WHERE status = 'queued' AND held = FALSE AND next_attempt > ? AND last_kind = ? \
             AND (? IS NULL OR message_id = ?)",
        )
        .bind(now)
        .bind(now)
        .bind(kind)
        .bind(id.map(QueueId::as_str))
        .bind(id.map(QueueId::as_str))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn hold(&self, id: &QueueId) -> Result<u64, SpoolError> {
        let done = sqlx::query(
            "UPDATE recipient SET held = TRUE WHERE status = 'queued' AND message_id = ?",
        )
        .bind(id.as_str())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn release_held(&self, id: &QueueId) -> Result<u64, SpoolError> {
        let done = sqlx::query(
            "UPDATE recipient SET held = FALSE, next_attempt = ? \
             WHERE status = 'queued' AND held = TRUE AND message_id = ?",
        )
        .bind(now_unix())
        .bind(id.as_str())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}

/// The WHERE clause of a `list` page for `filter`, in SQL any backend speaks
/// (EXISTS, no functions), with the domain to bind after the `after` id: the
/// states are those of [`QueuedMessage::state`], a message's domain is that
/// of a recipient still to deliver (as the summary counts destinations).
///
/// `idx >= 0` is always true, and is there for the query planner: without it,
/// and without statistics (the spool runs no ANALYZE), SQLite prefers the
/// index with two equal columns, `recipient_summary` (status, domain) or
/// `recipient_due` (status, held), and reads every held or same-domain
/// recipient for each message: 60 s and more for one page of `--state held`
/// with 200,000 queued, against 0.14 s by the primary key.
pub(super) fn list_conditions(filter: &ListFilter, after: bool) -> (String, Vec<String>) {
    const PENDING: &str = "EXISTS (SELECT 1 FROM recipient p \
         WHERE p.message_id = m.id AND p.idx >= 0 AND p.status = 'queued')";
    const HELD: &str = "EXISTS (SELECT 1 FROM recipient h \
         WHERE h.message_id = m.id AND h.idx >= 0 AND h.status = 'queued' AND h.held = TRUE)";
    const TRIED: &str = "EXISTS (SELECT 1 FROM recipient t \
         WHERE t.message_id = m.id AND t.idx >= 0 AND t.attempts > 0)";
    let mut conditions: Vec<String> = Vec::new();
    let mut bound = Vec::new();
    if after {
        conditions.push("m.id > ?".into());
    }
    match filter.state {
        None => {}
        Some(MessageState::Held) => conditions.push(HELD.into()),
        Some(MessageState::Deferred) => {
            conditions.push(format!("{PENDING} AND NOT {HELD} AND {TRIED}"));
        }
        Some(MessageState::Queued) => {
            conditions.push(format!("{PENDING} AND NOT {HELD} AND NOT {TRIED}"));
        }
    }
    if let Some(domain) = &filter.domain {
        conditions.push(
            "EXISTS (SELECT 1 FROM recipient d \
             WHERE d.message_id = m.id AND d.idx >= 0 AND d.status = 'queued' AND d.domain = ?)"
                .into(),
        );
        // Lower case, as `recipient_domain` wrote the column.
        bound.push(domain.to_lowercase());
    }
    if let Some(user) = &filter.user {
        conditions.push("m.auth_user = ?".into());
        bound.push(user.clone());
    }
    let conditions = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    (conditions, bound)
}

/// Column `name` of a row of message `id`: a missing value or one of the
/// wrong type is a damaged row, reported as such.
pub(super) fn column<'r, T>(row: &'r SqliteRow, name: &str, id: &str) -> Result<T, SpoolError>
where
    T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    row.try_get(name).map_err(|e| SpoolError::Corrupt {
        id: id.to_string(),
        what: format!("column {name}: {e}"),
    })
}

/// A count or index column, which cannot be negative.
fn unsigned<T: TryFrom<i64>>(row: &SqliteRow, name: &str, id: &str) -> Result<T, SpoolError> {
    let value: i64 = column(row, name, id)?;
    T::try_from(value).map_err(|_| SpoolError::Corrupt {
        id: id.to_string(),
        what: format!("column {name}: {value} is out of range"),
    })
}

fn recipient_from_row(row: &SqliteRow) -> Result<QueuedRecipient, SpoolError> {
    let id: String = column(row, "message_id", "?")?;
    let id = id.as_str();
    let corrupt = |what: String| SpoolError::Corrupt {
        id: id.to_string(),
        what,
    };
    let status: String = column(row, "status", id)?;
    let last_kind = match column::<Option<String>>(row, "last_kind", id)? {
        None => None,
        Some(token) => Some(
            FailureKind::from_token(&token)
                .ok_or_else(|| corrupt(format!("unknown failure kind {token:?}")))?,
        ),
    };
    Ok(QueuedRecipient {
        idx: unsigned(row, "idx", id)?,
        address: column(row, "address", id)?,
        orcpt: column(row, "orcpt", id)?,
        notify: column(row, "notify", id)?,
        status: RecipientStatus::parse(&status)
            .ok_or_else(|| corrupt(format!("unknown status {status:?}")))?,
        attempts: unsigned(row, "attempts", id)?,
        next_attempt: column(row, "next_attempt", id)?,
        last_reply: column(row, "last_reply", id)?,
        last_kind,
        held: column(row, "held", id)?,
    })
}

fn message_from_row(
    row: &SqliteRow,
    recipients: Vec<QueuedRecipient>,
) -> Result<QueuedMessage, SpoolError> {
    let id: String = column(row, "id", "?")?;
    let queue_id = QueueId::parse(&id).ok_or_else(|| SpoolError::Corrupt {
        id: id.clone(),
        what: "not a queue id".into(),
    })?;
    let id = id.as_str();
    Ok(QueuedMessage {
        id: queue_id,
        created: column(row, "created", id)?,
        sender: column(row, "sender", id)?,
        size: unsigned(row, "size", id)?,
        auth_user: column(row, "auth_user", id)?,
        smtputf8: column(row, "smtputf8", id)?,
        requiretls: column(row, "requiretls", id)?,
        tls_policy_waived: column(row, "tls_policy_waived", id)?,
        dsn: DsnEnvelope {
            ret: column(row, "dsn_ret", id)?,
            envid: column(row, "dsn_envid", id)?,
        },
        recipients,
    })
}
