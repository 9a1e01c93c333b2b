//! The hold on an account that looks stolen (`[limits] hold_on_burst`): a
//! burst of first-time recipients puts the account's outgoing mail on hold
//! within the configured threshold, counted at a real receiver; the user
//! and the postmaster are told; `postern user release` delivers what was
//! held, `purge-held` deletes it, and a new password lets new mail out.
//! Python's smtplib is the thief's mail program.

use std::process::Command;
use std::time::Duration;

use crate::common::*;
use crate::delivery::{WAIT, at, wait_log, wait_maildir};
use crate::sending_limits::SEND_TO_MANY;

/// alice logs in once over STARTTLS and sends `messages` messages, each to
/// `per_message` recipients she never wrote to; prints how many were taken.
const BURST: &str = r#"
import smtplib, ssl, sys
host, port, password, messages, per_message = sys.argv[1:6]
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP(host, int(port), timeout=30)
s.starttls(context=ctx)
s.login("alice@example.com", password)
taken = 0
for m in range(int(messages)):
    rcpts = ["r%d-%d@remote.example" % (m, i) for i in range(int(per_message))]
    body = "From: alice@example.com\r\nSubject: offer %d\r\n\r\nbuy now\r\n" % m
    if not s.sendmail("alice@example.com", rcpts, body):
        taken += 1
s.quit()
print("taken", taken)
"#;

/// The recipients a receiver got, over every message.
fn recipients_at(peer: &Peer) -> usize {
    peer.received()
        .iter()
        .map(|m| m["rcpt_tos"].as_array().map_or(0, Vec::len))
        .sum()
}

/// A delivering server relaying to a receiver on 127.0.0.71, holding an
/// account after more than 30 first-time recipients in an hour.
fn relaying(port: u16) -> TestServer {
    TestServer::delivering(&format!(
        "[limits]\nburst_new_recipients_per_hour = 30\nmessages_per_hour_per_user = 1000\n\
         recipients_per_day_per_user = 100000\nnew_recipients_per_day_per_user = 100000\n\
         [relay]\nhost = \"127.0.0.71\"\nport = {port}\ntls = \"none\"\n\
         [delivery]\nretry_min = 1\nretry_max = 2\n[http]\naddr = \"127.0.0.1:0\"\n"
    ))
}

fn burst(s: &TestServer, messages: usize, per_message: usize) -> String {
    let port = s.port("submission").to_string();
    let out = python(
        BURST,
        &[
            "127.0.0.1",
            &port,
            PASSWORD,
            &messages.to_string(),
            &per_message.to_string(),
        ],
    );
    text(&out).trim().to_string()
}

fn scrape(s: &TestServer, series: &str) -> Option<f64> {
    require_tool("curl");
    let out = Command::new("curl")
        .args(["-sf", &format!("http://{}/metrics", s.http_addrs()[0])])
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Issue #13's test: a burst to 500 new recipients (50 messages of 10) is
/// held once it passes the threshold of 30: three messages (30 recipients)
/// reach the receiver, the other 470 recipients wait, and the release
/// delivers every one of them.
#[test]
fn a_burst_to_500_new_recipients_is_held_at_the_threshold_and_released_by_the_command() {
    let port = free_port();
    let sink = Peer::start(at(71, port), &[]);
    let s = relaying(port);
    // The postmaster is an alias of the admin's own mailbox, as it often is.
    s.cli_stdin_ok(
        &["user", "add", "admin@example.com", "--password-stdin"],
        "admin's password",
    );
    s.cli_ok(&[
        "alias",
        "add",
        "postmaster@example.com",
        "admin@example.com",
    ]);

    assert_eq!(burst(&s, 50, 10), "taken 50", "{}", s.log());
    wait_log(&s, "event=\"user_held\"");
    // What was delivered, was delivered before the hold: wait for it, then
    // make sure nothing more comes.
    sink.wait_for(3, WAIT);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(recipients_at(&sink), 30, "{}", s.log());

    let users = s.cli_ok(&["user", "list"]);
    assert!(
        users.contains(
            "alice@example.com  HELD since 20"
        ) && users.contains(": 40 first-time recipients in the last hour, over the threshold of 30 (10 times the busiest hour of the last 7 days, 0, and at least 30)"),
        "{users}"
    );
    let held = s.cli_ok(&[
        "queue",
        "list",
        "--state",
        "held",
        "--user",
        "alice@example.com",
        "--json",
    ]);
    let held: Vec<serde_json::Value> = serde_json::from_str(&held).expect("json");
    assert_eq!(held.len(), 47, "messages 4 to 50 are held");
    assert_eq!(scrape(&s, "postern_users_held"), Some(1.0));
    assert_eq!(scrape(&s, "postern_user_holds_total"), Some(1.0));

    // Told: the user, and the postmaster of her domain (through its alias).
    for mailbox in ["alice", "admin"] {
        let notice = &wait_maildir(&s, "example.com", mailbox, 1)[0];
        assert!(
            notice.contains("Subject: Outgoing mail of alice@example.com is on hold"),
            "{notice}"
        );
        assert!(
            notice.contains("postern user release alice@example.com"),
            "{notice}"
        );
    }

    let released = s.cli_ok(&["user", "release", "alice@example.com"]);
    assert_eq!(
        released.trim(),
        "ended the hold on alice@example.com; released 470 held recipient(s) for delivery"
    );
    sink.wait_for(50, WAIT);
    assert_eq!(recipients_at(&sink), 500);
    assert!(!s.cli_ok(&["user", "list"]).contains("HELD"));
    // What was judged before the release is not judged again, and the held
    // mail did not become her normal: twenty new recipients now pass.
    assert_eq!(burst(&s, 2, 10), "taken 2", "{}", s.log());
    sink.wait_for(52, WAIT);
    assert_eq!(s.log().matches("event=\"user_held\"").count(), 1);
    s.wait_until_queue_empty(WAIT);
}

/// The administrator's hold: what the account sends meanwhile is accepted
/// and kept, `purge-held` deletes it, and a new password lets new mail go
/// out while the hold's mail stays where it was put.
#[test]
fn a_held_account_sends_into_the_hold_until_a_new_password() {
    let port = free_port();
    let sink = Peer::start(at(71, port), &[]);
    let s = relaying(port);
    let submission = s.addr("submission");

    assert_eq!(
        s.cli_ok(&["user", "hold", "alice@example.com"]).trim(),
        "held the outgoing mail of alice@example.com: 0 queued recipient(s) kept"
    );
    for _ in 0..2 {
        let r = alice_submits(submission, "From: alice@example.com\nSubject: kept\n\nx\n");
        assert!(r.starts_with("250 "), "{r}");
    }
    let listed = s.cli_ok(&["queue", "list", "--state", "held"]);
    assert!(listed.ends_with("\n2 messages\n"), "{listed}");
    assert!(s.log().contains("held=true"), "{}", s.log());

    assert_eq!(
        s.cli_ok(&["user", "purge-held", "alice@example.com"])
            .trim(),
        "deleted 2 held message(s) of alice@example.com"
    );
    s.wait_until_queue_empty(WAIT);

    s.cli_stdin_ok(
        &["user", "passwd", "alice@example.com", "--password-stdin"],
        PASSWORD,
    );
    assert!(!s.cli_ok(&["user", "list"]).contains("HELD"));
    let r = alice_submits(submission, "From: alice@example.com\nSubject: sent\n\nx\n");
    assert!(r.starts_with("250 "), "{r}");
    sink.wait_for(1, WAIT);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        sink.received().len(),
        1,
        "only the message after the new password"
    );

    let unknown = s.cli(&["user", "release", "nobody@example.com"]);
    assert_eq!(unknown.status.code(), Some(1), "{}", text(&unknown));
    assert!(text(&unknown).contains("user nobody@example.com does not exist"));
}

/// A burst of bounces holds the account too: mail to addresses that do not
/// exist is what a spammer's list brings back.
#[test]
fn a_burst_of_bounces_holds_the_account() {
    let port = free_port();
    let sink = Peer::start(at(71, port), &[]);
    let s = TestServer::delivering(&format!(
        "[limits]\nburst_bounces_per_hour = 3\n\
         [relay]\nhost = \"127.0.0.71\"\nport = {port}\ntls = \"none\"\n"
    ));
    let submission = s.addr("submission");
    let rejected: Vec<String> = (0..4)
        .map(|i| format!("reject{i}@remote.example"))
        .collect();
    let rcpts: Vec<&str> = rejected.iter().map(String::as_str).collect();
    let port = submission.port().to_string();
    let mut args = vec!["127.0.0.1", port.as_str(), PASSWORD];
    args.extend(rcpts);
    let out = text(&python(SEND_TO_MANY, &args));
    assert_eq!(out.trim(), "sent, refused: {}", "{}", s.log());
    wait_log(&s, "event=\"user_held\"");
    assert!(
        s.log()
            .contains("4 bounces in the last hour, over the threshold of 3"),
        "{}",
        s.log()
    );
    let r = alice_submits(submission, "From: alice@example.com\nSubject: next\n\nx\n");
    assert!(r.starts_with("250 "), "{r}");
    std::thread::sleep(Duration::from_secs(2));
    assert!(sink.received().is_empty(), "the next message is held");
    assert!(
        s.cli_ok(&["queue", "list", "--state", "held"])
            .contains("bob@remote.example")
    );
}

/// A session that logged in before the password changed may send no more:
/// the thief's open connection ends with the old password.
#[test]
fn a_session_from_before_a_new_password_may_not_send() {
    const LOGGED_IN: &str = r#"
import smtplib, ssl, sys
host, port, password = sys.argv[1:4]
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP(host, int(port), timeout=30)
s.starttls(context=ctx)
s.login("alice@example.com", password)
print("logged in", flush=True)
sys.stdin.readline()
try:
    s.sendmail("alice@example.com", ["bob@remote.example"], b"From: alice@example.com\r\n\r\nx\r\n")
    print("sent")
except smtplib.SMTPSenderRefused as e:
    print(e.smtp_code, e.smtp_error.decode())
"#;
    use std::io::{BufRead, Write};
    let s = TestServer::start("");
    let port = s.port("submission").to_string();
    let mut client = std::process::Command::new("python3")
        .args(["-c", LOGGED_IN, "127.0.0.1", &port, PASSWORD])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut out = std::io::BufReader::new(client.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("read");
    assert_eq!(line.trim(), "logged in");
    // A second later: the change is after the login, to the second.
    std::thread::sleep(Duration::from_millis(1100));
    s.cli_stdin_ok(
        &["user", "passwd", "alice@example.com", "--password-stdin"],
        "a new password",
    );
    client
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("write");
    line.clear();
    out.read_line(&mut line).expect("read");
    client.wait().expect("wait");
    assert_eq!(
        line.trim(),
        "530 5.7.0 The password of alice@example.com changed after this session logged in; log in again"
    );
}
