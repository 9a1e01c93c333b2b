//! Open connections kept between messages to the same server (Postfix's
//! connection cache): a message that finishes hands its connection back, the
//! next one to that server takes it instead of connecting, greeting and
//! negotiating TLS again. Connections idle too long or open too long are
//! closed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::client::Connection;

/// An idle connection older than this is closed rather than reused; servers
/// drop idle clients, and a stale connection costs a failed attempt.
const IDLE: Duration = Duration::from_secs(5);
/// No connection is used for longer than this (Postfix's reuse time limit).
const MAX_AGE: Duration = Duration::from_secs(300);

pub struct ConnectionCache {
    idle: Mutex<HashMap<String, Vec<(Connection, Instant)>>>,
    per_server: usize,
}

impl ConnectionCache {
    pub fn new(per_server: usize) -> ConnectionCache {
        ConnectionCache {
            idle: Mutex::new(HashMap::new()),
            per_server,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<(Connection, Instant)>>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An idle connection to the server named by `key`, if a fresh one is kept.
    pub fn take(&self, key: &str) -> Option<Connection> {
        let mut idle = self.lock();
        let list = idle.get_mut(key)?;
        while let Some((conn, since)) = list.pop() {
            if since.elapsed() < IDLE && conn.opened.elapsed() < MAX_AGE {
                return Some(conn);
            }
        }
        None
    }

    /// Keeps `conn` for the next message; gives it back when the server already
    /// has as many idle connections as it may have in use.
    pub fn put(&self, key: String, conn: Connection) -> Option<Connection> {
        if conn.opened.elapsed() >= MAX_AGE {
            return Some(conn);
        }
        let mut idle = self.lock();
        let list = idle.entry(key).or_default();
        if list.len() >= self.per_server {
            return Some(conn);
        }
        list.push((conn, Instant::now()));
        None
    }

    /// Removes and returns the connections that are no longer worth keeping.
    pub fn expired(&self) -> Vec<Connection> {
        let mut idle = self.lock();
        let mut out = Vec::new();
        for list in idle.values_mut() {
            let (keep, old): (Vec<_>, Vec<_>) = list
                .drain(..)
                .partition(|(c, since)| since.elapsed() < IDLE && c.opened.elapsed() < MAX_AGE);
            *list = keep;
            out.extend(old.into_iter().map(|(c, _)| c));
        }
        idle.retain(|_, list| !list.is_empty());
        out
    }
}
