//! The store's side of the mail flow (`crate::flow`): one row per minute.

use super::{Store, StoreError};

/// What flowed in one minute (Unix minutes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowMinute {
    pub minute: i64,
    pub accepted: u64,
    pub delivered: u64,
    pub deferred: u64,
    pub bounced: u64,
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Store {
    /// Adds `row` to its minute's counts, and forgets minutes before `keep_from`.
    pub async fn add_flow(&self, row: &FlowMinute, keep_from: i64) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO flow_minute (minute, accepted, delivered, deferred, bounced) \
             VALUES (?, ?, ?, ?, ?) ON CONFLICT (minute) DO UPDATE SET \
             accepted = accepted + excluded.accepted, delivered = delivered + excluded.delivered, \
             deferred = deferred + excluded.deferred, bounced = bounced + excluded.bounced",
        )
        .bind(row.minute)
        .bind(to_i64(row.accepted))
        .bind(to_i64(row.delivered))
        .bind(to_i64(row.deferred))
        .bind(to_i64(row.bounced))
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM flow_minute WHERE minute < ?")
            .bind(keep_from)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The minutes from `since` on that saw any mail, in order.
    pub async fn flow_since(&self, since: i64) -> Result<Vec<FlowMinute>, StoreError> {
        let rows: Vec<(i64, i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT minute, accepted, delivered, deferred, bounced FROM flow_minute \
             WHERE minute >= ? ORDER BY minute",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        Ok(rows
            .into_iter()
            .map(|(minute, a, d, f, b)| FlowMinute {
                minute,
                accepted: count(a),
                delivered: count(d),
                deferred: count(f),
                bounced: count(b),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn minutes_add_up_and_old_ones_go() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(dir.path()).await.expect("store");
        let row = |minute, n| FlowMinute {
            minute,
            accepted: n,
            delivered: n,
            deferred: 0,
            bounced: 1,
        };
        store.add_flow(&row(100, 2), 0).await.expect("add");
        store.add_flow(&row(100, 3), 0).await.expect("add");
        store.add_flow(&row(200, 1), 150).await.expect("add");
        assert_eq!(
            store.flow_since(0).await.expect("read"),
            [row(200, 1)],
            "minute 100 is older than 150"
        );
        store.add_flow(&row(200, 4), 150).await.expect("add");
        let got = store.flow_since(0).await.expect("read");
        assert_eq!((got[0].accepted, got[0].bounced), (5, 2));
    }
}
