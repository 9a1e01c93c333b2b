//! Bodies in chunk rows (`spool/chunks.rs`): where each size goes, that it
//! comes back whole, and that no chunk outlives its message.

use std::path::Path;

use sqlx::Row;

use super::*;

/// `message(n)` with a body of `len` octets.
fn sized(n: usize, len: usize) -> NewMessage {
    let mut m = message(n);
    let head = format!("Subject: {n}\r\n\r\n");
    let mut body = head.into_bytes();
    body.resize(len, b'x');
    m.body = body.into();
    m
}

/// (octets in the message's row, chunk rows) of message `id`.
async fn stored_as(dir: &Path, id: &QueueId) -> (i64, i64) {
    let mut conn = raw_connection(dir).await;
    let row = sqlx::query(
        "SELECT length(body) AS inline, \
         (SELECT COUNT(*) FROM body_chunk WHERE message_id = ?) AS chunks \
         FROM message WHERE id = ?",
    )
    .bind(id.as_str())
    .bind(id.as_str())
    .fetch_optional(&mut conn)
    .await
    .expect("query");
    row.map_or((-1, -1), |r| (r.get("inline"), r.get("chunks")))
}

#[tokio::test]
async fn bodies_over_1000_octets_go_into_chunk_rows_and_come_back_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open(dir.path()).await.expect("open");
    for (len, want) in [
        (crate::spool::chunks::INLINE_MAX, (1000, 0)),
        (crate::spool::chunks::INLINE_MAX + 1, (0, 2)),
        (2200, (0, 3)),
        (segments::MIN_BODY - 1, (0, 9)),
    ] {
        let id = QueueId::generate();
        put(&spool, &id, sized(len, len)).await;
        assert_eq!(stored_as(dir.path(), &id).await, want, "{len} octets");
        assert_eq!(
            spool.body(&id).await.expect("body").expect("present"),
            sized(len, len).body,
            "{len} octets"
        );
        // Delivered: the message goes, and its chunks with it.
        record_both(&spool, &id, RecipientStatus::Delivered).await;
        assert!(spool.body(&id).await.expect("body").is_none());
        assert_eq!(stored_as(dir.path(), &id).await, (-1, -1));
    }
    let mut conn = raw_connection(dir.path()).await;
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM body_chunk")
        .fetch_one(&mut conn)
        .await
        .expect("count");
    assert_eq!(left, 0, "no chunk outlives its message");
}

#[tokio::test]
async fn a_deferred_body_leaves_its_segment_for_chunk_rows_and_a_deleted_one_leaves_none() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open(dir.path()).await.expect("open");
    let (deferred, deleted) = (QueueId::generate(), QueueId::generate());
    put(&spool, &deferred, large(1)).await;
    put(&spool, &deleted, sized(2, 3000)).await;
    record_both(&spool, &deferred, RecipientStatus::Queued).await;
    let (inline, chunks) = stored_as(dir.path(), &deferred).await;
    assert_eq!(inline, 0);
    assert_eq!(chunks as usize, large(1).body.len().div_ceil(980));
    assert_eq!(
        spool.body(&deferred).await.expect("body").expect("present"),
        &large(1).body[..]
    );
    assert!(spool.delete(&deleted).await.expect("delete"));
    assert_eq!(stored_as(dir.path(), &deleted).await, (-1, -1));
}

#[tokio::test]
async fn a_missing_chunk_is_an_error_not_a_shorter_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open(dir.path()).await.expect("open");
    let id = QueueId::generate();
    put(&spool, &id, sized(1, 2500)).await;
    let sql = "DELETE FROM body_chunk WHERE message_id = ? AND seq = 1";
    damage(dir.path(), sql, &id).await;
    match spool.body(&id).await {
        Err(SpoolError::Corrupt { id: named, what }) => {
            assert_eq!(named, id.as_str());
            assert!(what.contains("1520 of its 2500 octets"), "{what}");
        }
        other => panic!("not an error: {other:?}"),
    }
}

/// Runs `sql` (its one parameter: `id`) on the database behind the
/// spool's back.
async fn damage(dir: &Path, sql: &str, id: &QueueId) {
    let mut conn = raw_connection(dir).await;
    sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
        .bind(id.as_str())
        .execute(&mut conn)
        .await
        .expect("damage");
}

/// The bodies of `ids`, asked for all at once (so read in one group), in
/// the order of `ids`.
async fn read_together(spool: &Spool, ids: &[QueueId]) -> Vec<Result<Option<Vec<u8>>, SpoolError>> {
    let mut reads = tokio::task::JoinSet::new();
    for (i, id) in ids.iter().enumerate() {
        let (spool, id) = (spool.clone(), id.clone());
        reads.spawn(async move { (i, spool.body(&id).await) });
    }
    let mut bodies: Vec<_> = reads.join_all().await;
    bodies.sort_by_key(|(i, _)| *i);
    bodies.into_iter().map(|(_, body)| body).collect()
}

/// Messages of `sizes` octets queued: their ids and bodies.
async fn queued(spool: &Spool, sizes: &[usize]) -> (Vec<QueueId>, Vec<Vec<u8>>) {
    let mut queued = (Vec::new(), Vec::new());
    for (n, len) in sizes.iter().copied().enumerate() {
        let id = QueueId::generate();
        put(spool, &id, sized(n, len)).await;
        queued.0.push(id);
        queued.1.push(sized(n, len).body.to_vec());
    }
    queued
}

#[tokio::test]
async fn bodies_asked_for_together_are_read_together_each_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open(dir.path()).await.expect("open");
    // In the row, in chunk rows, and in a segment.
    let (mut ids, bodies) = queued(&spool, &[300, 2200, segments::MIN_BODY + 10]).await;
    let mut want: Vec<Option<Vec<u8>>> = bodies.into_iter().map(Some).collect();
    // Asked twice (two destinations of one message), and one not there.
    ids.push(ids[1].clone());
    want.push(want[1].clone());
    ids.push(QueueId::generate());
    want.push(None);
    let read: Vec<Option<Vec<u8>>> = read_together(&spool, &ids)
        .await
        .into_iter()
        .map(|body| body.expect("body"))
        .collect();
    assert_eq!(read, want);
}

#[tokio::test]
async fn a_damaged_message_read_with_others_fails_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open(dir.path()).await.expect("open");
    let (ids, bodies) = queued(&spool, &[300, 2200, 500]).await;
    let sql = "UPDATE message SET size = 'big' WHERE id = ?";
    damage(dir.path(), sql, &ids[1]).await;
    let mut read = read_together(&spool, &ids).await.into_iter();
    assert_eq!(
        read.next().map(|b| b.expect("body")),
        Some(Some(bodies[0].clone()))
    );
    match read.next() {
        Some(Err(SpoolError::Corrupt { id, .. })) => assert_eq!(id, ids[1].as_str()),
        other => panic!("the damaged one: {other:?}"),
    }
    assert_eq!(
        read.next().map(|b| b.expect("body")),
        Some(Some(bodies[2].clone()))
    );
}

#[tokio::test]
async fn a_statement_that_fails_for_every_message_answers_each_with_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open(dir.path()).await.expect("open");
    let (ids, _) = queued(&spool, &[300, 2200, 500]).await;
    // The table every body read joins is gone: the group's statement fails,
    // then each message's own.
    let mut conn = raw_connection(dir.path()).await;
    sqlx::query("DROP TABLE body_chunk")
        .execute(&mut conn)
        .await
        .expect("drop");
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        read_together(&spool, &ids),
    )
    .await
    .expect("every read answered");
    for (i, body) in read.into_iter().enumerate() {
        match body {
            Err(SpoolError::Database(e)) => {
                assert!(e.to_string().contains("body_chunk"), "read {i}: {e}")
            }
            other => panic!("read {i}: {other:?}"),
        }
    }
}
