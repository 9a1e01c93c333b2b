//! The latest `postern check` run from each client network: which of the
//! server's ports its probes reached (the port echo, recorded when the probe
//! asks `NOOP postern-echo`). Kept in memory only, under a lock of its own
//! (a check never waits for the port map's sessions): at most `MAX_CHECKS`
//! networks, and `CHECKS_PER_BLOCK` of one wider block.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};

use super::{DAY, SWITCHED_SHOWN, WEEK_DAYS, network_of, oldest_eighth, prefix_of};
use crate::clock::now_unix;

/// Networks whose latest check is remembered at most; beyond it the oldest
/// checks go.
const MAX_CHECKS: usize = 10_000;
/// Networks of one wider block (/16, /32: one ISP's, or one attacker's)
/// with a check remembered at most: anyone may run a check, and one holder
/// of an IPv6 /32 has 65,536 /48s, enough to push every other network's
/// check out.
const CHECKS_PER_BLOCK: usize = 64;

/// The latest `postern check` from a network: when (Unix seconds), and the
/// server's ports its probes reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub network: String,
    pub at: i64,
    pub reached: Vec<u16>,
}

/// A network's latest check, as kept.
struct Kept {
    at: i64,
    reached: Vec<u16>,
    /// The network's wider block (`block_of`).
    block: String,
}

#[derive(Default)]
pub struct Checks {
    by_network: Mutex<HashMap<String, Kept>>,
}

/// The wider block `ip` belongs to, as checks are bounded by: its /16 for
/// IPv4, its /32 for IPv6.
fn block_of(ip: IpAddr) -> String {
    prefix_of(ip, 16, 32)
}

impl Checks {
    fn kept(&self) -> MutexGuard<'_, HashMap<String, Kept>> {
        self.by_network.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A check from `peer` asked which ports its probes reached: `reached`.
    pub fn checked(&self, peer: IpAddr, reached: &[u16]) {
        let (network, block) = (network_of(peer), block_of(peer));
        let mut kept = self.kept();
        if !kept.contains_key(&network) {
            let same_block = kept
                .iter()
                .filter(|(_, c)| c.block == block)
                .map(|(n, c)| (c.at, n));
            if let Some((_, oldest)) = same_block.clone().min()
                && same_block.count() >= CHECKS_PER_BLOCK
            {
                let oldest = oldest.clone();
                kept.remove(&oldest);
            }
        }
        let check = Kept {
            at: now_unix(),
            reached: reached.to_vec(),
            block,
        };
        kept.insert(network, check);
        if kept.len() > MAX_CHECKS {
            for network in oldest_eighth(kept.iter().map(|(n, c)| (c.at, n))) {
                kept.remove(&network);
            }
        }
    }

    /// The checks of the last `WEEK_DAYS`, the latest first.
    pub fn week(&self) -> Vec<Check> {
        let since = now_unix() - WEEK_DAYS * DAY;
        let kept = self.kept();
        let mut checks: Vec<(&String, &Kept)> = kept.iter().filter(|(_, c)| c.at > since).collect();
        checks.sort_unstable_by(|a, b| b.1.at.cmp(&a.1.at).then(a.0.cmp(b.0)));
        checks
            .into_iter()
            .take(SWITCHED_SHOWN)
            .map(|(network, c)| Check {
                network: network.clone(),
                at: c.at,
                reached: c.reached.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_check_per_network_is_shown_newest_first_and_bounded() {
        let checks = Checks::default();
        checks.checked("192.0.2.10".parse().expect("ip"), &[465]);
        checks.checked("192.0.2.11".parse().expect("ip"), &[26, 465]);
        let kept = |at: i64, port: u16, block: &str| Kept {
            at,
            reached: vec![port],
            block: block.into(),
        };
        checks.kept().insert(
            "198.51.100.0/24".into(),
            kept(now_unix() - 1, 587, "198.51.0.0/16"),
        );
        checks.kept().insert(
            "203.0.113.0/24".into(),
            kept(now_unix() - (WEEK_DAYS + 1) * DAY, 25, "203.0.0.0/16"),
        );
        let week = checks.week();
        let shown: Vec<(&str, &[u16])> = week
            .iter()
            .map(|c| (c.network.as_str(), c.reached.as_slice()))
            .collect();
        assert_eq!(
            shown,
            [
                ("192.0.2.0/24", &[26, 465][..]),
                ("198.51.100.0/24", &[587][..])
            ],
            "one per network (the latest), newest first, none older than the week"
        );
        // One IPv6 /32 cannot fill the map: its /48s keep to their share.
        for n in 0..(CHECKS_PER_BLOCK as u16 + 20) {
            let ip = std::net::Ipv6Addr::new(0x2001, 0xdb8, n, 0, 0, 0, 0, 1);
            checks.checked(ip.into(), &[587]);
        }
        let in_block = |block: &str| checks.kept().values().filter(|c| c.block == block).count();
        assert_eq!(in_block("2001:db8::/32"), CHECKS_PER_BLOCK);
        assert_eq!(in_block("192.0.0.0/16"), 1, "the others stay");
        // Many checks in the same second still keep to the bound.
        for n in 0..(MAX_CHECKS as u32 + 10) {
            checks.checked(std::net::Ipv4Addr::from(n << 16).into(), &[587]);
        }
        assert!(checks.kept().len() <= MAX_CHECKS);
    }
}
