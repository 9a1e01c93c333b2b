//! Postern with a real Dovecot (Debian's dovecot-imapd, dovecot-sqlite,
//! dovecot-lmtpd and dovecot-sieve), set up as docs/dovecot.md says, with the
//! very files it shows: Dovecot logs Postern's users in against Postern's store
//! and reads, over IMAP with Python's imaplib, what Postern delivered, written
//! into the Maildir as `[local] owner` or handed over by LMTP, where a Sieve
//! rule files one message into a folder. Also: `[local] owner` on a server
//! that may not give files away.

use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::delivery::{show_after_attempt, wait_log};

const DOC: &str = include_str!("../docs/dovecot.md");

/// docs/dovecot.md's `vmail`: a user every Debian system has.
const MAIL_USER: &str = "mail";
const MAIL_UID: u32 = 8;

/// Whether this test may run as root; if not, says that `test` is skipped
/// and `why` it needs root.
fn as_root(test: &str, why: &str) -> bool {
    let root = rustix::process::geteuid().is_root();
    if !root {
        skipped(test, &format!("{why}, which needs root"));
    }
    root
}

/// Whether Dovecot and the parts the tests use are installed, and can run
/// (as root); if not, says that `test` is skipped.
fn dovecot_installed(test: &str) -> bool {
    if !as_root(test, "Dovecot runs the mailboxes as another user") {
        return false;
    }
    let missing: Vec<&str> = [
        ("/usr/sbin/dovecot", "dovecot-core"),
        ("/usr/lib/dovecot/imap", "dovecot-imapd"),
        ("/usr/lib/dovecot/lmtp", "dovecot-lmtpd"),
        (
            "/usr/lib/dovecot/modules/libdriver_sqlite.so",
            "dovecot-sqlite",
        ),
        (
            "/usr/lib/dovecot/modules/lib90_sieve_plugin.so",
            "dovecot-sieve",
        ),
    ]
    .into_iter()
    .filter(|(file, _)| !Path::new(file).exists())
    .map(|(_, package)| package)
    .collect();
    if missing.is_empty() {
        return true;
    }
    skipped(
        test,
        &format!(
            "Dovecot is not installed (apt-get install {})",
            missing.join(" ")
        ),
    );
    false
}

/// Says a test is skipped, on stderr itself: the harness keeps what
/// `eprintln!` prints from passing tests, and a skip must be seen.
fn skipped(test: &str, why: &str) {
    let _ = writeln!(std::io::stderr(), "SKIPPED dovecot::{test}: {why}");
}

/// A Dovecot instance of the test's own: config, sockets, state and log in a
/// temp dir, IMAPS on a loopback port, stopped by its PID on drop.
struct Dovecot {
    dir: tempfile::TempDir,
    imaps: u16,
    child: Option<Child>,
}

impl Dovecot {
    fn new() -> Dovecot {
        let dir = tempfile::tempdir().expect("tempdir");
        // Dovecot's processes run as several users, and all reach base_dir.
        chmod(dir.path(), 0o755);
        let imaps = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        Dovecot {
            dir,
            imaps,
            child: None,
        }
    }

    /// The LMTP socket Dovecot listens on once started.
    fn lmtp(&self) -> PathBuf {
        self.dir.path().join("run/lmtp")
    }

    /// Starts Dovecot on `s`'s store and mailboxes, and waits until it listens.
    fn start(&mut self, s: &TestServer) {
        let dir = self.dir.path();
        let data_dir = s.data_dir();
        // docs/dovecot.md: Dovecot, as the mail user, enters data_dir by its
        // group; the test server's own temp dir stands for /var/lib.
        chmod(s.dir.path(), 0o711);
        run("chgrp", &[MAIL_USER, &data_dir.display().to_string()]);
        let (cert, key) = self_signed(dir, &["localhost"]);
        let sql_conf = dir.join("postern-sql.conf.ext");
        let data_dir = data_dir.display().to_string();
        let conf = doc_file("/etc/dovecot/dovecot.conf")
            .replace("/var/lib/postern", &data_dir)
            .replace(
                "/etc/dovecot/postern-sql.conf.ext",
                &sql_conf.display().to_string(),
            )
            .replace("/etc/postern/fullchain.pem", &cert.display().to_string())
            .replace("/etc/postern/privkey.pem", &key.display().to_string())
            .replace("vmail", MAIL_USER);
        let conf = format!(
            "{conf}\n# The test's own\nbase_dir = {d}/run\nstate_dir = {d}/state\nlog_path = {d}/dovecot.log\n\
             listen = 127.0.0.1\nfirst_valid_uid = {MAIL_UID}\n\
             service imap-login {{\n  inet_listener imap {{\n    port = 0\n  }}\n  inet_listener imaps {{\n    port = {port}\n  }}\n}}\n",
            d = dir.display(),
            port = self.imaps,
        );
        std::fs::write(dir.join("dovecot.conf"), conf).expect("write dovecot.conf");
        let sql =
            doc_file("/etc/dovecot/postern-sql.conf.ext").replace("/var/lib/postern", &data_dir);
        std::fs::write(&sql_conf, sql).expect("write the SQL config");
        let out = std::fs::File::create(dir.join("stdout.log")).expect("log");
        let child = Command::new("dovecot")
            .args(["-F", "-c"])
            .arg(dir.join("dovecot.conf"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("spawn dovecot");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.imaps)).is_err()
            || !self.lmtp().exists()
        {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("dovecot exited with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "dovecot did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        ["stdout.log", "dovecot.log"]
            .iter()
            .map(|f| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default())
            .collect()
    }

    /// The message with `subject` in alice's `folder`, read over IMAPS with
    /// her Postern password (after a wrong one is refused); waits for it.
    fn read(&self, folder: &str, subject: &str) -> String {
        let out = python(
            IMAP_READ,
            &[
                &self.imaps.to_string(),
                "alice@example.com",
                PASSWORD,
                folder,
                subject,
            ],
        );
        assert!(
            out.status.success(),
            "IMAP: {}\ndovecot's log:\n{}",
            text(&out),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGTERM: the master stops its children and exits.
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Logs in (after checking that a wrong password is refused), selects the
/// folder read-write, waits for a message with the subject, marks it seen
/// (which Dovecot can do only in a mailbox it may write) and prints it.
const IMAP_READ: &str = r#"
import imaplib, ssl, sys, time
port, user, password, folder, subject = sys.argv[1:6]
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
m = imaplib.IMAP4_SSL("127.0.0.1", int(port), ssl_context=ctx)
try:
    m.login(user, "not " + password)
    sys.exit("a wrong password was accepted")
except imaplib.IMAP4.error:
    pass
m = imaplib.IMAP4_SSL("127.0.0.1", int(port), ssl_context=ctx)
m.login(user, password)
deadline = time.time() + 30
while True:
    typ, data = m.select('"%s"' % folder)
    if typ == "OK":
        typ, found = m.search(None, "SUBJECT", '"%s"' % subject)
        if typ == "OK" and found[0]:
            n = found[0].split()[0]
            typ, flags = m.store(n, "+FLAGS", "\\Seen")
            if typ != "OK":
                sys.exit("cannot mark it seen: %r" % flags)
            typ, msg = m.fetch(n, "(RFC822)")
            sys.stdout.write(msg[0][1].decode())
            break
    if time.time() > deadline:
        sys.exit("no %r in %s: %r; folders %r" % (subject, folder, data, m.list()))
    time.sleep(0.2)
m.logout()
"#;

/// A file docs/dovecot.md shows in a `conf` block that starts `# <path>`.
fn doc_file(path: &str) -> String {
    DOC.split("```conf\n")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .find(|block| block.starts_with(&format!("# {path}")))
        .unwrap_or_else(|| panic!("docs/dovecot.md shows no {path}"))
        .to_string()
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn run(program: &str, args: &[&str]) {
    let ok = Command::new(program)
        .args(args)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "{program} {args:?} failed");
}

/// bob@remote.example sends alice a message through the MTA port; its queue id.
fn send(s: &TestServer, subject: &str, body: &str) -> String {
    let out = swaks(
        s.addr("mta"),
        &[
            "--from",
            "bob@remote.example",
            "--to",
            "alice@example.com",
            "--header",
            &format!("Subject: {subject}"),
            "--body",
            body,
        ],
    );
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    queued_id(&said).unwrap_or_else(|| panic!("not queued: {said}"))
}

/// A server that delivers, with `local` as its `[local]` section.
fn server(local: &str) -> TestServer {
    let s = TestServer::configure(&TestServer::config_for(&format!(
        "[local]\n{local}[delivery]\nretry_min = 1\n"
    )));
    s.add_alice();
    s
}

/// Issue #14: Dovecot said "INBOX is not writable" of every Maildir Postern
/// made (root's, 0755). With `[local] owner`, `group` and `mode`, Dovecot as
/// that user reads the message and changes its flags.
#[test]
fn dovecot_reads_and_writes_what_postern_put_in_the_maildir() {
    if !dovecot_installed("dovecot_reads_and_writes_what_postern_put_in_the_maildir") {
        return;
    }
    let mut s = server("owner = \"mail\"\ngroup = \"mail\"\nmode = \"0700\"\n");
    s.spawn();
    let mut dovecot = Dovecot::new();
    dovecot.start(&s);
    send(&s, "into the Maildir", "written by Postern");
    let message = dovecot.read("INBOX", "into the Maildir");
    assert!(message.contains("written by Postern"), "{message}");
    assert!(
        message.starts_with("Return-Path: <bob@remote.example>"),
        "{message}"
    );
    let maildir = s.data_dir().join("mail/example.com/alice");
    for (path, mode) in [(maildir.clone(), 0o700), (maildir.join("cur"), 0o700)] {
        let meta = std::fs::metadata(&path).expect("metadata");
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o777),
            (MAIL_UID, 8, mode),
            "{}",
            path.display()
        );
    }
    let seen: Vec<_> = std::fs::read_dir(maildir.join("cur"))
        .expect("cur")
        .filter_map(Result::ok)
        .collect();
    assert_eq!(seen.len(), 1, "Dovecot moved the message to cur/");
    let meta = seen[0].metadata().expect("metadata");
    assert_eq!((meta.uid(), meta.mode() & 0o777), (MAIL_UID, 0o600));
}

/// Issue #14: with `[local] lmtp`, Dovecot's LMTP stores the mail and runs
/// the user's Sieve script, which files one message into a folder.
#[test]
fn lmtp_delivers_through_dovecot_and_sieve_files_into_a_folder() {
    if !dovecot_installed("lmtp_delivers_through_dovecot_and_sieve_files_into_a_folder") {
        return;
    }
    let mut dovecot = Dovecot::new();
    let mut s = server(&format!("lmtp = \"unix:{}\"\n", dovecot.lmtp().display()));
    // docs/dovecot.md: data_dir/mail is the mail user's; alice's Sieve script
    // is in her home, which is her Maildir.
    let mail = s.data_dir().join("mail");
    let home = mail.join("example.com/alice");
    std::fs::create_dir_all(home.join("sieve")).expect("mkdir");
    std::fs::write(
        home.join("sieve/rules.sieve"),
        "require [\"fileinto\", \"mailbox\"];\nif header :contains \"subject\" \"[lists]\" { fileinto :create \"Folder\"; }\n",
    )
    .expect("sieve script");
    std::os::unix::fs::symlink("sieve/rules.sieve", home.join("dovecot.sieve")).expect("link");
    run("chown", &["-R", "mail:mail", &mail.display().to_string()]);
    s.spawn();
    dovecot.start(&s);
    send(&s, "[lists] filed by Sieve", "to the folder");
    send(&s, "straight in", "to the inbox");
    let filed = dovecot.read("Folder", "[lists] filed by Sieve");
    assert!(filed.contains("to the folder"), "{filed}");
    let inbox = dovecot.read("INBOX", "straight in");
    assert!(inbox.contains("to the inbox"), "{inbox}");
    wait_log(
        &s,
        &format!(
            "LMTP server unix:{} said: 250 2.0.0",
            dovecot.lmtp().display()
        ),
    );
}

/// Issue #14: a server that may not give files away (not root) says so at
/// start and delivers nothing to a Maildir with `[local] owner`: the message
/// stays queued, and says who it was to be given to and why not.
#[test]
fn a_server_that_may_not_chown_defers_and_says_why() {
    if !as_root(
        "a_server_that_may_not_chown_defers_and_says_why",
        "it starts the server as nobody",
    ) {
        return;
    }
    let mut s = server("owner = \"mail\"\n");
    run(
        "chown",
        &["-R", "nobody:nogroup", &s.dir.path().display().to_string()],
    );
    s.spawn_as("nobody", "nogroup");
    // Said at start, before any mail.
    assert!(
        s.log()
            .contains("event=\"local_owner_impossible\" owner=mail"),
        "{}",
        s.log()
    );
    let id = send(&s, "for a Maildir", "x");
    let show = show_after_attempt(&s, &id);
    assert!(
        show.contains("to owner mail ([local]): Operation not permitted; the server must run as root (or with CAP_CHOWN) to set a Maildir's owner or group"),
        "{show}\n{}",
        s.log()
    );
    assert_eq!(s.queue().len(), 1, "deferred, not bounced");
}

#[test]
fn config_check_names_an_owner_this_host_lacks() {
    let s = TestServer::configure("[local]\nowner = \"no-such-vmail\"\nmode = \"0640\"\n");
    let out = s.cli(&["config", "check"]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains(
            "postern.toml:2: local.owner: there is no user \"no-such-vmail\" on this host"
        ),
        "{said}"
    );
    assert!(
        said.contains("postern.toml:3: local.mode: \"0640\" is out of range"),
        "{said}"
    );
}
