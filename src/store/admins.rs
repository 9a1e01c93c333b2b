//! Dashboard administrators (`postern admin`): a name and a password hash,
//! apart from the mail accounts, so that a mailbox password never opens
//! the dashboard.

use super::{Store, StoreError};

impl Store {
    /// Adds `name` with `password_hash`, or replaces the hash of an
    /// existing one; true when it is new.
    pub async fn set_admin(
        &self,
        name: &str,
        password_hash: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let existed: Option<String> = sqlx::query_scalar("SELECT name FROM admin WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO admin (name, password_hash, created) VALUES (?, ?, ?) \
             ON CONFLICT (name) DO UPDATE SET password_hash = excluded.password_hash",
        )
        .bind(name)
        .bind(password_hash)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(existed.is_none())
    }

    /// Removes `name`; false when there was none.
    pub async fn delete_admin(&self, name: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM admin WHERE name = ?")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The administrators' names, sorted.
    pub async fn admins(&self) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT name FROM admin ORDER BY name")
            .fetch_all(&self.pool)
            .await?)
    }

    /// The password hash of administrator `name`, if there is one.
    pub async fn admin_login(&self, name: &str) -> Result<Option<(String, String)>, StoreError> {
        Ok(
            sqlx::query_as("SELECT name, password_hash FROM admin WHERE name = ?")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn admins_are_added_replaced_and_deleted() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(dir.path()).await.expect("store");
        assert!(store.set_admin("root", "h1", 1).await.expect("add"));
        assert!(!store.set_admin("root", "h2", 2).await.expect("replace"));
        assert!(store.set_admin("ops", "h3", 3).await.expect("add"));
        assert_eq!(store.admins().await.expect("list"), ["ops", "root"]);
        assert_eq!(
            store.admin_login("root").await.expect("login"),
            Some(("root".to_string(), "h2".to_string()))
        );
        assert!(store.delete_admin("ops").await.expect("delete"));
        assert!(!store.delete_admin("ops").await.expect("delete"));
        assert_eq!(store.admin_login("ops").await.expect("login"), None);
    }
}
