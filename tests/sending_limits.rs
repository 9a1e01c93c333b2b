//! What one user may send (`[limits] messages_per_hour_per_user`,
//! `recipients_per_day_per_user`, `new_recipients_per_day_per_user`,
//! `postern user limits`): at each limit exactly, with Python's smtplib as
//! the user's mail program.

use crate::common::*;

/// alice sends one message to `rcpts` over STARTTLS; prints the refused
/// recipients, or the refusal of the whole message.
pub(crate) const SEND_TO_MANY: &str = r#"
import smtplib, ssl, sys
host, port, password = sys.argv[1:4]
rcpts = sys.argv[4:]
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
try:
    s = smtplib.SMTP(host, int(port), timeout=20)
    s.starttls(context=ctx)
    s.login("alice@example.com", password)
    refused = s.sendmail("alice@example.com", rcpts, b"From: alice@example.com\r\nSubject: hi\r\n\r\nhello\r\n")
    print("sent, refused:", refused)
except smtplib.SMTPRecipientsRefused as e:
    print("all refused:", e.recipients)
except smtplib.SMTPResponseException as e:
    print(e.smtp_code, e.smtp_error.decode())
"#;

#[test]
fn messages_per_hour_and_recipients_per_day_at_the_limit_and_a_users_own() {
    let s = TestServer::start(
        "[limits]\nmessages_per_hour_per_user = 3\nrecipients_per_day_per_user = 5\n",
    );
    let submission = s.addr("submission");
    let body = "From: alice@example.com\nSubject: hi\n\nhello\n";
    for _ in 0..3 {
        let r = alice_submits(submission, body);
        assert!(r.starts_with("250 "), "{r}");
    }
    // smtplib's sendmail() reports the refusal of MAIL itself.
    let send = |rcpts: &[&str]| {
        let port = submission.port().to_string();
        let mut args = vec!["127.0.0.1", port.as_str(), PASSWORD];
        args.extend(rcpts);
        text(&python(SEND_TO_MANY, &args)).trim().to_string()
    };
    let r = send(&["bob@remote.example"]);
    assert!(
        r.starts_with("451 4.7.0 alice@example.com has sent 3 messages in the last hour, the most allowed; the next may go at "),
        "{r}"
    );

    // Her own limit, set while the server runs, applies at once.
    let set = s.cli_ok(&[
        "user",
        "limits",
        "alice@example.com",
        "--messages-per-hour",
        "10",
    ]);
    assert_eq!(
        set.trim(),
        "alice@example.com: messages per hour 10, recipients per day 5 (the default), \
         new recipients per day 1000 (the default)"
    );
    let r = alice_submits(submission, body);
    assert!(r.starts_with("250 "), "{r}");

    // Four recipients so far: the fifth is taken, a sixth is not.
    let r = send(&["bob@remote.example", "carol@remote.example"]);
    assert!(
        r.starts_with("sent, refused: {'carol@remote.example': (451, b'4.7.0 alice@example.com has sent to 5 recipients in the last 24 hours"),
        "{r}"
    );
    let r = send(&["dave@remote.example"]);
    assert!(r.starts_with("all refused:"), "{r}");
    assert!(s.log().contains("sending_limited"), "{}", s.log());

    let unknown = s.cli(&[
        "user",
        "limits",
        "nobody@example.com",
        "--messages-per-hour",
        "5",
    ]);
    assert_eq!(unknown.status.code(), Some(1), "{}", text(&unknown));
    let zero = s.cli(&[
        "user",
        "limits",
        "alice@example.com",
        "--recipients-per-day",
        "0",
    ]);
    assert_eq!(zero.status.code(), Some(1), "{}", text(&zero));
}

/// First-time recipients run out at the limit; those written to before
/// still go, also after a restart (the store remembers them), and a user's
/// own limit lifts it.
#[test]
fn new_recipients_per_day_at_the_limit_and_known_ones_still_go() {
    let mut s = TestServer::start("[limits]\nnew_recipients_per_day_per_user = 2\n");
    let send = |s: &TestServer, rcpts: &[&str]| {
        let port = s.port("submission").to_string();
        let mut args = vec!["127.0.0.1", port.as_str(), PASSWORD];
        args.extend(rcpts);
        text(&python(SEND_TO_MANY, &args)).trim().to_string()
    };
    assert_eq!(
        send(&s, &["bob@remote.example", "carol@remote.example"]),
        "sent, refused: {}"
    );
    let r = send(&s, &["Bob@remote.example", "dave@remote.example"]);
    assert!(
        r.starts_with("sent, refused: {'dave@remote.example': (451, b'4.7.0 alice@example.com has sent to 2 new recipients in the last 24 hours, the most allowed; more may go at "),
        "{r}"
    );
    assert!(
        s.log().contains("limit=\"new_recipients_per_day\""),
        "{}",
        s.log()
    );
    s.cli_ok(&[
        "user",
        "limits",
        "alice@example.com",
        "--new-recipients-per-day",
        "3",
    ]);
    assert_eq!(send(&s, &["dave@remote.example"]), "sent, refused: {}");
    let r = send(&s, &["erin@remote.example"]);
    assert!(r.starts_with("all refused:"), "{r}");
    // The day's count starts again with the server; whom she wrote to does
    // not (the server writes it down when it stops, and a second at a time
    // before): three known and one new pass a limit of three, where four new
    // would not.
    s.send_term();
    s.wait_exit(std::time::Duration::from_secs(30));
    s.spawn();
    let known_and_one_new = [
        "bob@remote.example",
        "carol@remote.example",
        "dave@remote.example",
        "frank@remote.example",
    ];
    assert_eq!(send(&s, &known_and_one_new), "sent, refused: {}");
}
