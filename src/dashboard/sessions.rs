//! Signed-in administrators: a random session token (the cookie) and a
//! random CSRF token (in every form) per sign-in, kept in memory for
//! `LIFETIME`. A restart signs everyone out, which is the safe direction.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::RngCore;

/// How long a sign-in lasts.
pub const LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// Sign-ins kept at once; the oldest goes first past it.
const MAX_SESSIONS: usize = 1_000;

#[derive(Debug, Clone)]
pub struct Session {
    pub admin: String,
    pub csrf: String,
    /// The administrator's password hash at sign-in: a new password (or a
    /// deleted account) ends the session.
    hash: String,
    expires: Instant,
    /// Order of sign-in, for pushing out the oldest.
    seq: u64,
}

#[derive(Default)]
pub struct Sessions {
    by_token: Mutex<HashMap<String, Session>>,
    started: std::sync::atomic::AtomicU64,
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Sessions {
    /// Signs `admin` (whose password hash is `hash`) in; returns the
    /// session token.
    pub fn start(&self, admin: &str, hash: &str) -> String {
        let token = random_token();
        let now = Instant::now();
        let mut map = self.by_token.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, s| s.expires > now);
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.seq)
                .map(|(t, _)| t.clone())
        {
            map.remove(&oldest);
        }
        map.insert(
            token.clone(),
            Session {
                admin: admin.to_string(),
                csrf: random_token(),
                hash: hash.to_string(),
                expires: now + LIFETIME,
                seq: self
                    .started
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            },
        );
        token
    }

    /// The live session of `token`.
    pub fn get(&self, token: &str) -> Option<Session> {
        let map = self.by_token.lock().unwrap_or_else(|p| p.into_inner());
        map.get(token)
            .filter(|s| s.expires > Instant::now())
            .cloned()
    }

    pub fn end(&self, token: &str) {
        self.by_token
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(token);
    }
}

impl Session {
    /// Whether the administrator's password hash is still the one signed in with.
    pub fn is_for(&self, hash: &str) -> bool {
        self.hash == hash
    }

    /// Whether `offered` is this session's CSRF token, compared in constant
    /// time.
    pub fn csrf_matches(&self, offered: &str) -> bool {
        aws_lc_rs::constant_time::verify_slices_are_equal(self.csrf.as_bytes(), offered.as_bytes())
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_found_by_its_token_until_it_ends() {
        let sessions = Sessions::default();
        let token = sessions.start("root", "h");
        let session = sessions.get(&token).expect("session");
        assert_eq!(session.admin, "root");
        assert!(session.is_for("h") && !session.is_for("another hash"));
        assert!(session.csrf_matches(&session.csrf.clone()));
        assert!(!session.csrf_matches(""));
        assert!(
            !session.csrf_matches(&token),
            "the cookie is not the CSRF token"
        );
        assert!(sessions.get("nope").is_none());
        sessions.end(&token);
        assert!(sessions.get(&token).is_none());
    }

    #[test]
    fn sessions_past_the_cap_push_out_the_oldest() {
        let sessions = Sessions::default();
        let first = sessions.start("a", "h");
        for _ in 1..MAX_SESSIONS {
            sessions.start("b", "h");
        }
        assert!(sessions.get(&first).is_some());
        sessions.start("c", "h");
        assert!(sessions.get(&first).is_none());
    }
}
