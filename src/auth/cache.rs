//! `VerifiedCache`: remembers for a short time that a password matched a
//! user's stored hash, so a client that logs in once per message (phones,
//! scripts) pays for argon2 once per `ttl` instead of on every connection
//! (Dovecot's auth cache). `Authenticator` asks it before hashing and tells it
//! of each success; failures never reach it.
//!
//! An entry is an HMAC-SHA256, under a key drawn at start and kept only in this
//! process, over the user, the password and the stored PHC string. So the
//! cache holds nothing an offline guesser could test passwords against, and a
//! new password (a new PHC string, written by `postern user passwd` in another
//! process) or a deleted account misses at once: `Authenticator` reads the
//! account from the store on every login and hands its current hash here.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_lc_rs::{constant_time, hmac, rand};

/// Successful verifications of the last `ttl`, at most `capacity` users.
pub struct VerifiedCache {
    key: hmac::Key,
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<String, Entry>>,
}

struct Entry {
    tag: hmac::Tag,
    verified: Instant,
}

impl VerifiedCache {
    /// A cache whose entries last `ttl`; `None` when `ttl` is zero (off) or the
    /// system has no randomness for the key.
    pub fn new(ttl: Duration, capacity: usize) -> Option<VerifiedCache> {
        if ttl.is_zero() || capacity == 0 {
            return None;
        }
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rand::SystemRandom::new()).ok()?;
        Some(VerifiedCache {
            key,
            ttl,
            capacity,
            entries: Mutex::new(HashMap::new()),
        })
    }

    fn tag(&self, user: &str, password: &str, stored_hash: &str) -> hmac::Tag {
        let mut mac = hmac::Context::with_key(&self.key);
        // Each part with its length first, so no two different triples can
        // run together into the same input.
        for part in [user, password, stored_hash] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        mac.sign()
    }

    /// Whether `password` was verified against exactly `stored_hash` for
    /// `user` less than `ttl` before `now`.
    pub fn contains(&self, user: &str, password: &str, stored_hash: &str, now: Instant) -> bool {
        let tag = self.tag(user, password, stored_hash);
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.get(user).is_some_and(|e| {
            now.saturating_duration_since(e.verified) < self.ttl
                && constant_time::verify_slices_are_equal(e.tag.as_ref(), tag.as_ref()).is_ok()
        })
    }

    /// Records that `password` matched `stored_hash` for `user` at `now`,
    /// replacing the user's earlier entry. Call it after a success only: a
    /// failure that left a trace here would tell a guesser something.
    pub fn insert(&self, user: &str, password: &str, stored_hash: &str, now: Instant) {
        let tag = self.tag(user, password, stored_hash);
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= self.capacity && !entries.contains_key(user) {
            // Clear-oldest, not LRU: a hit does not extend an entry (the TTL
            // bounds how long one verification is trusted, as in Dovecot), so
            // the oldest verification is also the next to expire. First drop
            // what has expired; if every entry is live, the oldest goes. The
            // scan is O(capacity), only when full, and follows an argon2 check
            // that costs a thousand times more.
            entries.retain(|_, e| now.saturating_duration_since(e.verified) < self.ttl);
            if entries.len() >= self.capacity
                && let Some(oldest) = entries
                    .iter()
                    .min_by_key(|(_, e)| e.verified)
                    .map(|(u, _)| u.clone())
            {
                entries.remove(&oldest);
            }
        }
        entries.insert(user.to_string(), Entry { tag, verified: now });
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(300);
    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";

    fn cache(capacity: usize) -> VerifiedCache {
        VerifiedCache::new(TTL, capacity).expect("cache")
    }

    #[test]
    fn a_verified_password_is_remembered_until_the_ttl() {
        let c = cache(10);
        let t0 = Instant::now();
        assert!(!c.contains("a@example.com", "pw", HASH, t0));
        c.insert("a@example.com", "pw", HASH, t0);
        assert!(c.contains("a@example.com", "pw", HASH, t0));
        assert!(c.contains(
            "a@example.com",
            "pw",
            HASH,
            t0 + TTL - Duration::from_nanos(1)
        ));
        assert!(!c.contains("a@example.com", "pw", HASH, t0 + TTL));
    }

    #[test]
    fn another_password_user_or_stored_hash_misses() {
        let c = cache(10);
        let t0 = Instant::now();
        c.insert("a@example.com", "pw", HASH, t0);
        assert!(!c.contains("a@example.com", "pW", HASH, t0));
        assert!(!c.contains("a@example.com", "", HASH, t0));
        assert!(!c.contains("b@example.com", "pw", HASH, t0));
        // `postern user passwd` wrote a new hash: the old password no longer
        // matches what the store holds, even before the TTL.
        let new_hash = HASH.replace("c2FsdHNhbHQ", "bmV3c2FsdA");
        assert!(!c.contains("a@example.com", "pw", &new_hash, t0));
        // Parts cannot be shifted into each other.
        c.insert("a", "bc", HASH, t0);
        assert!(!c.contains("a", "b", &format!("c{HASH}"), t0));
    }

    #[test]
    fn a_new_verification_replaces_the_users_entry() {
        let c = cache(10);
        let t0 = Instant::now();
        c.insert("a@example.com", "old", HASH, t0);
        let new_hash = HASH.replace("c2FsdHNhbHQ", "bmV3c2FsdA");
        c.insert(
            "a@example.com",
            "new",
            &new_hash,
            t0 + Duration::from_secs(1),
        );
        assert_eq!(c.len(), 1);
        assert!(c.contains("a@example.com", "new", &new_hash, t0 + TTL));
        assert!(!c.contains("a@example.com", "old", HASH, t0));
    }

    #[test]
    fn at_capacity_the_expired_then_the_oldest_entries_go() {
        let c = cache(3);
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        for (i, user) in ["a", "b", "c"].into_iter().enumerate() {
            c.insert(user, "pw", HASH, t0 + s * i as u32);
        }
        // At the limit every entry stays.
        assert_eq!(c.len(), 3);
        for user in ["a", "b", "c"] {
            assert!(c.contains(user, "pw", HASH, t0 + 2 * s));
        }
        // One more: the oldest (a) goes.
        c.insert("d", "pw", HASH, t0 + 3 * s);
        assert_eq!(c.len(), 3);
        assert!(!c.contains("a", "pw", HASH, t0 + 3 * s));
        for user in ["b", "c", "d"] {
            assert!(c.contains(user, "pw", HASH, t0 + 3 * s));
        }
        // Once b and c have expired, a new entry clears both and keeps d.
        c.insert("e", "pw", HASH, t0 + TTL + 2 * s);
        assert_eq!(c.len(), 2);
        assert!(c.contains("d", "pw", HASH, t0 + TTL + 2 * s));
        assert!(c.contains("e", "pw", HASH, t0 + TTL + 2 * s));
        // Refreshing a present user at capacity evicts nobody.
        let c = cache(1);
        c.insert("a", "pw", HASH, t0);
        c.insert("a", "pw", HASH, t0 + s);
        assert!(c.contains("a", "pw", HASH, t0 + s));
    }

    #[test]
    fn a_zero_ttl_turns_the_cache_off() {
        assert!(VerifiedCache::new(Duration::ZERO, 10).is_none());
        assert!(VerifiedCache::new(TTL, 0).is_none());
    }

    #[test]
    fn two_caches_never_share_a_tag() {
        // The key is random per process: an entry is no function of the
        // password an attacker could compute elsewhere.
        let (a, b) = (cache(1), cache(1));
        assert_ne!(
            a.tag("u", "pw", HASH).as_ref(),
            b.tag("u", "pw", HASH).as_ref()
        );
    }
}
