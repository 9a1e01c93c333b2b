//! How Postern opens each of its SQLite databases (the store and the spool).

use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};

/// WAL with `synchronous=FULL`, so a committed transaction survives a crash.
pub fn options(path: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // FULL: every commit syncs the WAL; this is what "accepted" rests on.
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(10))
        // 256 KiB of page cache per connection instead of SQLite's 2 MB: the
        // hot pages are few, and every pooled connection has its own cache.
        .pragma("cache_size", "-256")
}
