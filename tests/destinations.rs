//! Many destinations (issue #11 item 2): MX answers are kept for their TTL.

use crate::common::*;
use crate::delivery::{WAIT, at, ip, send};

/// A delivering server with `concurrency` delivery slots and the given
/// timeouts, asking `dns`, reaching MX hosts on `port`.
fn sender(dns: &TestDns, port: u16, concurrency: usize, timeouts: u64) -> TestServer {
    TestServer::delivering(&format!(
        "trusted_networks = [\"127.0.0.1/32\"]\n[delivery]\nmx_port = {port}\n{}retry_min = 60\n\
         concurrency = {concurrency}\nconnect_timeout = {timeouts}\ntimeout = {timeouts}\n",
        dns.config()
    ))
}

/// Issue #11: with `[delivery] nameservers` set, every delivery asked for the
/// MX again (the resolver kept nothing). Answers are now kept for their TTL.
#[test]
fn issue_11_mx_answers_are_kept_for_their_ttl() {
    let dns = TestDns::start();
    dns.set_ttl(300);
    let port = free_port();
    dns.mx("remote.example", 10, "mx.remote.example");
    dns.ip("mx.remote.example", ip(86));
    let peer = Peer::start(at(86, port), &[]);
    let s = sender(&dns, port, 10, 5);
    for n in 1..=3 {
        send(
            &s,
            "app@example.com",
            &["bob@remote.example"],
            "Subject: again\n\nx\n",
        );
        peer.wait_for(n, WAIT);
    }
    assert_eq!(dns.asked("remote.example"), 1, "MX questions");
}
