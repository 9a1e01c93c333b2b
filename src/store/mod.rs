//! Accounts and hosted domains (embedded SQLite in `data_dir/store.sqlite`). The
//! CLI writes here while the server runs; the server reads on every lookup, so a
//! change is seen at once without a restart.

use std::path::Path;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::smtp::address::{Mailbox, normalize_domain};
use crate::spool::now_unix;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the data directory {path}: {source}")]
    CreateDir {
        path: String,
        source: std::io::Error,
    },
    #[error("store database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("store migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0:?} is not a valid domain name")]
    BadDomain(String),
    #[error("{0:?} is not a valid address (write user@example.com)")]
    BadAddress(String),
    #[error("domain {0} is already hosted here")]
    DomainExists(String),
    #[error("domain {0} is not hosted here; add it first with `postern domain add {0}`")]
    NoSuchDomain(String),
    #[error("user {0} already exists")]
    UserExists(String),
    #[error("user {0} does not exist")]
    NoSuchUser(String),
}

#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
}

impl Store {
    pub async fn open(data_dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::CreateDir {
            path: data_dir.display().to_string(),
            source,
        })?;
        let options = SqliteConnectOptions::new()
            .filename(data_dir.join("store.sqlite"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/store").run(&pool).await?;
        Ok(Store { pool })
    }

    pub async fn add_domain(&self, domain: &str) -> Result<String, StoreError> {
        let name = normalize_domain(domain).ok_or_else(|| StoreError::BadDomain(domain.into()))?;
        let done = sqlx::query("INSERT OR IGNORE INTO domain (name, created) VALUES (?, ?)")
            .bind(&name)
            .bind(now_unix())
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::DomainExists(name));
        }
        Ok(name)
    }

    /// Removes a domain and every account in it.
    pub async fn delete_domain(&self, domain: &str) -> Result<(), StoreError> {
        let name = normalize_domain(domain).ok_or_else(|| StoreError::BadDomain(domain.into()))?;
        let done = sqlx::query("DELETE FROM domain WHERE name = ?")
            .bind(&name)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NoSuchDomain(name));
        }
        Ok(())
    }

    pub async fn domains(&self) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT name FROM domain ORDER BY name")
            .fetch_all(&self.pool)
            .await?)
    }

    pub async fn is_hosted_domain(&self, domain: &str) -> Result<bool, StoreError> {
        Ok(
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM domain WHERE name = ?")
                .bind(domain)
                .fetch_one(&self.pool)
                .await?
                > 0,
        )
    }

    /// Checks that `address` could be added as a new account (valid, in a hosted
    /// domain, not taken) and returns the mailbox; lets the CLI fail before it
    /// asks for a password.
    pub async fn check_new_user(&self, address: &str) -> Result<Mailbox, StoreError> {
        let mailbox =
            Mailbox::parse(address, false).map_err(|_| StoreError::BadAddress(address.into()))?;
        if !self.is_hosted_domain(&mailbox.domain).await? {
            return Err(StoreError::NoSuchDomain(mailbox.domain));
        }
        if self.mailbox_exists(&mailbox).await? {
            return Err(StoreError::UserExists(mailbox.canonical()));
        }
        Ok(mailbox)
    }

    /// Adds an account; the domain must be hosted already.
    pub async fn add_user(&self, address: &str, password_hash: &str) -> Result<String, StoreError> {
        let mailbox = self.check_new_user(address).await?;
        let canonical = mailbox.canonical();
        let done = sqlx::query("INSERT OR IGNORE INTO account (address, domain, password_hash, created) VALUES (?, ?, ?, ?)")
            .bind(&canonical)
            .bind(&mailbox.domain)
            .bind(password_hash)
            .bind(now_unix())
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::UserExists(canonical));
        }
        Ok(canonical)
    }

    pub async fn delete_user(&self, address: &str) -> Result<(), StoreError> {
        let canonical = canonical(address)?;
        let done = sqlx::query("DELETE FROM account WHERE address = ?")
            .bind(&canonical)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NoSuchUser(canonical));
        }
        Ok(())
    }

    pub async fn set_password(&self, address: &str, password_hash: &str) -> Result<(), StoreError> {
        let canonical = canonical(address)?;
        let done = sqlx::query("UPDATE account SET password_hash = ? WHERE address = ?")
            .bind(password_hash)
            .bind(&canonical)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NoSuchUser(canonical));
        }
        Ok(())
    }

    pub async fn users(&self) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT address FROM account ORDER BY domain, address")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// The stored hash for a login name, if the account exists.
    pub async fn password_hash(&self, address: &str) -> Result<Option<String>, StoreError> {
        let Ok(canonical) = canonical(address) else {
            return Ok(None);
        };
        Ok(
            sqlx::query_scalar("SELECT password_hash FROM account WHERE address = ?")
                .bind(canonical)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    pub async fn mailbox_exists(&self, mailbox: &Mailbox) -> Result<bool, StoreError> {
        Ok(
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM account WHERE address = ?")
                .bind(mailbox.canonical())
                .fetch_one(&self.pool)
                .await?
                > 0,
        )
    }
}

fn canonical(address: &str) -> Result<String, StoreError> {
    Mailbox::parse(address, true)
        .map(|m| m.canonical())
        .map_err(|_| StoreError::BadAddress(address.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accounts_live_in_hosted_domains() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).await.expect("open");
        assert!(matches!(
            store.add_user("a@example.com", "h").await,
            Err(StoreError::NoSuchDomain(_))
        ));
        assert_eq!(
            store.add_domain("Example.COM").await.expect("add"),
            "example.com"
        );
        assert!(matches!(
            store.add_domain("example.com").await,
            Err(StoreError::DomainExists(_))
        ));
        assert_eq!(
            store
                .add_user("Alice@Example.com", "h1")
                .await
                .expect("add"),
            "alice@example.com"
        );
        assert!(matches!(
            store.add_user("alice@example.com", "h").await,
            Err(StoreError::UserExists(_))
        ));
        assert_eq!(
            store
                .password_hash("ALICE@example.com")
                .await
                .expect("q")
                .as_deref(),
            Some("h1")
        );
        store
            .set_password("alice@example.com", "h2")
            .await
            .expect("passwd");
        assert_eq!(
            store
                .password_hash("alice@example.com")
                .await
                .expect("q")
                .as_deref(),
            Some("h2")
        );
        assert_eq!(store.users().await.expect("users"), ["alice@example.com"]);
        store.delete_domain("example.com").await.expect("del");
        assert!(store.users().await.expect("users").is_empty());
    }
}
