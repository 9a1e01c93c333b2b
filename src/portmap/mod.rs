//! The port map: which submission ports work from which client networks.
//! Per network (/24 for IPv4, /48 for IPv6, as ISPs hand them out) and
//! port, the sessions that reached it and those that logged in, and the last
//! day each happened, for 30 days. Autoconfig, Autodiscover and the Apple
//! profile (`http`) list the ports that worked from the asking network first
//! (the one used most lately first), the ones nobody there tried next in the
//! usual order, and last those its clients reached again and again without
//! ever logging in. A port an ISP blocks is never reached at all, so from
//! that network the ports it leaves open come first: a new client there
//! takes a port that works before it ever tries one that does not.
//!
//! Beside it, each account's last login and its port (the dashboard's
//! accounts view), on any listener; and the latest `postern check` run from
//! each network: which of the server's ports its probes reached (the port
//! echo; `checks.rs`).
//!
//! Kept in memory (bounded to `MAX_NETWORKS`, the least recently seen
//! forgotten first) and written to the store every few seconds in one
//! transaction, so a restart keeps what was learned and a login costs no
//! sync of its own.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::clock::now_unix;
use crate::store::{Login, PortRecord, Store, StoreError};

mod checks;
mod plaintext;
pub use checks::{Check, Checks};
pub use plaintext::PlaintextFirst;

/// How long a network's record of a port is kept after its last session.
pub const DAYS_KEPT: i64 = 30;
/// Most networks remembered; beyond it the least recently seen go.
const MAX_NETWORKS: usize = 100_000;
/// Sessions on a port without one login after which it counts as not
/// working from that network.
const TRIES_WITHOUT_LOGIN: u64 = 3;
/// How often what was learned is written to the store.
const WRITE_EVERY: Duration = Duration::from_secs(5);

pub(crate) const DAY: i64 = 86_400;

/// The network `ip` belongs to, as it is kept: `198.51.100.0/24`,
/// `2001:db8:1::/48` (an IPv4-mapped IPv6 address counts as IPv4).
pub fn network_of(ip: IpAddr) -> String {
    prefix_of(ip, 24, 48)
}

/// The prefix of `ip` of `v4` or `v6` bits, written as a network.
pub(crate) fn prefix_of(ip: IpAddr, v4: u8, v6: u8) -> String {
    let ip = ip.to_canonical();
    let bits = if ip.is_ipv4() { v4 } else { v6 };
    ipnet::IpNet::new(ip, bits).map_or_else(|_| ip.to_string(), |n| n.trunc().to_string())
}

/// `ports` (in the usual order of preference) in the order that suits a
/// network with `records`, on day `today`: those that worked lately first
/// (the latest login first, then the most logins), then the ones not seen
/// from there, then those reached `TRIES_WITHOUT_LOGIN` times or more
/// without a login. Pure.
pub fn order(ports: &[u16], records: &[PortRecord], today: i64) -> Vec<u16> {
    let recent = |day: i64| day > 0 && day >= today - DAYS_KEPT;
    let record = |port: u16| {
        records
            .iter()
            .find(|r| r.port == port && recent(r.last_connected))
    };
    let mut ranked: Vec<(u8, i64, u64, usize, u16)> = ports
        .iter()
        .enumerate()
        .map(|(usual, &port)| match record(port) {
            Some(r) if recent(r.last_authenticated) && r.authenticated > 0 => (
                0,
                -r.last_authenticated,
                u64::MAX - r.authenticated,
                usual,
                port,
            ),
            Some(r) if r.connected >= TRIES_WITHOUT_LOGIN => (2, 0, 0, usual, port),
            _ => (1, 0, 0, usual, port),
        })
        .collect();
    ranked.sort_unstable();
    ranked.into_iter().map(|(.., port)| port).collect()
}

/// The days the dashboard's view of the map looks back.
pub const WEEK_DAYS: i64 = 7;
/// Networks that switched ports the view lists at most.
pub(crate) const SWITCHED_SHOWN: usize = 200;

/// One submission port over the last `WEEK_DAYS`: how many client networks
/// connected, signed in, and reached this port and no other.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortCounts {
    pub port: u16,
    pub connected: u64,
    pub authenticated: u64,
    pub only_this: u64,
}

/// A network seen on some ports before the last `WEEK_DAYS` and only on
/// others since: an ISP may have begun blocking the first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switched {
    pub network: String,
    pub before: Vec<u16>,
    pub now: Vec<u16>,
}

/// The map as the dashboard shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortWeek {
    /// By port.
    pub ports: Vec<PortCounts>,
    pub switched: Vec<Switched>,
    /// Networks seen in the last `WEEK_DAYS` that never reached any port
    /// but the last-resort one (443 with `submission_on_tls`): every other
    /// mail port is blocked from there.
    pub last_resort_only: Vec<String>,
    /// The checks of the last `WEEK_DAYS`, the latest first.
    pub checks: Vec<Check>,
}

/// The view of `networks` as of `today` (Unix days); `last_resort` is the
/// port of submission on 443, when it is on.
fn week_of<'a>(
    networks: impl Iterator<Item = (&'a String, &'a Vec<PortRecord>)>,
    today: i64,
    last_resort: Option<u16>,
) -> PortWeek {
    let since = today - WEEK_DAYS;
    let mut ports: std::collections::BTreeMap<u16, PortCounts> = Default::default();
    let mut switched = Vec::new();
    let mut last_resort_only = Vec::new();
    for (network, records) in networks {
        let mut now: Vec<u16> = Vec::new();
        let mut before: Vec<u16> = Vec::new();
        for r in records {
            let counts = ports.entry(r.port).or_insert_with(|| PortCounts {
                port: r.port,
                ..PortCounts::default()
            });
            if r.last_connected > since {
                counts.connected += 1;
                now.push(r.port);
            } else {
                before.push(r.port);
            }
            if r.last_authenticated > since {
                counts.authenticated += 1;
            }
        }
        if let [only] = now.as_slice()
            && let Some(counts) = ports.get_mut(only)
        {
            counts.only_this += 1;
        }
        if !now.is_empty() && last_resort.is_some_and(|port| records.iter().all(|r| r.port == port))
        {
            last_resort_only.push(network.clone());
        }
        if !now.is_empty() && !before.is_empty() {
            now.sort_unstable();
            before.sort_unstable();
            switched.push(Switched {
                network: network.clone(),
                before,
                now,
            });
        }
    }
    switched.sort_by(|a, b| a.network.cmp(&b.network));
    switched.truncate(SWITCHED_SHOWN);
    last_resort_only.sort_unstable();
    last_resort_only.truncate(SWITCHED_SHOWN);
    PortWeek {
        ports: ports.into_values().collect(),
        switched,
        last_resort_only,
        checks: Vec::new(),
    }
}

#[derive(Default)]
struct Inner {
    networks: HashMap<String, Vec<PortRecord>>,
    /// Networks changed since the last write.
    dirty: HashSet<String>,
    /// Networks forgotten since the last write (the bound): their rows go.
    forgotten: Vec<String>,
    /// Logins since the last write, the latest per account: bounded by the
    /// accounts, since only a login that succeeded is kept.
    logins: HashMap<String, (i64, u16)>,
}

pub struct PortMap {
    store: Store,
    inner: Mutex<Inner>,
    /// The latest `postern check` per network.
    pub checks: Checks,
}

impl PortMap {
    /// The map as the store has it: the last `DAYS_KEPT` days.
    pub async fn load(store: Store) -> Result<PortMap, StoreError> {
        let today = now_unix() / DAY;
        let mut inner = Inner::default();
        for (network, record) in store.port_map(today - DAYS_KEPT).await? {
            inner.networks.entry(network).or_default().push(record);
        }
        Ok(PortMap {
            store,
            inner: Mutex::new(inner),
            checks: Checks::default(),
        })
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A session from `peer` reached submission port `port` (said EHLO).
    pub fn connected(&self, peer: IpAddr, port: u16) {
        self.touch(peer, port, now_unix() / DAY, |r, today| {
            r.connected += 1;
            r.last_connected = today;
        });
    }

    /// A session from `peer` on `port` logged in.
    pub fn authenticated(&self, peer: IpAddr, port: u16) {
        self.touch(peer, port, now_unix() / DAY, |r, today| {
            r.authenticated += 1;
            r.last_authenticated = today;
            r.last_connected = today;
        });
    }

    /// `account` logged in on `port` (on any listener).
    pub fn logged_in(&self, account: &str, port: u16) {
        let login = (now_unix(), port);
        self.inner().logins.insert(account.to_string(), login);
    }

    fn touch(&self, peer: IpAddr, port: u16, today: i64, change: impl Fn(&mut PortRecord, i64)) {
        let network = network_of(peer);
        let mut inner = self.inner();
        let records = inner.networks.entry(network.clone()).or_default();
        match records.iter_mut().find(|r| r.port == port) {
            Some(r) => change(r, today),
            None => {
                let mut r = PortRecord {
                    port,
                    ..PortRecord::default()
                };
                change(&mut r, today);
                records.push(r);
            }
        }
        inner.dirty.insert(network);
        if inner.networks.len() > MAX_NETWORKS {
            forget_least_recent(&mut inner);
        }
    }

    /// Who reached which port over the last `WEEK_DAYS`; `last_resort` is
    /// the port of submission on 443, when it is on.
    pub fn week(&self, last_resort: Option<u16>) -> PortWeek {
        let mut week = week_of(self.inner().networks.iter(), now_unix() / DAY, last_resort);
        week.checks = self.checks.week();
        week
    }

    /// `ports` in the order that suits the network of `peer`.
    pub fn order_for(&self, peer: IpAddr, ports: &[u16]) -> Vec<u16> {
        let network = network_of(peer);
        let inner = self.inner();
        match inner.networks.get(&network) {
            Some(records) => order(ports, records, now_unix() / DAY),
            None => ports.to_vec(),
        }
    }

    /// Writes what changed since the last write; on failure it stays to
    /// be written next time.
    async fn write(&self) {
        self.write_logins().await;
        let today = now_unix() / DAY;
        let (records, forgotten) = {
            let mut inner = self.inner();
            let dirty = std::mem::take(&mut inner.dirty);
            let records: Vec<(String, PortRecord)> = dirty
                .iter()
                .filter_map(|n| inner.networks.get(n).map(|rs| (n, rs)))
                .flat_map(|(n, rs)| rs.iter().map(move |r| (n.clone(), *r)))
                .collect();
            (records, std::mem::take(&mut inner.forgotten))
        };
        if records.is_empty() && forgotten.is_empty() {
            return;
        }
        if let Err(e) = self
            .store
            .write_port_map(&records, &forgotten, today - DAYS_KEPT)
            .await
        {
            tracing::error!(event = "store_error", error = %e, "cannot write the port map");
            let mut inner = self.inner();
            inner.dirty.extend(records.into_iter().map(|(n, _)| n));
            inner.forgotten.extend(forgotten);
        }
    }

    /// Writes the logins since the last write; on failure they stay, unless
    /// the account logged in again since.
    async fn write_logins(&self) {
        let logins = std::mem::take(&mut self.inner().logins);
        if logins.is_empty() {
            return;
        }
        let rows: Vec<Login> = logins
            .iter()
            .map(|(address, &(at, port))| Login {
                address: address.clone(),
                at,
                port,
            })
            .collect();
        if let Err(e) = self.store.record_logins(&rows).await {
            tracing::error!(event = "store_error", error = %e, "cannot record the last logins");
            let mut inner = self.inner();
            for (address, login) in logins {
                inner.logins.entry(address).or_insert(login);
            }
        }
    }

    /// Writes to the store every few seconds, and once more at `stop`;
    /// forgets, once an hour, networks not seen for `DAYS_KEPT` days.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(WRITE_EVERY);
        let mut ticks = 0u64;
        loop {
            tokio::select! {
                () = stop.cancelled() => {
                    self.write().await;
                    return;
                }
                _ = tick.tick() => {
                    if ticks.is_multiple_of(720) {
                        let oldest = now_unix() / DAY - DAYS_KEPT;
                        self.inner().networks.retain(|_, rs| {
                            rs.retain(|r| r.last_connected >= oldest);
                            !rs.is_empty()
                        });
                    }
                    ticks += 1;
                    self.write().await;
                }
            }
        }
    }
}

/// The eighth of `networks` (with when each was last seen) seen least
/// recently: a bound that forgets them costs O(1) per addition, amortized.
pub(crate) fn oldest_eighth<'a>(networks: impl Iterator<Item = (i64, &'a String)>) -> Vec<String> {
    let mut last_seen: Vec<(i64, &String)> = networks.collect();
    let cut = last_seen.len() / 8;
    last_seen.select_nth_unstable(cut);
    last_seen
        .into_iter()
        .take(cut)
        .map(|(_, n)| n.clone())
        .collect()
}

/// Forgets the eighth of the networks seen least recently.
fn forget_least_recent(inner: &mut Inner) {
    let oldest = oldest_eighth(
        inner
            .networks
            .iter()
            .map(|(n, rs)| (rs.iter().map(|r| r.last_connected).max().unwrap_or(0), n)),
    );
    for network in oldest {
        inner.networks.remove(&network);
        inner.dirty.remove(&network);
        inner.forgotten.push(network);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TODAY: i64 = 20_000;

    fn rec(port: u16, connected: u64, authenticated: u64, lc: i64, la: i64) -> PortRecord {
        PortRecord {
            port,
            connected,
            authenticated,
            last_connected: lc,
            last_authenticated: la,
        }
    }

    #[test]
    fn the_week_counts_networks_per_port_and_finds_those_that_switched() {
        let networks: Vec<(String, Vec<PortRecord>)> = vec![
            // Signed in on 587 this week.
            ("a".into(), vec![rec(587, 5, 5, TODAY, TODAY)]),
            // On 587 three weeks ago, only on 26 this week: switched.
            (
                "b".into(),
                vec![
                    rec(587, 9, 9, TODAY - 21, TODAY - 21),
                    rec(26, 2, 1, TODAY - 1, TODAY - 1),
                ],
            ),
            // Only tried 443 this week, never signed in; and 587 too.
            (
                "c".into(),
                vec![rec(443, 3, 0, TODAY, 0), rec(587, 1, 0, TODAY - 2, 0)],
            ),
            // Not seen this week at all.
            ("d".into(), vec![rec(465, 1, 1, TODAY - 8, TODAY - 8)]),
            // Never reached any port but 443: the others are blocked there.
            ("e".into(), vec![rec(443, 4, 4, TODAY, TODAY)]),
        ];
        let week = week_of(networks.iter().map(|(n, r)| (n, r)), TODAY, Some(443));
        let counts = |port| {
            let c = week.ports.iter().find(|c| c.port == port).expect("port");
            (c.connected, c.authenticated, c.only_this)
        };
        assert_eq!(counts(587), (2, 1, 1));
        assert_eq!(counts(26), (1, 1, 1));
        assert_eq!(counts(443), (2, 1, 1));
        assert_eq!(counts(465), (0, 0, 0));
        assert_eq!(
            week.switched,
            [Switched {
                network: "b".into(),
                before: vec![587],
                now: vec![26],
            }]
        );
        assert_eq!(week.last_resort_only, ["e"]);
        let without = week_of(networks.iter().map(|(n, r)| (n, r)), TODAY, None);
        assert!(without.last_resort_only.is_empty());
    }

    #[test]
    fn networks_are_slash_24_and_slash_48() {
        assert_eq!(
            network_of("198.51.100.77".parse().expect("ip")),
            "198.51.100.0/24"
        );
        assert_eq!(
            network_of("::ffff:198.51.100.77".parse().expect("ip")),
            "198.51.100.0/24"
        );
        assert_eq!(
            network_of("2001:db8:1:2:3::9".parse().expect("ip")),
            "2001:db8:1::/48"
        );
    }

    #[test]
    fn what_worked_lately_comes_first_and_what_never_did_last() {
        let usual = [465, 587, 26, 2525, 443];
        assert_eq!(
            order(&usual, &[], TODAY),
            usual,
            "no records: the usual order"
        );
        // From this network only 26 and 443 ever got through; 26 lately.
        let records = [
            rec(443, 4, 4, TODAY - 9, TODAY - 9),
            rec(26, 2, 2, TODAY, TODAY),
            // Reached three times, never a login (a proxy in the way?).
            rec(2525, 3, 0, TODAY - 1, 0),
        ];
        assert_eq!(order(&usual, &records, TODAY), [26, 443, 465, 587, 2525]);
        // The same day: the most logins first.
        let records = [rec(443, 9, 9, TODAY, TODAY), rec(26, 2, 2, TODAY, TODAY)];
        assert_eq!(order(&usual, &records, TODAY), [443, 26, 465, 587, 2525]);
        // Records older than 30 days count for nothing.
        let old = [rec(26, 50, 50, TODAY - 31, TODAY - 31)];
        assert_eq!(order(&usual, &old, TODAY), usual);
        // Two tries without a login are not yet a verdict.
        let two = [rec(465, 2, 0, TODAY, 0)];
        assert_eq!(order(&usual, &two, TODAY), usual);
    }

    /// A store that fails keeps nothing from being written later: what was
    /// learned stays marked for the next write.
    #[tokio::test]
    async fn a_failed_write_is_tried_again() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(dir.path()).await.expect("store");
        let map = PortMap::load(store.clone()).await.expect("load");
        map.authenticated("192.0.2.10".parse().expect("ip"), 26);
        map.logged_in("alice@example.com", 587);
        store.close().await;
        map.write().await;
        assert!(
            map.inner().dirty.contains("192.0.2.0/24"),
            "still to be written"
        );
        assert!(
            map.inner().logins.contains_key("alice@example.com"),
            "the login too"
        );
    }

    #[tokio::test]
    async fn sessions_are_kept_per_network_bounded_and_survive_a_restart() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(dir.path()).await.expect("store");
        let map = PortMap::load(store.clone()).await.expect("load");
        let a: IpAddr = "192.0.2.10".parse().expect("ip");
        let b: IpAddr = "192.0.2.200".parse().expect("ip");
        map.connected(a, 26);
        map.authenticated(a, 26);
        map.connected(b, 26);
        assert_eq!(map.order_for(b, &[587, 26]), [26, 587], "the same /24");
        assert_eq!(
            map.order_for("198.51.100.1".parse().expect("ip"), &[587, 26]),
            [587, 26]
        );
        map.write().await;
        let again = PortMap::load(store.clone()).await.expect("load");
        assert_eq!(again.order_for(a, &[587, 26]), [26, 587]);
        let kept = again.inner().networks["192.0.2.0/24"][0];
        assert_eq!((kept.connected, kept.authenticated), (2, 1));
        // The bound: the least recently seen networks go, from the store too.
        {
            let mut inner = again.inner();
            inner.networks.get_mut("192.0.2.0/24").expect("kept")[0].last_connected = 1;
        }
        for n in 0..=MAX_NETWORKS {
            let ip = IpAddr::from([0x2001, (n >> 16) as u16, n as u16, 0, 0, 0, 0, 1]);
            again.connected(ip, 587);
        }
        assert!(again.inner().networks.len() <= MAX_NETWORKS);
        assert!(!again.inner().networks.contains_key("192.0.2.0/24"));
        again.write().await;
        let after = PortMap::load(store).await.expect("load");
        assert_eq!(after.order_for(a, &[587, 26]), [587, 26], "forgotten");
    }
}
