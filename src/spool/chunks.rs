//! Bodies kept in the database in chunk rows (`body_chunk`), so that rows
//! pack the pages: SQLite stores a row whole in one page when it fits, and a
//! row just over half a 4 KiB page leaves the rest of that page empty. With
//! every message of ~2 KiB that was 1.98 times the message bytes on disk;
//! larger pages only moved the worst case and cost a fifth more CPU on the
//! accept path (bench/README.md, "Spool size").
//!
//! A body of at most `INLINE_MAX` octets stays in its message's row (a small
//! row packs with the others); a larger one, unless it is in a segment file,
//! is cut into `CHUNK` octets per row. `CHUNK` is what fits four to a page in
//! a WITHOUT ROWID table, whose rows stay in the page up to 1,002 octets with
//! their key. The message's `size` says how long the whole body is.

/// Bodies up to this long stay in their message's row.
pub(super) const INLINE_MAX: usize = 1000;
/// Octets per chunk row.
const CHUNK: usize = 980;
/// Chunk rows per multi-row INSERT (three bound values each).
const ROWS_PER_INSERT: usize = 256;

/// Whether a body kept in the database goes into chunk rows.
pub(super) fn chunked(body: &[u8]) -> bool {
    body.len() > INLINE_MAX
}

/// Writes each body as the chunk rows of its message.
pub(super) async fn insert(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    bodies: &[(&str, &[u8])],
) -> Result<(), sqlx::Error> {
    let rows: Vec<(&str, i64, &[u8])> = bodies
        .iter()
        .flat_map(|(id, body)| {
            body.chunks(CHUNK)
                .zip(0i64..)
                .map(move |(data, seq)| (*id, seq, data))
        })
        .collect();
    for batch in rows.chunks(ROWS_PER_INSERT) {
        let mut query = sqlx::query(super::writer::multi_row_insert(
            "body_chunk",
            &["message_id", "seq", "data"],
            batch.len(),
        ));
        for (id, seq, data) in batch {
            query = query.bind(*id).bind(*seq).bind(*data);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}
