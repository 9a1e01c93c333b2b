//! The wall clock as the spool, the store and the reports record it: whole
//! seconds since the Unix epoch.

use std::time::{SystemTime, UNIX_EPOCH};

/// How long ago Unix time `then` was, roughly: `42s`, `17m`, `5h`, `3d`.
pub fn age(then: i64) -> String {
    match (now_unix() - then).max(0) {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// Seconds since 1970-01-01 UTC; 0 if the clock is set before it.
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
