//! DKIM signing of submitted mail, checked by verifiers nobody on the team
//! wrote: dkimpy's `dkimverify` and OpenDKIM's `opendkim-testmsg`, run in a
//! network namespace whose resolver is a real DNS server the test starts,
//! serving the records `postern dns` prints. Each verifier is first shown to
//! be strict: a copy changed on the way (re-encoded, tagged by a list, given
//! a second From:) fails.

use std::time::Duration;

use crate::common::netlab::Netns;
use crate::common::*;

const WAIT: Duration = Duration::from_secs(30);

/// A message with what relays like to change: trailing spaces, a folded
/// header, a long Subject.
const BODY: &str = "From: Alice <alice@example.com>\nTo: Bob <bob@remote.example>\n\
    Subject: the quarterly numbers, folded\n over two lines\n\
    MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\n\
    Hi Bob,   \n\nthe numbers are attached in spirit.\n\n-- \nAlice\n";

/// The verifiers' world: a namespace resolving with a DNS server that serves
/// example.com's DKIM records as `postern dns` prints them.
struct Verifiers {
    ns: Netns,
    _dns: TestDns,
}

impl Verifiers {
    fn for_domain(server: &TestServer, domain: &str) -> Verifiers {
        require_tool("dkimverify");
        require_tool("opendkim-testmsg");
        let ns = Netns::new();
        ns.resolving_locally();
        let dns = TestDns::start_in_netns(&ns.name);
        let published = publish(&dns, server, domain, |_| true);
        assert_eq!(published, 2, "an RSA and an Ed25519 record");
        Verifiers { ns, _dns: dns }
    }

    /// dkimpy's verdict on signature `index` of `message`.
    fn dkimpy(&self, message: &str, index: usize) -> bool {
        let out = self.ns.run(
            "dkimverify",
            &["--index", &index.to_string()],
            message.as_bytes(),
        );
        let said = text(&out);
        // A failure it explains (a hash that does not match) ends in a
        // ValidationError; anything else (no key found) is no verdict.
        assert!(
            said.contains("signature ok")
                || said.contains("signature verification failed")
                || said.contains("dkim.ValidationError"),
            "dkimverify gave no verdict: {said}"
        );
        out.status.success() && said.contains("signature ok")
    }

    /// OpenDKIM's verdict on `message` given signature `index` alone: it
    /// verifies the first signature it finds, and is silent when it holds.
    fn opendkim(&self, message: &str, index: usize) -> bool {
        let only = only_signature(message, index);
        let out = self.ns.run("opendkim-testmsg", &[], only.as_bytes());
        out.status.success() && text(&out).trim().is_empty()
    }

    /// Both verifiers pass every signature of `message`; returns their count.
    fn all_pass(&self, message: &str) -> usize {
        let count = signatures(message).len();
        assert_eq!(count, 2, "two signatures:\n{message}");
        for index in 0..count {
            assert!(
                self.dkimpy(message, index),
                "dkimpy, signature {index}:\n{message}"
            );
            assert!(
                self.opendkim(message, index),
                "opendkim, signature {index}:\n{message}"
            );
        }
        count
    }

    fn all_fail(&self, message: &str, change: &str) {
        for index in 0..signatures(message).len() {
            assert!(!self.dkimpy(message, index), "dkimpy passed {change}");
            assert!(!self.opendkim(message, index), "opendkim passed {change}");
        }
    }
}

/// The DKIM-Signature fields of `message`, each with its continuation lines.
fn signatures(message: &str) -> Vec<String> {
    fields(message)
        .into_iter()
        .filter(|f| f.to_ascii_lowercase().starts_with("dkim-signature:"))
        .collect()
}

fn fields(message: &str) -> Vec<String> {
    let head = message.split("\r\n\r\n").next().unwrap_or("");
    let mut out: Vec<String> = Vec::new();
    for line in head.split("\r\n") {
        match out.last_mut() {
            Some(last) if line.starts_with([' ', '\t']) => {
                last.push_str("\r\n");
                last.push_str(line);
            }
            _ => out.push(line.to_string()),
        }
    }
    out
}

/// `message` without its DKIM-Signature fields other than number `index`.
fn only_signature(message: &str, index: usize) -> String {
    let all = signatures(message);
    let mut out = message.to_string();
    for (i, field) in all.iter().enumerate() {
        if i != index {
            out = out.replacen(&format!("{field}\r\n"), "", 1);
        }
    }
    out
}

fn signed_server(peer: &Peer) -> TestServer {
    TestServer::delivering(&format!(
        "[relay]\nhost = \"{}\"\nport = {}\ntls = \"none\"\n",
        peer.addr.ip(),
        peer.addr.port()
    ))
}

#[test]
fn submitted_mail_carries_rsa_and_ed25519_signatures_independent_verifiers_accept() {
    let peer = Peer::start(
        format!("127.0.0.1:{}", free_port()).parse().expect("addr"),
        &[],
    );
    let s = signed_server(&peer);
    let verifiers = Verifiers::for_domain(&s, "example.com");
    assert_eq!(code(&alice_submits(s.addr("submission"), BODY)), 250);
    // Larger than what a session holds in memory: signed from the spill.
    let large = format!(
        "{BODY}{}",
        "0123456789 abcdefghijklmnopqrstuvwxyz\n".repeat(9_000)
    );
    let file = s.dir.path().join("large.eml");
    std::fs::write(&file, large.replace('\n', "\r\n")).expect("write");
    let mut args = alice_to_bob("PLAIN");
    args.extend(["--tls", "--suppress-data", "--data"]);
    args.push(file.to_str().expect("path"));
    let out = swaks(s.addr("submission"), &args);
    assert!(text(&out).contains("queued as"), "{}", text(&out));
    let received = peer.wait_for(2, WAIT);
    for message in &received {
        let message = message["data"].as_str().expect("data");
        verifiers.all_pass(message);
        let first = &signatures(message)[0];
        assert!(
            first.contains("a=rsa-sha256") && first.contains("c=relaxed/relaxed"),
            "{first}"
        );
        let h: String = first
            .split("h=")
            .nth(1)
            .and_then(|t| t.split(';').next())
            .expect("h=")
            .split_whitespace()
            .collect();
        assert_eq!(
            h.to_ascii_lowercase().matches("from").count(),
            2,
            "From: signed once more than it occurs: {h}"
        );
    }

    // The verifiers are strict: each change made on the way breaks them.
    let message = received[0]["data"].as_str().expect("data");
    let reencoded = message.replace(
        "Content-Type: text/plain; charset=utf-8\r\n\r\nHi Bob,   \r\n",
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nHi Bob,  =20\r\n",
    );
    assert_ne!(reencoded, message);
    verifiers.all_fail(&reencoded, "a body re-encoded on the way");
    let tagged = message.replace("Subject: the", "Subject: [list] the");
    assert_ne!(tagged, message);
    verifiers.all_fail(&tagged, "a Subject: tagged by a list");
    let second_from = message.replacen(
        "From: Alice",
        "From: Mallory <mallory@example.com>\r\nFrom: Alice",
        1,
    );
    verifiers.all_fail(&second_from, "a second From: added");
}

#[test]
fn only_submitted_mail_of_a_domain_with_keys_is_signed() {
    let s = TestServer::start("");
    let submitted = queued_id(&alice_submits(s.addr("submission"), BODY)).expect("queued");
    assert_eq!(signatures(&s.queued_body(&submitted)).len(), 2);
    // From another server: its own domain signs it, or no one.
    let relayed = smtplib_send(
        "plain",
        s.addr("mta"),
        None,
        "carol@remote.example",
        "alice@example.com",
        "From: carol@remote.example\nSubject: hi\n\nhello\n",
    );
    let relayed = queued_id(&relayed).expect("queued");
    assert!(signatures(&s.queued_body(&relayed)).is_empty());
    // A domain without keys: the mail goes, unsigned.
    s.cli_ok(&["domain", "add", "example.net"]);
    for key in ["example.net.pem", "example.net.ed25519.pem"] {
        std::fs::remove_file(s.data_dir().join("dkim").join(key)).expect("remove key");
    }
    s.cli_stdin_ok(
        &["user", "add", "dave@example.net", "--password-stdin"],
        PASSWORD,
    );
    let unsigned = smtplib_send(
        "starttls",
        s.addr("submission"),
        Some(("dave@example.net", PASSWORD)),
        "dave@example.net",
        "bob@remote.example",
        "From: dave@example.net\nSubject: hi\n\nhello\n",
    );
    let unsigned = queued_id(&unsigned).expect("queued");
    assert!(signatures(&s.queued_body(&unsigned)).is_empty());
}

/// The selectors that signed `message`, in order.
fn selectors(message: &str) -> Vec<String> {
    signatures(message)
        .iter()
        .filter_map(|f| {
            let tags: String = f.split_whitespace().collect();
            let s = tags.split(";s=").nth(1)?;
            Some(s.split(';').next()?.to_string())
        })
        .collect()
}

/// Publishes the records `postern dns` prints for the DKIM keys of `domain`
/// whose selector `wanted` takes; returns how many.
fn publish(
    dns: &TestDns,
    server: &TestServer,
    domain: &str,
    wanted: impl Fn(&str) -> bool,
) -> usize {
    let records: Vec<serde_json::Value> =
        serde_json::from_str(&server.cli_ok(&["dns", domain, "--json"])).expect("json");
    let mut published = 0;
    for record in &records {
        let name = record["name"].as_str().expect("name");
        let Some(selector) = name.strip_suffix(&format!("._domainkey.{domain}.")) else {
            continue;
        };
        if wanted(selector) {
            dns.txt_long(name, record["value"].as_str().expect("value"));
            published += 1;
        }
    }
    published
}

fn dkim_names(server: &TestServer) -> Vec<String> {
    server
        .cli_ok(&["dns", "example.com"])
        .lines()
        .filter(|l| l.contains("._domainkey."))
        .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
        .collect()
}

fn wait_for_log(server: &TestServer, event: &str) {
    let deadline = std::time::Instant::now() + WAIT;
    while !server.log().contains(event) {
        assert!(
            std::time::Instant::now() < deadline,
            "no {event} in the log:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_rotation_signs_with_new_keys_once_dns_serves_both_and_retires_the_old_ones() {
    let dns = TestDns::start();
    let peer = Peer::start(
        format!("127.0.0.1:{}", free_port()).parse().expect("addr"),
        &[],
    );
    let s = TestServer::delivering(&format!(
        "[relay]\nhost = \"{}\"\nport = {}\ntls = \"none\"\n[delivery]\n{}\
         [dkim]\ncheck_interval = 1\nretire_after = 4\n",
        peer.addr.ip(),
        peer.addr.port(),
        dns.config()
    ));
    publish(&dns, &s, "example.com", |_| true);
    let rotated = s.cli_ok(&["domain", "dkim", "rotate", "example.com"]);
    let new: Vec<String> = rotated
        .lines()
        .filter(|l| l.contains("._domainkey.example.com."))
        .map(|l| l.split('.').next().unwrap_or("").to_string())
        .collect();
    assert_eq!(new.len(), 2, "{rotated}");
    assert!(
        new[0].starts_with("postern-20") && new[1] == format!("{}-ed25519", new[0]),
        "{rotated}"
    );
    assert!(
        rotated.contains("signs with them once DNS serves both"),
        "{rotated}"
    );
    let again = s.cli(&["domain", "dkim", "rotate", "example.com"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again).contains("is waiting for DNS to serve"),
        "{}",
        text(&again)
    );

    let mut sent = 0;
    let mut send_and_read_selectors = || {
        assert_eq!(code(&alice_submits(s.addr("submission"), BODY)), 250);
        sent += 1;
        let got = peer.wait_for(sent, WAIT);
        selectors(got[sent - 1]["data"].as_str().expect("data"))
    };
    // Not served: the old keys sign, however many checks pass.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(send_and_read_selectors(), ["postern", "postern-ed25519"]);
    // One of the two served: still the old ones.
    publish(&dns, &s, "example.com", |sel| sel == new[0]);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(send_and_read_selectors(), ["postern", "postern-ed25519"]);
    // Both: the switch, and the old keys are kept published for a while.
    publish(&dns, &s, "example.com", |sel| sel == new[1]);
    wait_for_log(&s, "dkim_switched");
    assert_eq!(send_and_read_selectors(), new);
    let listed = s.cli_ok(&["dns", "example.com"]);
    assert_eq!(dkim_names(&s).len(), 4, "{listed}");
    assert!(
        listed.contains("replaced: keep it published until"),
        "{listed}"
    );
    // Then they go: from `postern dns`, and from the disk.
    wait_for_log(&s, "dkim_key_deleted");
    let names = dkim_names(&s);
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.iter().all(|n| n.starts_with(&new[0])), "{names:?}");
    assert!(!s.data_dir().join("dkim/example.com.pem").exists());
    assert!(!s.data_dir().join("dkim/example.com.ed25519.pem").exists());
    // What the new keys signed passes the independent verifiers.
    let verifiers = Verifiers::for_domain(&s, "example.com");
    let last = peer.wait_for(3, WAIT);
    verifiers.all_pass(last[2]["data"].as_str().expect("data"));
}
