//! The free-space floor (Postfix's queue_minfree): while `data_dir` has less
//! free space than `[limits] min_free_space`, new mail is refused at MAIL,
//! before it is received, instead of failing at the commit after it was.
//! Each episode is logged once, when it begins and when it ends, and shows in
//! /metrics.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

/// Checks the free space of the filesystem that holds the spool.
pub struct SpaceFloor {
    dir: PathBuf,
    min_free: u64,
    low: AtomicBool,
}

/// Not enough room for a message of the declared size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LowSpace {
    pub free: u64,
}

impl SpaceFloor {
    pub fn new(dir: PathBuf, min_free: u64) -> SpaceFloor {
        SpaceFloor {
            dir,
            min_free,
            low: AtomicBool::new(false),
        }
    }

    /// Whether a message of `size` octets (0 when undeclared) leaves at least
    /// the floor free. Asks the filesystem each time: statvfs is cheaper than
    /// an SMTP command, and a cached answer would delay the recovery.
    pub fn check(&self, size: u64) -> Result<(), LowSpace> {
        if self.min_free == 0 {
            return Ok(());
        }
        let free = match rustix::fs::statvfs(&self.dir) {
            Ok(s) => s.f_bavail.saturating_mul(s.f_frsize),
            // A filesystem that cannot say is not refused for it: the commit
            // still fails safely (4xx) if it is really full.
            Err(e) => {
                tracing::warn!(event = "statvfs_failed", dir = %self.dir.display(), error = %e);
                return Ok(());
            }
        };
        metrics::gauge!("postern_spool_free_bytes").set(free as f64);
        // The episode is the disk's state alone; a large declared SIZE is
        // refused without starting one, so the log does not flap with sizes.
        let low = free < self.min_free;
        metrics::gauge!("postern_spool_low_space").set(if low { 1.0 } else { 0.0 });
        if self.low.swap(low, Ordering::Relaxed) != low {
            if low {
                tracing::warn!(
                    event = "low_space",
                    free,
                    min_free_space = self.min_free,
                    "free space in {} is below [limits] min_free_space: new mail is refused with 452 until space returns",
                    self.dir.display()
                );
            } else {
                tracing::info!(
                    event = "space_recovered",
                    free,
                    "free space is back above the floor: accepting mail again"
                );
            }
        }
        if free.saturating_sub(size) < self.min_free {
            Err(LowSpace { free })
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free_here(dir: &std::path::Path) -> u64 {
        let s = rustix::fs::statvfs(dir).expect("statvfs");
        s.f_bavail * s.f_frsize
    }

    #[test]
    fn refuses_at_the_floor_and_recovers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let free = free_here(dir.path());
        // The free space moves a little while the test runs: stay clear of it.
        let floor = SpaceFloor::new(dir.path().to_path_buf(), free / 2);
        assert_eq!(floor.check(0), Ok(()));
        assert!(floor.check(free / 2 + free / 4).is_err(), "SIZE counts");
        assert_eq!(floor.check(free / 4), Ok(()), "recovers at once");
        let full = SpaceFloor::new(dir.path().to_path_buf(), free * 2);
        assert!(full.check(0).is_err());
        let off = SpaceFloor::new(dir.path().to_path_buf(), 0);
        assert_eq!(off.check(u64::MAX), Ok(()), "0 turns the floor off");
    }
}
