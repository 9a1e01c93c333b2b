//! Accounts and hosted domains (embedded SQLite in `data_dir/store.sqlite`). The
//! CLI writes here while the server runs; the server reads on every lookup, so a
//! change is seen at once without a restart.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    #[error("no alias {0}")]
    NoSuchAlias(String),
    #[error("the aliases of <{0}> reach more than {MAX_ALIAS_EXPANSION} addresses")]
    AliasTooLarge(String),
}

/// One final recipient of an alias expansion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Canonical for a hosted mailbox; as `Mailbox::recipient_key` gives it
    /// otherwise, so that equal strings are one recipient.
    pub address: String,
    /// In a domain hosted here (else the mail is forwarded elsewhere).
    pub hosted: bool,
}

/// Where one address leads: itself (no targets) or its alias targets.
struct Step {
    /// The address as a `Target` names it.
    key: String,
    hosted: bool,
    targets: Vec<String>,
}

/// How many addresses the alias expansion of one recipient may reach, aliases
/// followed and final recipients together (Postfix's
/// `virtual_alias_expansion_limit`): it bounds both the copies one RCPT can
/// make and the store lookups it costs.
pub const MAX_ALIAS_EXPANSION: usize = 1000;

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

/// How Postern opens each of its SQLite databases (this store and the spool):
/// WAL with `synchronous=FULL`, so a committed transaction survives a crash.
pub fn sqlite_options(path: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // FULL: every commit syncs the WAL; this is what "accepted" rests on.
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(std::time::Duration::from_secs(10))
        // 256 KiB of page cache per connection instead of SQLite's 2 MB: the
        // hot pages are few, and every pooled connection has its own cache.
        .pragma("cache_size", "-256")
}

impl Store {
    pub async fn open(data_dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::CreateDir {
            path: data_dir.display().to_string(),
            source,
        })?;
        let options = sqlite_options(&data_dir.join("store.sqlite"));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/store").run(&pool).await?;
        Ok(Store {
            pool,
            hosted: Arc::default(),
        })
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

impl Store {
    /// Adds `targets` to the alias `source` (`user@domain`, or `@domain` for the
    /// domain's catch-all); the source's domain must be hosted here.
    pub async fn add_alias(&self, source: &str, targets: &[String]) -> Result<String, StoreError> {
        let (source, domain) = alias_source(source)?;
        if !self.is_hosted_domain(&domain).await? {
            return Err(StoreError::NoSuchDomain(domain));
        }
        for target in targets {
            let target = canonical(target)?;
            sqlx::query(
                "INSERT OR IGNORE INTO alias (source, domain, target, created) VALUES (?, ?, ?, ?)",
            )
            .bind(&source)
            .bind(&domain)
            .bind(target)
            .bind(now_unix())
            .execute(&self.pool)
            .await?;
        }
        Ok(source)
    }

    /// Removes one target of an alias, or the whole alias.
    pub async fn delete_alias(&self, source: &str, target: Option<&str>) -> Result<(), StoreError> {
        let (source, _) = alias_source(source)?;
        let done = match target {
            Some(t) => {
                sqlx::query("DELETE FROM alias WHERE source = ? AND target = ?")
                    .bind(&source)
                    .bind(canonical(t)?)
                    .execute(&self.pool)
                    .await?
            }
            None => {
                sqlx::query("DELETE FROM alias WHERE source = ?")
                    .bind(&source)
                    .execute(&self.pool)
                    .await?
            }
        };
        if done.rows_affected() == 0 {
            return Err(StoreError::NoSuchAlias(source));
        }
        Ok(())
    }

    /// Every alias with its targets, by source.
    pub async fn aliases(&self) -> Result<Vec<(String, Vec<String>)>, StoreError> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT source, target FROM alias ORDER BY domain, source, target")
                .fetch_all(&self.pool)
                .await?;
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for (source, target) in rows {
            match out.last_mut() {
                Some((s, targets)) if *s == source => targets.push(target),
                _ => out.push((source, vec![target])),
            }
        }
        Ok(out)
    }

    /// The targets an alias names directly.
    pub async fn alias_targets(&self, source: &str) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT target FROM alias WHERE source = ? ORDER BY target")
                .bind(source)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Whether mail for a mailbox of a hosted domain has somewhere to go: an
    /// account, an alias, or the domain's catch-all.
    pub async fn accepts(&self, mailbox: &Mailbox) -> Result<bool, StoreError> {
        Ok(self.mailbox_exists(mailbox).await?
            || !self.alias_targets(&mailbox.canonical()).await?.is_empty()
            || !self
                .alias_targets(&format!("@{}", mailbox.domain))
                .await?
                .is_empty())
    }

    /// The final recipients for an address after aliases: an alias replaces the
    /// address by its targets (followed in turn); an account keeps it;
    /// otherwise the domain's catch-all applies. Addresses outside hosted
    /// domains are final. Each address is looked up once, so a cycle ends and a
    /// diamond gives one copy; an expansion that only goes round a cycle keeps
    /// the address itself (its delivery then fails and says so). More than
    /// `MAX_ALIAS_EXPANSION` addresses reached is `AliasTooLarge`.
    pub async fn expand(&self, address: &str) -> Result<Vec<Target>, StoreError> {
        expand_with(address, |a| async move { self.step(&a).await }).await
    }

    /// One address's own key and its alias targets (none when final).
    async fn step(&self, address: &str) -> Result<Step, StoreError> {
        let Ok(mailbox) = Mailbox::parse(address, true) else {
            return Ok(Step {
                key: address.to_string(),
                hosted: false,
                targets: Vec::new(),
            });
        };
        // Relayed mail, the common case on a busy relay: one lookup, not three.
        if !self.is_hosted_domain(&mailbox.domain).await? {
            return Ok(Step {
                key: mailbox.recipient_key(false),
                hosted: false,
                targets: Vec::new(),
            });
        }
        let key = mailbox.recipient_key(true);
        let mut targets = self.alias_targets(&key).await?;
        if targets.is_empty() && !self.mailbox_exists(&mailbox).await? && !mailbox.is_postmaster() {
            targets = self.alias_targets(&format!("@{}", mailbox.domain)).await?;
        }
        Ok(Step {
            key,
            hosted: true,
            targets,
        })
    }
}

/// The expansion walk of `Store::expand`, apart from the store so that its
/// cost can be counted: `step` is called once per address reached.
async fn expand_with<F: Future<Output = Result<Step, StoreError>>>(
    address: &str,
    mut step: impl FnMut(String) -> F,
) -> Result<Vec<Target>, StoreError> {
    // Targets come from the store in canonical form, so the text pushed is the
    // key its step will give; the first address is added once looked up.
    let mut seen: HashSet<String> = HashSet::new();
    let mut out = Vec::new();
    let mut pending = vec![address.to_string()];
    let mut first: Option<Target> = None;
    while let Some(addr) = pending.pop() {
        let Step {
            key,
            hosted,
            targets,
        } = step(addr).await?;
        seen.insert(key.clone());
        let this = Target {
            address: key,
            hosted,
        };
        if targets.is_empty() {
            out.push(this);
            continue;
        }
        for t in targets {
            if t == this.address {
                // A target naming the alias itself means "also keep a copy here".
                out.push(this.clone());
            } else if seen.insert(t.clone()) {
                // The first address is in `seen` too but not counted.
                if seen.len() > MAX_ALIAS_EXPANSION + 1 {
                    return Err(StoreError::AliasTooLarge(address.to_string()));
                }
                pending.push(t);
            }
        }
        first.get_or_insert(this);
    }
    if out.is_empty() {
        out.extend(first);
    }
    out.sort_by(|a, b| a.address.cmp(&b.address));
    Ok(out)
}

/// An alias source: `user@domain` (canonical) or `@domain`, with its domain.
fn alias_source(source: &str) -> Result<(String, String), StoreError> {
    if let Some(domain) = source.strip_prefix('@') {
        let d = normalize_domain(domain).ok_or_else(|| StoreError::BadDomain(domain.into()))?;
        return Ok((format!("@{d}"), d));
    }
    let m = Mailbox::parse(source, true).map_err(|_| StoreError::BadAddress(source.into()))?;
    Ok((m.canonical(), m.domain))
}

fn canonical(address: &str) -> Result<String, StoreError> {
    Mailbox::parse(address, true)
        .map(|m| m.canonical())
        .map_err(|_| StoreError::BadAddress(address.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn addresses(store: &Store, address: &str) -> Vec<String> {
        store
            .expand(address)
            .await
            .expect("expand")
            .into_iter()
            .map(|t| t.address)
            .collect()
    }

    async fn hosting(domain: &str) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).await.expect("open");
        store.add_domain(domain).await.expect("domain");
        (dir, store)
    }

    /// Each address is looked up once: a ring of aliases, each naming the
    /// next three and a mailbox of its own, is walked in linear work (the
    /// old depth-limited walk made 3^8 lookups here).
    #[tokio::test]
    async fn a_ring_of_aliases_expands_in_linear_work() {
        let (_dir, store) = hosting("example.com").await;
        let n = 12;
        for i in 0..n {
            let targets: Vec<String> = (1..=3)
                .map(|k| format!("a{}@example.com", (i + k) % n))
                .chain([format!("u{i}@remote.example")])
                .collect();
            store
                .add_alias(&format!("a{i}@example.com"), &targets)
                .await
                .expect("alias");
        }
        let mut steps = 0;
        let store = &store;
        let out = expand_with("a0@example.com", |a| {
            steps += 1;
            async move { store.step(&a).await }
        })
        .await
        .expect("expand");
        assert_eq!(steps, 2 * n, "each alias and each mailbox once");
        let mut want: Vec<String> = (0..n).map(|i| format!("u{i}@remote.example")).collect();
        want.sort();
        let got: Vec<String> = out.into_iter().map(|t| t.address).collect();
        assert_eq!(got, want);
        assert_eq!(addresses(store, "A5@example.com").await, want);
    }

    #[tokio::test]
    async fn a_diamond_gives_one_copy_and_a_self_target_keeps_one() {
        let (_dir, store) = hosting("example.com").await;
        store.add_user("d@example.com", "h").await.expect("user");
        for (source, targets) in [
            (
                "top@example.com",
                &["l@example.com", "r@example.com", "top@example.com"][..],
            ),
            ("l@example.com", &["d@example.com"][..]),
            ("r@example.com", &["d@example.com", "top@example.com"][..]),
        ] {
            let targets: Vec<String> = targets.iter().map(ToString::to_string).collect();
            store.add_alias(source, &targets).await.expect("alias");
        }
        assert_eq!(
            addresses(&store, "top@example.com").await,
            ["d@example.com", "top@example.com"]
        );
    }

    #[tokio::test]
    async fn an_alias_may_reach_the_limit_and_not_one_more() {
        let (_dir, store) = hosting("example.com").await;
        let targets: Vec<String> = (0..MAX_ALIAS_EXPANSION)
            .map(|i| format!("t{i}@remote.example"))
            .collect();
        store
            .add_alias("big@example.com", &targets)
            .await
            .expect("alias");
        assert_eq!(
            store
                .expand("big@example.com")
                .await
                .expect("at the limit")
                .len(),
            MAX_ALIAS_EXPANSION
        );
        store
            .add_alias("big@example.com", &["one.more@remote.example".into()])
            .await
            .expect("alias");
        assert!(matches!(
            store.expand("big@example.com").await,
            Err(StoreError::AliasTooLarge(a)) if a == "big@example.com"
        ));
        // Aliases followed count too: a nested alias is one more address.
        store
            .delete_alias("big@example.com", Some("one.more@remote.example"))
            .await
            .expect("delete");
        store
            .add_alias("outer@example.com", &["big@example.com".into()])
            .await
            .expect("alias");
        assert!(matches!(
            store.expand("outer@example.com").await,
            Err(StoreError::AliasTooLarge(_))
        ));
    }

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
