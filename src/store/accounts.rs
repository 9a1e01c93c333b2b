//! The accounts as the dashboard shows them: each one's sending over the
//! last day and week (from `sending_hour`), its own limits, its hold, and
//! its last login; and the last logins themselves, written here in batches.

use super::senders::{HOUR, OWN_COLUMNS, OwnColumns};
use super::{Hold, OwnLimits, Store, StoreError};

/// One account, as the dashboard's accounts view lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountView {
    pub address: String,
    /// Messages sent in the last 24 hours and the last 7 days.
    pub sent_day: u64,
    pub sent_week: u64,
    pub limits: OwnLimits,
    pub hold: Option<Hold>,
    /// Unix seconds and the port of the last login.
    pub last_login: Option<(i64, u16)>,
}

/// An account's login, for [`Store::record_logins`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    pub address: String,
    /// Unix seconds.
    pub at: i64,
    pub port: u16,
}

#[derive(sqlx::FromRow)]
struct AccountRow {
    address: String,
    sent_day: i64,
    sent_week: i64,
    #[sqlx(flatten)]
    own: OwnColumns,
    last_login: Option<i64>,
    last_login_port: Option<i64>,
}

impl Store {
    /// How many accounts there are, and the first `limit` of them: the held
    /// ones first, then the busiest of the last day, then by address. Each
    /// account's counts are two range reads of its own `sending_hour` rows
    /// (its primary key), so the cost grows with the accounts, not with
    /// their mail.
    pub async fn account_views(
        &self,
        limit: u32,
        now: i64,
    ) -> Result<(u64, Vec<AccountView>), StoreError> {
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM account")
            .fetch_one(&self.pool)
            .await?;
        let rows: Vec<AccountRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT address, \
             (SELECT COALESCE(SUM(messages), 0) FROM sending_hour h \
              WHERE h.address = a.address AND h.hour >= ?) AS sent_day, \
             (SELECT COALESCE(SUM(messages), 0) FROM sending_hour h \
              WHERE h.address = a.address AND h.hour >= ?) AS sent_week, \
             {OWN_COLUMNS}, last_login, last_login_port \
             FROM account a \
             ORDER BY held_since IS NULL, sent_day DESC, domain, address LIMIT ?"
        )))
        // Whole hours: from the one that holds `now` less a day (a week),
        // so that the last 24 hours (7 days) are always counted in full.
        .bind((now - 86_400) / HOUR)
        .bind((now - 7 * 86_400) / HOUR)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let count = |v: i64| u64::try_from(v).unwrap_or(0);
        let views = rows
            .into_iter()
            .map(|r| {
                let (limits, hold) = r.own.read();
                AccountView {
                    address: r.address,
                    sent_day: count(r.sent_day),
                    sent_week: count(r.sent_week),
                    limits,
                    hold,
                    last_login: r
                        .last_login
                        .zip(r.last_login_port.and_then(|p| u16::try_from(p).ok())),
                }
            })
            .collect();
        Ok((count(total), views))
    }

    /// Records logins in one transaction (one sync for many). A login older
    /// than the one recorded does not replace it; one of an account deleted
    /// since is dropped.
    pub async fn record_logins(&self, logins: &[Login]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for login in logins {
            sqlx::query(
                "UPDATE account SET last_login = ?, last_login_port = ? \
                 WHERE address = ? AND (last_login IS NULL OR last_login <= ?)",
            )
            .bind(login.at)
            .bind(i64::from(login.port))
            .bind(&login.address)
            .bind(login.at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Sending;

    #[tokio::test]
    async fn the_view_lists_held_accounts_first_then_the_busiest_with_their_last_login() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(dir.path()).await.expect("store");
        store.add_domain("example.com").await.expect("domain");
        for user in ["quiet", "busy", "held"] {
            store
                .add_user(&format!("{user}@example.com"), "hash")
                .await
                .expect("user");
        }
        // Twenty minutes into an hour.
        let now = 1_800_001_200;
        let sent = |address: &str, at: i64| Sending {
            address: address.to_string(),
            recipients: vec!["x@far.example".to_string()],
            new: 0,
            at,
        };
        store
            .remember_sending(&[
                sent("busy@example.com", now - 60),
                // 23 h 50 min ago: in the day; 24 h 30 min ago: not.
                sent("busy@example.com", now - 86_400 + 600),
                sent("busy@example.com", now - 86_400 - 1_800),
                // Three days ago: in the week, not the day.
                sent("quiet@example.com", now - 3 * 86_400),
                // Eight days ago: in neither.
                sent("quiet@example.com", now - 8 * 86_400),
            ])
            .await
            .expect("sending");
        store
            .hold_user("held@example.com", "burst", now - 10)
            .await
            .expect("hold");
        store
            .set_sending_limits(
                "busy@example.com",
                OwnLimits {
                    messages_per_hour: Some(5),
                    ..OwnLimits::default()
                },
            )
            .await
            .expect("limits");
        let login = |at: i64, port: u16| Login {
            address: "busy@example.com".to_string(),
            at,
            port,
        };
        store
            .record_logins(&[login(now - 30, 587), login(now - 300, 26)])
            .await
            .expect("logins");
        store
            .record_logins(&[Login {
                address: "gone@example.com".to_string(),
                at: now,
                port: 465,
            }])
            .await
            .expect("a login of no account is dropped");

        let (total, views) = store.account_views(10, now).await.expect("views");
        assert_eq!(total, 3);
        let order: Vec<&str> = views.iter().map(|v| v.address.as_str()).collect();
        assert_eq!(
            order,
            ["held@example.com", "busy@example.com", "quiet@example.com"]
        );
        assert_eq!(
            views[0].hold.as_ref().map(|h| h.reason.as_str()),
            Some("burst")
        );
        let busy = &views[1];
        assert_eq!((busy.sent_day, busy.sent_week), (2, 3));
        assert_eq!(busy.limits.messages_per_hour, Some(5));
        assert_eq!(
            busy.last_login,
            Some((now - 30, 587)),
            "the older login does not replace the newer"
        );
        assert_eq!((views[2].sent_day, views[2].sent_week), (0, 1));
        assert_eq!(views[2].last_login, None);
        let (_, first) = store.account_views(1, now).await.expect("views");
        assert_eq!(first.len(), 1);
    }
}
