//! DNS block lists (`[filter] dnsbl`), served by the test's DNS server: a
//! listed client of port 25 is turned away at connect with the list's name;
//! the submission ports, trusted networks and a list that refuses to answer
//! turn no one away.

use crate::common::*;

#[test]
fn a_listed_client_of_port_25_is_turned_away_at_connect() {
    let dns = TestDns::start();
    dns.ip("1.0.0.127.bl.example", "127.0.0.2".parse().expect("ip"));
    // A list that refuses the query (as Spamhaus does through public
    // resolvers) does not list anyone.
    dns.ip(
        "1.0.0.127.refusing.example",
        "127.255.255.254".parse().expect("ip"),
    );
    let s = TestServer::start(&format!(
        "[delivery]\n{}[filter]\ndnsbl = [\"refusing.example\", \"clean.example\", \"bl.example\"]\n",
        dns.config()
    ));
    let (_, greeting) = Raw::connect(s.addr("mta"));
    assert!(
        greeting.starts_with(
            "554 5.7.1 Service unavailable; client [127.0.0.1] blocked using bl.example"
        ),
        "{greeting}"
    );
    assert!(s.log().contains("dnsbl_listed"), "{}", s.log());
    let (_, greeting) = Raw::connect(s.addr("submission"));
    assert_eq!(code(&greeting), 220, "{greeting}");

    let unlisted = TestServer::start(&format!(
        "[delivery]\n{}[filter]\ndnsbl = [\"refusing.example\", \"clean.example\"]\n",
        dns.config()
    ));
    let (_, greeting) = Raw::connect(unlisted.addr("mta"));
    assert_eq!(code(&greeting), 220, "{greeting}");

    let trusted = TestServer::start(&format!(
        "trusted_networks = [\"127.0.0.1/32\"]\n[delivery]\n{}[filter]\ndnsbl = [\"bl.example\"]\n",
        dns.config()
    ));
    let (_, greeting) = Raw::connect(trusted.addr("mta"));
    assert_eq!(code(&greeting), 220, "{greeting}");
}
