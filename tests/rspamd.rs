//! The spam filter: a real rspamd (tests/common/rspamd.rs) scans mail from
//! other servers, and each of its actions has its outcome at the end of
//! DATA or in the mailbox; when it is down, `rspamd_fail` decides; with
//! `rspamd_outgoing`, a user's spam is refused too.

use crate::common::rspamd::*;
use crate::common::*;
use crate::delivery::wait_maildir;
use crate::dmarc::{junk, message, send_raw};

fn spam(from: &str, subject: &str, pattern: &str) -> String {
    message(from, subject, "").replace("Hello Alice.", pattern)
}

#[test]
fn each_rspamd_action_has_its_outcome() {
    let rspamd = Rspamd::start();
    let dns = TestDns::start();
    let s = TestServer::start(&format!(
        "[delivery]\n{}[filter]\n{}",
        dns.config(),
        rspamd.config()
    ));
    let (mta, dir) = (s.addr("mta"), s.dir.path());
    let from = "carol@remote.example";
    let send = |m: &str| send_raw(mta, dir, from, m);

    let r = send(&spam(from, "gtube", GTUBE));
    assert!(r.starts_with("550 5.7.1 Gtube pattern"), "{r}");
    let r = send(&message(from, SOFT_REJECT_SUBJECT, ""));
    assert!(r.starts_with("451 4.7.1 Soft reject for the test"), "{r}");
    let r = send(&message(from, GREYLIST_SUBJECT, ""));
    assert!(r.starts_with("451 4.7.1 Greylisted"), "{r}");
    assert_eq!(send(&spam(from, "header", GTUBE_ADD_HEADER)), "250");
    assert_eq!(send(&spam(from, "rewrite", GTUBE_REWRITE_SUBJECT)), "250");
    assert_eq!(send(&message(from, "clean", "")), "250");

    let inbox = wait_maildir(&s, "example.com", "alice", 1);
    assert_eq!(inbox.len(), 1, "{inbox:?}");
    assert!(inbox[0].contains("Subject: clean\r\n"), "{}", inbox[0]);
    assert!(
        inbox[0].contains("X-Spam-Status: No, score=") && !inbox[0].contains("X-Spam: Yes"),
        "{}",
        inbox[0]
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while junk(&s).len() < 2 {
        assert!(std::time::Instant::now() < deadline, "{:?}", junk(&s));
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let junked = junk(&s);
    for m in &junked {
        assert!(
            m.contains("\r\nX-Spam: Yes\r\n") && m.contains("\r\nX-Spam-Status: Yes,"),
            "{m}"
        );
    }
    assert!(
        junked.iter().any(|m| m.contains("Subject: header\r\n")),
        "{junked:?}"
    );
    assert!(
        junked
            .iter()
            .any(|m| m.contains("Subject: *** SPAM *** rewrite\r\n")),
        "{junked:?}"
    );

    // rspamd gone: open takes the mail unscanned, closed asks to try later.
    drop(rspamd);
    assert_eq!(send(&message(from, "unscanned", "")), "250");
    assert!(s.log().contains("rspamd_unavailable"), "{}", s.log());
    let closed = TestServer::start(&format!(
        "[delivery]\n{}[filter]\nrspamd = \"http://127.0.0.1:{}\"\nrspamd_fail = \"closed\"\n",
        dns.config(),
        free_port()
    ));
    let r = send_raw(
        closed.addr("mta"),
        closed.dir.path(),
        from,
        &message(from, "closed", ""),
    );
    assert!(
        r.starts_with("451 4.7.1 The spam filter is not available"),
        "{r}"
    );
}

#[test]
fn with_rspamd_outgoing_a_users_spam_is_refused() {
    let rspamd = Rspamd::start();
    let s = TestServer::start(&format!(
        "[filter]\n{}rspamd_outgoing = true\n",
        rspamd.config()
    ));
    let r = alice_submits(
        s.addr("submission"),
        &format!("From: alice@example.com\nSubject: offer\n\n{GTUBE}\n"),
    );
    assert!(r.starts_with("550 5.7.1 Gtube pattern"), "{r}");
    let r = alice_submits(
        s.addr("submission"),
        "From: alice@example.com\nSubject: lunch\n\nAt noon?\n",
    );
    assert!(r.starts_with("250 "), "{r}");
}
