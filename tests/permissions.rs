//! Who may read what the server keeps: the data directory is its owner's and
//! its group's, the databases (password hashes, everyone's mail), keys and
//! spooled bodies are the owner's only, and an install made before that is
//! closed up at its next start.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::common::*;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn assert_mode(path: &Path, want: u32) {
    assert_eq!(
        mode(path),
        want,
        "{} is {:o}, not {want:o}",
        path.display(),
        mode(path)
    );
}

#[test]
fn databases_keys_and_bodies_are_the_owners_only() {
    let mut s = TestServer::start("");
    let data = s.data_dir();
    assert_mode(&data, 0o750);
    for private in [
        "store.sqlite",
        "store.sqlite-wal",
        "spool/queue.sqlite",
        "spool/queue.sqlite-wal",
    ] {
        assert_mode(&data.join(private), 0o600);
    }
    assert_mode(&data.join("spool"), 0o700);
    let keys: Vec<_> = walk(&data)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "pem" || e == "key"))
        .collect();
    assert!(!keys.is_empty(), "a generated certificate and a DKIM key");
    for key in keys {
        assert_eq!(
            mode(&key) & 0o077,
            0,
            "{} is {:o}",
            key.display(),
            mode(&key)
        );
    }
    // A body large enough for a segment file, and everything else under the
    // data directory: nothing there is for other users.
    send_as_alice(&s, &format!("{}\n", "x".repeat(99)).repeat(1_000));
    for path in walk(&data) {
        assert_eq!(
            mode(&path) & 0o007,
            0,
            "{} is {:o}",
            path.display(),
            mode(&path)
        );
    }
    s.kill();
}

#[test]
fn an_earlier_install_readable_by_all_is_closed_up() {
    let mut s = TestServer::start("");
    s.kill();
    let data = s.data_dir();
    for file in ["store.sqlite", "spool/queue.sqlite"] {
        std::fs::set_permissions(data.join(file), std::fs::Permissions::from_mode(0o644))
            .expect("chmod");
    }
    s.cli_ok(&["user", "list"]);
    assert_mode(&data.join("store.sqlite"), 0o600);
    s.cli_ok(&["queue", "list"]);
    assert_mode(&data.join("spool/queue.sqlite"), 0o600);
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out
}

fn send_as_alice(s: &TestServer, body: &str) {
    let mut args = alice_to_bob("PLAIN");
    args.extend(["-tls", "--body", body]);
    let out = swaks(s.addr("submission"), &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn a_data_dir_made_by_the_server_itself_is_0750() {
    // No CLI command before it: serve makes data_dir (and run/ in it) first.
    let mut s = TestServer::configure(&TestServer::config_for(""));
    s.spawn();
    assert_mode(&s.data_dir(), 0o750);
}
