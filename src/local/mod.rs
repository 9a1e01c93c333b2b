//! Delivery to mailboxes hosted here, for the scheduler: the mailbox must
//! exist (`store`; the postmaster always does), then the message is written
//! into its Maildir (`maildir.rs`).

pub mod maildir;

use std::path::{Path, PathBuf};

use crate::smtp::address::{AddressError, Mailbox};
use crate::store::{Store, StoreError};

/// Why a message was not delivered to a local mailbox.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("<{address}>: {source}")]
    BadAddress {
        address: String,
        source: AddressError,
    },
    #[error("the mailbox <{0}> does not exist here")]
    NoSuchMailbox(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot write the mailbox: {0}")]
    Write(std::io::Error),
    #[error(transparent)]
    Task(#[from] tokio::task::JoinError),
}

impl LocalError {
    /// Whether trying again cannot help: the address is not one of ours.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            LocalError::BadAddress { .. } | LocalError::NoSuchMailbox(_)
        )
    }
}

/// Delivers `body` from `sender` to the hosted mailbox `address` under
/// `data_dir`; returns the file written. The write runs on a blocking thread.
pub async fn deliver(
    store: &Store,
    data_dir: &Path,
    hostname: &str,
    sender: &str,
    address: &str,
    body: &[u8],
) -> Result<PathBuf, LocalError> {
    let mailbox = Mailbox::parse(address, true).map_err(|source| LocalError::BadAddress {
        address: address.to_string(),
        source,
    })?;
    if !store.mailbox_exists(&mailbox).await? && !mailbox.is_postmaster() {
        return Err(LocalError::NoSuchMailbox(address.to_string()));
    }
    let (data_dir, hostname) = (data_dir.to_path_buf(), hostname.to_string());
    let (sender, body) = (sender.to_string(), body.to_vec());
    tokio::task::spawn_blocking(move || {
        maildir::deliver(&data_dir, &hostname, &mailbox, &sender, &body)
    })
    .await?
    .map_err(LocalError::Write)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_existing_mailboxes_and_the_postmaster_receive() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(dir.path()).await.expect("store");
        store.add_domain("example.com").await.expect("domain");
        store
            .add_user("alice@example.com", "x")
            .await
            .expect("user");
        let deliver = |to: &'static str| deliver(&store, dir.path(), "mx", "", to, b"x\r\n");
        let path = deliver("Alice@example.com").await.expect("delivered");
        assert!(path.starts_with(dir.path().join("mail/example.com/alice/new")));
        assert!(deliver("postmaster@example.com").await.is_ok());
        let refused = [
            deliver("bob@example.com").await,
            deliver("a b@example.com").await,
        ];
        for e in refused {
            let e = e.expect_err("refused");
            assert!(e.is_permanent(), "{e}");
        }
        store.close().await;
        let e = deliver("alice@example.com").await.expect_err("no store");
        assert!(!e.is_permanent(), "{e}");
    }
}
