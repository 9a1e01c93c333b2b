//! The counts DMARC aggregate reports are made of (`dmarc::report`): per
//! domain that asks for reports, each kind of result and how many messages
//! had it, since the domain's last report. Kept in the store, so that a
//! restart does not lose a day's counts; taken out when reported.

use super::{Store, StoreError};

/// One domain's counts, taken out for its report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmarcCounts {
    pub domain: String,
    /// The policy as last seen, as `count_dmarc` was given it.
    pub policy: String,
    /// Where the report goes, as `count_dmarc` was given it.
    pub rua: String,
    /// Unix seconds: when the first counted message came.
    pub since: i64,
    /// Each kind of result, with how many messages had it.
    pub records: Vec<(String, u64)>,
}

impl Store {
    /// Counts one message claiming `domain` with result `record`; `policy`
    /// and `rua` replace what was known of the domain.
    pub async fn count_dmarc(
        &self,
        domain: &str,
        record: &str,
        (policy, rua): (&str, &str),
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO dmarc_policy (domain, policy, rua, since) VALUES (?, ?, ?, ?) \
             ON CONFLICT (domain) DO UPDATE SET policy = excluded.policy, rua = excluded.rua",
        )
        .bind(domain)
        .bind(policy)
        .bind(rua)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO dmarc_record (domain, record, count) VALUES (?, ?, 1) \
             ON CONFLICT (domain, record) DO UPDATE SET count = count + 1",
        )
        .bind(domain)
        .bind(record)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Takes out every domain's counts (they start again from nothing).
    pub async fn take_dmarc_counts(&self) -> Result<Vec<DmarcCounts>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let policies: Vec<(String, String, String, i64)> =
            sqlx::query_as("SELECT domain, policy, rua, since FROM dmarc_policy ORDER BY domain")
                .fetch_all(&mut *tx)
                .await?;
        let records: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT domain, record, count FROM dmarc_record ORDER BY domain, record",
        )
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM dmarc_record")
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM dmarc_policy")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(policies
            .into_iter()
            .map(|(domain, policy, rua, since)| DmarcCounts {
                records: records
                    .iter()
                    .filter(|(d, _, _)| *d == domain)
                    .map(|(_, record, count)| (record.clone(), u64::try_from(*count).unwrap_or(0)))
                    .collect(),
                domain,
                policy,
                rua,
                since,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_add_up_per_kind_and_are_taken_out_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).await.expect("open");
        for (record, at) in [("pass", 10), ("fail", 11), ("pass", 12)] {
            store
                .count_dmarc("a.example", record, ("p1", "r1"), at)
                .await
                .expect("count");
        }
        store
            .count_dmarc("b.example", "pass", ("p2", "r2"), 13)
            .await
            .expect("count");
        let taken = store.take_dmarc_counts().await.expect("take");
        assert_eq!(
            taken[0],
            DmarcCounts {
                domain: "a.example".into(),
                policy: "p1".into(),
                rua: "r1".into(),
                since: 10,
                records: vec![("fail".into(), 1), ("pass".into(), 2)],
            }
        );
        assert_eq!(taken[1].records, [("pass".to_string(), 1)]);
        assert!(store.take_dmarc_counts().await.expect("take").is_empty());
    }
}
