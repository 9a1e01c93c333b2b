//! Reloading a running server: SIGHUP and `postern reload` serve a replaced
//! certificate to new sessions, a broken configuration is refused while the
//! old one keeps serving, a renewal written on disk is picked up without a
//! signal, listeners are added and removed (the HTTP ones too), and the
//! report names settings that wait for a restart.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::*;

/// A certificate pair for `names`, written in place of `cert` and `key` the
/// way certbot renews: complete files renamed over the old ones.
fn install_pair(cert: &Path, key: &Path, names: &[&str]) -> String {
    let fresh = tempfile::tempdir_in(cert.parent().expect("dir")).expect("tempdir");
    let (new_cert, new_key) = self_signed(fresh.path(), names);
    let pem = std::fs::read_to_string(&new_cert).expect("read cert");
    std::fs::rename(&new_key, key).expect("install key");
    std::fs::rename(&new_cert, cert).expect("install cert");
    pem
}

/// The leaf certificate a new implicit-TLS session is served, as PEM.
fn served(s: &TestServer) -> String {
    let out = s_client(s.addr("submissions"), &[], "QUIT\r\n");
    let t = text(&out);
    let begin = t
        .find("-----BEGIN CERTIFICATE-----")
        .unwrap_or_else(|| panic!("{t}"));
    let end = t[begin..].find("-----END CERTIFICATE-----").expect("end") + begin;
    t[begin..end + "-----END CERTIFICATE-----".len()].to_string()
}

fn server_with_pair() -> (TestServer, PathBuf, PathBuf, String) {
    let certs = tempfile::tempdir().expect("tempdir");
    let dir = certs.keep();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let first = install_pair(&cert, &key, &["mx.test.example"]);
    let s = TestServer::start(&format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        cert.display(),
        key.display()
    ));
    (s, cert, key, first)
}

fn wait_for_log(s: &TestServer, needle: &str, within: Duration) {
    let start = Instant::now();
    while !s.log().contains(needle) {
        assert!(
            start.elapsed() < within,
            "no {needle:?} in the log:\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn sighup_and_postern_reload_serve_a_new_certificate_and_refuse_a_broken_config() {
    let (mut s, cert, key, first) = server_with_pair();
    assert_eq!(served(&s).trim(), first.trim());

    let second = install_pair(&cert, &key, &["mx.test.example", "second.test.example"]);
    s.send_hup();
    wait_for_log(&s, "event=\"reloaded\"", Duration::from_secs(10));
    assert_eq!(served(&s).trim(), second.trim(), "SIGHUP: the new pair");

    let third = install_pair(&cert, &key, &["mx.test.example", "third.test.example"]);
    let report = s.cli_ok(&["reload"]);
    assert!(
        report.contains("certificate") && report.contains("loaded"),
        "{report}"
    );
    assert_eq!(
        served(&s).trim(),
        third.trim(),
        "postern reload: the new pair"
    );

    // A changed setting is named, with when it takes effect.
    let config = std::fs::read_to_string(&s.config).expect("config");
    assert!(!config.contains("[limits]"));
    std::fs::write(
        &s.config,
        format!("{config}\n[limits]\nmax_recipients = 7\n"),
    )
    .expect("write config");
    let report = s.cli_ok(&["reload"]);
    assert!(
        report.contains("applied: [limits]") && !report.contains("[delivery]"),
        "{report}"
    );

    // Broken: refused with its errors, and the server keeps serving.
    std::fs::write(&s.config, "hostname = \n").expect("break config");
    let out = s.cli(&["reload"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    // The command reads the file first (for the data_dir) and names the fault.
    assert!(
        err.contains("postern.toml:1") && err.contains("not valid TOML"),
        "{err}"
    );
    s.send_hup();
    wait_for_log(&s, "event=\"reload_refused\"", Duration::from_secs(10));
    assert_eq!(
        served(&s).trim(),
        third.trim(),
        "still serving, same certificate"
    );
    let (_mta, greeting) = Raw::connect(s.addr("mta"));
    assert!(greeting.starts_with("220 "), "{greeting}");

    // Not a pair: the certificate in use stays.
    std::fs::write(&s.config, &config).expect("restore config");
    std::fs::write(&key, "not a key\n").expect("break key");
    let out = s.cli(&["reload"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not reloaded") && err.contains("in use stays"),
        "{err}"
    );
    assert_eq!(served(&s).trim(), third.trim());
    s.kill();
}

#[test]
fn a_certificate_renewed_on_disk_is_served_within_a_minute_without_a_signal() {
    let (mut s, cert, key, _first) = server_with_pair();
    let renewed = install_pair(&cert, &key, &["mx.test.example", "renewed.test.example"]);
    wait_for_log(
        &s,
        "event=\"certificate_reloaded\"",
        Duration::from_secs(45),
    );
    assert_eq!(served(&s).trim(), renewed.trim());
    s.kill();
}

#[test]
fn postern_reload_without_a_server_says_so() {
    let s = TestServer::configure("data_dir = \"data\"\n");
    let out = s.cli(&["reload"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no server runs"), "{err}");
}

/// The bound addresses and roles in `run/listeners.json`, as the server
/// rewrites it after a reload.
fn listeners_file(s: &TestServer) -> Vec<(std::net::SocketAddr, String)> {
    let text = std::fs::read_to_string(s.data_dir().join("run/listeners.json")).expect("read");
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    v.as_array()
        .expect("array")
        .iter()
        .map(|l| {
            (
                l["addr"].as_str().expect("addr").parse().expect("addr"),
                l["role"].as_str().expect("role").to_string(),
            )
        })
        .collect()
}

/// The ports autoconfig (Thunderbird's XML) offers alice now.
fn offered_ports(s: &TestServer) -> Vec<u16> {
    let url = format!(
        "http://{}/mail/config-v1.1.xml?emailaddress=alice%40example.com",
        s.http_addrs()[0]
    );
    let out = std::process::Command::new("curl")
        .args(["-s", "--max-time", "20", &url])
        .output()
        .expect("curl");
    let xml = String::from_utf8_lossy(&out.stdout);
    xml.split("<port>")
        .skip(1)
        .filter_map(|p| p.split('<').next()?.parse().ok())
        .collect()
}

#[test]
fn a_reload_adds_and_removes_listeners_and_open_sessions_finish() {
    let s = TestServer::start("[http]\naddr = \"127.0.0.1:0\"\n");
    let offered = offered_ports(&s);
    assert!(offered.contains(&s.port("submission")), "{offered:?}");
    let submissions = s.addr("submissions");
    // A session on the listener about to go: it finishes on it.
    let (mut open, greeting) = Raw::connect(s.addr("submission"));
    assert!(greeting.starts_with("220 "), "{greeting}");
    let config = std::fs::read_to_string(&s.config).expect("read config");
    let changed = config
        .replace(
            "[[listener]]\naddr = \"127.0.0.1:0\"\nrole = \"submission\"\n",
            "",
        )
        .replace(
            "role = \"submissions\"\n",
            "role = \"submissions\"\n[[listener]]\naddr = \"127.0.0.1:0\"\nrole = \"mta\"\n",
        );
    assert_ne!(changed, config);
    std::fs::write(&s.config, &changed).expect("write config");
    let report = s.cli_ok(&["reload"]);
    assert!(
        report.contains(&format!(
            "stopped listening on {} (submission)",
            s.addr("submission")
        )) && report.contains("listening on 127.0.0.1:")
            && !report.contains("next start"),
        "{report}"
    );
    let now = listeners_file(&s);
    let roles: Vec<&str> = now.iter().map(|(_, r)| r.as_str()).collect();
    assert_eq!(roles, ["mta", "submissions", "mta"], "{now:?}");
    // The kept ones are the same sockets; the new one greets.
    assert_eq!(now[0].0, s.addr("mta"));
    assert_eq!(now[1].0, submissions);
    let (_new, greeting) = Raw::connect(now[2].0);
    assert!(greeting.starts_with("220 "), "{greeting}");
    assert!(
        std::net::TcpStream::connect(s.addr("submission")).is_err(),
        "the removed listener still accepts"
    );
    assert!(open.cmd("EHLO still.here").starts_with("250"));
    assert!(open.cmd("QUIT").starts_with("221"));
    // Mail clients are offered the listeners as they are now.
    let offered = offered_ports(&s);
    assert!(
        !offered.contains(&s.port("submission")) && offered.contains(&submissions.port()),
        "{offered:?}"
    );

    // Back as it was: the submission listener comes back (on a new port).
    std::fs::write(&s.config, &config).expect("restore config");
    let report = s.cli_ok(&["reload"]);
    assert!(report.contains("(submission)"), "{report}");
    let now = listeners_file(&s);
    let roles: Vec<&str> = now.iter().map(|(_, r)| r.as_str()).collect();
    assert_eq!(roles, ["mta", "submissions", "submission"]);
    assert!(offered_ports(&s).contains(&now[2].0.port()));
}

/// What curl gets from `url` (HTTPS not verified), or its exit status.
fn fetch(url: &str) -> Result<String, Option<i32>> {
    let out = std::process::Command::new("curl")
        .args(["-sk", "--max-time", "20", url])
        .output()
        .expect("curl");
    if !out.status.success() {
        return Err(out.status.code());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

const AUTOCONFIG: &str = "mail/config-v1.1.xml?emailaddress=alice%40example.com";

#[test]
fn a_reload_serves_a_changed_http_section_anew_and_keeps_the_sockets_that_stay() {
    let http = "[http]\naddr = \"127.0.0.1:0\"\nimap = \"imap.old.example:993\"\n";
    let s = TestServer::start(http);
    let plain = s.http_addrs()[0];
    let xml = fetch(&format!("http://{plain}/{AUTOCONFIG}")).expect("autoconfig");
    assert!(xml.contains("imap.old.example"), "{xml}");
    let config = std::fs::read_to_string(&s.config).expect("read config");

    // Another program holds the HTTPS port wanted: refused, HTTP as it was.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let blocked = config.replace(
        http,
        &format!("{http}tls_addr = \"127.0.0.1:{port}\"\nimap = \"imap.new.example:993\"\n")
            .replace("imap = \"imap.old.example:993\"\n", ""),
    );
    std::fs::write(&s.config, &blocked).expect("write config");
    let report = s.cli_ok(&["reload"]);
    assert!(
        report.contains(&format!(
            "[http] not applied: cannot listen for HTTP on 127.0.0.1:{port}"
        )) && report.contains("HTTP is served as it was")
            && !report.contains("applied: [http]"),
        "{report}"
    );
    assert_eq!(s.http_addrs(), [plain]);
    // Nothing of the new [http] is taken meanwhile.
    let xml = fetch(&format!("http://{plain}/{AUTOCONFIG}")).expect("autoconfig");
    assert!(xml.contains("imap.old.example"), "{xml}");
    drop(taken);

    // A new HTTPS listener with submission on it, and a new IMAP host: the
    // plain socket is the same one, serving the new settings.
    let changed = config.replace(
        http,
        "[http]\naddr = \"127.0.0.1:0\"\ntls_addr = \"127.0.0.1:0\"\n\
         submission_on_tls = true\nimap = \"imap.new.example:993\"\n",
    );
    std::fs::write(&s.config, &changed).expect("write config");
    let report = s.cli_ok(&["reload"]);
    assert!(
        report.contains("applied: [http]")
            && report.contains("serving HTTP on")
            && !report.contains("next start"),
        "{report}"
    );
    let now = s.http_addrs();
    assert_eq!(now.len(), 2, "{now:?}");
    assert_eq!(now[0], plain, "the plain socket is kept");
    let xml = fetch(&format!("http://{plain}/{AUTOCONFIG}")).expect("autoconfig");
    assert!(
        xml.contains("imap.new.example")
            && xml.contains(&format!("<port>{}</port>", now[1].port())),
        "{xml}"
    );
    let xml = fetch(&format!("https://{}/{AUTOCONFIG}", now[1])).expect("https autoconfig");
    assert!(xml.contains("imap.new.example"), "{xml}");
    // SMTP on the HTTPS port (ALPN smtp).
    let out = s_client(now[1], &["-alpn", "smtp"], "QUIT\r\n");
    assert!(text(&out).contains("220 "), "{}", text(&out));

    // No [http] at all: nothing listens, and run/http.json is gone.
    let without = config.replace(http, "");
    std::fs::write(&s.config, &without).expect("write config");
    let report = s.cli_ok(&["reload"]);
    assert!(report.contains("stopped serving HTTP"), "{report}");
    for addr in now {
        assert!(
            std::net::TcpStream::connect(addr).is_err(),
            "{addr} still accepts"
        );
    }
    assert!(!s.data_dir().join("run/http.json").exists());
}

/// Whether the server closed `conn` at once (its reply to a connection
/// over a cap), rather than keeping it open (for request_timeout, 10 s).
fn closed_at_once(conn: &mut std::net::TcpStream) -> bool {
    use std::io::Read;
    conn.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let mut buf = [0u8; 64];
    match conn.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

#[test]
fn requests_in_progress_finish_over_a_reload_and_still_count_against_the_caps() {
    use std::io::{Read, Write};
    let http = "[http]\naddr = \"127.0.0.1:0\"\nmax_connections_per_ip = 2\n";
    let s = TestServer::start(http);
    let plain = s.http_addrs()[0];
    // Two requests under way: their heads half sent.
    let mut open: Vec<std::net::TcpStream> = (0..2)
        .map(|_| {
            let mut conn = std::net::TcpStream::connect(plain).expect("connect");
            conn.write_all(
                b"GET /mail/config-v1.1.xml?emailaddress=alice%40example.com HTTP/1.1\r\n",
            )
            .expect("write");
            conn
        })
        .collect();
    let config = std::fs::read_to_string(&s.config).expect("read config");
    let changed = config.replace(http, &format!("{http}imap = \"imap.new.example:993\"\n"));
    std::fs::write(&s.config, changed).expect("write config");
    let report = s.cli_ok(&["reload"]);
    assert!(report.contains("HTTP served anew"), "{report}");
    // The new server counts the old one's connections: a third is over the cap.
    let mut third = std::net::TcpStream::connect(plain).expect("connect");
    assert!(closed_at_once(&mut third), "a third connection was let in");
    // The old server finishes the requests it had begun.
    for conn in &mut open {
        conn.write_all(b"Host: autoconfig.example.com\r\n\r\n")
            .expect("write");
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut answer = String::new();
        let _ = conn.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
}

#[test]
fn a_listener_a_reload_cannot_bind_is_reported_and_the_others_serve_on() {
    let s = TestServer::start("");
    // Another program holds the port the new listener wants.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let config = std::fs::read_to_string(&s.config).expect("read config");
    std::fs::write(
        &s.config,
        format!("{config}[[listener]]\naddr = \"127.0.0.1:{port}\"\nrole = \"submission\"\n"),
    )
    .expect("write config");
    let report = s.cli_ok(&["reload"]);
    assert!(
        report.contains("1 new listener could not be bound (see the log)"),
        "{report}"
    );
    assert!(
        s.log()
            .contains(&format!("cannot listen on 127.0.0.1:{port} (submission)")),
        "{}",
        s.log()
    );
    assert_eq!(listeners_file(&s).len(), 3);
    let (_c, greeting) = Raw::connect(s.addr("submission"));
    assert!(greeting.starts_with("220 "), "{greeting}");
}

/// The settings work reads as it begins follow a reload: mail queued after
/// it takes the new `[relay]`, a session that begins after it gets the new
/// `[limits]`, a session already open keeps the old ones, and a setting that
/// shaped what was built at start is named and waits for the next start.
#[test]
fn a_reload_moves_new_mail_to_the_new_relay_and_new_sessions_to_the_new_limits() {
    use crate::delivery::{at, send, sender};
    let dns = TestDns::start();
    let port = free_port();
    let (old_relay, new_relay) = (
        Peer::start(at(71, port), &[]),
        Peer::start(at(72, port), &[]),
    );
    let s = sender(
        &dns,
        free_port(),
        &format!("[relay]\nhost = \"127.0.0.71\"\nport = {port}\ntls = \"none\"\n"),
    );
    send(
        &s,
        "app@example.com",
        &["bob@anywhere.example"],
        "Subject: one\n\nx\n",
    );
    old_relay.wait_for(1, Duration::from_secs(20));

    let (mut before, _) = Raw::connect(s.addr("mta"));
    assert_eq!(code(&before.cmd("EHLO before.test")), 250);
    assert_eq!(code(&before.cmd("MAIL FROM:<app@example.com>")), 250);
    let config = std::fs::read_to_string(&s.config).expect("config");
    let changed = config
        .replace("127.0.0.71", "127.0.0.72")
        .replace("[delivery]\n", "[delivery]\nconcurrency = 7\n")
        + "[limits]\nmax_recipients = 2\n";
    assert!(!config.contains("concurrency") && !config.contains("[limits]"));
    std::fs::write(&s.config, changed).expect("write config");
    let report = s.cli_ok(&["reload"]);
    assert!(
        report.contains("applied: [limits], [relay];")
            && report.contains("applied only at the next start: [delivery] concurrency"),
        "{report}"
    );

    send(
        &s,
        "app@example.com",
        &["bob@anywhere.example"],
        "Subject: two\n\nx\n",
    );
    let got = new_relay.wait_for(1, Duration::from_secs(20));
    assert!(
        got[0]["data"]
            .as_str()
            .unwrap_or_default()
            .contains("Subject: two"),
        "{got:?}"
    );
    assert_eq!(
        old_relay.received().len(),
        1,
        "the old relay got mail after the reload"
    );

    let (mut after, _) = Raw::connect(s.addr("mta"));
    assert_eq!(code(&after.cmd("EHLO after.test")), 250);
    assert_eq!(code(&after.cmd("MAIL FROM:<app@example.com>")), 250);
    for (n, rcpt) in ["a", "b", "c"].iter().enumerate() {
        let old = before.cmd(&format!("RCPT TO:<{rcpt}@anywhere.example>"));
        assert_eq!(code(&old), 250, "the open session keeps its limits: {old}");
        let new = after.cmd(&format!("RCPT TO:<{rcpt}@anywhere.example>"));
        let expected = if n < 2 { 250 } else { 452 };
        assert_eq!(
            code(&new),
            expected,
            "a new session, recipient {}: {new}",
            n + 1
        );
    }
}
