//! Races between a delivery round and the claim passes.

use std::sync::Arc;

use super::testing::{Gate, Gated};
use super::*;
use crate::dns::Dns;
use crate::spool::{NewMessage, Spool};

/// Waits for `what` to happen, failing the test if it does not soon.
async fn within(event: impl std::future::Future<Output = ()>, what: &str) {
    tokio::time::timeout(std::time::Duration::from_secs(20), event)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within 20 s"));
}

/// A port on 127.0.0.1 that nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// CI failure of `delivery::a_provider_that_drops_port_25_is_detoured_within_a_minute`
/// (31 messages at the fallback relay for 30 recipients): a round deferred
/// its recipient for port 25 just before the block was noticed; while it
/// made the recipient due again (`retry_kind`), the scheduler's own
/// `port25_retry` had made it due and a claim pass had claimed it for the
/// next round; then the first round's end-of-round `release` gave up that
/// claim, the next claim pass claimed the recipient a second time, and two
/// rounds delivered it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_that_ends_does_not_give_up_the_claims_of_the_next() {
    let dir = tempfile::tempdir().expect("dir");
    let port = closed_port();
    let text = format!(
        "hostname = \"mx.test.example\"\n[delivery]\nmx_port = {port}\nconnect_timeout = 2\n\
         [fallback_relay]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n",
        closed_port()
    );
    let config = Arc::new(Config::from_text(&text, None).expect("config"));
    let plain = Spool::open(dir.path()).await.expect("spool");
    let (record, retry) = (Arc::new(Gate::default()), Arc::new(Gate::default()));
    let gated = Gated {
        record: Some(Arc::clone(&record)),
        retry_one: Some(Arc::clone(&retry)),
        ..Gated::over(&plain)
    };
    let spool = Spool::new(gated, dir.path());
    let store = Store::open(dir.path()).await.expect("store");
    let dns = Dns::new(&[]).expect("dns");
    let outbound = Outbound::new(Arc::clone(&config).into(), dns, None).expect("outbound");
    let (queue, _hand_offs) = ActiveQueue::new(spool, max_claimed(&config));
    let srs = Arc::new(crate::srs::Srs::with_secret(b"the unit tests' SRS key"));
    let delivery = Arc::new(Delivery::new(
        Arc::clone(&config).into(),
        queue.clone(),
        store,
        outbound,
        srs,
    ));

    let id = QueueId::generate();
    let new = NewMessage::generated(
        "app@example.com".into(),
        &["m0@[127.0.0.1]"],
        b"Subject: x\r\n\r\nhi\r\n".to_vec(),
    );
    plain.put(id.clone(), new, None).await.expect("put");
    let mut first = queue.claim_due(now_unix(), 10).await.expect("claim");
    assert_eq!(first.len(), 1);
    let round = tokio::spawn(deliver_message(
        Arc::clone(&delivery),
        first.remove(0),
        None,
    ));

    // The round failed to reach port 25 and records its deferral; port 25
    // is found blocked (by other rounds) just now.
    within(record.entered.notified(), "the round records").await;
    let addr = |n: u8| std::net::SocketAddr::from(([192, 0, 2, n], 25));
    for (n, domain) in ["a.example", "b.example", "c.example"].iter().enumerate() {
        delivery
            .outbound
            .port25
            .record_failure(domain, addr(n as u8));
    }
    assert!(delivery.outbound.port25.detouring());
    record.open.notify_one();

    // The round makes its recipient due again; meanwhile the scheduler's
    // `port25_retry` did, and a claim pass claimed it for the next round.
    within(
        retry.entered.notified(),
        "the round makes its recipient due",
    )
    .await;
    let token = FailureKind::Unreachable { port }.token();
    assert_eq!(plain.retry_kind(&token, None).await.expect("retry"), 1);
    let next = queue.claim_due(now_unix(), 10).await.expect("claim");
    assert_eq!(next.len(), 1, "the next round takes it");
    assert_eq!(queue.claimed(), 1);
    retry.open.notify_one();
    round.await.expect("round");

    // The next round is still delivering it: nobody else may claim it.
    let again = queue.claim_due(now_unix(), 10).await.expect("claim");
    assert!(
        again.is_empty(),
        "claimed twice, delivered twice: {:?}",
        again
            .iter()
            .map(|m| (&m.id, m.recipients.len()))
            .collect::<Vec<_>>()
    );
    assert_eq!(queue.claimed(), 1, "the next round's claim is kept");
}

/// However a round ends, a panic included, the claims it did not record go
/// back: those recipients are due again instead of claimed until a restart.
#[tokio::test]
async fn a_round_that_ends_early_gives_back_the_claims_it_did_not_record() {
    let dir = tempfile::tempdir().expect("dir");
    let spool = Spool::open(dir.path()).await.expect("spool");
    let (queue, _hand_offs) = ActiveQueue::new(spool.clone(), 10);
    let id = QueueId::generate();
    let new = NewMessage::generated(
        "app@example.com".into(),
        &["a@example.org", "b@example.org", "c@example.org"],
        b"Subject: x\r\n\r\nhi\r\n".to_vec(),
    );
    spool.put(id.clone(), new, None).await.expect("put");
    let claimed = queue.claim_due(now_unix(), 10).await.expect("claim");
    assert_eq!(queue.claimed(), 3);
    let round = {
        let queue = queue.clone();
        let message = claimed[0].clone();
        std::thread::spawn(move || {
            let mut claims = RoundClaims {
                queue,
                id: message.id.clone(),
                idxs: message.recipients.iter().map(|r| r.idx).collect(),
            };
            // Recipient 0's outcome went to `record`, which gives up its
            // claim itself; then the round fails.
            claims.recorded([0]);
            panic!("a round that fails");
        })
    };
    assert!(round.join().is_err(), "the round panicked");
    assert_eq!(
        queue.claimed(),
        1,
        "1 and 2 given back; 0 is record's to give up"
    );
}
