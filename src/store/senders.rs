//! What the store keeps about each user's sending: their own limits, the
//! hold on an account that looks stolen, whom they have written to, and
//! their sending per clock hour (the history a burst is measured against).
//! Kept here, not in memory, because a restart must neither forget a hold
//! nor make every recipient first-time again.

use super::{Store, StoreError, canonical};
use crate::policy::sending::HourCounts;

pub(super) const HOUR: i64 = 3600;
/// How long a recipient stays known after the last message to it.
const CORRESPONDENT_MEMORY: i64 = 365 * 86_400;
/// How much hourly history is kept: the week a burst is compared with, and a day.
const HOURS_KEPT: i64 = 8 * 24;

/// A user's own sending limits; `None` where `[limits]`' default applies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OwnLimits {
    pub messages_per_hour: Option<u64>,
    pub recipients_per_day: Option<u64>,
    pub new_recipients_per_day: Option<u64>,
}

/// Why, and since when (Unix seconds), a user's outgoing mail is held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub since: i64,
    pub reason: String,
}

/// A user's own limits and hold, read together on every message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Standing {
    pub limits: OwnLimits,
    pub hold: Option<Hold>,
    /// When the last hold ended (Unix seconds).
    pub hold_ended: Option<i64>,
    /// When the password last changed (Unix seconds).
    pub password_changed: Option<i64>,
}

/// The columns `OwnColumns` reads, for the queries that select them.
pub(super) const OWN_COLUMNS: &str =
    "messages_per_hour, recipients_per_day, new_recipients_per_day, held_since, held_reason";

/// An account's own limits and hold, as its columns hold them.
#[derive(sqlx::FromRow)]
pub(super) struct OwnColumns {
    messages_per_hour: Option<i64>,
    recipients_per_day: Option<i64>,
    new_recipients_per_day: Option<i64>,
    held_since: Option<i64>,
    held_reason: Option<String>,
}

impl OwnColumns {
    /// The limits and the hold they say.
    pub(super) fn read(self) -> (OwnLimits, Option<Hold>) {
        let positive = |v: Option<i64>| v.and_then(|v| u64::try_from(v).ok());
        let limits = OwnLimits {
            messages_per_hour: positive(self.messages_per_hour),
            recipients_per_day: positive(self.recipients_per_day),
            new_recipients_per_day: positive(self.new_recipients_per_day),
        };
        let hold = self.held_since.map(|since| Hold {
            since,
            reason: self.held_reason.unwrap_or_default(),
        });
        (limits, hold)
    }
}

#[derive(sqlx::FromRow)]
struct StandingRow {
    #[sqlx(flatten)]
    own: OwnColumns,
    hold_ended: Option<i64>,
    password_changed: Option<i64>,
}

impl Store {
    /// `address`'s own limits and hold; the defaults (no hold) for an address
    /// without an account, such as a local Unix user.
    pub async fn standing(&self, address: &str) -> Result<Standing, StoreError> {
        let row: Option<StandingRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {OWN_COLUMNS}, hold_ended, password_changed FROM account WHERE address = ?"
        )))
        .bind(address)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(Standing::default());
        };
        let (limits, hold) = row.own.read();
        Ok(Standing {
            limits,
            hold,
            hold_ended: row.hold_ended,
            password_changed: row.password_changed,
        })
    }

    /// Sets a user's own sending limits; `None` keeps the one set.
    pub async fn set_sending_limits(
        &self,
        address: &str,
        limits: OwnLimits,
    ) -> Result<String, StoreError> {
        let canonical = canonical(address)?;
        let as_db = |v: Option<u64>| v.map(|v| i64::try_from(v).unwrap_or(i64::MAX));
        let done = sqlx::query(
            "UPDATE account SET messages_per_hour = COALESCE(?, messages_per_hour), \
             recipients_per_day = COALESCE(?, recipients_per_day), \
             new_recipients_per_day = COALESCE(?, new_recipients_per_day) WHERE address = ?",
        )
        .bind(as_db(limits.messages_per_hour))
        .bind(as_db(limits.recipients_per_day))
        .bind(as_db(limits.new_recipients_per_day))
        .bind(&canonical)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NoSuchUser(canonical));
        }
        Ok(canonical)
    }

    /// Those of `recipients` that `address` has not written to within a year.
    pub async fn first_time(
        &self,
        address: &str,
        recipients: &[String],
        now: i64,
    ) -> Result<Vec<String>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let mut new = Vec::new();
        for recipient in recipients {
            let known: Option<i64> = sqlx::query_scalar(
                "SELECT 1 FROM correspondent WHERE address = ? AND recipient = ? AND last_sent > ?",
            )
            .bind(address)
            .bind(correspondent_key(recipient))
            .bind(now - CORRESPONDENT_MEMORY)
            .fetch_optional(&mut *conn)
            .await?;
            if known.is_none() {
                new.push(recipient.clone());
            }
        }
        Ok(new)
    }

    /// Records messages users sent, in one transaction (one sync for many:
    /// the watch writes them a second at a time). A message of an address
    /// without an account is not kept.
    pub async fn remember_sending(&self, sent: &[Sending]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for message in sent {
            let counted = sqlx::query(
                "INSERT INTO sending_hour (address, hour, messages, new_recipients) \
                 SELECT address, ?, 1, ? FROM account WHERE address = ? \
                 ON CONFLICT (address, hour) DO UPDATE SET messages = messages + 1, \
                 new_recipients = new_recipients + excluded.new_recipients",
            )
            .bind(message.at / HOUR)
            .bind(i64::try_from(message.new).unwrap_or(i64::MAX))
            .bind(&message.address)
            .execute(&mut *tx)
            .await?;
            if counted.rows_affected() == 0 {
                continue;
            }
            for recipient in &message.recipients {
                sqlx::query(
                    "INSERT INTO correspondent (address, recipient, last_sent) VALUES (?, ?, ?) \
                     ON CONFLICT (address, recipient) DO UPDATE SET last_sent = excluded.last_sent",
                )
                .bind(&message.address)
                .bind(correspondent_key(recipient))
                .bind(message.at)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Counts `bounces` of `address`'s mail in the hour of `now`.
    pub async fn count_bounces(
        &self,
        address: &str,
        bounces: u64,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sending_hour (address, hour, bounces) \
             SELECT address, ?, ? FROM account WHERE address = ? \
             ON CONFLICT (address, hour) DO UPDATE SET bounces = bounces + excluded.bounces",
        )
        .bind(now / HOUR)
        .bind(i64::try_from(bounces).unwrap_or(i64::MAX))
        .bind(address)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The most of each count `address` reached in one clock hour from
    /// `since` until the hour before `now`'s: the user's own normal.
    pub async fn busiest_hour(
        &self,
        address: &str,
        since: i64,
        now: i64,
    ) -> Result<HourCounts, StoreError> {
        let (messages, new_recipients, bounces): (Option<i64>, Option<i64>, Option<i64>) =
            sqlx::query_as(
                "SELECT MAX(messages), MAX(new_recipients), MAX(bounces) FROM sending_hour \
                 WHERE address = ? AND hour >= ? AND hour < ?",
            )
            .bind(address)
            .bind(since / HOUR)
            .bind(now / HOUR - 1)
            .fetch_one(&self.pool)
            .await?;
        let count = |v: Option<i64>| v.and_then(|v| u64::try_from(v).ok()).unwrap_or(0);
        Ok(HourCounts {
            messages: count(messages),
            new_recipients: count(new_recipients),
            bounces: count(bounces),
        })
    }

    /// Holds `address`'s outgoing mail; false when it was held already (the
    /// first reason stays).
    pub async fn hold_user(
        &self,
        address: &str,
        reason: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        self.set_hold(address, Some((reason, now)), now).await
    }

    /// Ends the hold on `address`'s outgoing mail, `now`; false when there
    /// was none.
    pub async fn release_user(&self, address: &str, now: i64) -> Result<bool, StoreError> {
        self.set_hold(address, None, now).await
    }

    /// Sets or clears a hold; false when there was nothing to change.
    async fn set_hold(
        &self,
        address: &str,
        hold: Option<(&str, i64)>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let canonical = canonical(address)?;
        let (reason, since) = hold.unzip();
        let done = sqlx::query(
            "UPDATE account SET held_since = ?, held_reason = ?, \
             hold_ended = CASE WHEN ? IS NULL THEN ? ELSE hold_ended END \
             WHERE address = ? AND (held_since IS NULL) = (? IS NOT NULL)",
        )
        .bind(since)
        .bind(reason)
        .bind(since)
        .bind(now)
        .bind(&canonical)
        .bind(since)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            self.user_must_exist(&canonical).await?;
        }
        Ok(done.rows_affected() > 0)
    }

    async fn user_must_exist(&self, canonical: &str) -> Result<(), StoreError> {
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM account WHERE address = ?")
            .bind(canonical)
            .fetch_optional(&self.pool)
            .await?;
        match exists {
            Some(_) => Ok(()),
            None => Err(StoreError::NoSuchUser(canonical.to_string())),
        }
    }

    /// Every user whose outgoing mail is held, with the hold.
    pub async fn held_users(&self) -> Result<Vec<(String, Hold)>, StoreError> {
        let rows: Vec<(String, i64, Option<String>)> = sqlx::query_as(
            "SELECT address, held_since, held_reason FROM account \
             WHERE held_since IS NOT NULL ORDER BY domain, address",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(address, since, reason)| {
                let reason = reason.unwrap_or_default();
                (address, Hold { since, reason })
            })
            .collect())
    }

    /// Forgets recipients not written to for a year and hours older than
    /// the history kept, so that the tables stay bounded.
    pub async fn forget_old_sending(&self, now: i64) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM correspondent WHERE last_sent <= ?")
            .bind(now - CORRESPONDENT_MEMORY)
            .execute(&self.pool)
            .await?;
        sqlx::query("DELETE FROM sending_hour WHERE hour < ?")
            .bind(now / HOUR - HOURS_KEPT)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// One message a user sent, for [`Store::remember_sending`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sending {
    pub address: String,
    pub recipients: Vec<String>,
    /// How many of them were first-time.
    pub new: u64,
    /// Unix seconds.
    pub at: i64,
}

/// Recipients compared without case: what most mailboxes do, and the
/// cautious side (a thief gains nothing by changing the case of a known one).
pub fn correspondent_key(recipient: &str) -> String {
    recipient.to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store_with_alice() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).await.expect("open");
        store.add_domain("example.com").await.expect("domain");
        store
            .add_user("alice@example.com", "h")
            .await
            .expect("user");
        (dir, store)
    }

    #[tokio::test]
    async fn first_time_recipients_and_the_busiest_hour() {
        let (_dir, store) = store_with_alice().await;
        let alice = "alice@example.com";
        let t0 = 1_796_000_000 / HOUR * HOUR;
        let rcpts = [
            "Bob@Remote.example".to_string(),
            "carol@remote.example".into(),
        ];
        assert_eq!(store.first_time(alice, &rcpts, t0).await.expect("q"), rcpts);
        let sent = |new, at| Sending {
            address: alice.into(),
            recipients: rcpts[..1].to_vec(),
            new,
            at,
        };
        store
            .remember_sending(&[sent(1, t0), sent(0, t0 + 1)])
            .await
            .expect("remember");
        store.count_bounces(alice, 1, t0 + 2).await.expect("bounce");
        assert_eq!(
            store
                .first_time(
                    alice,
                    &["bob@remote.example".to_string(), rcpts[1].clone()],
                    t0
                )
                .await
                .expect("q"),
            [rcpts[1].clone()]
        );
        assert_eq!(
            store
                .first_time(alice, &rcpts[..1], t0 + CORRESPONDENT_MEMORY + 1)
                .await
                .expect("q")
                .len(),
            1,
            "forgotten after a year"
        );
        // The current and the last hour are not the user's normal.
        let busiest = |now| store.busiest_hour(alice, now - 7 * 86_400, now);
        assert_eq!(busiest(t0 + HOUR).await.expect("q"), HourCounts::default());
        assert_eq!(
            busiest(t0 + 2 * HOUR).await.expect("q"),
            HourCounts {
                messages: 2,
                new_recipients: 1,
                bounces: 1
            }
        );
        // Not an account: nothing kept.
        let root = Sending {
            address: "root".into(),
            recipients: rcpts.to_vec(),
            new: 2,
            at: t0,
        };
        store.remember_sending(&[root]).await.expect("remember");
        assert_eq!(
            store.first_time("root", &rcpts, t0).await.expect("q").len(),
            2
        );

        store
            .forget_old_sending(t0 + (HOURS_KEPT + 2) * HOUR)
            .await
            .expect("forget");
        assert_eq!(
            busiest(t0 + 2 * HOUR).await.expect("q"),
            HourCounts::default()
        );
    }

    #[tokio::test]
    async fn a_hold_keeps_its_first_reason_and_a_password_change_ends_it() {
        let (_dir, store) = store_with_alice().await;
        let alice = "alice@example.com";
        assert!(store.hold_user(alice, "a burst", 10).await.expect("hold"));
        assert!(!store.hold_user(alice, "another", 20).await.expect("hold"));
        let hold = Hold {
            since: 10,
            reason: "a burst".into(),
        };
        assert_eq!(
            store.standing(alice).await.expect("q").hold,
            Some(hold.clone())
        );
        assert_eq!(
            store.held_users().await.expect("q"),
            [(alice.to_string(), hold)]
        );
        store.set_password(alice, "h2").await.expect("passwd");
        let standing = store.standing(alice).await.expect("q");
        assert_eq!(standing.hold, None);
        assert!(standing.hold_ended.is_some() && standing.password_changed.is_some());
        assert!(!store.release_user(alice, 30).await.expect("release"));
        assert!(store.hold_user(alice, "again", 40).await.expect("hold"));
        assert!(store.release_user(alice, 50).await.expect("release"));
        assert_eq!(store.standing(alice).await.expect("q").hold_ended, Some(50));
        assert!(matches!(
            store.hold_user("nobody@example.com", "x", 1).await,
            Err(StoreError::NoSuchUser(_))
        ));
        assert_eq!(
            store.standing("root").await.expect("q"),
            Standing::default()
        );
    }
}
