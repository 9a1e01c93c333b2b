//! The Sender Rewriting Scheme (SRS0, as postsrsd and Exim write it), for
//! mail an alias forwards to another domain: the next server checks SPF for
//! the envelope sender's domain, and this server is not among the original
//! sender's, so the sender becomes an address of the alias's domain that
//! carries the original and a keyed hash:
//! `SRS0=HHHHHH=TT=example.org=bob@alias-domain`. A bounce to it comes back
//! here and is sent on to bob@example.org, if the hash is ours and the
//! timestamp (days, base32, mod 1024) is at most `MAX_AGE_DAYS` old; any
//! other SRS0 address of a hosted domain is refused (no open relay through
//! made-up SRS addresses). Written by hand: no maintained Rust crate does it,
//! and it is a keyed hash and a string format.

use std::path::Path;

use aws_lc_rs::{hmac, rand};

/// How long a rewritten address is honoured: a bounce comes within days.
pub const MAX_AGE_DAYS: i64 = 21;
const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
/// Characters of the hash in an address.
const HASH_LEN: u32 = 6;

pub struct Srs {
    key: hmac::Key,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SrsError {
    #[error("it is not an SRS address this server wrote")]
    NotOurs,
    #[error("it is more than {MAX_AGE_DAYS} days old")]
    Expired,
}

impl Srs {
    /// The key in `data_dir/srs.key`, made (random, 0600) when missing.
    pub fn load(data_dir: &Path) -> std::io::Result<Srs> {
        let path = data_dir.join("srs.key");
        let secret = match std::fs::read(&path) {
            Ok(secret) if secret.len() >= 16 => secret,
            _ => {
                let mut secret = [0u8; 32];
                rand::fill(&mut secret).map_err(|_| std::io::Error::other("no randomness"))?;
                crate::private_file::write(&path, &secret)?;
                secret.to_vec()
            }
        };
        Ok(Srs::with_secret(&secret))
    }

    pub fn with_secret(secret: &[u8]) -> Srs {
        Srs {
            key: hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret),
        }
    }

    /// `sender` rewritten as an address of `domain`; `now` in Unix seconds.
    /// `None` when it cannot be: a quoted local part, an address that is
    /// already an SRS one (of another forwarder: SRS1 is not written), or a
    /// result whose local part would pass RFC 5321's 64 octets (a VERP
    /// return path), which the next server and this one's RCPT refuse.
    pub fn forward(&self, sender: &str, domain: &str, now: i64) -> Option<String> {
        let (local, sender_domain) = sender.rsplit_once('@')?;
        let is_srs = local
            .get(..5)
            .is_some_and(|p| p.eq_ignore_ascii_case("SRS0=") || p.eq_ignore_ascii_case("SRS1="));
        if local.starts_with('"') || is_srs || sender_domain.is_empty() {
            return None;
        }
        let stamp = timestamp(now);
        let hash = self.hash(&stamp, sender_domain, local);
        let new_local = format!("SRS0={hash}={stamp}={sender_domain}={local}");
        (new_local.len() <= 64).then(|| format!("{new_local}@{domain}"))
    }

    /// The original sender of an SRS0 address (its local part given),
    /// checked; `None` when the local part is not SRS0 at all.
    pub fn reverse(&self, local: &str, now: i64) -> Option<Result<String, SrsError>> {
        let rest = local
            .get(..5)
            .filter(|p| p.eq_ignore_ascii_case("SRS0="))
            .map(|_| &local[5..])?;
        let mut parts = rest.splitn(4, '=');
        let (Some(hash), Some(stamp), Some(domain), Some(original)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Some(Err(SrsError::NotOurs));
        };
        // Mail servers may change the case of a local part.
        let expected = self.hash(&stamp.to_ascii_uppercase(), domain, original);
        if domain.is_empty() || !hash.eq_ignore_ascii_case(&expected) {
            return Some(Err(SrsError::NotOurs));
        }
        let Some(days) = decode_timestamp(stamp) else {
            return Some(Err(SrsError::NotOurs));
        };
        let today = now.div_euclid(86_400).rem_euclid(1024);
        if (today - days).rem_euclid(1024) > MAX_AGE_DAYS {
            return Some(Err(SrsError::Expired));
        }
        Some(Ok(format!("{original}@{domain}")))
    }

    /// Six base32 characters (30 bits, whatever the case) of the HMAC of the
    /// timestamp and the address, lower-cased (the hash must survive a change
    /// of case), the parts kept apart so that no other split of the same
    /// characters has the same hash.
    fn hash(&self, stamp: &str, domain: &str, local: &str) -> String {
        let data = format!("{stamp}\0{domain}\0{local}").to_ascii_lowercase();
        let tag = hmac::sign(&self.key, data.as_bytes());
        let bits = tag
            .as_ref()
            .iter()
            .take(4)
            .fold(0u32, |acc, &b| acc << 8 | u32::from(b));
        (0..HASH_LEN)
            .map(|i| BASE32[(bits >> (5 * i) & 31) as usize] as char)
            .collect()
    }
}

/// Days since the epoch, mod 1024, in two base32 characters.
fn timestamp(now: i64) -> String {
    let days = now.div_euclid(86_400).rem_euclid(1024) as usize;
    [BASE32[days >> 5], BASE32[days & 31]]
        .iter()
        .map(|&b| b as char)
        .collect()
}

fn decode_timestamp(stamp: &str) -> Option<i64> {
    let value = |c: u8| {
        BASE32
            .iter()
            .position(|&b| b == c.to_ascii_uppercase())
            .map(|p| p as i64)
    };
    match stamp.as_bytes() {
        [a, b] => Some(value(*a)? << 5 | value(*b)?),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_796_000_000;

    #[test]
    fn a_forwarded_sender_comes_back_whole_and_checked() {
        let srs = Srs::with_secret(b"a secret of sixteen or more");
        let rewritten = srs
            .forward("Bob.Smith@Example.org", "alias.example", NOW)
            .expect("rewritten");
        assert!(rewritten.starts_with("SRS0="), "{rewritten}");
        assert!(
            rewritten.ends_with("=Example.org=Bob.Smith@alias.example"),
            "{rewritten}"
        );
        let local = rewritten.split('@').next().expect("local");
        assert_eq!(
            srs.reverse(local, NOW + 3 * 86_400),
            Some(Ok("Bob.Smith@Example.org".to_string()))
        );
        // A server that lower-cased it.
        assert_eq!(
            srs.reverse(&local.to_lowercase(), NOW),
            Some(Ok("bob.smith@example.org".to_string()))
        );
        assert_eq!(
            srs.reverse(local, NOW + (MAX_AGE_DAYS + 1) * 86_400),
            Some(Err(SrsError::Expired))
        );
        let other = Srs::with_secret(b"another secret of sixteen");
        assert_eq!(other.reverse(local, NOW), Some(Err(SrsError::NotOurs)));
        let forged = local.replace("Bob.Smith", "mallory");
        assert_eq!(srs.reverse(&forged, NOW), Some(Err(SrsError::NotOurs)));
        assert_eq!(srs.reverse("SRS0=abcd", NOW), Some(Err(SrsError::NotOurs)));
        assert_eq!(srs.reverse("bob", NOW), None);
        // Moving characters between the domain and the local part: not ours.
        let shifted = srs
            .forward("omspam@victim.c", "alias.example", NOW)
            .expect("rewritten")
            .replace("=victim.c=omspam@", "=victim.com=spam@");
        let local = shifted.split('@').next().expect("local");
        assert_eq!(srs.reverse(local, NOW), Some(Err(SrsError::NotOurs)));
    }

    #[test]
    fn what_cannot_be_rewritten_is_left() {
        let srs = Srs::with_secret(b"a secret of sixteen or more");
        let long = format!("{}@lists.example", "bounce-".repeat(8));
        assert_eq!(srs.forward(&long, "alias.example", NOW), None);
        assert_eq!(srs.forward("\"a b\"@x.example", "alias.example", NOW), None);
        assert_eq!(
            srs.forward("SRS0=x=y=z=w@other.example", "alias.example", NOW),
            None
        );
        assert_eq!(srs.forward("nobody", "alias.example", NOW), None);
    }

    #[test]
    fn timestamps_wrap_every_1024_days() {
        for day in [0, 1, 31, 32, 1023, 1024, 5000] {
            let stamp = timestamp(day * 86_400);
            assert_eq!(decode_timestamp(&stamp), Some(day % 1024), "{stamp}");
        }
    }
}
