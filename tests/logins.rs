//! Logins by clients that connect once per message (issue #11 item 4): a
//! success is remembered for `[auth] cache_ttl`, but never past a password
//! change or the account's removal made with the CLI while the server runs;
//! TLS sessions resume from tickets, even after many other clients.

use crate::common::*;

/// Logs in once per connection over implicit TLS and prints each reply code.
/// Arguments: host, port, then pairs `user password`; the pair `sleep N`
/// waits N seconds instead.
const LOGINS: &str = r#"
import smtplib, ssl, sys, time
host, port, rest = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
for user, pw in zip(rest[::2], rest[1::2]):
    if user == "sleep":
        time.sleep(float(pw)); continue
    s = smtplib.SMTP_SSL(host, port, context=ctx, timeout=20)
    s.ehlo("client.test")
    try:
        s.login(user, pw); print(235)
    except smtplib.SMTPAuthenticationError as e:
        print(e.smtp_code)
    s.quit()
"#;

fn logins(s: &TestServer, pairs: &[(&str, &str)]) -> Vec<u16> {
    let addr = s.addr("submissions");
    let mut args = vec![addr.ip().to_string(), addr.port().to_string()];
    for (u, p) in pairs {
        args.extend([u.to_string(), p.to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = python(LOGINS, &args);
    text(&out)
        .lines()
        .map(|l| {
            l.trim()
                .parse()
                .unwrap_or_else(|_| panic!("{}", text(&out)))
        })
        .collect()
}

fn cache_hits(s: &TestServer) -> usize {
    s.log().matches("auth_cache_hit").count()
}

const ALICE: &str = "alice@example.com";

#[test]
fn a_login_is_remembered_until_the_password_changes_or_the_account_goes() {
    let s = TestServer::start("");
    assert_eq!(
        logins(
            &s,
            &[(ALICE, PASSWORD), (ALICE, PASSWORD), (ALICE, "wrong")]
        ),
        [235, 235, 535]
    );
    assert_eq!(cache_hits(&s), 1, "the second login comes from the cache");

    s.cli_stdin_ok(
        &["user", "passwd", ALICE, "--password-stdin"],
        "a new password",
    );
    assert_eq!(
        logins(
            &s,
            &[
                (ALICE, PASSWORD),
                (ALICE, "a new password"),
                (ALICE, "a new password")
            ]
        ),
        [535, 235, 235],
        "the old password is refused at once, the new one accepted"
    );
    assert_eq!(cache_hits(&s), 2);

    s.cli_ok(&["user", "del", ALICE]);
    assert_eq!(logins(&s, &[(ALICE, "a new password")]), [535]);
    assert_eq!(cache_hits(&s), 2);
}

#[test]
fn a_remembered_login_expires_after_cache_ttl() {
    let s = TestServer::start("[auth]\ncache_ttl = 2\n");
    assert_eq!(
        logins(
            &s,
            &[
                (ALICE, PASSWORD),
                (ALICE, PASSWORD),
                ("sleep", "2.5"),
                (ALICE, PASSWORD),
                (ALICE, PASSWORD),
            ]
        ),
        [235; 4]
    );
    // Hits: the second login, and the fourth (after the third, past the TTL,
    // ran argon2 again).
    assert_eq!(cache_hits(&s), 2, "{}", s.log());
}

#[test]
fn with_cache_ttl_zero_nothing_is_remembered() {
    let s = TestServer::start("[auth]\ncache_ttl = 0\n");
    assert_eq!(
        logins(&s, &[(ALICE, PASSWORD), (ALICE, PASSWORD)]),
        [235, 235]
    );
    assert_eq!(cache_hits(&s), 0);
}

/// Full TLS handshakes from other clients, each read up to the greeting.
const OTHER_CLIENTS: &str = r#"
import socket, ssl, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
for _ in range(n):
    with ctx.wrap_socket(socket.create_connection((host, port), timeout=20)) as t:
        t.recv(1000)
print("done")
"#;

#[test]
fn tls_sessions_resume_after_many_other_clients() {
    let s = TestServer::start("");
    let cases: [(&str, &[&str]); 3] = [
        ("submission", &["-starttls", "smtp"]),
        ("submissions", &[]),
        ("submissions", &["-tls1_2"]),
    ];
    let sessions: Vec<_> = cases
        .iter()
        .map(|(role, args)| {
            let file = tempfile::NamedTempFile::new().expect("session file");
            let path = file.path().to_str().expect("path").to_string();
            let out = s_client(
                s.addr(role),
                &[args, &["-sess_out", &path][..]].concat(),
                "EHLO client.test\r\nQUIT\r\n",
            );
            assert!(text(&out).contains("New, TLS"), "{}", text(&out));
            file
        })
        .collect();
    // rustls's default session cache held 256 sessions, two per TLS 1.3
    // client: these would push the first clients' sessions out of it.
    let submissions = s.addr("submissions");
    let out = python(
        OTHER_CLIENTS,
        &[
            &submissions.ip().to_string(),
            &submissions.port().to_string(),
            "200",
        ],
    );
    assert_eq!(text(&out).trim(), "done", "{}", text(&out));
    for ((role, args), file) in cases.iter().zip(&sessions) {
        let path = file.path().to_str().expect("path");
        let out = s_client(
            s.addr(role),
            &[args, &["-sess_in", path][..]].concat(),
            "EHLO client.test\r\nQUIT\r\n",
        );
        let t = text(&out);
        assert!(
            t.contains("Reused, TLS") && t.contains("250 "),
            "{role} {args:?} did not resume: {t}"
        );
    }
}
