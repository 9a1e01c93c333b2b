//! 8-bit text and servers without 8BITMIME (RFC 6152): submitted mail is made
//! 7-bit before it is signed, so its signature holds anywhere; unsigned mail
//! from elsewhere is made 7-bit for a server that does not offer 8BITMIME;
//! signed mail from elsewhere is passed on as it came.

use std::time::Duration;

use crate::common::*;

const WAIT: Duration = Duration::from_secs(20);

fn relaying_to(peer: &Peer) -> TestServer {
    TestServer::delivering(&format!(
        "trusted_networks = [\"127.0.0.1/32\"]\n[relay]\nhost = \"{}\"\nport = {}\ntls = \"none\"\n",
        peer.addr.ip(),
        peer.addr.port()
    ))
}

fn relay_raw(s: &TestServer, message: &str) {
    let (mut c, _) = Raw::connect(s.addr("mta"));
    c.cmd("EHLO client.test");
    assert_eq!(
        code(&c.cmd("MAIL FROM:<app@remote.example> BODY=8BITMIME")),
        250
    );
    assert_eq!(code(&c.cmd("RCPT TO:<bob@far.example>")), 250);
    assert_eq!(code(&c.cmd("DATA")), 354);
    c.send(message.replace('\n', "\r\n").as_bytes());
    let r = c.cmd(".");
    assert!(r.starts_with("250 "), "{r}");
}

#[test]
fn submitted_8bit_text_is_made_7bit_before_it_is_signed() {
    let peer = Peer::start(
        format!("127.0.0.1:{}", free_port()).parse().expect("addr"),
        &[],
    );
    let s = relaying_to(&peer);
    let r = alice_submits(
        s.addr("submission"),
        "From: alice@example.com\nSubject: caf\u{e9}\nContent-Type: text/plain; charset=utf-8\n\nUn caf\u{e9} cr\u{e8}me.\n",
    );
    assert!(r.starts_with("250 "), "{r}");
    let got = peer.wait_for(1, WAIT);
    let data = got[0]["data"].as_str().expect("data");
    let (head, body) = data.split_once("\r\n\r\n").expect("body");
    assert!(
        body.is_ascii() && body.contains("Un caf=C3=A9 cr=C3=A8me."),
        "{data}"
    );
    assert!(
        head.contains("Content-Transfer-Encoding: quoted-printable"),
        "{head}"
    );
    assert!(head.contains("DKIM-Signature:"), "{head}");
}

#[test]
fn unsigned_8bit_mail_is_made_7bit_for_a_server_without_8bitmime_and_signed_mail_is_not() {
    let peer = Peer::start(
        format!("127.0.0.1:{}", free_port()).parse().expect("addr"),
        &["--no-8bitmime"],
    );
    let s = relaying_to(&peer);
    relay_raw(
        &s,
        "From: app@remote.example\nSubject: one\nContent-Type: text/plain; charset=utf-8\n\nDer B\u{e4}r.\n",
    );
    relay_raw(
        &s,
        "DKIM-Signature: v=1; a=rsa-sha256; d=remote.example; s=x; h=from; bh=AAAA; b=AAAA\n\
         From: app@remote.example\nSubject: two\nContent-Type: text/plain; charset=utf-8\n\nDer B\u{e4}r.\n",
    );
    let got = peer.wait_for(2, WAIT);
    let find = |subject: &str| {
        got.iter()
            .map(|m| m["data"].as_str().expect("data").to_string())
            .find(|d| d.contains(&format!("Subject: {subject}\r\n")))
            .unwrap_or_else(|| panic!("no {subject}: {got:?}"))
    };
    let one = find("one");
    assert!(one.is_ascii() && one.contains("Der B=C3=A4r."), "{one}");
    assert!(
        one.contains("Content-Transfer-Encoding: quoted-printable"),
        "{one}"
    );
    let two = find("two");
    assert!(two.contains("Der B\u{e4}r."), "{two}");
}
