//! What the protocol needs real sockets for: the connection caps of the
//! listeners, and the port echo across them. The protocol rules themselves
//! (bad input, sequence, pipelining, BDAT, DSN and SMTPUTF8 parameters, the
//! limits at the limit) are tested in-process: `src/session/protocol_tests.rs`.

use std::time::Duration;

use crate::common::*;

#[test]
fn connections_per_client_at_the_limit() {
    let s = TestServer::start("[limits]\nmax_connections_per_ip = 2\n");
    let (_a, ga) = Raw::connect(s.addr("mta"));
    let (_b, gb) = Raw::connect(s.addr("submission"));
    let (_c, gc) = Raw::connect(s.addr("mta"));
    assert!(ga.starts_with("220") && gb.starts_with("220"));
    assert!(gc.starts_with("421 4.7.0"), "{gc}");
    drop(_a);
    std::thread::sleep(Duration::from_millis(200));
    let (_d, gd) = Raw::connect(s.addr("mta"));
    assert!(gd.starts_with("220"), "a freed slot is reusable: {gd}");
}

#[test]
fn port_echo_reports_the_ports_a_probe_token_reached() {
    let s = TestServer::start("");
    let token = "00112233445566778899aabbccddeeff";
    for role in ["mta", "submission"] {
        let (mut c, _) = Raw::connect(s.addr(role));
        assert_eq!(
            code(&c.cmd(&format!("EHLO check-{token}.postern.invalid"))),
            250
        );
    }
    let (mut c, _) = Raw::connect(s.addr("mta"));
    let mut ports = [s.port("mta"), s.port("submission")];
    ports.sort_unstable();
    let r = c.cmd(&format!("NOOP postern-echo {token}"));
    assert_eq!(
        r,
        format!(
            "250 2.0.0 Ok; postern-echo ports={},{} addr=127.0.0.1\r\n",
            ports[0], ports[1]
        )
    );
    let r = c.cmd("NOOP postern-echo ffffffffffffffffffffffffffffffff");
    assert_eq!(
        r,
        "250 2.0.0 Ok; postern-echo ports=none addr=127.0.0.1\r\n"
    );
}

#[test]
fn connections_in_total_at_the_limit() {
    let s = TestServer::start("[limits]\nmax_connections = 2\n");
    let (_a, ga) = Raw::connect(s.addr("mta"));
    let (_b, gb) = Raw::connect(s.addr("submission"));
    assert!(ga.starts_with("220") && gb.starts_with("220"));
    let (_c, gc) = Raw::connect(s.addr("submissions"));
    assert!(gc.starts_with("421 4.7.0"), "{gc}");
}

/// Issue #9 item 13: trusted networks are exempt from the per-client cap (as
/// Postfix exempts mynetworks), but not from the total.
#[test]
fn trusted_networks_are_exempt_from_the_per_client_cap() {
    let s = TestServer::start(
        "trusted_networks = [\"127.0.0.1/32\"]\n[limits]\nmax_connections_per_ip = 3\nmax_connections = 10\n",
    );
    let held: Vec<(Raw, String)> = (0..10).map(|_| Raw::connect(s.addr("mta"))).collect();
    for (i, (_, greeting)) in held.iter().enumerate() {
        assert!(greeting.starts_with("220"), "connection {i}: {greeting}");
    }
    let (_over, g) = Raw::connect(s.addr("mta"));
    assert!(g.starts_with("421 4.7.0"), "the total cap still holds: {g}");

    let s = TestServer::start("[limits]\nmax_connections_per_ip = 3\n");
    let held: Vec<(Raw, String)> = (0..3).map(|_| Raw::connect(s.addr("mta"))).collect();
    assert!(held.iter().all(|(_, g)| g.starts_with("220")));
    let (_fourth, g) = Raw::connect(s.addr("mta"));
    assert!(g.starts_with("421 4.7.0"), "{g}");
}
