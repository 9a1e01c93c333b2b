//! Mail from other servers, checked for who really sent it (SPF, DKIM,
//! DMARC) against a real DNS server the test runs, sent by Python's smtplib
//! and signed, where it is signed, by dkimpy's `dkimsign`. Each case is
//! delivered to alice@example.com's Maildir, put in her Junk folder, or
//! refused at the end of DATA, and the Authentication-Results: field on top
//! says why.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::common::*;
use crate::delivery::wait_maildir;

const WAIT: Duration = Duration::from_secs(20);

/// Sends `message` (CRLF line ends) as it is; returns the reply to the data.
const SEND_RAW: &str = r#"
import smtplib, sys
host, port, sender, rcpt, path = sys.argv[1:6]
try:
    s = smtplib.SMTP(host, int(port), timeout=20)
    s.ehlo("mail.sender.test")
    s.sendmail(sender, [rcpt], open(path, "rb").read())
    print(250)
except smtplib.SMTPDataError as e:
    print(e.smtp_code, e.smtp_error.decode())
except smtplib.SMTPResponseException as e:
    print(e.smtp_code, e.smtp_error.decode())
"#;

pub(crate) fn send_raw(addr: SocketAddr, dir: &Path, sender: &str, message: &str) -> String {
    send_raw_to(addr, dir, (sender, "alice@example.com"), message)
}

/// `send_raw` with the envelope `(sender, rcpt)`.
pub(crate) fn send_raw_to(
    addr: SocketAddr,
    dir: &Path,
    (sender, rcpt): (&str, &str),
    message: &str,
) -> String {
    let path = dir.join(format!("{}.eml", rand_name()));
    std::fs::write(&path, message).expect("write");
    let out = python(
        SEND_RAW,
        &[
            &addr.ip().to_string(),
            &addr.port().to_string(),
            sender,
            rcpt,
            path.to_str().expect("path"),
        ],
    );
    text(&out).trim().to_string()
}

fn rand_name() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!("m{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

pub(crate) fn message(from: &str, subject: &str, extra: &str) -> String {
    format!(
        "{extra}From: {from}\r\nTo: alice@example.com\r\nSubject: {subject}\r\n\
         Message-ID: <{subject}@sender.test>\r\nDate: Mon, 30 Nov 2026 10:00:00 +0000\r\n\r\n\
         Hello Alice.\r\n"
    )
}

/// A message from `from` signed by dkimpy with `key` as
/// `selector._domainkey.<from's domain>`.
pub(crate) fn dkimpy_signed(key: &Path, selector: &str, from: &str, subject: &str) -> String {
    let domain = from
        .trim_end_matches('>')
        .rsplit_once('@')
        .expect("address")
        .1;
    let message = message(from, subject, "");
    require_tool("dkimsign");
    let out = run_with_stdin(
        std::process::Command::new("dkimsign").args([
            selector,
            domain,
            key.to_str().expect("path"),
        ]),
        &message,
    );
    assert!(out.status.success(), "dkimsign: {}", text(&out));
    let signed = String::from_utf8(out.stdout).expect("utf8");
    assert!(signed.starts_with("DKIM-Signature:"), "{signed}");
    signed
}

/// A key made by dkimpy's `dknewkey`, published for `selector` of `domain`.
pub(crate) fn dkimpy_key(
    dir: &Path,
    dns: &TestDns,
    selector: &str,
    domain: &str,
) -> std::path::PathBuf {
    require_tool("dknewkey");
    let out = std::process::Command::new("dknewkey")
        .arg(selector)
        .current_dir(dir)
        .output()
        .expect("dknewkey");
    assert!(out.status.success(), "dknewkey: {}", text(&out));
    let record = std::fs::read_to_string(dir.join(format!("{selector}.dns"))).expect("record");
    dns.txt_long(&format!("{selector}._domainkey.{domain}"), record.trim());
    dir.join(format!("{selector}.key"))
}

/// The Authentication-Results: field this server put on top, unfolded.
pub(crate) fn our_results(delivered: &str) -> String {
    let after = delivered
        .split("Authentication-Results: mx.test.example")
        .nth(1)
        .unwrap_or_else(|| panic!("no results of ours:\n{delivered}"));
    let mut field = String::new();
    for (i, line) in after.split("\r\n").enumerate() {
        if i > 0 && !line.starts_with([' ', '\t']) {
            break;
        }
        field.push_str(line.trim());
        field.push(' ');
    }
    field
}

pub(crate) fn junk(s: &TestServer) -> Vec<String> {
    let dir = s.data_dir().join("mail/example.com/alice/.Junk/new");
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| std::fs::read_to_string(e.path()).expect("read"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn spoofed_unsigned_signed_reject_and_quarantine_mail_each_gets_its_outcome() {
    let dns = TestDns::start();
    let keys = tempfile::tempdir().expect("dir");
    // signer.example: signs with dkimpy; its SPF authorises no one, its
    // DMARC policy is reject: only the aligned signature lets it in.
    let key = dkimpy_key(keys.path(), &dns, "sel1", "signer.example");
    dns.txt("signer.example", &["v=spf1 -all"]);
    dns.txt("_dmarc.signer.example", &["v=DMARC1; p=reject"]);
    // strict.example: reject, and this client is not in its SPF.
    dns.txt("strict.example", &["v=spf1 ip4:192.0.2.1 -all"]);
    dns.txt("_dmarc.strict.example", &["v=DMARC1; p=reject"]);
    // loose.example: quarantine.
    dns.txt("loose.example", &["v=spf1 -all"]);
    dns.txt("_dmarc.loose.example", &["v=DMARC1; p=quarantine"]);
    // spf.example: SPF authorises this client (127.0.0.1), no signature.
    dns.txt("spf.example", &["v=spf1 ip4:127.0.0.1 -all"]);
    dns.txt("_dmarc.spf.example", &["v=DMARC1; p=reject"]);
    // This client's address and name point at each other (iprev).
    dns.ptr("127.0.0.1".parse().expect("ip"), "mail.sender.test");
    dns.ip("mail.sender.test", "127.0.0.1".parse().expect("ip"));
    let s = TestServer::start(&format!("[delivery]\n{}", dns.config()));
    let mta = s.addr("mta");
    let dir = s.dir.path();
    // A message whose envelope sender is its From:.
    let plain = |from: &str, subject: &str| send_raw(mta, dir, from, &message(from, subject, ""));

    // Someone outside claims to be alice's own domain: refused.
    let r = send_raw(
        mta,
        dir,
        "alice@example.com",
        &message("Alice <alice@example.com>", "spoofed", ""),
    );
    assert!(r.starts_with("550 5.7.1 example.com is hosted here"), "{r}");
    // Hidden behind a domain of the sender's own, in one field or two.
    let as_mallory = |from: &str, extra: &str| {
        send_raw(
            mta,
            dir,
            "mallory@remote.example",
            &message(from, "hidden", extra),
        )
    };
    let r = as_mallory("mallory@remote.example, Alice <alice@example.com>", "");
    assert!(r.starts_with("550 5.7.1 example.com is hosted here"), "{r}");
    let r = as_mallory(
        "mallory@remote.example",
        "From: Alice <alice@example.com>\r\n",
    );
    assert!(
        r.starts_with("550 5.7.1 Message rejected: it has more than one From: field"),
        "{r}"
    );

    // The same, signed with a key of example.com (as by a mailing list that
    // passed on alice's message unchanged): taken, with no DMARC record.
    let own = dkimpy_key(keys.path(), &dns, "list", "example.com");
    let returned = dkimpy_signed(&own, "list", "Alice <alice@example.com>", "returned");
    assert_eq!(send_raw(mta, dir, "list@lists.example", &returned), "250");

    // Not signed, no SPF, no DMARC: delivered, and said so.
    let r = plain("carol@remote.example", "unsigned");
    assert_eq!(r, "250");
    // Signed by dkimpy: DKIM and DMARC pass, though SPF fails.
    let signed = dkimpy_signed(&key, "sel1", "dave@signer.example", "signed");
    assert_eq!(send_raw(mta, dir, "dave@signer.example", &signed), "250");
    // SPF aligned, no signature: DMARC passes too.
    let r = plain("erin@spf.example", "spf");
    assert_eq!(r, "250");
    // DMARC reject, nothing passes: refused, with the reason.
    let r = plain("mallory@strict.example", "reject");
    assert!(
        r.starts_with("550 5.7.1 strict.example's DMARC policy rejects"),
        "{r}"
    );
    // A signature made for another message does not help: the body changed.
    let tampered = signed.replace("Hello Alice.", "Send money.");
    let r = send_raw(mta, dir, "dave@signer.example", &tampered);
    assert!(
        r.starts_with("550 5.7.1 signer.example's DMARC policy"),
        "{r}"
    );
    // DMARC quarantine: the Junk folder.
    let r = plain("frank@loose.example", "quarantine");
    assert_eq!(r, "250");

    let inbox = wait_maildir(&s, "example.com", "alice", 4);
    assert_eq!(inbox.len(), 4, "{inbox:?}");
    let find = |subject: &str| {
        inbox
            .iter()
            .find(|m| m.contains(&format!("Subject: {subject}\r\n")))
            .unwrap_or_else(|| panic!("no {subject}: {inbox:?}"))
            .clone()
    };
    let unsigned = our_results(&find("unsigned"));
    assert!(
        unsigned.contains("dkim=none")
            && unsigned.contains("spf=none")
            && unsigned.contains("dmarc=none")
            && unsigned.contains("iprev=pass"),
        "{unsigned}"
    );
    let signed = our_results(&find("signed"));
    assert!(
        signed.contains("dkim=pass")
            && signed.contains("header.i=@signer.example")
            && signed.contains("spf=fail")
            && signed.contains("dmarc=pass"),
        "{signed}"
    );
    assert!(our_results(&find("returned")).contains("dkim=pass"));
    let spf = our_results(&find("spf"));
    assert!(
        spf.contains("spf=pass") && spf.contains("dmarc=pass"),
        "{spf}"
    );
    let deadline = std::time::Instant::now() + WAIT;
    while junk(&s).is_empty() {
        assert!(std::time::Instant::now() < deadline, "nothing in Junk");
        std::thread::sleep(Duration::from_millis(100));
    }
    let junked = junk(&s);
    assert!(
        junked[0].contains("Subject: quarantine\r\n"),
        "{}",
        junked[0]
    );
    assert!(
        our_results(&junked[0]).contains("dmarc=fail"),
        "{}",
        junked[0]
    );
}

#[test]
fn results_claiming_this_server_are_removed_and_trusted_networks_are_not_checked() {
    let dns = TestDns::start();
    let s = TestServer::start(&format!("[delivery]\n{}", dns.config()));
    let forged = message(
        "carol@remote.example",
        "forged",
        "Authentication-Results: mx.test.example; dkim=pass header.d=example.com; dmarc=pass\r\n\
         Authentication-Results: other.example; spf=pass\r\n",
    );
    assert_eq!(
        send_raw(s.addr("mta"), s.dir.path(), "carol@remote.example", &forged),
        "250"
    );
    let delivered = &wait_maildir(&s, "example.com", "alice", 1)[0];
    assert_eq!(
        delivered
            .matches("Authentication-Results: mx.test.example")
            .count(),
        1,
        "{delivered}"
    );
    assert!(our_results(delivered).contains("dkim=none"), "{delivered}");
    assert!(delivered.contains("Authentication-Results: other.example; spf=pass"));

    // A client in trusted_networks (an application server of this host) may
    // send as a hosted domain without proof, as it may relay.
    let trusted = TestServer::start(&format!(
        "trusted_networks = [\"127.0.0.1/32\"]\n[delivery]\n{}",
        dns.config()
    ));
    let r = send_raw(
        trusted.addr("mta"),
        trusted.dir.path(),
        "app@example.com",
        &message("app@example.com", "trusted", ""),
    );
    assert_eq!(r, "250");
    let delivered = &wait_maildir(&trusted, "example.com", "alice", 1)[0];
    assert!(!delivered.contains("Authentication-Results"), "{delivered}");
}
