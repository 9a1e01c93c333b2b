//! The store's side of the port map (`crate::portmap`): per client network
//! and submission port, the sessions that connected and authenticated, and
//! when they last did. Written a few seconds at a time, read once at start.

use super::{Store, StoreError};

/// One network's record of one port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortRecord {
    pub port: u16,
    pub connected: u64,
    pub authenticated: u64,
    /// Unix days; 0 for never.
    pub last_connected: i64,
    pub last_authenticated: i64,
}

impl Store {
    /// Every record touched on or after `since_day`, by network.
    pub async fn port_map(&self, since_day: i64) -> Result<Vec<(String, PortRecord)>, StoreError> {
        let rows: Vec<(String, i64, i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT network, port, connected, authenticated, last_connected, last_authenticated \
             FROM port_map WHERE last_connected >= ?",
        )
        .bind(since_day)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(network, port, connected, authenticated, lc, la)| {
                Some((
                    network,
                    PortRecord {
                        port: u16::try_from(port).ok()?,
                        connected: u64::try_from(connected).unwrap_or(0),
                        authenticated: u64::try_from(authenticated).unwrap_or(0),
                        last_connected: lc,
                        last_authenticated: la,
                    },
                ))
            })
            .collect())
    }

    /// Deletes the networks in `forgotten`, writes `records` as they are now
    /// and deletes every record not touched since `before_day`, in one transaction.
    pub async fn write_port_map(
        &self,
        records: &[(String, PortRecord)],
        forgotten: &[String],
        before_day: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        // Forgotten first: a network seen again since it was forgotten is
        // in both lists, and its new rows must stay.
        for network in forgotten {
            sqlx::query("DELETE FROM port_map WHERE network = ?")
                .bind(network)
                .execute(&mut *tx)
                .await?;
        }
        for (network, r) in records {
            sqlx::query(
                "INSERT INTO port_map (network, port, connected, authenticated, last_connected, \
                 last_authenticated) VALUES (?, ?, ?, ?, ?, ?) \
                 ON CONFLICT (network, port) DO UPDATE SET connected = excluded.connected, \
                 authenticated = excluded.authenticated, last_connected = excluded.last_connected, \
                 last_authenticated = excluded.last_authenticated",
            )
            .bind(network)
            .bind(i64::from(r.port))
            .bind(i64::try_from(r.connected).unwrap_or(i64::MAX))
            .bind(i64::try_from(r.authenticated).unwrap_or(i64::MAX))
            .bind(r.last_connected)
            .bind(r.last_authenticated)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("DELETE FROM port_map WHERE last_connected < ?")
            .bind(before_day)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}
