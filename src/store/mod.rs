//! Accounts and hosted domains (embedded SQLite in `data_dir/store.sqlite`;
//! aliases in `aliases.rs`). The
//! CLI writes here while the server runs; the server reads on every lookup, so a
//! change is seen at once without a restart.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::SqlitePool;
use sqlx::sqlite::SqlitePoolOptions;

use crate::clock::now_unix;
use crate::smtp::address::{Mailbox, normalize_domain};

mod accounts;
mod admins;
mod aliases;
mod dmarc_reports;
mod dovecot;
mod flow;
mod mta_sts;
mod port_map;
mod senders;
pub use accounts::{AccountView, Login};
pub use aliases::{MAX_ALIAS_EXPANSION, Target};
pub use dmarc_reports::DmarcCounts;
pub use dovecot::maildir_of;
pub use flow::FlowMinute;
pub use mta_sts::KeptPolicy;
pub use port_map::PortRecord;
pub use senders::{Hold, OwnLimits, Sending, Standing, correspondent_key};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the data directory {path}: {source}")]
    CreateDir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot make {path} readable by its owner only: {source}")]
    Restrict {
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
    #[error("no alias {0}")]
    NoSuchAlias(String),
    #[error("the aliases of <{0}> reach more than {MAX_ALIAS_EXPANSION} addresses")]
    AliasTooLarge(String),
}

#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
    /// The hosted domains, asked for on every RCPT, alias expansion and
    /// routing decision: read from the database at most once per
    /// `HOSTED_TTL`, so a domain added by the CLI is seen within that time.
    hosted: Arc<Mutex<Option<DomainSnapshot>>>,
}

const HOSTED_TTL: Duration = Duration::from_secs(1);

/// The hosted domains as read at some instant.
type DomainSnapshot = (Instant, Arc<HashSet<String>>);

impl Store {
    pub async fn open(data_dir: &Path) -> Result<Store, StoreError> {
        crate::sqlite::create_data_dir(data_dir).map_err(|source| StoreError::CreateDir {
            path: data_dir.display().to_string(),
            source,
        })?;
        let path = data_dir.join("store.sqlite");
        let options = crate::sqlite::options(&path);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        crate::sqlite::restrict(&path).map_err(|source| StoreError::Restrict {
            path: path.display().to_string(),
            source,
        })?;
        sqlx::migrate!("./migrations/store").run(&pool).await?;
        let store = Store {
            pool,
            hosted: Arc::default(),
        };
        store.fill_maildirs().await?;
        Ok(store)
    }

    /// Closes the database: every later query fails, as a store that went
    /// away would.
    #[cfg(test)]
    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub async fn add_domain(&self, domain: &str) -> Result<String, StoreError> {
        let name = normalize_domain(domain).ok_or_else(|| StoreError::BadDomain(domain.into()))?;
        let done = sqlx::query("INSERT OR IGNORE INTO domain (name, created) VALUES (?, ?)")
            .bind(&name)
            .bind(now_unix())
            .execute(&self.pool)
            .await?;
        self.domains_changed();
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
        self.domains_changed();
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
        let cached = {
            let guard = self.hosted.lock().unwrap_or_else(|p| p.into_inner());
            guard
                .as_ref()
                .filter(|(at, _)| at.elapsed() < HOSTED_TTL)
                .map(|(_, set)| Arc::clone(set))
        };
        let set = match cached {
            Some(set) => set,
            None => {
                let names: Vec<String> = sqlx::query_scalar("SELECT name FROM domain")
                    .fetch_all(&self.pool)
                    .await?;
                let set = Arc::new(names.into_iter().collect::<HashSet<String>>());
                *self.hosted.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((Instant::now(), Arc::clone(&set)));
                set
            }
        };
        Ok(set.contains(domain))
    }

    /// Forgets the cached domain list after this process changed it.
    fn domains_changed(&self) {
        *self.hosted.lock().unwrap_or_else(|p| p.into_inner()) = None;
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
        let done = sqlx::query("INSERT OR IGNORE INTO account (address, domain, password_hash, created, maildir) VALUES (?, ?, ?, ?, ?)")
            .bind(&canonical)
            .bind(&mailbox.domain)
            .bind(password_hash)
            .bind(now_unix())
            .bind(maildir_of(&mailbox))
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
        // A new password ends a hold: the thief who caused it no longer
        // has the account (the mail held meanwhile stays held), and sessions
        // logged in with the old one may send no more.
        let now = now_unix();
        let done = sqlx::query(
            "UPDATE account SET password_hash = ?, held_since = NULL, held_reason = NULL, \
             hold_ended = ?, password_changed = ? WHERE address = ?",
        )
        .bind(password_hash)
        .bind(now)
        .bind(now)
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

    /// The account a login name (in any case, with or without a trailing dot
    /// after the domain) names, if it exists: its address as stored, which is
    /// the identity of an authenticated session, and its password hash.
    pub async fn login(&self, address: &str) -> Result<Option<(String, String)>, StoreError> {
        let Ok(canonical) = canonical(address) else {
            return Ok(None);
        };
        Ok(
            sqlx::query_as("SELECT address, password_hash FROM account WHERE address = ?")
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
    use super::aliases::tests::addresses;
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
            store.login("ALICE@Example.com.").await.expect("q"),
            Some(("alice@example.com".into(), "h1".into()))
        );
        store
            .set_password("alice@example.com", "h2")
            .await
            .expect("passwd");
        assert_eq!(
            store
                .login("alice@example.com")
                .await
                .expect("q")
                .map(|(_, hash)| hash)
                .as_deref(),
            Some("h2")
        );
        assert_eq!(store.users().await.expect("users"), ["alice@example.com"]);
        store
            .add_alias(
                "sales@example.com",
                &["alice@example.com".into(), "bob@remote.example".into()],
            )
            .await
            .expect("alias");
        store
            .add_alias("@example.com", &["alice@example.com".into()])
            .await
            .expect("catch-all");
        store
            .add_alias("loop1@example.com", &["loop2@example.com".into()])
            .await
            .expect("alias");
        store
            .add_alias("loop2@example.com", &["loop1@example.com".into()])
            .await
            .expect("alias");
        assert_eq!(
            addresses(&store, "Sales@example.com").await,
            ["alice@example.com", "bob@remote.example"]
        );
        assert_eq!(
            store.expand("Sales@example.com").await.expect("expand")[1],
            Target {
                address: "bob@remote.example".into(),
                hosted: false
            }
        );
        assert_eq!(
            addresses(&store, "anyone@example.com").await,
            ["alice@example.com"]
        );
        assert_eq!(
            addresses(&store, "Alice@example.com.").await,
            ["alice@example.com"]
        );
        assert_eq!(
            addresses(&store, "X@Remote.example").await,
            ["X@remote.example"]
        );
        assert_eq!(
            addresses(&store, "loop1@example.com").await,
            ["loop1@example.com"],
            "a loop with no way out ends at its start"
        );
        assert!(
            store
                .accepts(&Mailbox::parse("whoever@example.com", false).expect("m"))
                .await
                .expect("q")
        );
        assert!(matches!(
            store
                .add_alias("x@nothosted.example", &["a@b.c".into()])
                .await,
            Err(StoreError::NoSuchDomain(_))
        ));
        store.delete_domain("example.com").await.expect("del");
        assert!(store.users().await.expect("users").is_empty());
    }
}
