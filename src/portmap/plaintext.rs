//! The client networks whose clients spoke plaintext first on a submission
//! port lately: the listener greets them sooner (`listener::detect`, which
//! says why). Kept here with the rest of what the server learns about client
//! networks and ports.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a network whose client spoke plaintext first is remembered.
const REMEMBERED: Duration = Duration::from_secs(24 * 3600);
/// Networks remembered at most; past it the oldest go.
const MAX_NETWORKS: usize = 65_536;

/// The client networks (an IPv4 address, an IPv6 /64) whose clients said
/// EHLO in plaintext on a submission port lately, and when.
#[derive(Default)]
pub struct PlaintextFirst(Mutex<HashMap<IpAddr, Instant>>);

impl PlaintextFirst {
    /// A client at `peer` said EHLO (or HELO) in plaintext on a submission
    /// port.
    pub fn spoke_plaintext(&self, peer: IpAddr) {
        self.spoke_at(network(peer), Instant::now());
    }

    /// Whether a client of `peer`'s network spoke plaintext first within
    /// the last day.
    pub fn lately(&self, peer: IpAddr) -> bool {
        self.lately_at(network(peer), Instant::now())
    }

    fn lately_at(&self, network: IpAddr, now: Instant) -> bool {
        let seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        seen.get(&network)
            .is_some_and(|at| now.duration_since(*at) < REMEMBERED)
    }

    fn spoke_at(&self, network: IpAddr, now: Instant) {
        let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= MAX_NETWORKS && !seen.contains_key(&network) {
            seen.retain(|_, at| now.duration_since(*at) < REMEMBERED);
            if seen.len() >= MAX_NETWORKS {
                // All recent: the older half goes (one sort per 32,768 new
                // networks).
                let mut ages: Vec<Instant> = seen.values().copied().collect();
                let (_, middle, _) = ages.select_nth_unstable(MAX_NETWORKS / 2);
                let cut = *middle;
                seen.retain(|_, at| *at > cut);
            }
        }
        seen.insert(network, now);
    }
}

/// The network a client address stands for: an IPv6 host may use many
/// addresses of its /64.
fn network(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_client_stands_for_its_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().expect("ip");
        assert_eq!(network(a), network(b));
        assert_eq!(network(a), "2001:db8:1:2::".parse::<IpAddr>().expect("ip"));
        let v4: IpAddr = "192.0.2.7".parse().expect("ip");
        assert_eq!(network(v4), v4);
    }

    #[test]
    fn a_network_is_remembered_for_a_day_and_the_oldest_go_first() {
        let seen = PlaintextFirst::default();
        let now = Instant::now();
        let ip = |n: u32| IpAddr::V4(std::net::Ipv4Addr::from(n));
        seen.spoke_at(ip(1), now);
        assert!(seen.lately_at(ip(1), now + Duration::from_secs(3600)));
        assert!(!seen.lately_at(ip(1), now + REMEMBERED));
        assert!(!seen.lately_at(ip(2), now));
        for n in 0..MAX_NETWORKS as u32 {
            seen.spoke_at(ip(n), now + Duration::from_millis(u64::from(n)));
        }
        let later = now + Duration::from_secs(60);
        seen.spoke_at(ip(u32::MAX), later);
        let kept = seen.0.lock().expect("lock").len();
        assert!(kept <= MAX_NETWORKS / 2 + 1, "{kept}");
        assert!(seen.lately_at(ip(u32::MAX), later));
        assert!(
            seen.lately_at(ip(MAX_NETWORKS as u32 - 1), later),
            "the newest stay"
        );
        assert!(!seen.lately_at(ip(1), later), "the oldest went");
    }
}
