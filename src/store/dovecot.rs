//! What Dovecot reads from the store (docs/dovecot.md): the `dovecot_users`
//! view (migration 0003) and the Maildir each account shows there, which is
//! also where `local/maildir.rs` writes its mail, so the two never disagree.

use super::{Store, StoreError};
use crate::smtp::address::Mailbox;

/// A hosted mailbox's Maildir relative to `data_dir/mail`: `domain/local`.
/// The local part is encoded so that no address can name a path outside
/// `data_dir/mail` (no `/`, no leading dot).
pub fn maildir_of(mailbox: &Mailbox) -> String {
    let local: String = mailbox
        .local
        .to_lowercase()
        .chars()
        .enumerate()
        .map(|(i, c)| match c {
            'a'..='z' | '0'..='9' | '_' | '+' | '-' => c.to_string(),
            '.' if i > 0 => ".".to_string(),
            other => other
                .to_string()
                .bytes()
                .map(|b| format!("%{b:02X}"))
                .collect(),
        })
        .collect();
    let domain = mailbox.domain.replace(['/', '\\'], "_");
    format!("{domain}/{local}")
}

impl Store {
    /// Fills in the Maildir of the accounts added before the store had the
    /// column; a no-op afterwards.
    pub(super) async fn fill_maildirs(&self) -> Result<(), StoreError> {
        let missing: Vec<String> =
            sqlx::query_scalar("SELECT address FROM account WHERE maildir IS NULL")
                .fetch_all(&self.pool)
                .await?;
        for address in missing {
            // Every stored address parsed when it was added.
            let Ok(mailbox) = Mailbox::parse(&address, true) else {
                continue;
            };
            sqlx::query("UPDATE account SET maildir = ? WHERE address = ?")
                .bind(maildir_of(&mailbox))
                .bind(&address)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Row = (String, Option<String>, String, String);

    async fn dovecot_users(store: &Store) -> Vec<Row> {
        sqlx::query_as("SELECT user, password, domain, maildir FROM dovecot_users ORDER BY user")
            .fetch_all(&store.pool)
            .await
            .expect("view")
    }

    #[tokio::test]
    async fn dovecot_reads_users_passwords_and_maildirs_from_the_view() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).await.expect("open");
        store.add_domain("example.com").await.expect("domain");
        let hash = crate::auth::hash_password("pw").expect("hash");
        store
            .add_user("Alice@example.com", &hash)
            .await
            .expect("user");
        store
            .add_user("o'neil@example.com", "$argon2i$v=19$x")
            .await
            .expect("user");
        store
            .add_user("old@example.com", "$argon2d$v=19$x")
            .await
            .expect("user");
        assert_eq!(
            dovecot_users(&store).await,
            [
                (
                    "alice@example.com".into(),
                    Some(format!("{{ARGON2ID}}{hash}")),
                    "example.com".into(),
                    "example.com/alice".into()
                ),
                (
                    "o'neil@example.com".into(),
                    Some("{ARGON2I}$argon2i$v=19$x".into()),
                    "example.com".into(),
                    "example.com/o%27neil".into()
                ),
                (
                    "old@example.com".into(),
                    None,
                    "example.com".into(),
                    "example.com/old".into()
                ),
            ]
        );
        // Accounts from before the column get theirs when the store is opened.
        sqlx::query("UPDATE account SET maildir = NULL")
            .execute(&store.pool)
            .await
            .expect("forget");
        store.close().await;
        let store = Store::open(dir.path()).await.expect("reopen");
        assert_eq!(dovecot_users(&store).await[1].3, "example.com/o%27neil");
    }
}
