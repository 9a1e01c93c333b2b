//! The spool's tests: durability across reopen, what is due, hold and
//! release, the summary, segments, damaged rows; the listing's are in
//! `listing.rs`.

use std::path::Path;

use sqlx::{Connection, Row, SqliteConnection};

use super::*;
use crate::clock::now_unix;
use crate::failure::FailureKind;

mod chunks;
mod listing;

/// A connection of its own to the spool database under `dir`, beside the
/// spool's: to look at or damage rows as a test needs.
async fn raw_connection(dir: &Path) -> SqliteConnection {
    let options = crate::sqlite::options(&dir.join("spool/queue.sqlite"));
    SqliteConnection::connect_with(&options)
        .await
        .expect("open")
}

async fn put(spool: &Spool, id: &QueueId, message: NewMessage) -> QueuedMessage {
    spool.put(id.clone(), message, None).await.expect("put")
}

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
        requiretls: false,
        tls_policy_waived: false,
        held: false,
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
            s.put(id.clone(), message(n), None).await.map(|_| id)
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.expect("join").expect("put"));
    }
    drop(spool);
    let spool = Spool::open(dir.path()).await.expect("reopen");
    let listed = spool
        .pages(ListFilter::default(), None, LIST_PAGE)
        .all()
        .await
        .expect("list");
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
    assert_eq!(
        spool
            .pages(ListFilter::default(), None, LIST_PAGE)
            .all()
            .await
            .expect("list")
            .len(),
        199
    );
}

#[tokio::test]
async fn put_returns_the_state_that_is_read_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open(dir.path()).await.expect("open");
    let id = QueueId::generate();
    let queued = put(&spool, &id, message(1)).await;
    assert_eq!(queued.recipients.len(), 2);
    assert_eq!(queued.size, message(1).body.len() as u64);
    let stored = spool.get(&id).await.expect("get").expect("present");
    assert_eq!(stored, queued, "created, due times and all agree");
    let due = spool.due(queued.created, 10).await.expect("due");
    assert_eq!(due, [queued]);
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
            kind: None,
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
    put(&spool, &delivered, large(1)).await;
    put(&spool, &deferred, large(2)).await;
    put(&spool, &small, message(3)).await;
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
    put(&spool, &QueueId::generate(), message(4)).await;
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
    put(&spool, &id, large(1)).await;
    record_both(&spool, &id, RecipientStatus::Delivered).await;
    assert_eq!(segment_files(dir.path()), 1, "still the current segment");
    assert_eq!(
        segments_left_after_waiting(dir.path()).await,
        0,
        "the idle writer kept a segment nothing refers to"
    );
}

#[tokio::test]
async fn due_recipients_come_earliest_first_until_recorded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open(dir.path()).await.expect("open");
    let id = QueueId::generate();
    put(&spool, &id, message(1)).await;
    let now = now_unix();
    let first = spool.due(now, 10).await.expect("due");
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].recipients.len(), 2);
    assert_eq!(spool.due(now, 1).await.expect("due")[0].recipients.len(), 1);
    let later = now + 300;
    let updates = vec![
        RecipientUpdate {
            idx: 0,
            status: RecipientStatus::Delivered,
            next_attempt: now,
            reply: "250 ok".into(),
            kind: None,
        },
        RecipientUpdate {
            idx: 1,
            status: RecipientStatus::Queued,
            next_attempt: later,
            reply: "451 later".into(),
            kind: Some(FailureKind::Unreachable { port: 25 }),
        },
    ];
    spool.record(&id, updates, None).await.expect("record");
    assert!(
        spool.due(now, 10).await.expect("due").is_empty(),
        "deferred until later"
    );
    assert_eq!(spool.next_due(now).await.expect("next"), Some(later));
    assert_eq!(
        spool
            .retry_kind("unreachable:2525", None)
            .await
            .expect("retry"),
        0,
        "another kind of failure"
    );
    let other = QueueId::generate();
    assert_eq!(
        spool
            .retry_kind("unreachable:25", Some(&other))
            .await
            .expect("retry"),
        0,
        "another message"
    );
    assert_eq!(
        spool
            .retry_kind("unreachable:25", Some(&id))
            .await
            .expect("retry"),
        1
    );
    assert!(!spool.due(now_unix(), 10).await.expect("due").is_empty());
    assert_eq!(
        spool
            .retry_kind("unreachable:25", None)
            .await
            .expect("retry"),
        0,
        "due already"
    );
    assert_eq!(spool.retry(Some(&id)).await.expect("retry"), 1);
    let again = spool.due(now_unix(), 10).await.expect("due");
    assert_eq!(
        again[0]
            .recipients
            .iter()
            .map(|r| (r.idx, r.attempts))
            .collect::<Vec<_>>(),
        [(1, 1)]
    );
    assert_eq!(
        again[0].recipients[0].last_kind,
        Some(FailureKind::Unreachable { port: 25 }),
        "the kind of failure is kept with the outcome"
    );
    // Another handle on the same spool (as the CLI opens it) sees the same.
    let other = Spool::open(dir.path()).await.expect("open again");
    assert_eq!(
        other.get(&id).await.expect("get"),
        spool.get(&id).await.expect("get")
    );
}

async fn state_of(spool: &Spool, id: &QueueId) -> &'static str {
    spool.get(id).await.expect("get").expect("present").state()
}

#[tokio::test]
async fn a_held_message_is_not_due_until_released_and_an_outcome_keeps_it_held() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open(dir.path()).await.expect("open");
    let (held, other) = (QueueId::generate(), QueueId::generate());
    put(&spool, &held, message(1)).await;
    put(&spool, &other, message(2)).await;
    assert_eq!(spool.hold(&held).await.expect("hold"), 2);
    let now = now_unix();
    let due = spool.due(now, 10).await.expect("due");
    assert_eq!(due.iter().map(|m| &m.id).collect::<Vec<_>>(), [&other]);
    assert_eq!(state_of(&spool, &held).await, "held");
    assert_eq!(spool.retry(None).await.expect("retry"), 2, "retry skips it");
    // A delivery that was under way when the hold came defers it: still held.
    record_both(&spool, &held, RecipientStatus::Queued).await;
    assert!(
        spool
            .due(now + 600, 10)
            .await
            .expect("due")
            .iter()
            .all(|m| m.id != held)
    );
    assert_eq!(state_of(&spool, &held).await, "held");
    assert_eq!(spool.release_held(&held).await.expect("release"), 2);
    assert_eq!(
        spool.release_held(&held).await.expect("release"),
        0,
        "not held"
    );
    let due = spool.due(now_unix(), 10).await.expect("due");
    assert!(
        due.iter().any(|m| m.id == held),
        "due at once when released"
    );
    assert_eq!(state_of(&spool, &held).await, "deferred");
    assert_eq!(spool.hold(&QueueId::generate()).await.expect("hold"), 0);
}

#[tokio::test]
async fn the_summary_counts_recipients_by_state_and_domain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open(dir.path()).await.expect("open");
    assert_eq!(spool.summary().await.expect("summary"), Summary::default());
    let ids: Vec<QueueId> = (0..4).map(|_| QueueId::generate()).collect();
    let mut oldest = None;
    for (n, id) in ids.iter().enumerate() {
        let mut m = message(n);
        m.recipients[1].address = format!("\"x@y\"@Domain{}.Example", n % 2);
        let queued = put(&spool, id, m).await;
        oldest = oldest.or(Some(queued.created));
    }
    // ids[0]: delivered to a@, deferred for the other; ids[1] held.
    let updates = vec![
        RecipientUpdate {
            idx: 0,
            status: RecipientStatus::Delivered,
            next_attempt: 0,
            reply: "250".into(),
            kind: None,
        },
        RecipientUpdate {
            idx: 1,
            status: RecipientStatus::Queued,
            next_attempt: now_unix() + 60,
            reply: "451".into(),
            kind: None,
        },
    ];
    spool.record(&ids[0], updates, None).await.expect("record");
    spool.hold(&ids[1]).await.expect("hold");
    let summary = spool.summary().await.expect("summary");
    let counts = |d: &[(&str, u64)]| {
        d.iter()
            .map(|(domain, recipients)| DomainCount {
                domain: domain.to_string(),
                recipients: *recipients,
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        summary,
        Summary {
            messages: 4,
            oldest,
            queued: 4,
            deferred: 1,
            held: 2,
            destinations: counts(&[
                ("example.org", 3),
                ("domain0.example", 2),
                ("domain1.example", 2),
            ]),
        }
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
    let queued = spool.put(id.clone(), new, Some(file)).await.expect("put");
    drop(spool);
    let spool = Spool::open(dir.path()).await.expect("reopen");
    let stored = spool.body(&id).await.expect("body").expect("present");
    assert_eq!(
        stored,
        [b"Received: by test\r\n", received.as_bytes()].concat()
    );
    let listed = spool.get(&id).await.expect("get").expect("present");
    assert_eq!(listed.size, stored.len() as u64);
    assert_eq!(listed, queued);
    // Deferred, it stays in its segment (nothing would be freed by moving it).
    put(&spool, &QueueId::generate(), message(2)).await;
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
    put(&spool, &id, large(1)).await;
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

/// Issue #10 item 2: a row that does not read back as what was written (here
/// changed behind Postern's back) is an error naming the message, never a
/// panic or a made-up value; the rest of the queue is still delivered.
#[tokio::test]
async fn a_damaged_row_is_an_error_and_the_rest_is_still_due() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open(dir.path()).await.expect("open");
    let (good, bad, odd_id) = (
        QueueId::generate(),
        QueueId::generate(),
        QueueId::generate(),
    );
    for id in [&good, &bad, &odd_id] {
        put(&spool, id, message(0)).await;
    }
    let mut conn = raw_connection(dir.path()).await;
    for (sql, id) in [
        (
            "UPDATE recipient SET status = 'lost' WHERE message_id = ? AND idx = 1",
            &bad,
        ),
        (
            "UPDATE recipient SET last_kind = 'gremlins' WHERE message_id = ? AND idx = 0",
            &bad,
        ),
        ("UPDATE message SET size = 'big' WHERE id = ?", &odd_id),
    ] {
        sqlx::query(sql)
            .bind(id.as_str())
            .execute(&mut conn)
            .await
            .expect("damage");
    }
    for id in [&bad, &odd_id] {
        match spool.get(id).await {
            Err(SpoolError::Corrupt { id: named, what }) => {
                assert_eq!(named, id.as_str(), "{what}");
            }
            other => panic!("not a damaged row: {other:?}"),
        }
    }
    // The listing stops at the first damaged message, named.
    let first_damaged = [&bad, &odd_id].into_iter().min().expect("two").as_str();
    match spool.pages(ListFilter::default(), None, 1).all().await {
        Err(SpoolError::Corrupt { id, .. }) => assert_eq!(id, first_damaged),
        other => panic!("not a damaged row: {other:?}"),
    }
    let due = spool.due(now_unix() + 1, 100).await.expect("due");
    let ids: Vec<&QueueId> = due.iter().map(|m| &m.id).collect();
    assert_eq!(ids, [&good], "only the undamaged message is due");
}
