//! Which way each due recipient of a message goes this round: the router's
//! answer per recipient, grouped by destination (a group travels in one
//! delivery, under that destination's concurrency limit). A recipient the
//! router cannot place now is deferred, not guessed at.

use std::collections::HashMap;

use super::Delivery;
use crate::config::Config;
use crate::failure::DeliveryFailure;
use crate::outbound::RecipientResult;
use crate::router::{self, Destination};
use crate::spool::QueuedMessage;

/// A message's recipients for one round.
pub struct Groups {
    /// By `Destination::key`: the destination and its recipients' indexes.
    pub groups: HashMap<String, (Destination, Vec<u32>)>,
    /// Recipients that could not be routed: a transient failure each.
    pub unrouted: Vec<RecipientResult>,
}

/// Routes every recipient of `message` and groups them.
pub async fn group(delivery: &Delivery, config: &Config, message: &QueuedMessage) -> Groups {
    let mut out = Groups {
        groups: HashMap::new(),
        unrouted: Vec::new(),
    };
    // Read once per message: its MX recipients all take the same path.
    let port25_blocked = delivery.outbound.port25.is_blocked();
    for rcpt in &message.recipients {
        let routed = router::destination(
            config,
            &delivery.store,
            &message.sender,
            &rcpt.address,
            port25_blocked,
            message.tls_policy_waived,
        )
        .await;
        match routed {
            Ok(destination) => out
                .groups
                .entry(destination.key())
                .or_insert_with(|| (destination, Vec::new()))
                .1
                .push(rcpt.idx),
            Err(e) => {
                tracing::error!(event = "store_error", qid = %message.id, rcpt = %rcpt.address, error = %e);
                let failure = DeliveryFailure::local(format!("cannot tell where to deliver: {e}"));
                out.unrouted.push((rcpt.idx, Err(failure)));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::Config;
    use crate::dns::Dns;
    use crate::failure::{FailureKind, Severity};
    use crate::outbound::Outbound;
    use crate::scheduler::ActiveQueue;
    use crate::scheduler::testing::message;
    use crate::spool::Spool;
    use crate::store::Store;

    async fn delivery(dir: &std::path::Path, extra: &str) -> Delivery {
        let text = format!("hostname = \"mx.test.example\"\n{extra}");
        let config = Arc::new(Config::from_text(&text, None).expect("config"));
        let spool = Spool::open(dir).await.expect("spool");
        let store = Store::open(dir).await.expect("store");
        store.add_domain("example.com").await.expect("domain");
        let dns = Dns::new(&[]).expect("dns");
        let outbound = Outbound::new(Arc::clone(&config).into(), dns, None).expect("outbound");
        let (queue, _) = ActiveQueue::new(spool, crate::scheduler::max_claimed(&config));
        let srs = Arc::new(crate::srs::Srs::with_secret(b"the unit tests' SRS key"));
        Delivery::new(config.into(), queue, store, outbound, srs)
    }

    /// The groups as `key: [idx, …]`, sorted.
    fn keys(groups: &Groups) -> Vec<String> {
        let mut keys: Vec<String> = groups
            .groups
            .iter()
            .map(|(key, (_, idxs))| format!("{key}: {idxs:?}"))
            .collect();
        keys.sort();
        keys
    }

    #[tokio::test]
    async fn recipients_travel_together_per_destination() {
        let dir = tempfile::tempdir().expect("dir");
        let d = delivery(
            dir.path(),
            "[[route]]\ndomain = \"org.example\"\nhost = \"r1\"\n",
        )
        .await;
        let m = message(
            "app@example.com",
            0,
            &[
                "alice@example.com",
                "bob@remote.example",
                "carol@org.example",
                "dan@Remote.Example",
                "postmaster@mx.test.example",
            ],
        );
        let groups = group(&d, &d.config(), &m).await;
        assert_eq!(
            keys(&groups),
            [
                "local: [0, 4]",
                "mx:remote.example: [1, 3]",
                "relay:r1:587: [2]"
            ]
        );
        assert!(groups.unrouted.is_empty());
    }

    /// Issue #16: while port 25 is blocked, no MX delivery goes direct (no
    /// message is used as a probe: `Outbound::probe_port25` knocks instead);
    /// mail routed elsewhere is not affected; a success ends the detour.
    #[tokio::test]
    async fn while_port_25_is_blocked_mx_mail_takes_the_fallback() {
        let dir = tempfile::tempdir().expect("dir");
        let d = delivery(
            dir.path(),
            "[fallback_relay]\nhost = \"fb.example\"\n[[route]]\ndomain = \"org.example\"\nhost = \"r1\"\n",
        )
        .await;
        let addr = |n: u8| std::net::SocketAddr::from(([192, 0, 2, n], 25));
        for (n, domain) in ["a.example", "b.example", "c.example"].iter().enumerate() {
            d.outbound.port25.record_failure(domain, addr(n as u8));
        }
        assert!(d.outbound.port25.is_blocked());
        let m = message(
            "app@example.com",
            0,
            &[
                "alice@example.com",
                "carol@org.example",
                "bob@remote.example",
                "dan@remote.example",
            ],
        );
        assert_eq!(
            keys(&group(&d, &d.config(), &m).await),
            [
                "local: [0]",
                "relay:fb.example:587: [2, 3]",
                "relay:r1:587: [1]"
            ]
        );
        d.outbound.port25.record_success(addr(1));
        let m = message("app@example.com", 0, &["eve@remote.example"]);
        assert_eq!(
            keys(&group(&d, &d.config(), &m).await),
            ["mx:remote.example: [0]"]
        );
    }

    /// Issue #10: a store error while routing counted as "not hosted" and
    /// sent local mail to the MX; now the recipient is deferred.
    #[tokio::test]
    async fn a_store_error_defers_the_recipient() {
        let dir = tempfile::tempdir().expect("dir");
        let d = delivery(dir.path(), "").await;
        d.store.close().await;
        let m = message("app@example.com", 0, &["alice@example.com"]);
        let groups = group(&d, &d.config(), &m).await;
        assert!(groups.groups.is_empty(), "{:?}", keys(&groups));
        let [(0, Err(f))] = groups.unrouted.as_slice() else {
            panic!("not deferred: {:?}", groups.unrouted);
        };
        assert_eq!(
            (f.severity, f.kind),
            (Severity::Transient, FailureKind::Local)
        );
        assert!(
            f.text.starts_with("cannot tell where to deliver: "),
            "{f:?}"
        );
    }
}
