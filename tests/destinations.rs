//! Many destinations (issue #11 item 2): a destination whose server never
//! answers holds up its own mail and no other, and MX answers are kept for
//! their TTL.

use std::time::{Duration, Instant};

use crate::common::*;
use crate::delivery::{WAIT, at, ip, send};

/// `domain`, with one MX host at 127.0.0.`last`.
fn publish(dns: &TestDns, domain: &str, last: u8) {
    dns.mx(domain, 10, &format!("mx.{domain}"));
    dns.ip(&format!("mx.{domain}"), ip(last));
}

/// One message from app@example.com to `rcpt`.
fn mail(s: &TestServer, rcpt: &str) {
    send(
        s,
        "app@example.com",
        &[rcpt],
        &format!("Subject: to {rcpt}\n\nx\n"),
    );
}

/// A delivering server with `concurrency` delivery slots and the given
/// timeouts, asking `dns`, reaching MX hosts on `port`.
fn sender(dns: &TestDns, port: u16, concurrency: usize, timeouts: u64) -> TestServer {
    TestServer::delivering(&format!(
        "trusted_networks = [\"127.0.0.1/32\"]\n[delivery]\nmx_port = {port}\n{}retry_min = 60\n\
         concurrency = {concurrency}\nconnect_timeout = {timeouts}\ntimeout = {timeouts}\n",
        dns.config()
    ))
}

/// Issue #11: the first messages to a domain whose MX drops connections (a
/// listener with a full backlog: its SYNs go unanswered) and to one whose MX
/// never greets took both delivery slots for the whole connect or reply
/// timeout, and mail to working domains waited behind them. Now it goes out at
/// once; each stuck destination is tried once, and its next message deferred
/// without waiting out the timeout again.
#[test]
fn issue_11_dead_and_silent_destinations_hold_up_no_other_mail() {
    const TIMEOUT: u64 = 12;
    let dns = TestDns::start();
    let port = free_port();
    let domains = [
        ("dead.example", 81),
        ("silent.example", 82),
        ("a.example", 83),
        ("b.example", 84),
        ("c.example", 85),
    ];
    for (domain, last) in domains {
        publish(&dns, domain, last);
    }
    let _dead = Peer::start(at(81, port), &["--mode", "full-backlog"]);
    let _silent = Peer::start(at(82, port), &["--mode", "hang"]);
    let live: Vec<Peer> = [83, 84, 85]
        .into_iter()
        .map(|last| Peer::start(at(last, port), &[]))
        .collect();
    let s = sender(&dns, port, 2, TIMEOUT);
    let started = Instant::now();
    for n in 0..2 {
        for domain in ["dead.example", "silent.example"] {
            mail(&s, &format!("u{n}@{domain}"));
        }
    }
    let sent = Instant::now();
    for (domain, _) in &domains[2..] {
        mail(&s, &format!("bob@{domain}"));
    }
    for peer in &live {
        peer.wait_for(1, WAIT);
    }
    let took = sent.elapsed();
    assert!(
        took < Duration::from_secs(TIMEOUT / 2),
        "the working domains' mail took {took:?}:\n{}",
        s.log()
    );
    // All four stuck messages deferred, with the kind of failure each met,
    // within about one timeout.
    let deadline = Instant::now() + WAIT;
    let kinds = loop {
        let mut kinds: Vec<String> = s
            .queue()
            .iter()
            .flat_map(|m| m["recipients"].as_array().cloned().unwrap_or_default())
            .filter_map(|r| {
                Some(format!(
                    "{} {}",
                    r["address"].as_str()?,
                    r["last_kind"].as_str()?
                ))
            })
            .collect();
        kinds.sort();
        if kinds.len() == 4 || Instant::now() > deadline {
            break kinds;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        kinds,
        [
            format!("u0@dead.example unreachable:{port}"),
            "u0@silent.example timeout@greeting".to_string(),
            format!("u1@dead.example unreachable:{port}"),
            "u1@silent.example timeout@greeting".to_string(),
        ],
        "{}",
        s.log()
    );
    let all_deferred = started.elapsed();
    assert!(
        all_deferred < Duration::from_secs(TIMEOUT * 3 / 2),
        "deferring the stuck mail took {all_deferred:?}: a second attempt waited out the timeout"
    );
    let log = s.log();
    for rcpt in ["u1@dead.example", "u1@silent.example"] {
        assert!(
            log.lines().any(|l| l.contains(&format!("rcpt={rcpt}"))
                && l.contains("event=\"deferred\"")
                && l.contains("not tried: the destination failed")),
            "{rcpt} was tried again:\n{log}"
        );
    }
}

/// Issue #11: with `[delivery] nameservers` set, every delivery asked for the
/// MX again (the resolver kept nothing). Answers are now kept for their TTL.
#[test]
fn issue_11_mx_answers_are_kept_for_their_ttl() {
    let dns = TestDns::start();
    dns.set_ttl(300);
    let port = free_port();
    publish(&dns, "remote.example", 86);
    let peer = Peer::start(at(86, port), &[]);
    let s = sender(&dns, port, 10, 5);
    for n in 1..=3 {
        mail(&s, "bob@remote.example");
        peer.wait_for(n, WAIT);
    }
    // Once by the resolver delivery uses. The validating resolver (DANE)
    // asks nothing of this unsigned server past its hourly probe of the
    // root's keys, which fails here.
    assert_eq!(dns.asked("remote.example"), 1, "MX questions");
    let log = s.log();
    assert!(
        log.contains("event=\"dnssec_probe\"") && log.contains("DANE is not applied"),
        "the failed probe is said: {log}"
    );
}

/// A destination taken to be down is tried again at the operator's `queue
/// retry`, as Postfix's `postqueue -f` flushes its dead destinations: mail
/// held back while its server was away goes out at once when it is back.
#[test]
fn a_retry_tries_destinations_taken_to_be_down() {
    let dns = TestDns::start();
    let port = free_port();
    publish(&dns, "back.example", 87);
    // Down for retry_min, 60 s, once nothing answers at 127.0.0.87.
    let s = sender(&dns, port, 10, 5);
    for n in 0..2 {
        mail(&s, &format!("u{n}@back.example"));
    }
    let deadline = Instant::now() + WAIT;
    while s.log().matches("event=\"deferred\"").count() < 2 {
        assert!(Instant::now() < deadline, "not deferred:\n{}", s.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let peer = Peer::start(at(87, port), &[]);
    s.cli_ok(&["queue", "retry", "--all"]);
    assert_eq!(peer.wait_for(2, Duration::from_secs(20)).len(), 2);
}

/// Issue #11: with mail to many domains, the connection kept after each
/// delivery for the next message to that server stayed open until a look at
/// the spool closed the expired ones, which fresh mail never needs: one per
/// server, however many. At most `concurrency` are kept now, in all.
#[test]
fn kept_connections_are_at_most_one_per_delivery_slot() {
    let dns = TestDns::start();
    let port = free_port();
    let peers: Vec<Peer> = (0..5)
        .map(|n| {
            publish(&dns, &format!("k{n}.example"), 90 + n);
            Peer::start(at(90 + n, port), &[])
        })
        .collect();
    let s = sender(&dns, port, 2, 5);
    for n in 0..5 {
        mail(&s, &format!("bob@k{n}.example"));
    }
    for peer in &peers {
        peer.wait_for(1, WAIT);
    }
    let open = || {
        let out = std::process::Command::new("ss")
            .args([
                "-Htnp",
                "state",
                "established",
                "dport",
                "=",
                &format!(":{port}"),
            ])
            .output()
            .expect("ss");
        let pid = format!("pid={},", s.pid());
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains(&pid))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(3);
    while open() > 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(open() <= 2, "{} connections kept open", open());
}

/// Issue #11: mail waiting for a destination that never answers stays
/// claimed for a whole connect timeout, and with four claims per delivery
/// slot it left no room for other mail, which then waited in the spool for
/// the timeout too. Forty per slot: with one slot, 39 messages waiting for a
/// dead destination and one to a working domain fill the claims exactly.
#[test]
fn mail_waiting_for_a_dead_destination_leaves_room_for_the_rest() {
    const TIMEOUT: u64 = 12;
    let dns = TestDns::start();
    let port = free_port();
    for (domain, last) in [("dead.example", 96), ("live.example", 97)] {
        publish(&dns, domain, last);
    }
    let _dead = Peer::start(at(96, port), &["--mode", "full-backlog"]);
    let live = Peer::start(at(97, port), &[]);
    let s = sender(&dns, port, 1, TIMEOUT);
    for n in 0..39 {
        mail(&s, &format!("u{n}@dead.example"));
    }
    let sent = Instant::now();
    mail(&s, "bob@live.example");
    live.wait_for(1, WAIT);
    let took = sent.elapsed();
    assert!(
        took < Duration::from_secs(TIMEOUT / 2),
        "the working domain's mail took {took:?}"
    );
}
