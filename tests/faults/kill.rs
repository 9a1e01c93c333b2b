//! SIGKILL at random moments while clients submit over TLS with AUTH and the
//! server relays to a sink: after ten kills and restarts, every message that
//! got a 250 is at the sink, and a message arrives twice only if its delivery
//! was under way when the server was killed (RFC 5321 §6.1).

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::common::*;

const KILLS: usize = 10;

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[test]
fn ten_sigkills_under_tls_auth_load_lose_nothing() {
    let sink_port = free_port();
    let sink = Peer::start(SocketAddr::from(([127, 0, 0, 1], sink_port)), &[]);
    let mut s = TestServer::delivering(&format!(
        "[relay]\nhost = \"127.0.0.1\"\nport = {sink_port}\ntls = \"none\"\n\
         [delivery]\nretry_min = 1\nretry_max = 2\n\
         [limits]\nmessages_per_hour_per_user = 10000000\nhold_on_burst = false\n"
    ));
    let mut result = LoadResult::default();
    let mut kills = Vec::new();
    for round in 0..KILLS {
        let queued_before = s.log().matches("event=\"queued\"").count();
        let load = Load::start(&LoadSpec {
            addr: s.addr("submissions"),
            clients: 8,
            mode: "ssl",
            login: Some(("alice@example.com", PASSWORD)),
            sender: "alice@example.com",
            rcpt: "bob@remote.example",
            sizes: &[1_000, 20_000, 1_000, 300_000],
        });
        // A different moment of the load each time: logins, bodies, commits
        // and deliveries all get interrupted somewhere.
        let wait = 1500 + (rand_below(1500) as u64);
        std::thread::sleep(Duration::from_millis(wait));
        // On a loaded machine the first logins of a round can take longer
        // than the wait: the round is about a kill under load, so load first.
        let started = std::time::Instant::now();
        while s.log().matches("event=\"queued\"").count() == queued_before
            && started.elapsed() < Duration::from_secs(30)
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        // Logged as its 250 goes out: give the client time to read it.
        std::thread::sleep(Duration::from_millis(300));
        kills.push(unix_now());
        s.kill();
        let got = load.stop();
        assert!(
            !got.accepted.is_empty(),
            "round {round}: nothing accepted: {got:?}\n{}",
            s.log()
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .join("\n")
        );
        result.absorb(got);
        s.spawn();
    }
    s.wait_until_queue_empty(Duration::from_secs(120));
    let received = sink.received();
    let tally = tally(
        &tokens_in(received.iter().map(|m| m["data"].as_str().unwrap_or(""))),
        &result,
    );
    // A copy delivered twice was first delivered around a kill: the server
    // died before it could record the sink's 250 (or before the 250 came:
    // the sink may write it down a moment after the server is gone).
    let mut first_seen = std::collections::HashMap::new();
    for m in &received {
        let text = m["data"].as_str().unwrap_or("");
        for token in tokens_in([text]).into_keys() {
            first_seen
                .entry(token)
                .or_insert(m["time"].as_f64().unwrap_or(0.0));
        }
    }
    let counts = tokens_in(received.iter().map(|m| m["data"].as_str().unwrap_or("")));
    for (token, n) in &counts {
        if *n > 1 {
            let at = first_seen[token];
            assert!(
                kills.iter().any(|k| *k - at < 10.0 && at - *k < 2.0),
                "{token} arrived {n} times, the first time at {at}, not around a kill ({kills:?})"
            );
        }
    }
    assert!(
        result.refused.iter().all(|(_, c)| *c / 100 == 4),
        "{:?}",
        result.refused
    );
    eprintln!(
        "{KILLS} kills: {} accepted, all delivered; {} duplicates (in flight at a kill); \
         {} unanswered at a kill, of which {} were delivered",
        result.accepted.len(),
        tally.duplicates,
        result.unanswered.len(),
        tally.unanswered_arrived
    );
}

/// A number below `n`, from the clock: enough to vary the moment of a kill.
fn rand_below(n: u32) -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
        % n
}
