//! The default listeners (no `[[listener]]` in the config) take IPv6 and IPv4
//! clients on one socket per port, and an IPv4 client is known by its IPv4
//! address, not as `::ffff:a.b.c.d`. Run in a network namespace of its own,
//! where binding every address reaches nothing outside the test.

use std::process::Command;

use crate::common::netlab::Lab;
use crate::common::*;

/// Reads the greeting of `host`:`port` from inside `ns`.
fn greeting(ns: &str, host: &str, port: u16) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "python3", "-c"])
        .arg(
            "import socket, sys\n\
             s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)\n\
             print(s.recv(512).decode())\n",
        )
        .args([host, &port.to_string()])
        .output()
        .expect("python3");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn the_default_listeners_take_ipv6_and_ipv4_clients() {
    let lab = Lab::new();
    let mut s = TestServer::configure(
        "hostname = \"mx.test.example\"\ndata_dir = \"data\"\n[delivery]\nhold = true\n",
    );
    s.spawn_in(Some(&lab.server));
    let bound: Vec<String> = s
        .listeners
        .iter()
        .map(|(addr, role)| format!("{addr} {role}"))
        .collect();
    assert_eq!(
        bound,
        [
            "[::]:25 mta",
            "[::]:26 submission",
            "[::]:587 submission",
            "[::]:465 submissions"
        ]
    );
    for (ns, host) in [
        (&lab.server, "::1"),
        (&lab.server, "127.0.0.1"),
        (&lab.client, "10.77.1.2"),
    ] {
        let got = greeting(ns, host, 25);
        assert!(got.starts_with("220 mx.test.example"), "{host}: {got}");
    }
    let log = s.log();
    for peer in ["peer=[::1]:", "peer=127.0.0.1:", "peer=10.77.0.2:"] {
        assert!(log.contains(peer), "{peer} not in {log}");
    }
    assert!(!log.contains("::ffff:"), "{log}");
}
