//! AUTH: wrong passwords, guessing slowed and cut per connection and per
//! address, foreign authorization identities, and no secret in the logs.

use crate::common::*;

const AUTH_SCRIPT: &str = r#"
import smtplib, ssl, sys, base64
host, port, mech, tries = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
creds = sys.argv[5:]
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP_SSL(host, port, context=ctx, timeout=20)
s.ehlo("client.test")
for i in range(tries):
    try:
        if mech == "PLAIN-AUTHZ":
            authz, user, pw = creds
            blob = base64.b64encode(f"{authz}\0{user}\0{pw}".encode()).decode()
            code, msg = s.docmd("AUTH", "PLAIN " + blob)
        else:
            user, pw = creds
            s.user, s.password = user, pw
            code, msg = s.auth(mech, s.auth_plain if mech == "PLAIN" else s.auth_login)
        print(code, msg.decode())
    except smtplib.SMTPResponseException as e:
        print(e.smtp_code, e.smtp_error.decode())
    except smtplib.SMTPServerDisconnected:
        print("disconnected")
        break
"#;

fn auth(s: &TestServer, mech: &str, tries: u32, creds: &[&str]) -> Vec<String> {
    let addr = s.addr("submissions");
    let mut args = vec![
        addr.ip().to_string(),
        addr.port().to_string(),
        mech.to_string(),
        tries.to_string(),
    ];
    args.extend(creds.iter().map(ToString::to_string));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    text(&python(AUTH_SCRIPT, &args))
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn right_and_wrong_passwords() {
    let s = TestServer::start("");
    assert_eq!(
        auth(&s, "PLAIN", 1, &["alice@example.com", PASSWORD]),
        ["235 2.7.0 Authentication successful"]
    );
    assert_eq!(
        auth(&s, "LOGIN", 1, &["ALICE@example.com", PASSWORD]),
        ["235 2.7.0 Authentication successful"]
    );
    assert_eq!(
        auth(&s, "PLAIN", 1, &["alice@example.com", "wrong"]),
        ["535 5.7.8 Authentication credentials invalid"]
    );
    assert_eq!(
        auth(&s, "PLAIN", 1, &["nobody@example.com", PASSWORD]),
        ["535 5.7.8 Authentication credentials invalid"]
    );
}

#[test]
fn a_foreign_authorization_identity_is_refused() {
    let s = TestServer::start("");
    let r = auth(
        &s,
        "PLAIN-AUTHZ",
        1,
        &["bob@example.com", "alice@example.com", PASSWORD],
    );
    assert!(
        r[0].starts_with(
            "501 5.5.2 authorization identity must be empty or the same as the user name"
        ),
        "{r:?}"
    );
    let r = auth(
        &s,
        "PLAIN-AUTHZ",
        1,
        &["alice@example.com", "alice@example.com", PASSWORD],
    );
    assert_eq!(r, ["235 2.7.0 Authentication successful"]);
}

#[test]
fn guessing_is_cut_per_connection_and_per_address() {
    let s = TestServer::start(
        "[limits]\nauth_failures_per_connection = 2\nauth_failures_per_ip_per_hour = 3\n",
    );
    // A success first: remembered, it must still not get a blocked address in.
    assert_eq!(
        auth(&s, "PLAIN", 1, &["alice@example.com", PASSWORD]),
        ["235 2.7.0 Authentication successful"]
    );
    let r = auth(&s, "PLAIN", 5, &["alice@example.com", "guess"]);
    assert_eq!(r[0], "535 5.7.8 Authentication credentials invalid");
    assert!(r[1].starts_with("535") || r[1].starts_with("421"), "{r:?}");
    assert!(
        r.iter()
            .any(|l| l == "disconnected" || l.starts_with("421")),
        "cut after 2: {r:?}"
    );
    // Two more failures from this address exhaust its hourly allowance...
    auth(&s, "PLAIN", 2, &["alice@example.com", "guess"]);
    // ...so even the right password is refused from here for now.
    let r = auth(&s, "PLAIN", 1, &["alice@example.com", PASSWORD]);
    assert!(
        r[0].starts_with("421 4.7.0 Too many failed authentication attempts"),
        "{r:?}"
    );
}

#[test]
fn passwords_and_auth_payloads_never_reach_the_log() {
    // The test server logs postern's TRACE level: the whole transcript.
    let s = TestServer::start("");
    auth(&s, "PLAIN", 1, &["alice@example.com", PASSWORD]);
    auth(&s, "LOGIN", 1, &["alice@example.com", "wrong-secret-pw"]);
    let log = s.log();
    assert!(
        log.contains("auth_ok") && log.contains("auth_failed"),
        "{log}"
    );
    use base64::Engine;
    let plain_blob = base64::engine::general_purpose::STANDARD
        .encode(format!("\0alice@example.com\0{PASSWORD}"));
    assert!(
        log.contains("AUTH PLAIN [redacted]"),
        "the transcript is logged, redacted"
    );
    for secret in [
        PASSWORD,
        "wrong-secret-pw",
        &plain_blob,
        "d3Jvbmctc2VjcmV0LXB3",
    ] {
        assert!(!log.contains(secret), "{secret} appears in the log");
    }
}
