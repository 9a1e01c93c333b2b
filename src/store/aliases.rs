//! Aliases and catch-alls: stored sources and targets, and their expansion to
//! final recipients (Postfix's virtual alias step), each address looked up
//! once and the whole walk bounded.

use std::collections::HashSet;

use super::{Store, StoreError, canonical};
use crate::clock::now_unix;
use crate::smtp::address::{Mailbox, normalize_domain};

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

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// The final recipients of `address`, as strings.
    pub(in crate::store) async fn addresses(store: &Store, address: &str) -> Vec<String> {
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
}
