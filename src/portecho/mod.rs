//! The server's half of `postern check`'s interception test: a probe puts a
//! random token in its EHLO name on every port; the server remembers, for a
//! short time, on which of its own ports each token arrived, and tells the probe
//! when asked. A port that answered the probe but never passed its token on is
//! intercepted on the way. Only the holder of a token can ask about it, so the
//! registry reveals nothing else; it is bounded in size and age. The answer
//! also says which address the question came from: behind NAT, the check
//! learns the public address its network sends from (its ISP is found from it).

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a token is remembered.
const TTL: Duration = Duration::from_secs(600);
/// Most tokens remembered at once; beyond it the oldest are forgotten.
const MAX_TOKENS: usize = 10_000;

/// The EHLO name of a probe: `check-<32 hex>.postern.invalid`.
pub fn token_of_ehlo(name: &str) -> Option<&str> {
    let token = name
        .strip_prefix("check-")?
        .strip_suffix(".postern.invalid")?;
    (token.len() == 32 && token.bytes().all(|b| b.is_ascii_hexdigit())).then_some(token)
}

#[derive(Default)]
pub struct EchoRegistry {
    seen: Mutex<HashMap<String, (Instant, BTreeSet<u16>)>>,
}

impl EchoRegistry {
    /// Notes that `token` arrived on local port `port`.
    pub fn record(&self, token: &str, port: u16) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if seen.len() >= MAX_TOKENS {
            seen.retain(|_, (t, _)| now.duration_since(*t) < TTL);
            if seen.len() >= MAX_TOKENS
                && let Some(oldest) = seen
                    .iter()
                    .min_by_key(|(_, (t, _))| *t)
                    .map(|(k, _)| k.clone())
            {
                seen.remove(&oldest);
            }
        }
        seen.entry(token.to_ascii_lowercase())
            .or_insert_with(|| (now, BTreeSet::new()))
            .1
            .insert(port);
    }

    /// The ports `token` was seen on, in order (empty if unknown or expired).
    pub fn ports(&self, token: &str) -> Vec<u16> {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        match seen.get(&token.to_ascii_lowercase()) {
            Some((t, ports)) if t.elapsed() < TTL => ports.iter().copied().collect(),
            _ => Vec::new(),
        }
    }

    /// The answer to `NOOP postern-echo <token>` from `peer`, whose token
    /// was seen on `ports`: the ports, and the address the server saw the
    /// question come from (the client's public address, even behind NAT).
    pub fn reply_text(ports: &[u16], peer: IpAddr) -> String {
        let list = if ports.is_empty() {
            "none".to_string()
        } else {
            ports
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        format!("Ok; postern-echo ports={list} addr={}", peer.to_canonical())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_recognised_and_remembered_per_port() {
        let t = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            token_of_ehlo(&format!("check-{t}.postern.invalid")),
            Some(t)
        );
        assert_eq!(token_of_ehlo("check-xyz.postern.invalid"), None);
        assert_eq!(token_of_ehlo("mail.example.com"), None);
        let r = EchoRegistry::default();
        let peer: IpAddr = "::ffff:192.0.2.7".parse().expect("ip");
        assert_eq!(
            EchoRegistry::reply_text(&r.ports(t), peer),
            "Ok; postern-echo ports=none addr=192.0.2.7"
        );
        r.record(t, 587);
        r.record(t, 25);
        r.record(t, 587);
        assert_eq!(
            EchoRegistry::reply_text(
                &r.ports(&t.to_uppercase()),
                "2001:db8::1".parse().expect("ip")
            ),
            "Ok; postern-echo ports=25,587 addr=2001:db8::1"
        );
    }

    #[test]
    fn the_registry_stays_bounded() {
        let r = EchoRegistry::default();
        for i in 0..(MAX_TOKENS + 10) {
            r.record(&format!("{i:032x}"), 25);
        }
        assert!(r.seen.lock().map(|s| s.len()).unwrap_or(0) <= MAX_TOKENS);
    }
}
