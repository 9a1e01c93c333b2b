//! Issue #9 item 8: text a client controls (EHLO name, AUTH user name,
//! addresses) reaches the server log and `postern queue show` escaped, with no
//! line breaks and no terminal escapes; a log written to a file has no colours.

use crate::common::*;

/// Tries AUTH PLAIN after STARTTLS with a user name full of control characters.
const HOSTILE_LOGIN: &str = r#"
import smtplib, ssl, sys
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP(sys.argv[1], int(sys.argv[2]), timeout=20)
s.starttls(context=ctx)
try:
    s.login("evil\r\nFAKE event=auth_ok\x1b[2J\x07", "wrong")
except smtplib.SMTPAuthenticationError as e:
    print(e.smtp_code)
"#;

/// Characters that must never reach the log or the terminal raw.
fn raw_controls(text: &str) -> Vec<char> {
    text.chars()
        .filter(|&c| (c.is_control() && c != '\n') || ('\u{2028}'..='\u{202e}').contains(&c))
        .collect()
}

#[test]
fn client_text_is_escaped_in_the_log_and_in_queue_show() {
    let s = TestServer::start("");
    let (mut c, _) = Raw::connect(s.addr("mta"));
    c.send("EHLO evil\x1b[31m\u{9b}.example\r\n".as_bytes());
    assert_eq!(code(&c.reply()), 250);
    let r = c.cmd("MAIL FROM:<a\x1b[2Jb@remote.example>");
    assert!(r.starts_with('5'), "{r}");
    let r = c.cmd("MAIL FROM:<\u{202e}evil@remote.example> SMTPUTF8");
    assert_eq!(code(&r), 250, "{r}");
    assert_eq!(code(&c.cmd("RCPT TO:<alice@example.com>")), 250);
    assert_eq!(code(&c.cmd("DATA")), 354);
    let r = c.cmd("Subject: x\r\n\r\nx\r\n.");
    let id = queued_id(&r).expect("queued");

    let sub = s.addr("submission");
    let out = python(
        HOSTILE_LOGIN,
        &[&sub.ip().to_string(), &sub.port().to_string()],
    );
    assert_eq!(text(&out).trim(), "535", "{}", text(&out));

    let log = s.log();
    assert_eq!(raw_controls(&log), [] as [char; 0], "{log}");
    assert!(
        !log.lines().any(|l| l.starts_with("FAKE")),
        "a forged line: {log}"
    );
    for escaped in [
        r"EHLO evil\x1b[31m\u{9b}.example",
        r"MAIL FROM:<a\x1b[2Jb@remote.example>",
        r"from=\u{202e}evil@remote.example",
        // Quoted, having a space and an `=`: one field to a log parser.
        r#"user="evil\r\nFAKE event=auth_ok\x1b[2J\x07""#,
    ] {
        assert!(log.contains(escaped), "no {escaped} in:\n{log}");
    }

    let show = s.cli_ok(&["queue", "show", &id]);
    assert_eq!(raw_controls(&show), [] as [char; 0], "{show}");
    assert!(
        show.contains(r"sender:   \u{202e}evil@remote.example"),
        "{show}"
    );
    let list = s.cli_ok(&["queue", "list"]);
    assert!(list.contains(r"\u{202e}evil@remote.example"), "{list}");
}

#[test]
fn a_log_written_to_a_file_has_no_colour_codes() {
    // TestServer sends stderr to a file and does not set NO_COLOR.
    let s = TestServer::start("");
    let (mut c, _) = Raw::connect(s.addr("mta"));
    c.cmd("QUIT");
    let log = s.log();
    assert!(log.contains(" INFO "), "{log}");
    assert!(!log.contains('\x1b'), "{log:?}");
}
