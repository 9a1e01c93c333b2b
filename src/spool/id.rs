//! `QueueId`: the name of one queued message, the same string in the 250 reply,
//! the logs and `postern queue`. Time-ordered (ids sort by arrival), short and
//! made only of characters that are safe in replies, file names and shells.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Crockford's base32: no I, L, O or U to misread.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueId(String);

impl QueueId {
    /// A new id: 50 bits of microseconds since the epoch, then 20 bits that make
    /// ids from one process unique within a microsecond and across processes
    /// (random start, then a counter).
    pub fn generate() -> QueueId {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        static START: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        let start = *START.get_or_init(rand::random::<u32>);
        let seq = start.wrapping_add(COUNTER.fetch_add(1, Ordering::Relaxed)) & 0xF_FFFF;
        let value: u128 = (u128::from(micros & ((1 << 50) - 1)) << 20) | u128::from(seq);
        let mut s = String::with_capacity(14);
        for i in (0..14).rev() {
            s.push(ALPHABET[((value >> (i * 5)) & 31) as usize] as char);
        }
        QueueId(s)
    }

    /// Accepts an id typed by a user; `None` if it cannot be one of ours.
    pub fn parse(s: &str) -> Option<QueueId> {
        let upper = s.trim().to_ascii_uppercase();
        (upper.len() == 14 && upper.bytes().all(|b| ALPHABET.contains(&b)))
            .then_some(QueueId(upper))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_ordered_and_parse_back() {
        let ids: Vec<QueueId> = (0..1000).map(|_| QueueId::generate()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), ids.len());
        for id in &ids {
            assert_eq!(
                QueueId::parse(&id.to_string().to_lowercase()).as_ref(),
                Some(id)
            );
        }
        assert_eq!(QueueId::parse("../etc/passwd"), None);
    }
}
