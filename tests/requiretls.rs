//! REQUIRETLS (RFC 8689): offered over TLS only, kept with the message, and
//! honoured on the way out: a message that asks for it goes to a relay over
//! TLS with a verified certificate and with REQUIRETLS on its MAIL (a second
//! Postern takes it), and comes back to its sender as a DSN when its next
//! hop is an MX with no MTA-STS policy. Python's smtplib is the client.

use crate::common::*;
use crate::delivery::{at, ip, wait_maildir};

/// Sends one message with REQUIRETLS over STARTTLS as a trusted client;
/// prints whether the server offered it, then the outcome.
const SEND_REQUIRETLS: &str = r#"
import smtplib, ssl, sys
host, port, sender, rcpt = sys.argv[1:5]
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP(host, int(port), timeout=20)
s.ehlo("client.test")
print("before tls:", s.has_extn("requiretls"))
s.starttls(context=ctx)
s.ehlo("client.test")
print("after tls:", s.has_extn("requiretls"))
# The header asks the opposite; REQUIRETLS wins (RFC 8689 §3).
body = ("From: %s\r\nSubject: private\r\nTLS-Required: No\r\n\r\nfor your eyes only\r\n" % sender).encode()
try:
    s.sendmail(sender, [rcpt], body, mail_options=["REQUIRETLS"])
    print("sent")
except smtplib.SMTPException as e:
    print("refused:", e)
"#;

fn send_requiretls(s: &TestServer, sender: &str, rcpt: &str) -> String {
    let addr = s.addr("mta");
    text(&python(
        SEND_REQUIRETLS,
        &[
            &addr.ip().to_string(),
            &addr.port().to_string(),
            sender,
            rcpt,
        ],
    ))
}

#[test]
fn requiretls_is_offered_over_tls_only_and_kept_with_the_message() {
    let s = TestServer::start("");
    let (mut c, _) = Raw::connect(s.addr("mta"));
    assert!(!c.cmd("EHLO client.test").contains("REQUIRETLS"));
    let r = c.cmd("MAIL FROM:<x@remote.example> REQUIRETLS");
    assert!(r.starts_with("555 5.5.4"), "not offered in plaintext: {r}");

    let out = send_requiretls(&s, "x@remote.example", "alice@example.com");
    assert_eq!(
        out,
        "before tls: False\nafter tls: True\nsent\n",
        "{}",
        s.log()
    );
    let queued = s.queue();
    assert_eq!(queued[0]["requiretls"], true, "{queued:?}");
    let id = queued[0]["id"].as_str().expect("id");
    let show = s.cli_ok(&["queue", "show", id]);
    assert!(
        show.contains("requiretls: every hop over verified TLS") && !show.contains("tls-required"),
        "{show}"
    );
}

#[test]
fn a_requiretls_message_goes_only_over_verified_tls_to_a_server_that_offers_it() {
    let dns = TestDns::start();
    let certs = tempfile::tempdir().expect("dir");
    let (ca, cert, key) = ca_signed(certs.path(), &["relay.test"]);
    dns.ip("relay.test", ip(91));
    let port = free_port();
    // The relay: a second Postern, hosting dest.test, with a certificate
    // from the CA the sender trusts.
    let mut relay = TestServer::configure(&format!(
        "hostname = \"relay.test\"\ndata_dir = \"data\"\ntrusted_networks = [\"127.0.0.0/8\"]\n\
         [tls]\ncert = \"{}\"\nkey = \"{}\"\n[[listener]]\naddr = \"{}\"\nrole = \"mta\"\n",
        cert.display(),
        key.display(),
        at(91, port)
    ));
    relay.cli_ok(&["domain", "add", "dest.test"]);
    relay.cli_stdin_ok(&["user", "add", "bob@dest.test", "--password-stdin"], "pw");
    relay.spawn();
    let mut s = TestServer::configure(&TestServer::config_for(&format!(
        "trusted_networks = [\"127.0.0.1/32\"]\n[delivery]\n{}retry_min = 1\nretry_max = 2\n\
         [relay]\nhost = \"relay.test\"\nport = {port}\ntls = \"starttls\"\n",
        dns.config()
    )));
    s.env
        .push(("SSL_CERT_FILE".into(), ca.to_str().expect("ca").into()));
    s.add_alice();
    s.spawn();

    let out = send_requiretls(&s, "alice@example.com", "bob@dest.test");
    assert!(out.ends_with("sent\n"), "{out}");
    let delivered = wait_maildir(&relay, "dest.test", "bob", 1);
    assert!(delivered[0].contains("for your eyes only"));
    let log = relay.log();
    let mail = log
        .lines()
        .find(|l| l.contains("MAIL FROM:<alice@example.com>"))
        .expect("the relay's MAIL line");
    assert!(mail.contains(" REQUIRETLS"), "{mail}");
}

#[test]
fn a_requiretls_message_to_an_mx_without_a_policy_returns_to_its_sender() {
    let dns = TestDns::start();
    let port = free_port();
    dns.mx("plain.test", 10, "mx.plain.test");
    dns.ip("mx.plain.test", ip(92));
    let peer = Peer::start(at(92, port), &[]);
    let s = crate::delivery::sender(&dns, port, "");
    let out = send_requiretls(&s, "alice@example.com", "carol@plain.test");
    assert!(out.ends_with("sent\n"), "{out}");
    let dsn = &wait_maildir(&s, "example.com", "alice", 1)[0];
    assert!(
        dsn.contains("REQUIRETLS") && dsn.contains("not TLS with a verified certificate"),
        "{dsn}"
    );
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert!(peer.received().is_empty(), "nothing went in the clear");
}
