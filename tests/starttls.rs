//! STARTTLS and implicit TLS with outside clients; the certificate generated
//! on first start is reused; nothing sent before the handshake survives it.

use crate::common::*;

#[test]
fn openssl_starttls_and_implicit_tls() {
    let s = TestServer::start("");
    let out = s_client(
        s.addr("submission"),
        &["-starttls", "smtp"],
        "EHLO client.test\r\nQUIT\r\n",
    );
    let t = text(&out);
    assert!(
        t.contains("250-AUTH PLAIN LOGIN") || t.contains("250 AUTH PLAIN LOGIN"),
        "{t}"
    );
    assert!(
        t.contains("Protocol  : TLSv1.3") || t.contains("TLSv1.3"),
        "{t}"
    );
    let out = s_client(s.addr("submissions"), &[], "EHLO client.test\r\nQUIT\r\n");
    let t = text(&out);
    assert!(
        t.contains("220 mx.test.example ESMTP") && t.contains("AUTH PLAIN LOGIN"),
        "{t}"
    );
    // Old protocol versions are refused.
    let out = s_client(s.addr("submissions"), &["-tls1_1"], "QUIT\r\n");
    assert!(
        !text(&out).contains("220 mx.test.example"),
        "TLS 1.1 must fail: {}",
        text(&out)
    );
    let out = s_client(s.addr("submissions"), &["-tls1_2"], "QUIT\r\n");
    assert!(
        text(&out).contains("220 mx.test.example"),
        "TLS 1.2 works: {}",
        text(&out)
    );
}

fn fingerprint(s: &TestServer) -> String {
    let out = s_client(s.addr("submissions"), &[], "QUIT\r\n");
    let pem = text(&out);
    let start = pem
        .find("-----BEGIN CERTIFICATE-----")
        .expect("certificate in output");
    let end =
        pem.find("-----END CERTIFICATE-----").expect("end") + "-----END CERTIFICATE-----".len();
    pem[start..end].to_string()
}

#[test]
fn the_generated_certificate_is_reused_on_restart() {
    let mut s = TestServer::start("");
    let first = fingerprint(&s);
    assert!(s.data_dir().join("tls/cert.pem").exists());
    s.kill();
    s.spawn();
    assert_eq!(fingerprint(&s), first);
}

/// CVE-2011-0411: a command pipelined after STARTTLS, in the same packet, must
/// be discarded, not answered inside the TLS session.
const INJECTION: &str = r#"
import socket, ssl, sys
host, port = sys.argv[1], int(sys.argv[2])
s = socket.create_connection((host, port), timeout=10)
f = s.makefile("rb")
def reply():
    lines = []
    while True:
        l = f.readline().decode()
        lines.append(l)
        if len(l) < 4 or l[3] != "-":
            return "".join(lines)
reply()
s.sendall(b"EHLO x\r\n"); reply()
s.sendall(b"STARTTLS\r\nMAIL FROM:<injected@remote.example>\r\n")
print("starttls:", reply().strip())
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
t = ctx.wrap_socket(s, server_hostname=host)
tf = t.makefile("rb")
t.sendall(b"NOOP\r\n")
print("first reply in TLS:", tf.readline().decode().strip())
t.sendall(b"MAIL FROM:<a@remote.example>\r\n")
print("mail:", tf.readline().decode().strip())
"#;

#[test]
fn commands_pipelined_after_starttls_are_discarded() {
    let s = TestServer::start("");
    let out = python(
        INJECTION,
        &[&s.addr("mta").ip().to_string(), &s.port("mta").to_string()],
    );
    let t = text(&out);
    assert!(t.contains("starttls: 220 2.0.0 Ready to start TLS"), "{t}");
    // Had the injected MAIL been run, NOOP's reply would come second.
    assert!(t.contains("first reply in TLS: 250 2.0.0 Ok"), "{t}");
    // RFC 3207 §4.2: state is reset, so MAIL needs a new EHLO.
    assert!(t.contains("mail: 503 5.5.1"), "{t}");
}

/// A submission port waits `tls_detect_ms` for a ClientHello before it greets
/// a client that waits for the greeting; a network whose client then said
/// EHLO in plaintext is greeted sooner next time (one that only waited
/// teaches nothing), the implicit-TLS port keeps its wait, and an
/// implicit-TLS client from that network (openssl, SSL/TLS set on 587) still
/// gets TLS.
#[test]
fn a_network_that_spoke_plaintext_is_greeted_sooner_and_implicit_tls_still_works() {
    let s = TestServer::start("[smtp]\ntls_detect_ms = 600\n");
    let greeted_after = |role: &str, ehlo: bool| {
        let started = std::time::Instant::now();
        let (mut c, greeting) = Raw::connect(s.addr(role));
        let took = started.elapsed();
        assert!(greeting.starts_with("220 "), "{greeting}");
        if ehlo {
            assert!(c.cmd("EHLO client.test").starts_with("250"));
        }
        took
    };
    let ms = std::time::Duration::from_millis;
    let silent = greeted_after("submission", false);
    let first = greeted_after("submission", true);
    let second = greeted_after("submission", false);
    assert!(
        silent >= ms(600) && first >= ms(600),
        "{silent:?} {first:?}"
    );
    assert!(second < ms(300), "{second:?}");
    let out = s_client(s.addr("submission"), &[], "EHLO client.test\r\nQUIT\r\n");
    let t = text(&out);
    assert!(
        t.contains("220 mx.test.example ESMTP") && t.contains("AUTH PLAIN LOGIN"),
        "{t}"
    );
}
