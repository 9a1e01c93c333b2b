//! How Postern opens each of its SQLite databases (the store and the spool).

use std::os::unix::fs::PermissionsExt;
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

/// Creates `data_dir` if it is missing: 0751, its owner's, open to its
/// group for the Maildirs under it (a mail reader such as Dovecot in that
/// group), and searchable by others, who may reach `run/submit.sock` for
/// `postern sendmail` by its name; they cannot list it, and what is in it is
/// the owner's (and group's) only. An existing directory keeps the mode its
/// admin gave it.
pub fn create_data_dir(data_dir: &Path) -> std::io::Result<()> {
    if data_dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(data_dir)?;
    std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o751))
}

/// Makes the database at `path` and its WAL and shared-memory files its
/// owner's only: the store holds password hashes, the spool everyone's mail.
/// New files are made so by the binary's umask; this closes up what an
/// earlier version left readable by all (0644).
pub fn restrict(path: &Path) -> std::io::Result<()> {
    for suffix in ["", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let file = Path::new(&name);
        match std::fs::metadata(file) {
            Ok(meta) if meta.permissions().mode() & 0o077 != 0 => {
                std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600))?;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
