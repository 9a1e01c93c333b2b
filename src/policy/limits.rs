//! Size, recipient and hop limits, and the per-session error budget.

use super::Verdict;
use crate::smtp::reply::Reply;

/// RFC 1870: a declared SIZE over the limit is refused at MAIL FROM.
pub fn check_declared_size(declared: u64, max: u64) -> Verdict {
    if declared > max {
        Verdict::Reject(Reply::new(
            552,
            (3, 4),
            format!("Message size exceeds fixed limit of {max} octets"),
        ))
    } else {
        Verdict::Accept
    }
}

/// RFC 5321 §4.5.3.1.8: past the limit the reply is 452 and the client sends the
/// rest in another transaction.
pub fn check_recipient_count(already: usize, max: usize) -> Verdict {
    if already >= max {
        Verdict::Reject(Reply::new(
            452,
            (5, 3),
            format!("Error: too many recipients (at most {max} per message)"),
        ))
    } else {
        Verdict::Accept
    }
}

/// Postfix's hopcount_limit: a message with this many Received: lines is in a
/// loop, or close enough.
pub const MAX_HOPS: usize = 50;

/// Refuses a message that has already made `MAX_HOPS` hops (its Received: lines).
pub fn check_hop_count(received: usize) -> Verdict {
    if received >= MAX_HOPS {
        Verdict::Reject(Reply::new(554, (4, 6), "Too many hops"))
    } else {
        Verdict::Accept
    }
}

/// Counts protocol errors; past the budget the session ends with 421.
#[derive(Debug, Clone, Copy)]
pub struct ErrorBudget {
    errors: u32,
    max: u32,
}

impl ErrorBudget {
    pub fn new(max: u32) -> ErrorBudget {
        ErrorBudget { errors: 0, max }
    }

    /// Records one error; true when the budget is spent.
    pub fn spend(&mut self) -> bool {
        self.errors += 1;
        self.errors >= self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_the_limits() {
        assert_eq!(check_declared_size(100, 100), Verdict::Accept);
        assert!(matches!(check_declared_size(101, 100), Verdict::Reject(r) if r.code == 552));
        assert_eq!(check_recipient_count(99, 100), Verdict::Accept);
        assert!(matches!(check_recipient_count(100, 100), Verdict::Reject(r) if r.code == 452));
        assert_eq!(check_hop_count(MAX_HOPS - 1), Verdict::Accept);
        let Verdict::Reject(r) = check_hop_count(MAX_HOPS) else {
            panic!("50 hops must be refused");
        };
        assert_eq!(r.to_string(), "554 5.4.6 Too many hops");
        let mut b = ErrorBudget::new(3);
        assert!(!b.spend());
        assert!(!b.spend());
        assert!(b.spend());
    }
}
