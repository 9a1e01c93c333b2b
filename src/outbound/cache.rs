//! Open connections kept between messages to the same server (Postfix's
//! connection cache): a message that finishes hands its connection back, the
//! next one to that server takes it instead of connecting, greeting and
//! negotiating TLS again. Connections idle too long or open too long are
//! closed, and so is the longest idle one when the cache is full: with mail
//! to thousands of domains, kept connections would otherwise pile up (a file
//! descriptor each, here and at the other end) faster than they expire.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::client::Connection;

/// An idle connection older than this is closed rather than reused; servers
/// drop idle clients, and a stale connection costs a failed attempt.
const IDLE: Duration = Duration::from_secs(5);
/// No connection is used for longer than this (Postfix's reuse time limit).
const MAX_AGE: Duration = Duration::from_secs(300);
/// How often a `put` also looks for connections that expired.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

pub struct ConnectionCache {
    inner: Mutex<Inner>,
    per_server: usize,
    total: usize,
}

struct Inner {
    idle: HashMap<String, Vec<(Connection, Instant)>>,
    count: usize,
    swept: Instant,
}

fn fresh(conn: &Connection, since: Instant) -> bool {
    since.elapsed() < IDLE && conn.opened.elapsed() < MAX_AGE
}

impl Inner {
    /// Removes and returns the connections that are no longer worth keeping.
    fn expired(&mut self) -> Vec<Connection> {
        let mut out = Vec::new();
        for list in self.idle.values_mut() {
            let (keep, old): (Vec<_>, Vec<_>) =
                list.drain(..).partition(|(c, since)| fresh(c, *since));
            *list = keep;
            out.extend(old.into_iter().map(|(c, _)| c));
        }
        self.idle.retain(|_, list| !list.is_empty());
        self.count -= out.len();
        self.swept = Instant::now();
        out
    }

    /// Removes and returns the connection idle the longest.
    fn oldest(&mut self) -> Option<Connection> {
        let key = self
            .idle
            .iter()
            .filter_map(|(key, list)| Some((key, list.first()?.1)))
            .min_by_key(|(_, since)| *since)
            .map(|(key, _)| key.clone())?;
        let list = self.idle.get_mut(&key)?;
        let (conn, _) = list.remove(0);
        if list.is_empty() {
            self.idle.remove(&key);
        }
        self.count -= 1;
        Some(conn)
    }
}

impl ConnectionCache {
    /// A cache of at most `per_server` idle connections to one server and
    /// `total` in all.
    pub fn new(per_server: usize, total: usize) -> ConnectionCache {
        ConnectionCache {
            inner: Mutex::new(Inner {
                idle: HashMap::new(),
                count: 0,
                swept: Instant::now(),
            }),
            per_server,
            total: total.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An idle connection to the server named by `key`, if a fresh one is kept.
    pub fn take(&self, key: &str) -> Option<Connection> {
        let mut inner = self.lock();
        let list = inner.idle.get_mut(key)?;
        let mut taken = None;
        let mut dropped = 0;
        // The most recently used first: it is the least likely to be stale.
        while let Some((conn, since)) = list.pop() {
            if fresh(&conn, since) {
                taken = Some(conn);
                break;
            }
            dropped += 1;
        }
        if list.is_empty() {
            inner.idle.remove(key);
        }
        inner.count -= dropped + usize::from(taken.is_some());
        taken
    }

    /// Keeps `conn` for the next message. Returns the connections to close:
    /// `conn` itself when the server already has as many idle connections as
    /// it may have in use, else those that expired or were idle the longest
    /// when the cache is full.
    pub fn put(&self, key: String, conn: Connection) -> Vec<Connection> {
        if conn.opened.elapsed() >= MAX_AGE {
            return vec![conn];
        }
        let mut inner = self.lock();
        if inner
            .idle
            .get(&key)
            .is_some_and(|l| l.len() >= self.per_server)
        {
            return vec![conn];
        }
        let mut out = if inner.swept.elapsed() >= SWEEP_EVERY || inner.count >= self.total {
            inner.expired()
        } else {
            Vec::new()
        };
        if inner.count >= self.total {
            out.extend(inner.oldest());
        }
        inner
            .idle
            .entry(key)
            .or_default()
            .push((conn, Instant::now()));
        inner.count += 1;
        out
    }

    /// Removes and returns the connections that are no longer worth keeping.
    pub fn expired(&self) -> Vec<Connection> {
        self.lock().expired()
    }

    #[cfg(test)]
    fn count(&self) -> usize {
        self.lock().count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> Connection {
        let (ours, _theirs) = tokio::io::duplex(64);
        Connection {
            client: mail_send::SmtpClient {
                stream: Box::new(ours),
                timeout: Duration::from_secs(1),
            },
            caps: smtp_proto::EhloResponse::default(),
            opened: Instant::now(),
            tls_verified: false,
            encrypted: false,
        }
    }

    #[test]
    fn a_server_keeps_as_many_as_it_may_use() {
        let cache = ConnectionCache::new(2, 10);
        assert!(cache.put("a".into(), conn()).is_empty());
        assert!(cache.put("a".into(), conn()).is_empty());
        assert_eq!(cache.put("a".into(), conn()).len(), 1, "a third is closed");
        assert!(cache.take("a").is_some() && cache.take("a").is_some());
        assert!(cache.take("a").is_none());
        assert_eq!(cache.count(), 0);
    }

    #[test]
    fn a_full_cache_closes_the_connection_idle_longest() {
        let cache = ConnectionCache::new(4, 3);
        for key in ["a", "b", "c"] {
            assert!(cache.put(key.into(), conn()).is_empty());
        }
        assert_eq!(cache.put("d".into(), conn()).len(), 1, "at the limit");
        assert_eq!(cache.count(), 3);
        assert!(cache.take("a").is_none(), "the oldest went");
        for key in ["b", "c", "d"] {
            assert!(cache.take(key).is_some(), "{key}");
        }
    }

    #[test]
    fn stale_connections_are_not_handed_out() {
        let cache = ConnectionCache::new(4, 10);
        let mut old = conn();
        old.opened = Instant::now() - MAX_AGE;
        assert_eq!(cache.put("a".into(), old).len(), 1, "too old to keep");
        cache
            .lock()
            .idle
            .insert("b".into(), vec![(conn(), Instant::now() - IDLE)]);
        cache.lock().count += 1;
        assert!(cache.take("b").is_none());
        assert_eq!(cache.count(), 0);
    }
}
