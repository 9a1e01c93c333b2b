//! ARC (RFC 8617), checked by a verifier nobody on the team wrote (dkimpy's
//! `arcverify`) against real DNS servers the test starts: mail from another
//! server that an alias forwards keeps its sender's DKIM signature as it
//! came and gets an ARC set in the forwarding domain's name; an arriving
//! chain sealed by dkimpy's `arcsign` is verified and recorded, and so is
//! one broken on the way.

use std::path::Path;
use std::time::Duration;

use crate::common::netlab::Netns;
use crate::common::*;
use crate::delivery::wait_maildir;
use crate::dmarc::{dkimpy_key, dkimpy_signed, our_results, send_raw, send_raw_to};

const WAIT: Duration = Duration::from_secs(30);

/// The DKIM TXT records `postern dns` prints for `domain`'s `selector`.
fn published_key(server: &TestServer, domain: &str, selector: &str) -> (String, String) {
    let records: Vec<serde_json::Value> =
        serde_json::from_str(&server.cli_ok(&["dns", domain, "--json"])).expect("json");
    let name = format!("{selector}._domainkey.{domain}.");
    let value = records
        .iter()
        .find(|r| r["name"].as_str() == Some(name.as_str()))
        .and_then(|r| r["value"].as_str())
        .unwrap_or_else(|| panic!("no {name} in postern dns"))
        .to_string();
    (name, value)
}

/// A verifier's verdict on `message`: dkimpy's arcverify prints the chain's
/// `cv=` result (as Python bytes, `cv=b'pass'`: given here as `cv=pass`).
fn arcverify(ns: &Netns, message: &str) -> String {
    let out = ns.run("arcverify", &[], message.as_bytes());
    let said = text(&out);
    said.lines()
        .find_map(|l| l.strip_prefix("arc verification: "))
        .unwrap_or_else(|| panic!("arcverify gave no verdict: {said}"))
        .replace("b'", "")
        .replace('\'', "")
}

#[test]
fn a_forward_keeps_the_senders_signature_and_is_sealed_for_the_next_server() {
    require_tool("arcverify");
    require_tool("dkimverify");
    let dns = TestDns::start();
    let keys = tempfile::tempdir().expect("dir");
    let key = dkimpy_key(keys.path(), &dns, "sel1", "signer.example");
    let peer = Peer::start(
        format!("127.0.0.1:{}", free_port()).parse().expect("addr"),
        &[],
    );
    let s = TestServer::delivering(&format!(
        "[delivery]\n{}[relay]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n",
        dns.config(),
        peer.addr.port()
    ));
    s.cli_ok(&["alias", "add", "fwd@example.com", "bob@remote.example"]);
    let signed = dkimpy_signed(&key, "sel1", "dave@signer.example", "forwarded");
    let r = send_raw_to(
        s.addr("mta"),
        s.dir.path(),
        ("dave@signer.example", "fwd@example.com"),
        &signed,
    );
    assert_eq!(r, "250", "{}", s.log());
    let forwarded = peer.wait_for(1, WAIT)[0]["data"]
        .as_str()
        .expect("data")
        .to_string();
    assert!(
        forwarded.starts_with("ARC-Seal: i=1; a=rsa-sha256;"),
        "the set on top:\n{forwarded}"
    );
    assert!(forwarded.contains("cv=none"), "{forwarded}");
    assert!(
        forwarded.contains("s=postern; d=example.com;"),
        "{forwarded}"
    );
    let aar = forwarded
        .split("ARC-Authentication-Results: ")
        .nth(1)
        .expect("an ARC-Authentication-Results field");
    assert!(
        aar.starts_with("i=1; mx.test.example;") && aar.contains("dkim=pass"),
        "{aar}"
    );
    assert!(
        forwarded.ends_with(&signed[signed.find("From:").expect("From")..]),
        "the message as it came, below what this server added:\n{forwarded}"
    );

    // The verifiers' world: example.com's key as `postern dns` prints it,
    // and the sender's.
    let ns = Netns::new();
    ns.resolving_locally();
    let inner = TestDns::start_in_netns(&ns.name);
    let (name, value) = published_key(&s, "example.com", "postern");
    inner.txt_long(&name, &value);
    let sender_key = std::fs::read_to_string(keys.path().join("sel1.dns")).expect("record");
    inner.txt_long("sel1._domainkey.signer.example", sender_key.trim());

    assert_eq!(arcverify(&ns, &forwarded), "cv=pass success");
    let dkim = ns.run("dkimverify", &[], forwarded.as_bytes());
    assert!(
        text(&dkim).contains("signature ok"),
        "the sender's signature holds: {}",
        text(&dkim)
    );
    // The verifier is strict: a body changed after the seal fails it.
    let changed = forwarded.replace("Hello Alice.", "Send money.");
    assert_ne!(changed, forwarded);
    assert!(
        arcverify(&ns, &changed).starts_with("cv=fail"),
        "{}",
        arcverify(&ns, &changed)
    );
}

/// A message a mailing list (lists.example) sealed with dkimpy, as it came
/// to the list: `authserv` is the list's name in its results.
fn sealed_by_list(keys: &Path, dns: &TestDns, message: &str) -> String {
    require_tool("arcsign");
    let key = dkimpy_key(keys, dns, "arc1", "lists.example");
    let with_results = format!(
        "Authentication-Results: lists.example; dkim=pass header.d=signer.example\r\n{message}"
    );
    let out = run_with_stdin(
        std::process::Command::new("arcsign").args([
            "arc1",
            "lists.example",
            key.to_str().expect("path"),
            "lists.example",
        ]),
        &with_results,
    );
    assert!(out.status.success(), "arcsign: {}", text(&out));
    let sealed = String::from_utf8(out.stdout).expect("utf8");
    assert!(sealed.starts_with("ARC-Seal:"), "{sealed}");
    sealed
}

#[test]
fn an_arriving_chain_is_verified_and_recorded() {
    let dns = TestDns::start();
    let keys = tempfile::tempdir().expect("dir");
    let key = dkimpy_key(keys.path(), &dns, "sel1", "signer.example");
    dns.txt("_dmarc.signer.example", &["v=DMARC1; p=none"]);
    let s = TestServer::start(&format!("[delivery]\n{}", dns.config()));
    let (mta, dir) = (s.addr("mta"), s.dir.path());
    let signed = dkimpy_signed(&key, "sel1", "dave@signer.example", "listed");
    let sealed = sealed_by_list(keys.path(), &dns, &signed);

    assert_eq!(send_raw(mta, dir, "list@lists.example", &sealed), "250");
    let broken = sealed.replace("Hello Alice.", "Hello Alice, from the list.");
    assert_eq!(send_raw(mta, dir, "list@lists.example", &broken), "250");
    assert_eq!(send_raw(mta, dir, "dave@signer.example", &signed), "250");

    // Delivered in any order: each is told apart by what it carries.
    let inbox = wait_maildir(&s, "example.com", "alice", 3);
    let results_of = |wanted: &dyn Fn(&str) -> bool| {
        let found: Vec<&String> = inbox.iter().filter(|m| wanted(m)).collect();
        assert_eq!(found.len(), 1, "{inbox:#?}");
        our_results(found[0])
    };
    let sealed_ok = results_of(&|m| m.contains("ARC-Seal:") && !m.contains("from the list"));
    assert!(sealed_ok.contains("arc=pass"), "{sealed_ok}");
    let broken = results_of(&|m| m.contains("from the list"));
    assert!(broken.contains("arc=fail"), "{broken}");
    let unsealed = results_of(&|m| !m.contains("ARC-Seal:"));
    assert!(unsealed.contains("arc=none"), "{unsealed}");
    assert!(
        !inbox.iter().any(|m| m.contains("ARC-Seal: i=2")),
        "only forwards are sealed"
    );
}
