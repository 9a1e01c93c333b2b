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

use std::net::IpAddr;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::config::ListenerRole;
use crate::portmap::PlaintextFirst;
use crate::session::TlsStart;

/// The wait for a ClientHello from a network whose clients spoke plaintext
/// first lately.
const QUICK: Duration = Duration::from_millis(10);

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
        ListenerRole::Submission if plaintext_first.lately(peer) => wait.min(QUICK),
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

    use std::time::Instant;

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
