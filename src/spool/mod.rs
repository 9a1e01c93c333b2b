//! The spool: the only module that touches queue storage, and storage only
//! (what is in flight and when to look belongs to the scheduler's active
//! queue). `put` makes a message durable before the session may answer 250;
//! `due`, `body` and `record` serve the scheduler; `list`, `get`, `summary`,
//! `retry`, `delete`, `hold` and `release_held` serve `postern queue`.
//!
//! [`Storage`] is what a backend provides; [`Spool`] is the handle everyone
//! holds. The embedded backend (`sqlite.rs`) is SQLite in WAL mode with
//! `synchronous=FULL` in `data_dir/spool`: one writer task commits the
//! messages of all concurrent sessions together (group commit, `writer.rs`),
//! and bodies of 8 KiB and more go to segment files synced before the commit
//! that refers to them (`segments.rs`); smaller ones over 1,000 octets are
//! kept in chunk rows that pack the pages (`chunks.rs`). Its SQL is plain enough for a
//! PostgreSQL backend beside it.

mod chunks;
mod envelope;
mod id;
mod reader;
mod segments;
mod space;
mod spill;
mod sqlite;
mod writer;

use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;

pub use envelope::{
    DomainCount, DsnEnvelope, ListFilter, MessageState, NewMessage, NewRecipient, QueuedMessage,
    QueuedRecipient, RecipientStatus, RecipientUpdate, StuckGroup, Summary, recipient_domain,
};
pub use id::QueueId;
pub use space::LowSpace;
use space::SpaceFloor;
pub use spill::SpillFile;
pub use sqlite::SqliteSpool;
#[cfg(test)]
use sqlite::list_conditions;
pub use writer::WriteError;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("cannot create the spool directory {path}: {source}")]
    CreateDir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot make {path} readable by its owner only: {source}")]
    Restrict {
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
    #[error("the spool's body reader has stopped")]
    ReaderGone,
    /// A stored row that cannot be read back as what was written: the
    /// database was changed outside Postern, or damaged.
    #[error("message {id} in the spool is damaged: {what}")]
    Corrupt { id: String, what: String },
}

/// What a spool backend stores and answers. Each method is one storage
/// operation; none keeps scheduling state (claims, wake-ups: the scheduler's
/// active queue holds those, in memory), so another backend, PostgreSQL say,
/// can implement it without the scheduler changing. One server delivers from
/// a spool (the server lock in `control` sees to it for a data directory):
/// servers sharing one database would each claim the same recipients, and
/// need claims kept in storage first (a lease column, or `SELECT … FOR UPDATE
/// SKIP LOCKED`), which this interface does not have yet.
///
/// Cancel safety: a write dropped after it reached the backend may still be
/// committed (a client that never saw 250 resends; RFC 5321 §6.1 accepts the
/// duplicate). Reads are cancel safe.
#[async_trait::async_trait]
pub trait Storage: Send + Sync {
    /// A new file for a body too large to hold in memory while it arrives;
    /// queued with [`Storage::put`], removed on drop otherwise.
    async fn spill(&self) -> std::io::Result<SpillFile>;

    /// Makes `message` durable under `id` and returns it as stored
    /// ([`QueuedMessage::accepted`]). When this returns `Ok`, the body,
    /// envelope and recipients are synced to disk. With `spilled`,
    /// `message.body` holds what precedes the spilled octets (the new trace
    /// headers), and the file must be finished.
    async fn put(
        &self,
        id: QueueId,
        message: NewMessage,
        spilled: Option<SpillFile>,
    ) -> Result<QueuedMessage, SpoolError>;

    /// Up to `limit` recipients due at `now` and not held, earliest first,
    /// grouped by message (each with its envelope and only those recipients,
    /// ordered by index); messages come in the order of their earliest
    /// recipient.
    async fn due(&self, now: i64, limit: u32) -> Result<Vec<QueuedMessage>, SpoolError>;

    /// When the next recipient that is not held falls due after `now`, if any.
    async fn next_due(&self, now: i64) -> Result<Option<i64>, SpoolError>;

    /// Records delivery outcomes for recipients of message `id`, together with
    /// the bounce they cause, durably and in one transaction; removes the
    /// message once no recipient is left to deliver. A recipient held
    /// meanwhile stays held.
    async fn record(
        &self,
        id: &QueueId,
        updates: Vec<RecipientUpdate>,
        bounce: Option<(QueueId, NewMessage)>,
    ) -> Result<(), SpoolError>;

    /// The stored message text, exactly as it will be relayed; `None` if the
    /// message is gone.
    async fn body(&self, id: &QueueId) -> Result<Option<Vec<u8>>, SpoolError>;

    /// Up to `limit` messages that match `filter`, each with all its
    /// recipients, by id, after `after` if given: one page of the queue, so
    /// that listing it costs memory for a page, not for the queue
    /// ([`Spool::pages`] walks them). Ids sort by arrival, so this is also
    /// oldest first (as far as the clock did not step back).
    async fn list(
        &self,
        filter: &ListFilter,
        after: Option<&QueueId>,
        limit: u32,
    ) -> Result<Vec<QueuedMessage>, SpoolError>;

    /// One message without its body.
    async fn get(&self, id: &QueueId) -> Result<Option<QueuedMessage>, SpoolError>;

    /// The queue in numbers, from aggregates: fast with millions queued.
    async fn summary(&self) -> Result<Summary, SpoolError>;

    /// Deferred recipients (tried, not held) grouped by domain and the
    /// kind of their last failure, the largest groups first, at most `limit`.
    async fn stuck(&self, limit: u32) -> Result<Vec<StuckGroup>, SpoolError>;

    /// Removes a message and its recipients; false if there was none.
    async fn delete(&self, id: &QueueId) -> Result<bool, SpoolError>;

    /// Makes the queued recipients of one message (or of all, with `None`)
    /// that are not held due now; returns how many.
    async fn retry(&self, id: Option<&QueueId>) -> Result<u64, SpoolError>;

    /// Makes the queued recipients (of message `id`, or of all) that are not
    /// held and whose last attempt failed with `kind` (a `FailureKind`
    /// token, `unreachable:25`) due now; returns how many.
    async fn retry_kind(&self, kind: &str, id: Option<&QueueId>) -> Result<u64, SpoolError>;

    /// Keeps the queued recipients of a message from delivery; returns how many.
    async fn hold(&self, id: &QueueId) -> Result<u64, SpoolError>;

    /// Releases the held recipients of a message, due now; returns how many.
    async fn release_held(&self, id: &QueueId) -> Result<u64, SpoolError>;
}

/// A handle to the spool: its backend and the free-space floor of the local
/// disk (where bodies spill, whatever the backend). Cheap to clone and share
/// between sessions; dereferences to the backend's [`Storage`] operations.
#[derive(Clone)]
pub struct Spool {
    storage: Arc<dyn Storage>,
    space: Arc<SpaceFloor>,
}

impl Spool {
    /// Opens (creating if needed) the embedded spool under `data_dir` and
    /// starts its writer task. Must run inside a tokio runtime.
    pub async fn open(data_dir: &Path) -> Result<Spool, SpoolError> {
        Ok(Spool::new(SqliteSpool::open(data_dir).await?, data_dir))
    }

    /// A handle on `storage`, with no free-space floor in `data_dir` yet.
    pub fn new(storage: impl Storage + 'static, data_dir: &Path) -> Spool {
        Spool {
            storage: Arc::new(storage),
            space: Arc::new(SpaceFloor::new(data_dir.to_path_buf(), 0)),
        }
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
}

/// Messages per page when listing the queue: large enough that a page's two
/// queries cost little next to printing it, small enough that memory stays
/// flat whatever the queue holds.
pub const LIST_PAGE: u32 = 1000;

impl Spool {
    /// The messages matching `filter`, at most `limit` of them, a page of
    /// `page` at a time (see [`Storage::list`]).
    pub fn pages(&self, filter: ListFilter, limit: Option<u64>, page: u32) -> Pages {
        Pages {
            storage: self.storage.clone(),
            filter,
            after: None,
            left: limit,
            page: page.max(1),
            done: limit == Some(0),
            more: false,
        }
    }
}

/// The pages of a listing, from [`Spool::pages`]; each page starts after the
/// last id of the one before (keyset paging), so a page costs the same
/// however deep into the queue it is, and messages that come or go meanwhile
/// neither shift nor repeat the others.
pub struct Pages {
    storage: Arc<dyn Storage>,
    filter: ListFilter,
    after: Option<QueueId>,
    /// How many more messages the limit lets through.
    left: Option<u64>,
    page: u32,
    done: bool,
    more: bool,
}

impl Pages {
    /// The next page, never empty; `None` once the listing is over.
    pub async fn next(&mut self) -> Result<Option<Vec<QueuedMessage>>, SpoolError> {
        if self.done {
            return Ok(None);
        }
        // On the last page the limit allows, one message more than it lets
        // through says whether the limit left any out.
        let want = match self.left {
            Some(left) if left <= u64::from(self.page) => left + 1,
            _ => u64::from(self.page),
        };
        let mut page = self
            .storage
            .list(&self.filter, self.after.as_ref(), want as u32)
            .await?;
        if (page.len() as u64) < want {
            self.done = true;
        }
        if let Some(left) = &mut self.left {
            if page.len() as u64 > *left {
                page.truncate(*left as usize);
                self.more = true;
                self.done = true;
            }
            *left -= page.len() as u64;
        }
        match page.last() {
            Some(last) => self.after = Some(last.id.clone()),
            None => return Ok(None),
        }
        Ok(Some(page))
    }

    /// Whether the limit left out messages that match.
    pub fn more(&self) -> bool {
        self.more
    }

    /// Every page in one list: for tests, and callers that know the queue is
    /// small.
    pub async fn all(mut self) -> Result<Vec<QueuedMessage>, SpoolError> {
        let mut out = Vec::new();
        while let Some(page) = self.next().await? {
            out.extend(page);
        }
        Ok(out)
    }
}

impl Deref for Spool {
    type Target = dyn Storage;

    fn deref(&self) -> &Self::Target {
        &*self.storage
    }
}

#[cfg(test)]
mod tests;
