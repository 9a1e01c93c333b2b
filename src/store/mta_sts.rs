//! The store's side of MTA-STS (`crate::outbound::mta_sts`): each recipient
//! domain's last policy, written when fetched, read once at start, so a
//! restart does not forget a policy before its max_age.

use super::{Store, StoreError};

/// One domain's policy as kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptPolicy {
    pub domain: String,
    /// The `id` of the TXT record it was fetched under.
    pub id: String,
    /// Its text, as `Policy::lines` writes it.
    pub policy: String,
    /// Unix seconds.
    pub fetched: i64,
    pub expires: i64,
}

impl Store {
    /// Deletes the policies expired at `now`, and returns the others.
    pub async fn mta_sts_policies(&self, now: i64) -> Result<Vec<KeptPolicy>, StoreError> {
        sqlx::query("DELETE FROM mta_sts_policy WHERE expires <= ?")
            .bind(now)
            .execute(&self.pool)
            .await?;
        let rows: Vec<(String, String, String, i64, i64)> =
            sqlx::query_as("SELECT domain, id, policy, fetched, expires FROM mta_sts_policy")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .map(|(domain, id, policy, fetched, expires)| KeptPolicy {
                domain,
                id,
                policy,
                fetched,
                expires,
            })
            .collect())
    }

    /// Keeps `policy`; a domain has one policy at a time, the last fetched.
    pub async fn keep_mta_sts_policy(&self, policy: &KeptPolicy) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO mta_sts_policy (domain, id, policy, fetched, expires) \
             VALUES (?, ?, ?, ?, ?) ON CONFLICT (domain) DO UPDATE SET id = excluded.id, \
             policy = excluded.policy, fetched = excluded.fetched, expires = excluded.expires",
        )
        .bind(&policy.domain)
        .bind(&policy.id)
        .bind(&policy.policy)
        .bind(policy.fetched)
        .bind(policy.expires)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn policies_are_kept_replaced_and_forgotten_when_expired() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(dir.path()).await.expect("store");
        let policy = |domain: &str, id: &str, expires| KeptPolicy {
            domain: domain.into(),
            id: id.into(),
            policy: "version: STSv1\nmode: enforce\nmx: mx.example\nmax_age: 100".into(),
            fetched: 1000,
            expires,
        };
        for p in [
            policy("a.example", "1", 1100),
            policy("a.example", "2", 1200),
            policy("b.example", "1", 1050),
        ] {
            store.keep_mta_sts_policy(&p).await.expect("keep");
        }
        let kept = store.mta_sts_policies(1060).await.expect("read");
        assert_eq!(kept, [policy("a.example", "2", 1200)]);
        assert!(store.mta_sts_policies(1200).await.expect("read").is_empty());
    }
}
