//! The spool's tests: durability across reopen, claims and hand-off, segments.

use super::*;

fn message(n: usize) -> NewMessage {
    NewMessage {
        sender: format!("s{n}@example.com"),
        recipients: vec![
            NewRecipient {
                address: "a@example.org".into(),
                orcpt: Some("rfc822;a@example.org".into()),
                notify: None,
            },
            NewRecipient {
                address: "b@example.org".into(),
                orcpt: None,
                notify: Some("FAILURE,DELAY".into()),
            },
        ],
        dsn: DsnEnvelope {
            ret: Some("HDRS".into()),
            envid: Some(format!("env{n}")),
        },
        auth_user: None,
        smtputf8: false,
        body: format!("Subject: {n}\r\n\r\nbody\r\n").into(),
    }
}

#[tokio::test]
async fn concurrent_puts_are_all_stored_and_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open(dir.path()).await.expect("open");
    let mut tasks = Vec::new();
    for n in 0..200 {
        let s = spool.clone();
        tasks.push(tokio::spawn(async move {
            let id = QueueId::generate();
            s.put(id.clone(), message(n)).await.map(|()| id)
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.expect("join").expect("put"));
    }
    drop(spool);
    let spool = Spool::open(dir.path()).await.expect("reopen");
    let listed = spool.list().await.expect("list");
    assert_eq!(listed.len(), 200);
    let m = spool.get(&ids[7]).await.expect("get").expect("present");
    assert_eq!(m.sender, "s7@example.com");
    assert_eq!(m.recipients.len(), 2);
    assert_eq!(m.recipients[1].notify.as_deref(), Some("FAILURE,DELAY"));
    assert_eq!(m.dsn.envid.as_deref(), Some("env7"));
    assert_eq!(
        spool.body(&ids[7]).await.expect("body").expect("present"),
        b"Subject: 7\r\n\r\nbody\r\n"
    );
    assert!(spool.delete(&ids[7]).await.expect("delete"));
    assert!(!spool.delete(&ids[7]).await.expect("delete again"));
    assert_eq!(spool.list().await.expect("list").len(), 199);
}

#[tokio::test]
async fn a_fresh_message_is_handed_over_claimed_and_the_rest_waits_in_the_spool() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open(dir.path()).await.expect("open");
    // Room for the two recipients of one message only.
    let mut fresh = spool.hand_off_to(2).expect("first subscriber");
    assert!(spool.hand_off_to(2).is_none(), "one subscriber");
    assert!(spool.take_backlog(), "a new spool is looked at once");
    let first = QueueId::generate();
    spool.put(first.clone(), message(1)).await.expect("put");
    let handed = fresh.try_recv().expect("handed over");
    assert_eq!(handed.message.id, first);
    assert_eq!(handed.message.recipients.len(), 2);
    assert_eq!(&handed.body[..], b"Subject: 1\r\n\r\nbody\r\n");
    assert_eq!(spool.claimed(), 2);
    assert!(!spool.take_backlog(), "nothing waits in the spool");
    // No room left: the next one is only in the spool, and marked so.
    let second = QueueId::generate();
    spool.put(second.clone(), message(2)).await.expect("put");
    assert!(fresh.try_recv().is_err());
    assert!(spool.take_backlog());
    let claimed = spool.claim_due(now_unix(), 10).await.expect("claim");
    assert_eq!(
        claimed.iter().map(|m| m.id.clone()).collect::<Vec<_>>(),
        [second],
        "the handed-over message is not claimed twice"
    );
}

#[tokio::test]
async fn a_claim_pass_does_not_take_what_was_released_while_it_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open(dir.path()).await.expect("open");
    let id = QueueId::generate();
    spool.put(id.clone(), message(1)).await.expect("put");
    spool.claims.begin_pass();
    // As if its delivery finished while the pass's rows were read: those
    // rows predate the outcome.
    let stale = vec![(id.as_str().to_string(), recipient(0))];
    spool.release(&id, [0]);
    assert!(spool.claims.finish_pass(stale, 10).is_empty());
    spool.claims.begin_pass();
    let current = vec![(id.as_str().to_string(), recipient(0))];
    assert_eq!(spool.claims.finish_pass(current, 10).len(), 1);
}

fn large(n: usize) -> NewMessage {
    let mut m = message(n);
    m.body = format!(
        "Subject: {n}\r\n\r\n{}",
        format!("line {n}\r\n").repeat(2000)
    )
    .into();
    m
}

fn segment_files(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("spool/bodies")).map_or(0, |d| d.count())
}

/// Records the same outcome for both recipients of `message(n)` or `large(n)`.
async fn record_both(spool: &Spool, id: &QueueId, status: RecipientStatus) {
    let updates = [0, 1]
        .map(|idx| RecipientUpdate {
            idx,
            status,
            next_attempt: now_unix() + 300,
            reply: "250 or 451".into(),
        })
        .to_vec();
    spool.record(id, updates, None).await.expect("record");
}

/// Segment files left after waiting up to 3 s for them to go.
async fn segments_left_after_waiting(dir: &Path) -> usize {
    for _ in 0..60 {
        if segment_files(dir) == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    segment_files(dir)
}

#[tokio::test]
async fn large_bodies_go_to_a_segment_and_the_segment_goes_when_nothing_refers_to_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open(dir.path()).await.expect("open");
    let (delivered, deferred, small) = (
        QueueId::generate(),
        QueueId::generate(),
        QueueId::generate(),
    );
    spool.put(delivered.clone(), large(1)).await.expect("put");
    spool.put(deferred.clone(), large(2)).await.expect("put");
    spool.put(small.clone(), message(3)).await.expect("put");
    assert_eq!(segment_files(dir.path()), 1);
    for (id, n) in [(&delivered, 1), (&deferred, 2)] {
        assert_eq!(
            spool.body(id).await.expect("body").expect("present"),
            &large(n).body[..],
            "read back from the segment"
        );
    }
    record_both(&spool, &delivered, RecipientStatus::Delivered).await;
    // Waiting for a retry: the body moves into its row.
    record_both(&spool, &deferred, RecipientStatus::Queued).await;
    drop(spool);
    // After a restart the old segment is finished; the first write after
    // it lists it, and the next sweep finds nothing refers to it.
    let spool = Spool::open(dir.path()).await.expect("reopen");
    assert_eq!(
        segment_files(dir.path()),
        1,
        "a CLI-like open removes nothing"
    );
    spool
        .put(QueueId::generate(), message(4))
        .await
        .expect("put");
    record_both(&spool, &small, RecipientStatus::Delivered).await;
    assert_eq!(
        segments_left_after_waiting(dir.path()).await,
        0,
        "the segment outlived every row that referred to it"
    );
    assert_eq!(
        spool.body(&deferred).await.expect("body").expect("present"),
        &large(2).body[..],
        "the deferred body is whole in its row"
    );
    assert!(spool.body(&delivered).await.expect("body").is_none());
}

#[tokio::test]
async fn a_quiet_spool_removes_the_segment_of_delivered_mail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open(dir.path()).await.expect("open");
    let id = QueueId::generate();
    spool.put(id.clone(), large(1)).await.expect("put");
    record_both(&spool, &id, RecipientStatus::Delivered).await;
    assert_eq!(segment_files(dir.path()), 1, "still the current segment");
    assert_eq!(
        segments_left_after_waiting(dir.path()).await,
        0,
        "the idle writer kept a segment nothing refers to"
    );
}

fn recipient(idx: u32) -> QueuedRecipient {
    QueuedRecipient {
        idx,
        address: "a@example.org".into(),
        orcpt: None,
        notify: None,
        status: RecipientStatus::Queued,
        attempts: 0,
        next_attempt: 0,
        last_reply: None,
    }
}

#[tokio::test]
async fn a_recipient_is_claimed_once_until_recorded_or_released() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open(dir.path()).await.expect("open");
    let id = QueueId::generate();
    spool.put(id.clone(), message(1)).await.expect("put");
    let now = now_unix();
    let first = spool.claim_due(now, 10).await.expect("claim");
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].recipients.len(), 2);
    assert!(
        spool.claim_due(now, 10).await.expect("claim").is_empty(),
        "claimed once"
    );
    // Another handle on the same spool (as the CLI opens it) changes nothing.
    let other = Spool::open(dir.path()).await.expect("open again");
    assert_eq!(other.list().await.expect("list").len(), 1);
    assert!(spool.claim_due(now, 10).await.expect("claim").is_empty());
    let later = now + 300;
    let updates = vec![
        RecipientUpdate {
            idx: 0,
            status: RecipientStatus::Delivered,
            next_attempt: now,
            reply: "250 ok".into(),
        },
        RecipientUpdate {
            idx: 1,
            status: RecipientStatus::Queued,
            next_attempt: later,
            reply: "451 later".into(),
        },
    ];
    spool.record(&id, updates, None).await.expect("record");
    assert!(
        spool.claim_due(now, 10).await.expect("claim").is_empty(),
        "deferred until later"
    );
    assert_eq!(spool.next_due(now).await.expect("next"), Some(later));
    assert_eq!(spool.retry(Some(&id)).await.expect("retry"), 1);
    let again = spool.claim_due(now_unix(), 10).await.expect("claim");
    assert_eq!(
        again[0]
            .recipients
            .iter()
            .map(|r| r.idx)
            .collect::<Vec<_>>(),
        [1]
    );
    spool.release(&id, [1]);
    assert_eq!(
        spool.claim_due(now_unix(), 10).await.expect("claim").len(),
        1,
        "released claims come back"
    );
}

/// Why the writer opens a new connection after a failed commit (issue #9):
/// when SQLite ends a transaction by itself (it does on SQLITE_FULL and
/// SQLITE_IOERR), sqlx still counts it as open, because its ROLLBACK then
/// fails. Its next `begin` is a SAVEPOINT; after a statement fails inside
/// that one, sqlx's ROLLBACK TO leaves SQLite's transaction open, and from then
/// on every "commit" only releases a nested savepoint: the writer reports
/// success for rows that never reach the disk. A raw ROLLBACK stands in for
/// the full disk here.
#[tokio::test]
async fn sqlx_loses_commits_after_sqlite_ends_a_transaction_itself() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = crate::sqlite::options(&dir.path().join("t.sqlite"));
    let mut conn = SqliteConnection::connect_with(&options)
        .await
        .expect("open");
    sqlx::query("CREATE TABLE t (n INTEGER PRIMARY KEY)")
        .execute(&mut conn)
        .await
        .expect("create");
    let mut tx = conn.begin().await.expect("begin");
    // SQLite rolls back on its own, as after a failed commit on a full disk.
    sqlx::query("ROLLBACK")
        .execute(&mut *tx)
        .await
        .expect("rollback");
    drop(tx);
    // A statement fails inside the next transaction, with only the statement undone.
    let mut tx = conn.begin().await.expect("begin");
    sqlx::query("INSERT INTO t VALUES (1)")
        .execute(&mut *tx)
        .await
        .expect("insert");
    assert!(
        sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&mut *tx)
            .await
            .is_err()
    );
    drop(tx);
    // From here on, commits succeed and nothing is committed.
    let mut tx = conn.begin().await.expect("begin");
    sqlx::query("INSERT INTO t VALUES (2)")
        .execute(&mut *tx)
        .await
        .expect("insert");
    tx.commit().await.expect("sqlx reports the commit as done");
    let mut other = SqliteConnection::connect_with(&options)
        .await
        .expect("open");
    let seen: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t")
        .fetch_one(&mut other)
        .await
        .expect("count");
    assert_eq!(
        seen, 0,
        "if sqlx now commits here, the reconnect in writer.rs is only a safeguard"
    );
}

/// A spilled body: written by a "session" to its own segment, then queued
/// with only the new headers in its row.
async fn spill(spool: &Spool, text: &[u8]) -> SpillFile {
    let mut file = spool.spill().await.expect("spill");
    for part in text.chunks(1000) {
        file.write(part.to_vec()).await.expect("write");
    }
    file.finish().await.expect("finish");
    file
}

#[tokio::test]
async fn a_spilled_body_is_queued_in_place_and_goes_with_its_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open(dir.path()).await.expect("open");
    let received = "x".repeat(300_000) + "\r\n";
    let file = spill(&spool, received.as_bytes()).await;
    let mut new = message(1);
    new.body = "Received: by test\r\n".into();
    let id = QueueId::generate();
    spool.put_spilled(id.clone(), new, file).await.expect("put");
    drop(spool);
    let spool = Spool::open(dir.path()).await.expect("reopen");
    let stored = spool.body(&id).await.expect("body").expect("present");
    assert_eq!(
        stored,
        [b"Received: by test\r\n", received.as_bytes()].concat()
    );
    let listed = spool.get(&id).await.expect("get").expect("present");
    assert_eq!(listed.size, stored.len() as u64);
    // Deferred, it stays in its segment (nothing would be freed by moving it).
    spool
        .put(QueueId::generate(), message(2))
        .await
        .expect("put");
    record_both(&spool, &id, RecipientStatus::Queued).await;
    assert_eq!(segment_files(dir.path()), 1);
    assert_eq!(spool.body(&id).await.expect("body"), Some(stored));
    record_both(&spool, &id, RecipientStatus::Delivered).await;
    assert_eq!(segments_left_after_waiting(dir.path()).await, 0);
}

#[tokio::test]
async fn a_spill_that_is_not_queued_leaves_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open(dir.path()).await.expect("open");
    // The client left, or the message was refused after it arrived.
    drop(spill(&spool, b"refused\r\n").await);
    assert_eq!(segment_files(dir.path()), 0);
    // A crash in the middle leaves a file: the next run removes it, and
    // never a spill that a session of that run is writing.
    let left = spill(&spool, b"crashed\r\n").await;
    std::mem::forget(left);
    drop(spool);
    let spool = Spool::open(dir.path()).await.expect("reopen");
    let mut writing = spool.spill().await.expect("spill");
    writing
        .write(b"in progress\r\n".to_vec())
        .await
        .expect("write");
    let id = QueueId::generate();
    spool.put(id.clone(), large(1)).await.expect("put");
    record_both(&spool, &id, RecipientStatus::Delivered).await;
    for _ in 0..60 {
        if segment_files(dir.path()) == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        segment_files(dir.path()),
        1,
        "only the spill in progress is left"
    );
    writing
        .write(b"more\r\n".to_vec())
        .await
        .expect("still writable");
    drop(writing);
    assert_eq!(segment_files(dir.path()), 0);
}
