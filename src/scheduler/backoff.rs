//! When to try again: the first retry after `retry_min`, then twice as long each
//! time up to `retry_max`, each delay moved by up to ±10% so that messages
//! deferred together do not all come back together. Pure.

use std::time::Duration;

/// The delay before attempt `attempts + 1`, given `attempts` made so far (≥ 1),
/// and `jitter` in [-1, 1].
pub fn delay(attempts: u32, min: Duration, max: Duration, jitter: f64) -> Duration {
    let doublings = attempts.saturating_sub(1).min(30);
    let base = min.saturating_mul(1u32 << doublings).min(max);
    let factor = 1.0 + 0.1 * jitter.clamp(-1.0, 1.0);
    base.mul_f64(factor).max(Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_from_minutes_to_hours_and_stops_growing() {
        let (min, max) = (Duration::from_secs(300), Duration::from_secs(4 * 3600));
        let table: Vec<u64> = (1..=9).map(|a| delay(a, min, max, 0.0).as_secs()).collect();
        assert_eq!(
            table,
            [300, 600, 1200, 2400, 4800, 9600, 14400, 14400, 14400]
        );
        assert_eq!(delay(u32::MAX, min, max, 0.0).as_secs(), 14400);
        assert_eq!(delay(1, min, max, 1.0).as_secs(), 330);
        assert_eq!(delay(1, min, max, -1.0).as_secs(), 270);
    }
}
