//! `postern sendmail` against the real server: a shell `sendmail -t -i`, the
//! binary through a link named `sendmail`, PHP's mail(), SMTP on standard
//! input (-bs), -bv, and who may send as what: root is trusted, `nobody`
//! sends as its `[[sendmail]]` senders, `daemon` (no entry) not at all.
//! Messages for other domains go to a recording sink through `[relay]`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::common::*;

const WAIT: Duration = Duration::from_secs(20);

/// A delivering server that relays to `peer`, with an entry for `nobody`,
/// in a directory every user may pass through (the clients below run as
/// `nobody` and `daemon` too).
fn server(peer: &Peer, extra: &str) -> TestServer {
    let toml = format!(
        "[relay]\nhost = \"{}\"\nport = {}\ntls = \"none\"\n\
         [[sendmail]]\nunix_user = \"nobody\"\nsenders = [\"*@example.com\", \"info@other.example\"]\n{extra}",
        peer.addr.ip(),
        peer.addr.port()
    );
    let mut s = TestServer::configure("");
    // Absolute: programs call sendmail from anywhere.
    std::fs::write(
        &s.config,
        format!(
            "hostname = \"mx.test.example\"\ndata_dir = {:?}\n{toml}\
             [[listener]]\naddr = \"127.0.0.1:0\"\nrole = \"mta\"\n",
            s.data_dir()
        ),
    )
    .expect("config");
    open_to_all(s.dir.path());
    s.add_alice();
    s.spawn();
    s
}

/// `nobody` must get through this one, whatever the umask made it.
fn open_to_all(dir: &Path) {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

fn sink() -> Peer {
    Peer::start(
        format!("127.0.0.91:{}", free_port()).parse().expect("addr"),
        &[],
    )
}

/// `postern sendmail ARGS --config …` with `stdin`, as root, or as `user`
/// (setpriv, without root's groups).
fn sendmail(s: &TestServer, user: Option<&str>, args: &[&str], stdin: &str) -> Output {
    let mut command = match user {
        Some(user) => {
            let mut c = Command::new("setpriv");
            c.args([
                &format!("--reuid={user}"),
                "--regid=nogroup",
                "--clear-groups",
                BIN,
            ]);
            c
        }
        None => Command::new(BIN),
    };
    command
        .arg("sendmail")
        .args(args)
        .arg("--config")
        .arg(&s.config)
        .current_dir(s.dir.path());
    run_with_stdin(&mut command, stdin)
}

fn status(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_sent(out: &Output) {
    assert_eq!(status(out), 0, "{}", stderr(out));
}

/// Refused with sendmail's `code`, saying `why` on stderr.
fn assert_refused(out: &Output, code: i32, why: &str) {
    assert_eq!(status(out), code, "{}", stderr(out));
    assert!(stderr(out).contains(why), "{}", stderr(out));
}

/// A link named `sendmail` to the binary, in a directory of its own.
fn sendmail_link() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("dir");
    open_to_all(dir.path());
    let link = dir.path().join("sendmail");
    std::os::unix::fs::symlink(BIN, &link).expect("symlink");
    (dir, link)
}

const MESSAGE: &str = "From: Shop <shop@example.com>\n\
    To: Bob <bob@remote.example>\n\
    Bcc: carol@remote.example\n\
    Subject: order 1\n\
    \n\
    first line\n\
    .\n\
    after the dot\n";

#[test]
fn t_and_i_deliver_through_postern_sendmail_and_a_link_named_sendmail() {
    let peer = sink();
    let s = server(&peer, "");
    assert_sent(&sendmail(&s, None, &["-t", "-i"], MESSAGE));
    let got = peer.wait_for(1, WAIT);
    assert_eq!(got[0]["mail_from"], "shop@example.com");
    assert_eq!(
        got[0]["rcpt_tos"],
        serde_json::json!(["bob@remote.example", "carol@remote.example"])
    );
    let data = got[0]["data"].as_str().expect("data");
    assert!(
        data.contains("\r\nfirst line\r\n.\r\nafter the dot\r\n"),
        "{data}"
    );
    assert!(!data.contains("Bcc") && !data.contains("carol"), "{data}");
    // Signed for the domain of its From:, above what this server added.
    let (signatures, _) = data
        .split_once("Received: by mx.test.example (Postern, from userid 0)\r\n")
        .unwrap_or_else(|| panic!("no Received: naming the user: {data}"));
    assert!(
        signatures.starts_with("DKIM-Signature: ")
            && signatures.matches("DKIM-Signature: ").count() == 2
            && signatures.contains("d=example.com;"),
        "{data}"
    );
    assert!(
        data.contains("\r\nMessage-ID: <") && data.contains("\r\nDate: "),
        "{data}"
    );

    // The link, with the server found by $POSTERN_CONFIG, and without -i:
    // the lone dot ends the message.
    let (_dir, link) = sendmail_link();
    let out = run_with_stdin(
        Command::new(&link)
            .arg("-t")
            .env("POSTERN_CONFIG", &s.config)
            .current_dir("/"),
        MESSAGE,
    );
    assert_sent(&out);
    let got = peer.wait_for(2, WAIT);
    let data = got[1]["data"].as_str().expect("data");
    assert!(data.ends_with("\r\nfirst line\r\n"), "{data}");
    assert!(
        s.log().contains("event=\"queued\"") && s.log().contains("sendmail{user=root uid=0"),
        "{}",
        s.log()
    );
}

#[test]
fn f_sets_the_sender_f_names_the_from_it_adds_and_v_tells_the_queue_id() {
    let peer = sink();
    let s = server(&peer, "");
    let out = sendmail(
        &s,
        None,
        &[
            "-oi",
            "-fshop@example.com",
            "-F",
            "Web Shop",
            "-v",
            "bob@remote.example",
        ],
        "Subject: no from\n\nhello\n",
    );
    assert_sent(&out);
    let said = stderr(&out);
    let id = said
        .trim()
        .strip_prefix("postern sendmail: queued as ")
        .unwrap_or_else(|| panic!("{said}"));
    let got = peer.wait_for(1, WAIT);
    assert_eq!(got[0]["mail_from"], "shop@example.com");
    let data = got[0]["data"].as_str().expect("data");
    assert!(data.contains(&format!("\tid {id}\r\n")), "{data}");
    assert!(
        data.contains("\r\nFrom: \"Web Shop\" <shop@example.com>\r\nSubject: no from\r\n"),
        "{data}"
    );
    // Silent on success without -v.
    let out = sendmail(
        &s,
        None,
        &["-f", "shop@example.com", "bob@remote.example"],
        "Subject: x\n\nhi\n",
    );
    assert_sent(&out);
    assert_eq!(stderr(&out), "");
}

#[test]
fn bv_says_which_addresses_would_be_accepted() {
    let peer = sink();
    let s = server(&peer, "");
    let out = sendmail(
        &s,
        None,
        &["-bv", "alice@example.com", "bob@remote.example"],
        "",
    );
    assert_sent(&out);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "alice@example.com... deliverable\nbob@remote.example... deliverable\n"
    );
    let out = sendmail(
        &s,
        None,
        &["-bv", "nobody@example.com", "alice@example.com"],
        "",
    );
    assert_eq!(status(&out), 67, "{}", stderr(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.starts_with("nobody@example.com... undeliverable: 550 5.1.1 ")
            && said.ends_with("alice@example.com... deliverable\n"),
        "{said}"
    );
    assert!(peer.received().is_empty() && s.queue().is_empty());
}

#[test]
fn bs_speaks_smtp_on_standard_input_and_output() {
    let peer = sink();
    let s = server(&peer, "");
    let script = "EHLO client\r\nMAIL FROM:<shop@example.com>\r\nRCPT TO:<nobody@example.com>\r\n\
        RCPT TO:<bob@remote.example>\r\nDATA\r\nFrom: shop@example.com\r\nSubject: bs\r\n\r\n..stuffed\r\n.\r\nQUIT\r\n";
    let out = sendmail(&s, None, &["-bs"], script);
    assert_sent(&out);
    let replies: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.get(..4).unwrap_or(l).to_string())
        .collect();
    assert_eq!(
        replies,
        [
            "220 ", "250-", "250-", "250-", "250 ", "250 ", "550 ", "250 ", "354 ", "250 ", "221 "
        ],
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let got = peer.wait_for(1, WAIT);
    assert_eq!(
        got[0]["rcpt_tos"],
        serde_json::json!(["bob@remote.example"])
    );
    assert!(
        got[0]["data"]
            .as_str()
            .expect("data")
            .ends_with("\r\n\r\n.stuffed\r\n"),
        "{}",
        got[0]["data"]
    );
}

#[test]
fn php_mail_is_delivered() {
    if !Command::new("sh")
        .args(["-c", "command -v php"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        eprintln!("SKIPPED php_mail_is_delivered: php is not installed (apt-get install php-cli)");
        return;
    }
    let peer = sink();
    let s = server(&peer, "");
    let (_dir, link) = sendmail_link();
    let out = Command::new("php")
        .arg("-d")
        .arg(format!("sendmail_path={} -t -i", link.display()))
        .args([
            "-r",
            "exit(mail('bob@remote.example', 'from PHP', \"line\\n.\\nend\", 'From: Shop <shop@example.com>') ? 0 : 1);",
        ])
        .env("POSTERN_CONFIG", &s.config)
        .output()
        .expect("php");
    assert!(out.status.success(), "php mail() failed: {}", stderr(&out));
    let got = peer.wait_for(1, WAIT);
    assert_eq!(got[0]["mail_from"], "shop@example.com");
    let data = got[0]["data"].as_str().expect("data");
    assert!(
        data.contains("Subject: from PHP\r\n") && data.contains("\r\nline\r\n.\r\nend\r\n"),
        "{data}"
    );
}

#[test]
fn other_users_send_only_as_their_senders_and_without_an_entry_not_at_all() {
    let peer = sink();
    let s = server(&peer, "");
    let daemon = sendmail(
        &s,
        Some("daemon"),
        &["-f", "shop@example.com", "bob@remote.example"],
        "Subject: x\n\nhi\n",
    );
    assert_refused(
        &daemon,
        77,
        "Unix user daemon may not send mail: add a [[sendmail]] entry with unix_user = \"daemon\"",
    );
    // nobody: its patterns, in the envelope and in From:.
    let ok = sendmail(
        &s,
        Some("nobody"),
        &["-f", "web@example.com", "bob@remote.example"],
        "From: web@example.com\nSubject: x\n\nhi\n",
    );
    assert_sent(&ok);
    let ok = sendmail(
        &s,
        Some("nobody"),
        &["-t"],
        "From: info@other.example\nTo: bob@remote.example\n\nhi\n",
    );
    assert_sent(&ok);
    for (args, message, why) in [
        (
            &["-f", "sales@other.example", "bob@remote.example"][..],
            "Subject: x\n\nhi\n",
            "<sales@other.example>: Sender address rejected: not among the senders allowed to Unix user nobody",
        ),
        (
            &["-f", "web@example.com", "bob@remote.example"][..],
            "From: boss@bank.example\nSubject: x\n\nhi\n",
            "header From: <boss@bank.example> is not among the senders allowed to Unix user nobody",
        ),
    ] {
        assert_refused(&sendmail(&s, Some("nobody"), args, message), 77, why);
    }
    // No sender anywhere: its own address at the host name, as sendmail's.
    let ok = sendmail(
        &s,
        Some("nobody"),
        &["bob@remote.example"],
        "Subject: no sender\n\nhi\n",
    );
    assert_sent(&ok);
    let got = peer.wait_for(3, WAIT);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(peer.received().len(), 3, "{got:?}");
    let own = got
        .iter()
        .find(|m| {
            m["data"]
                .as_str()
                .is_some_and(|d| d.contains("Subject: no sender"))
        })
        .expect("the message without a sender");
    assert_eq!(own["mail_from"], "nobody@mx.test.example");
    assert!(
        own["data"]
            .as_str()
            .is_some_and(|d| d.contains("From: <nobody@mx.test.example>\r\n")),
        "{own:?}"
    );
    let log = s.log();
    assert!(
        log.contains("sendmail{user=nobody uid=65534") && log.contains("event=\"rejected\""),
        "{log}"
    );
}

/// Debian's cron mails a job's output as root to the bare name `root`,
/// with `From: root (Cron Daemon)`: both are taken at the host name, and
/// root, having no mailbox there, gets it through the postmaster's.
#[test]
fn cron_mail_to_a_bare_root_reaches_the_postmaster() {
    let peer = sink();
    let s = server(&peer, "");
    let cron = "From: root (Cron Daemon)\nTo: root\nSubject: Cron <root@host> run-parts /etc/cron.daily\n\
                \nerror: the backup disk is full\n";
    assert_sent(&sendmail(
        &s,
        None,
        &["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"],
        cron,
    ));
    let new = s.data_dir().join("mail/mx.test.example/postmaster/new");
    let start = std::time::Instant::now();
    let delivered = loop {
        let files: Vec<_> = std::fs::read_dir(&new)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        if let [file] = files.as_slice() {
            break std::fs::read_to_string(file).expect("read");
        }
        assert!(start.elapsed() < WAIT, "{}", s.log());
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        delivered.contains("Return-Path: <root@mx.test.example>")
            && delivered.contains("From: \"Cron Daemon\" <root@mx.test.example>\r\n")
            && !delivered.contains("From: root (Cron Daemon)")
            && delivered.contains("the backup disk is full"),
        "{delivered}"
    );
    assert!(
        s.log().contains("event=\"local_user_to_postmaster\""),
        "{}",
        s.log()
    );
    // -bv says the same of a bare name; a bad one is still refused.
    let out = sendmail(&s, None, &["-bv", "root", "www-data"], "");
    assert_sent(&out);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("root... deliverable") && said.contains("www-data... deliverable"),
        "{said}"
    );
    assert!(peer.received().is_empty(), "nothing went out");
}

/// When the host name is itself a hosted domain, `user@hostname` may be
/// another's mailbox: a user's own address is then only what its entry says.
#[test]
fn a_hosted_host_name_gives_no_user_its_name_there() {
    let peer = sink();
    let s = server(&peer, "");
    s.cli_ok(&["domain", "add", "mx.test.example"]);
    assert_refused(
        &sendmail(
            &s,
            Some("nobody"),
            &["bob@remote.example"],
            "Subject: no sender\n\nhi\n",
        ),
        77,
        "<nobody@mx.test.example>: Sender address rejected: not among the senders allowed to Unix user nobody",
    );
    // root, trusted, still sends as any address of a hosted domain.
    assert_sent(&sendmail(
        &s,
        None,
        &["bob@remote.example"],
        "Subject: from root\n\nhi\n",
    ));
    let got = peer.wait_for(1, WAIT);
    assert_eq!(got[0]["mail_from"], "root@mx.test.example");
}

#[test]
fn a_server_that_is_not_running_is_a_temporary_failure() {
    let s = TestServer::configure(&TestServer::config_for(""));
    s.add_alice();
    let out = sendmail(
        &s,
        None,
        &["-f", "shop@example.com", "bob@remote.example"],
        "Subject: x\n\nhi\n",
    );
    let socket = s.data_dir().join("run/submit.sock");
    assert_refused(
        &out,
        75,
        &format!(
            "the mail server is not running (nothing answers on {})",
            socket.display()
        ),
    );
}

/// `[limits] max_message_size` counts the message as sent (CRLF line
/// ends): at the limit it is queued, one octet over it is refused and
/// nothing is queued.
#[test]
fn a_message_over_max_message_size_is_refused_and_not_queued() {
    let s = TestServer::start("[limits]\nmax_message_size = 2048\n");
    let head = "From: shop@example.com\nSubject: size\n\n";
    // head's 3 lines and the body's lines each gain a CR.
    let body_line = "x".repeat(98);
    let lines = (2048 - head.len() - 3) / 100;
    let mut message = format!("{head}{}", format!("{body_line}\n").repeat(lines));
    let short = 2048 - (message.len() + message.matches('\n').count());
    message.push_str(&format!("{}\n", "y".repeat(short - 2)));
    assert_eq!(message.len() + message.matches('\n').count(), 2048);
    let at = sendmail(&s, None, &["-i", "bob@remote.example"], &message);
    assert_sent(&at);
    assert_eq!(s.queue().len(), 1);
    let over = sendmail(
        &s,
        None,
        &["-i", "bob@remote.example"],
        &format!("{message}z"),
    );
    assert_refused(
        &over,
        65,
        "552 5.3.4 Message size exceeds fixed limit of 2048 octets",
    );
    assert_eq!(s.queue().len(), 1);
}

/// `[limits] max_recipients`: at the limit the message is queued, one more
/// and it is refused whole.
#[test]
fn recipients_up_to_max_recipients() {
    let s = TestServer::start("[limits]\nmax_recipients = 3\n");
    let rcpts = ["a@remote.example", "b@remote.example", "c@remote.example"];
    let message = "From: shop@example.com\nSubject: many\n\nhi\n";
    assert_sent(&sendmail(&s, None, &rcpts, message));
    let over = sendmail(
        &s,
        None,
        &[&rcpts[..], &["d@remote.example"]].concat(),
        message,
    );
    assert_refused(&over, 69, "Too many recipients: at most 3 per message");
    assert_eq!(s.queue().len(), 1);
}

/// The configuration names files other users may not even look at (a key
/// under /etc/letsencrypt, 0700): `postern sendmail` needs none of them and
/// must not refuse to run for them.
#[test]
fn a_user_who_cannot_see_the_servers_key_still_sends() {
    let keys = tempfile::tempdir().expect("dir");
    std::fs::set_permissions(keys.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let (cert, key) = self_signed(keys.path(), &["mx.test.example"]);
    let peer = sink();
    let s = server(&peer, &format!("[tls]\ncert = {cert:?}\nkey = {key:?}\n"));
    let out = sendmail(
        &s,
        Some("nobody"),
        &["-f", "web@example.com", "bob@remote.example"],
        "From: web@example.com\nSubject: x\n\nhi\n",
    );
    assert_sent(&out);
    peer.wait_for(1, WAIT);
}

/// Below `[limits] min_free_space` a message is refused before it comes,
/// as MAIL refuses it, and the caller is told to try again later.
#[test]
fn below_the_free_space_floor_it_is_a_temporary_failure() {
    let s = TestServer::start("[limits]\nmin_free_space = 1125899906842624\n");
    let out = sendmail(
        &s,
        None,
        &["-f", "shop@example.com", "bob@remote.example"],
        "Subject: x\n\nhi\n",
    );
    assert_refused(&out, 75, "452 4.3.1 Insufficient system storage");
    assert!(s.queue().is_empty());
}
