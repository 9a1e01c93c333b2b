//! Storage failures: a full disk, with and without the free-space floor.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::common::*;

/// Mixed sizes: kept in the database (in chunk rows: with its header lines
/// a 1,000-octet body is past the 1,000 kept in its row), in a segment file,
/// and spilled to disk while they arrive.
const SIZES: [usize; 4] = [1_000, 20_000, 1_000, 300_000];

fn load(addr: SocketAddr) -> Load {
    Load::start(&LoadSpec {
        addr,
        clients: 16,
        mode: "plain",
        login: None,
        sender: "load@remote.example",
        rcpt: "bob@remote.example",
        sizes: &SIZES,
    })
}

/// A server that relays everything to `sink_port` on 127.0.0.1, holding its
/// mail until `release_to` rewrites the config; its data_dir is a tmpfs of
/// `mib` MiB. `extra` goes first.
fn server_on_tmpfs(mib: u64, sink_port: u16, extra: &str) -> (TestServer, Tmpfs) {
    let extra = format!(
        "trusted_networks = [\"127.0.0.1/32\"]\n{extra}\n\
         [relay]\nhost = \"127.0.0.1\"\nport = {sink_port}\ntls = \"none\"\n\
         [delivery]\nhold = true\nretry_min = 1\nretry_max = 2\n"
    );
    let mut s = TestServer::configure(&TestServer::config_for(&extra));
    let fs = Tmpfs::mount(&s.data_dir(), mib);
    s.add_alice();
    s.spawn();
    (s, fs)
}

/// Restarts the server delivering, and waits until its queue is empty.
fn release_to(s: &mut TestServer, sink: &Peer) -> Vec<serde_json::Value> {
    s.kill();
    let text = std::fs::read_to_string(&s.config).expect("config");
    std::fs::write(&s.config, text.replace("hold = true", "hold = false")).expect("config");
    s.spawn();
    s.wait_until_queue_empty(Duration::from_secs(90));
    sink.received()
}

/// Runs a load, breaks the spool's storage with `fault` for three seconds,
/// repairs it, checks that mail flows again without a restart, then delivers
/// everything to a sink: every 250 arrives there once, and no refused message.
fn survives_a_storage_fault(fault: impl Fn(&Path) -> Box<dyn FnOnce()>) {
    let sink_port = free_port();
    let (mut s, _fs) = server_on_tmpfs(256, sink_port, "[limits]\nmin_free_space = 0");
    let running = load(s.addr("mta"));
    std::thread::sleep(Duration::from_millis(1500));
    let repair = fault(&s.data_dir());
    std::thread::sleep(Duration::from_secs(3));
    repair();
    std::thread::sleep(Duration::from_secs(2));
    let during = running.stop();
    assert!(
        during.refused.iter().any(|(_, c)| *c / 100 == 4),
        "the fault never showed: {} accepted\n{}",
        during.accepted.len(),
        s.log()
    );
    assert!(
        during.refused.iter().all(|(_, c)| *c / 100 == 4),
        "a storage fault must give 4xx only: {:?}",
        during.refused
    );
    let after = load(s.addr("mta"));
    std::thread::sleep(Duration::from_secs(2));
    let after = after.stop();
    assert!(
        !after.accepted.is_empty() && after.refused.is_empty(),
        "no recovery once the fault was repaired: {} accepted, refused {:?}\n{}",
        after.accepted.len(),
        after.refused,
        s.log()
    );
    let mut result = during;
    result.absorb(after);
    let sink = Peer::start(SocketAddr::from(([127, 0, 0, 1], sink_port)), &[]);
    let received = release_to(&mut s, &sink);
    let texts: Vec<&str> = received
        .iter()
        .map(|m| m["data"].as_str().unwrap_or(""))
        .collect();
    let tally = tally(&tokens_in(texts), &result);
    assert_eq!(tally.duplicates, 0, "a message arrived twice");
    eprintln!(
        "{} accepted, {} refused with 4xx, {} unanswered of which {} arrived",
        result.accepted.len(),
        result.refused.len(),
        result.unanswered.len(),
        tally.unanswered_arrived
    );
}

#[test]
fn a_full_disk_never_loses_an_accepted_message() {
    survives_a_storage_fault(|data_dir| {
        let filler = fill(data_dir);
        Box::new(move || std::fs::remove_file(filler).expect("free the disk"))
    });
}

#[test]
fn a_read_only_spool_never_loses_an_accepted_message() {
    // Immutable stops even root, and writes through files already open: the
    // closest a test can come to a filesystem the kernel made read-only.
    survives_a_storage_fault(|data_dir| {
        let spool = data_dir.join("spool");
        chattr("+i", &spool);
        Box::new(move || chattr("-i", &spool))
    });
}

fn chattr(flag: &str, dir: &Path) {
    require_tool("chattr");
    let ok = std::process::Command::new("chattr")
        .args(["-R", flag])
        .arg(dir)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "chattr -R {flag} {}", dir.display());
}

/// Fills the filesystem of `dir` with one file; returns its path.
fn fill(dir: &Path) -> std::path::PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).expect("filler");
    let chunk = vec![0u8; 64 * 1024];
    while file.write_all(&chunk).is_ok() {}
    path
}

#[test]
fn a_removed_database_is_refused_with_4xx_and_never_250() {
    let (s, _fs) = server_on_tmpfs(256, free_port(), "[limits]\nmin_free_space = 0");
    let (mut c, _) = Raw::connect(s.addr("mta"));
    c.cmd("EHLO peer.test");
    send_one(&mut c);
    std::fs::remove_file(s.data_dir().join("spool/queue.sqlite")).expect("rm");
    let running = load(s.addr("mta"));
    std::thread::sleep(Duration::from_secs(2));
    let result = running.stop();
    assert!(
        result.accepted.is_empty(),
        "{} messages got 250 after the database was removed",
        result.accepted.len()
    );
    // 421 once the session has had its fill of errors.
    assert!(
        result.refused.iter().all(|(_, c)| *c == 451 || *c == 421),
        "{:?}",
        result.refused
    );
    assert!(!result.refused.is_empty());
    let log = s.log();
    assert!(
        log.contains("was removed or replaced while the server runs"),
        "the log must say why: {log}"
    );
}

/// What the server says about its spool in /metrics (the gauge's value).
fn low_space_gauge(s: &TestServer) -> String {
    let addr = s.http_addrs()[0];
    let out = std::process::Command::new("curl")
        .args(["-s", &format!("http://{addr}/metrics")])
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with("postern_spool_low_space "))
        .map(|l| l.trim_start_matches("postern_spool_low_space ").to_string())
        .unwrap_or_default()
}

#[test]
fn below_the_free_space_floor_mail_is_refused_at_mail_until_space_returns() {
    const FLOOR: u64 = 64 << 20;
    let extra = format!("[limits]\nmin_free_space = {FLOOR}\n[http]\naddr = \"127.0.0.1:0\"");
    let (s, fs) = server_on_tmpfs(80, free_port(), &extra);
    require_tool("curl");
    let (mut c, _) = Raw::connect(s.addr("mta"));
    c.cmd("EHLO peer.test");
    let mail = |c: &mut Raw, size: u64| {
        let r = c.cmd(&format!("MAIL FROM:<a@remote.example> SIZE={size}"));
        c.cmd("RSET");
        r
    };
    // SIZE counts: a message that would take the disk below the floor is
    // refused before it is sent.
    let room = fs.free() - FLOOR;
    assert_eq!(code(&mail(&mut c, room - (4 << 20))), 250);
    let r = mail(&mut c, room + (4 << 20));
    assert!(
        r.starts_with("452 4.3.1 Insufficient system storage"),
        "{r}"
    );

    let filler = fs.fill_leaving(FLOOR / 2);
    for _ in 0..3 {
        let r = mail(&mut c, 0);
        assert!(r.starts_with("452 4.3.1 "), "{r}");
    }
    assert_eq!(low_space_gauge(&s), "1");
    // Not an error of the client's: the session goes on.
    assert_eq!(code(&c.cmd("NOOP")), 250);

    std::fs::remove_file(filler).expect("free the disk");
    assert_eq!(code(&mail(&mut c, 0)), 250, "{}", s.log());
    assert_eq!(low_space_gauge(&s), "0");
    let id = send_one(&mut c);
    assert!(s.queue().iter().any(|m| m["id"] == id.as_str()));
    let log = s.log();
    assert_eq!(log.matches("event=\"low_space\"").count(), 1, "{log}");
    assert_eq!(log.matches("event=\"space_recovered\"").count(), 1, "{log}");
}

/// One message through an open session; its queue id.
fn send_one(c: &mut Raw) -> String {
    assert_eq!(code(&c.cmd("MAIL FROM:<a@remote.example>")), 250);
    assert_eq!(code(&c.cmd("RCPT TO:<bob@remote.example>")), 250);
    assert_eq!(code(&c.cmd("DATA")), 354);
    c.send(b"Subject: after\r\n\r\nspace is back\r\n.\r\n");
    let r = c.reply();
    queued_id(&r).unwrap_or_else(|| panic!("not queued: {r}"))
}
