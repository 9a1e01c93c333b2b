//! "Accepted" is a promise: messages that got a 250 survive SIGKILL, intact and
//! once; SIGTERM lets open transactions finish, then exits 0.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;

/// Many concurrent clients, each sending messages with a unique token until the
/// server goes away; prints `OK token queue-id` for every 250.
const LOAD: &str = r#"
import smtplib, sys, threading
host, port, clients = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
lock = threading.Lock()
def client(n):
    try:
        s = smtplib.SMTP(host, port, timeout=10)
        s.ehlo("load.test")
        i = 0
        while True:
            token = f"tok-{n}-{i}"
            # Every other body is large enough for a segment file.
            body = f"Subject: {token}\r\n\r\n{token}\r\n" + ("filler line\r\n" * (20 if i % 2 else 800))
            s.mail("load@remote.example")
            s.rcpt("alice@example.com")
            code, msg = s.data(body.encode())
            if code == 250:
                with lock:
                    print("OK", token, msg.decode().split()[-1], flush=True)
            i += 1
    except Exception:
        pass
ts = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
for t in ts: t.start()
for t in ts: t.join()
"#;

/// Reads every queued body straight from the spool (the database with Python's
/// sqlite3, large bodies from their segment files), and prints `queue-id
/// token` per message.
const READ_SPOOL: &str = r#"
import sqlite3, sys, re, os
db = sqlite3.connect(sys.argv[1])
bodies = os.path.join(os.path.dirname(sys.argv[1]), "bodies")
for qid, body, segment, offset, size in db.execute("SELECT id, body, segment, segment_offset, size FROM message"):
    if segment is not None:
        with open(os.path.join(bodies, "%016x" % segment), "rb") as f:
            f.seek(offset)
            body = f.read(size)
    m = re.search(rb"Subject: (tok-\d+-\d+)\r\n\r\n(tok-\d+-\d+)\r\n", body)
    ok = m and m.group(1) == m.group(2) and body.endswith(b"filler line\r\n" * 20)
    print(qid, m.group(1).decode() if ok else "CORRUPT")
"#;

#[test]
fn every_accepted_message_survives_sigkill_once_and_intact() {
    let mut s = TestServer::start("");
    let addr = s.addr("mta");
    require_tool("python3");
    let load = Command::new("python3")
        .args([
            "-c",
            LOAD,
            &addr.ip().to_string(),
            &addr.port().to_string(),
            "16",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("load");
    std::thread::sleep(Duration::from_millis(2500));
    s.kill();
    let out = load.wait_with_output().expect("load output");
    let accepted: Vec<(String, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut p = l.split_whitespace();
            (p.next() == Some("OK")).then(|| {
                (
                    p.next().unwrap_or("").to_string(),
                    p.next().unwrap_or("").to_string(),
                )
            })
        })
        .collect();
    assert!(
        accepted.len() >= 50,
        "the load did not get going: {} accepted",
        accepted.len()
    );

    s.spawn();
    let db = s.data_dir().join("spool/queue.sqlite");
    let stored = text(&python(READ_SPOOL, &[db.to_str().expect("path")]));
    let stored: std::collections::HashMap<String, String> = stored
        .lines()
        .map(|l| {
            let (id, token) = l.split_once(' ').expect("id token");
            (id.to_string(), token.to_string())
        })
        .collect();
    assert!(
        !stored.values().any(|t| t == "CORRUPT"),
        "a stored message is damaged"
    );
    let segments = std::fs::read_dir(s.data_dir().join("spool/bodies"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert!(segments > 0, "the large bodies are not in segment files");
    let mut tokens: Vec<&String> = stored.values().collect();
    tokens.sort();
    let before = tokens.len();
    tokens.dedup();
    assert_eq!(before, tokens.len(), "a message is stored twice");
    for (token, id) in &accepted {
        assert_eq!(
            stored.get(id),
            Some(token),
            "{token} got 250 as {id} but is not in the spool"
        );
    }
    // The CLI sees them too, after the restart.
    assert_eq!(s.queue().len(), stored.len());
}

#[test]
fn sigterm_lets_an_open_transaction_finish_then_exits_zero() {
    let mut s = TestServer::start("");
    let mut c = Raw::to_alice(s.addr("mta"), "peer.test");
    assert_eq!(code(&c.cmd("DATA")), 354);
    c.send(b"Subject: drain\r\n\r\nfirst half\r\n");
    s.send_term();
    std::thread::sleep(Duration::from_millis(300));
    // No new connections once draining.
    assert!(
        std::net::TcpStream::connect(s.addr("submission")).is_err(),
        "listeners are closed"
    );
    c.send(b"second half\r\n.\r\n");
    let r = c.reply();
    assert!(r.starts_with("250 2.0.0 Ok: queued as"), "{r}");
    let bye = c.reply();
    assert!(bye.starts_with("421 4.3.0"), "{bye}");
    let status = s.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "exit status {status}");
    let log = s.log();
    assert!(log.contains("event=\"shutdown\""), "{log}");
}
