//! Delivery to mailboxes hosted here, for the scheduler: the mailbox must
//! exist (`store`; the postmaster always does), then the message is written
//! into its Maildir (`maildir.rs`), or handed to the LMTP server `[local]`
//! names for its domain (`lmtp.rs`), one session for all its recipients.

pub mod lmtp;
pub mod maildir;

use std::path::PathBuf;

use crate::config::{Config, Lmtp};
use crate::failure::{DeliveryFailure, FailureKind, Severity};
use crate::outbound::{Envelope, Rcpt, RecipientResult};
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
    #[error("{} is not a directory: a symbolic link is not followed in a mailbox", .0.display())]
    NotADirectory(PathBuf),
    #[error("cannot give {} to {owner} ([local]): {reason}; the server must run as root (or with CAP_CHOWN) to set a Maildir's owner or group", path.display())]
    Owner {
        path: PathBuf,
        /// "owner vmail, group vmail"
        owner: String,
        reason: String,
    },
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

impl From<LocalError> for DeliveryFailure {
    fn from(e: LocalError) -> DeliveryFailure {
        if e.is_permanent() {
            DeliveryFailure::new(
                Severity::Permanent,
                FailureKind::NoSuchMailbox,
                e.to_string(),
            )
        } else {
            DeliveryFailure::local(e.to_string())
        }
    }
}

/// Delivers `env` to its recipients, all hosted here: a result per recipient.
pub async fn deliver(store: &Store, config: &Config, env: &Envelope<'_>) -> Vec<RecipientResult> {
    let mut results = Vec::with_capacity(env.recipients.len());
    // Per LMTP server, its recipients, by their canonical address.
    let mut by_lmtp: Vec<(&Lmtp, Vec<(&Rcpt<'_>, String)>)> = Vec::new();
    for r in &env.recipients {
        let mailbox = match hosted_mailbox(store, r.address, &config.hostname).await {
            Ok(mailbox) => mailbox,
            Err(e) => {
                results.push((r.idx, Err(e.into())));
                continue;
            }
        };
        match config.local.lmtp_for(&mailbox.domain) {
            Some(server) => {
                let canonical = mailbox.canonical();
                match by_lmtp.iter_mut().find(|(s, _)| *s == server) {
                    Some((_, rcpts)) => rcpts.push((r, canonical)),
                    None => by_lmtp.push((server, vec![(r, canonical)])),
                }
            }
            None => {
                let written = write_maildir(config, env, mailbox).await;
                let result = written
                    .map(|path| format!("delivered to maildir {}", path.display()))
                    .map_err(DeliveryFailure::from);
                results.push((r.idx, result));
            }
        }
    }
    for (server, rcpts) in by_lmtp {
        let env = Envelope {
            recipients: rcpts
                .iter()
                .map(|(r, canonical)| Rcpt {
                    address: canonical,
                    ..**r
                })
                .collect(),
            // Dovecot's LMTP does not announce SMTPUTF8 and would refuse the
            // parameter, yet stores UTF-8 headers as they are: this is the
            // final delivery, with nobody after it to downgrade for.
            smtputf8: false,
            // Its last hop, on this machine or the host's own network.
            requiretls: false,
            ..*env
        };
        results.extend(lmtp::deliver(server, config, &env).await);
    }
    results
}

/// The hosted mailbox `address` names, if it exists here. At the host name,
/// when it is not a hosted domain, an address with no mailbox (root,
/// `postern sendmail`'s users: the bounce of their mail) is the
/// postmaster's, as Postfix's luser_relay makes it.
async fn hosted_mailbox(
    store: &Store,
    address: &str,
    hostname: &str,
) -> Result<Mailbox, LocalError> {
    let mailbox = Mailbox::parse(address, true).map_err(|source| LocalError::BadAddress {
        address: address.to_string(),
        source,
    })?;
    if mailbox.is_postmaster() || store.mailbox_exists(&mailbox).await? {
        return Ok(mailbox);
    }
    if mailbox.domain == hostname && !store.is_hosted_domain(hostname).await? {
        tracing::info!(
            event = "local_user_to_postmaster",
            recipient = %mailbox,
            "no mailbox {mailbox}: the postmaster gets it"
        );
        return Ok(Mailbox {
            local: "postmaster".into(),
            domain: mailbox.domain,
        });
    }
    Err(LocalError::NoSuchMailbox(address.to_string()))
}

/// Writes the message into `mailbox`'s Maildir on a blocking thread.
async fn write_maildir(
    config: &Config,
    env: &Envelope<'_>,
    mailbox: Mailbox,
) -> Result<PathBuf, LocalError> {
    let (data_dir, hostname) = (config.data_dir.clone(), config.hostname.clone());
    let local = config.local.clone();
    let (sender, body) = (env.sender.to_string(), env.body.to_vec());
    tokio::task::spawn_blocking(move || {
        maildir::deliver(&data_dir, &hostname, &local, &mailbox, &sender, &body)
    })
    .await?
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn deliver_one(
        store: &Store,
        config: &Config,
        to: &str,
    ) -> Result<String, DeliveryFailure> {
        let env = Envelope {
            sender: "",
            recipients: vec![Rcpt {
                idx: 7,
                address: to,
                orcpt: None,
                notify: None,
            }],
            body: b"x\r\n",
            smtputf8: false,
            requiretls: false,
            ret: None,
            envid: None,
        };
        let mut results = deliver(store, config, &env).await;
        assert_eq!(results.len(), 1);
        let (idx, result) = results.remove(0);
        assert_eq!(idx, 7);
        result
    }

    #[tokio::test]
    async fn only_existing_mailboxes_and_the_postmaster_receive() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(dir.path()).await.expect("store");
        store.add_domain("example.com").await.expect("domain");
        store
            .add_user("alice@example.com", "x")
            .await
            .expect("user");
        let mut config = Config::builtin();
        config.data_dir = dir.path().to_path_buf();
        let delivered = deliver_one(&store, &config, "Alice@example.com")
            .await
            .expect("delivered");
        let maildir = dir.path().join("mail/example.com/alice/new");
        assert!(
            delivered.starts_with(&format!("delivered to maildir {}", maildir.display())),
            "{delivered}"
        );
        assert!(
            deliver_one(&store, &config, "postmaster@example.com")
                .await
                .is_ok()
        );
        for to in ["bob@example.com", "a b@example.com"] {
            let f = deliver_one(&store, &config, to).await.expect_err("refused");
            assert_eq!(f.severity, Severity::Permanent, "{f}");
        }
        // At the host name (not hosted here), a name with no mailbox is
        // the postmaster's: the bounce of cron's mail from root reaches it.
        config.hostname = "mx.test.example".into();
        let delivered = deliver_one(&store, &config, "root@mx.test.example")
            .await
            .expect("to the postmaster");
        assert!(
            delivered.contains("mail/mx.test.example/postmaster/new"),
            "{delivered}"
        );
        store.add_domain("mx.test.example").await.expect("domain");
        deliver_one(&store, &config, "root@mx.test.example")
            .await
            .expect_err("a hosted host name has its own mailboxes");
        store.close().await;
        let f = deliver_one(&store, &config, "alice@example.com")
            .await
            .expect_err("no store");
        assert_eq!(f.severity, Severity::Transient, "{f}");
    }
}
