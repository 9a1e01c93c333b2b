//! The facts `route` decides on, gathered for one recipient of a queued
//! message: the domains of both addresses, and whether the recipient's is
//! hosted here (asked of `store`).

use super::{Destination, RouteFacts, route};
use crate::config::Config;
use crate::store::{Store, StoreError};

/// Where mail from `sender` to `recipient` goes now, with port 25 blocked or
/// not. A store that cannot say whether the domain is hosted here is an
/// error, for the caller to try again later: guessing "not hosted" would send
/// local mail out to the MX.
pub async fn destination(
    config: &Config,
    store: &Store,
    sender: &str,
    recipient: &str,
    port25_blocked: bool,
    tls_policy_waived: bool,
) -> Result<Destination, StoreError> {
    let recipient_domain = domain(recipient).unwrap_or_default();
    let hosted =
        recipient_domain == config.hostname || store.is_hosted_domain(&recipient_domain).await?;
    let sender_domain = domain(sender);
    let facts = RouteFacts {
        recipient_domain: &recipient_domain,
        sender_domain: sender_domain.as_deref(),
        hosted,
        port25_blocked,
        tls_policy_waived,
    };
    Ok(route(config, facts))
}

/// The domain of an address, in lower case; `None` without one (the null
/// sender).
fn domain(address: &str) -> Option<String> {
    address.rsplit_once('@').map(|(_, d)| d.to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store(dir: &std::path::Path) -> Store {
        let store = Store::open(dir).await.expect("store");
        store.add_domain("example.com").await.expect("domain");
        store
    }

    #[tokio::test]
    async fn hosted_domains_and_the_host_name_are_local() {
        let dir = tempfile::tempdir().expect("dir");
        let store = store(dir.path()).await;
        let config = Config::from_text(
            "hostname = \"mx.test.example\"\n[[route]]\nsender_domain = \"customer.example\"\nhost = \"isp\"\n",
            None,
        )
        .expect("config");
        let to = |sender: &'static str, rcpt: &'static str| {
            let (config, store) = (&config, &store);
            async move {
                destination(config, store, sender, rcpt, false, false)
                    .await
                    .expect("routed")
                    .key()
            }
        };
        assert_eq!(to("", "bob@Example.COM").await, "local");
        assert_eq!(to("", "postmaster@mx.test.example").await, "local");
        assert_eq!(
            to("a@Customer.Example", "bob@else.example").await,
            "relay:isp:587"
        );
        assert_eq!(to("", "bob@else.example").await, "mx:else.example");
    }

    /// Issue #10: a store error used to count as "not hosted" and sent local
    /// mail to the MX.
    #[tokio::test]
    async fn a_store_error_is_an_error_not_a_remote_domain() {
        let dir = tempfile::tempdir().expect("dir");
        let store = store(dir.path()).await;
        let config = Config::from_text("hostname = \"mx.test.example\"\n", None).expect("config");
        store.close().await;
        let routed = destination(&config, &store, "", "bob@example.com", false, false).await;
        assert!(routed.is_err(), "{routed:?}");
        // The host name needs no store.
        let routed = destination(
            &config,
            &store,
            "",
            "postmaster@mx.test.example",
            false,
            false,
        )
        .await;
        assert_eq!(routed.expect("local").key(), "local");
    }
}
