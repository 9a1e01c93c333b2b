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
    let mut conn = raw_connection(dir.path()).await;
    sqlx::query("DELETE FROM body_chunk WHERE message_id = ? AND seq = 1")
        .bind(id.as_str())
        .execute(&mut conn)
        .await
        .expect("damage");
    match spool.body(&id).await {
        Err(SpoolError::Corrupt { id: named, what }) => {
            assert_eq!(named, id.as_str());
            assert!(what.contains("1520 of its 2500 octets"), "{what}");
        }
        other => panic!("not an error: {other:?}"),
    }
}
