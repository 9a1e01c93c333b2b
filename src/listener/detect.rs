//! Which mode a client of a submission port picked: a TLS ClientHello as its
//! first bytes means implicit TLS (a client set to SSL/TLS on 587), silence
//! for a moment means it waits for a greeting (STARTTLS on 465). Port 25
//! always greets in plaintext, as servers expect.
//!
//! The moment is `tls_detect_ms` (300 ms), and a client that waits for the
//! greeting waits that long, each time: phones and scripts that connect for
//! every message did 24 messages a second at 8 clients over STARTTLS, and 325
//! without the wait (bench/README.md, logins). So on a submission port (587,
//! 26) the networks whose clients said EHLO in plaintext are remembered for a
//! day, and their next connections wait `QUICK`: an implicit-TLS client sends
//! its ClientHello right after the TCP handshake, in the same flight as its
//! last ACK, so even one behind the same address is nearly always seen in
//! time. Only a plaintext EHLO teaches it (a TLS client whose hello came late
//! teaches nothing), and the implicit-TLS ports keep their long wait.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use crate::config::ListenerRole;
use crate::session::TlsStart;

/// How long a network whose client spoke plaintext first is remembered.
const REMEMBERED: Duration = Duration::from_secs(24 * 3600);
/// The wait for a ClientHello from such a network.
const QUICK: Duration = Duration::from_millis(10);
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
        self.waited(network(peer), Instant::now());
    }

    fn lately(&self, network: IpAddr, now: Instant) -> bool {
        let seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        seen.get(&network)
            .is_some_and(|at| now.duration_since(*at) < REMEMBERED)
    }

    fn waited(&self, network: IpAddr, now: Instant) {
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

/// How the session with `peer` starts: `wait` is `tls_detect_ms` (ten times
/// it on an implicit-TLS port, where nearly every client speaks TLS first),
/// `QUICK` on a submission port for a network whose clients spoke plaintext
/// within the last day.
pub async fn first_move(
    stream: &TcpStream,
    peer: IpAddr,
    role: ListenerRole,
    wait: Duration,
    plaintext_first: &PlaintextFirst,
) -> TlsStart {
    let wait = match role {
        ListenerRole::Mta => return TlsStart::Plain,
        ListenerRole::Submissions => wait * 10,
        ListenerRole::Submission if plaintext_first.lately(network(peer), Instant::now()) => {
            wait.min(QUICK)
        }
        ListenerRole::Submission => wait,
    };
    let mut first = [0u8; 1];
    match tokio::time::timeout(wait, stream.peek(&mut first)).await {
        // 0x16: a TLS handshake record (RFC 8446 §5.1).
        Ok(Ok(1)) if first[0] == 0x16 => TlsStart::Handshake,
        _ => TlsStart::Plain,
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
        seen.waited(ip(1), now);
        assert!(seen.lately(ip(1), now + Duration::from_secs(3600)));
        assert!(!seen.lately(ip(1), now + REMEMBERED));
        assert!(!seen.lately(ip(2), now));
        for n in 0..MAX_NETWORKS as u32 {
            seen.waited(ip(n), now + Duration::from_millis(u64::from(n)));
        }
        let later = now + Duration::from_secs(60);
        seen.waited(ip(u32::MAX), later);
        let kept = seen.0.lock().expect("lock").len();
        assert!(kept <= MAX_NETWORKS / 2 + 1, "{kept}");
        assert!(seen.lately(ip(u32::MAX), later));
        assert!(
            seen.lately(ip(MAX_NETWORKS as u32 - 1), later),
            "the newest stay"
        );
        assert!(!seen.lately(ip(1), later), "the oldest went");
    }

    #[tokio::test]
    async fn a_network_that_spoke_plaintext_is_greeted_sooner_and_a_hello_is_still_seen() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = PlaintextFirst::default();
        let wait = Duration::from_millis(400);
        let mut waited = Vec::new();
        for role in [
            ListenerRole::Submission,
            ListenerRole::Submission,
            ListenerRole::Submission,
            ListenerRole::Submissions,
        ] {
            let _client = TcpStream::connect(addr).await.expect("connect");
            let (stream, peer) = listener.accept().await.expect("accept");
            let started = Instant::now();
            let start = first_move(&stream, peer.ip(), role, wait / 10, &seen).await;
            assert!(matches!(start, TlsStart::Plain));
            waited.push(started.elapsed());
            // Silence alone teaches nothing; the first session's EHLO does.
            if waited.len() == 2 {
                seen.spoke_plaintext(peer.ip());
            }
        }
        assert!(
            waited[0] >= wait / 10 && waited[1] >= wait / 10,
            "{waited:?}"
        );
        assert!(waited[2] < wait / 20, "{waited:?}");
        assert!(
            waited[3] >= wait,
            "the implicit-TLS port keeps its wait: {waited:?}"
        );
        // The same network's implicit-TLS client is still taken as one.
        let mut client = TcpStream::connect(addr).await.expect("connect");
        tokio::io::AsyncWriteExt::write_all(&mut client, &[0x16, 0x03, 0x01])
            .await
            .expect("hello");
        let (stream, peer) = listener.accept().await.expect("accept");
        let start = first_move(&stream, peer.ip(), ListenerRole::Submission, wait, &seen).await;
        assert!(matches!(start, TlsStart::Handshake));
    }
}
