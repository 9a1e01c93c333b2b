//! Started as root with `user` set, the server binds its ports, then runs as
//! that user; the CLI, run by root, does the same before it touches data_dir,
//! and a data_dir an earlier root run left behind is handed over. The tests
//! need root (CI runs as root) and use the system's `nobody` account.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::*;

const NOBODY: &str = "user = \"nobody\"\ngroup = \"nogroup\"\n";

/// Whether the tests can run: as root, with nobody:nogroup on the host.
fn can_switch(test: &str) -> bool {
    let root = nix_uid() == 0;
    let nobody = Command::new("id")
        .args(["-u", "nobody"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !(root && nobody) {
        eprintln!("SKIPPED {test}: needs root and a `nobody` account");
    }
    root && nobody
}

fn nix_uid() -> u32 {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX)
}

fn nobody_uid() -> u32 {
    let out = Command::new("id").args(["-u", "nobody"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// The real, effective, saved and filesystem user ids of a process.
fn uids(pid: u32) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace()
        .skip(1)
        .map(|n| n.parse().unwrap())
        .collect()
}

/// A server configured with `extra` whose temp dir other users may traverse
/// (tempfile makes it 0700), with example.com and alice added by root's CLI.
fn server(extra: &str) -> TestServer {
    let s = TestServer::configure(&TestServer::config_for(extra));
    std::fs::set_permissions(s.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    s.add_alice();
    s
}

fn owned_by_root(dir: &Path) -> Vec<String> {
    walk(dir)
        .into_iter()
        .filter(|p| std::fs::symlink_metadata(p).unwrap().uid() == 0)
        .map(|p| p.display().to_string())
        .collect()
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut all = vec![dir.to_path_buf()];
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            all.extend(walk(&path));
        } else {
            all.push(path);
        }
    }
    all
}

/// Runs `command`, which must fail with exit code 1; returns its stderr.
fn fails(command: &mut Command) -> String {
    let out = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    stderr
}

fn send_as_alice(s: &TestServer) {
    let mut args = alice_to_bob("PLAIN");
    args.push("-tls");
    let out = swaks(s.addr("submission"), &args);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        s.log()
    );
}

#[test]
fn root_binds_then_runs_as_user_and_every_file_is_the_users() {
    if !can_switch("root_binds_then_runs_as_user_and_every_file_is_the_users") {
        return;
    }
    let mut s = server(NOBODY);
    let nobody = nobody_uid();
    // The CLI, run by root, made the store as nobody already.
    assert_eq!(owned_by_root(&s.data_dir()), Vec::<String>::new());
    s.spawn();
    assert_eq!(uids(s.pid()), [nobody; 4], "{}", s.log());
    assert!(s.log().contains("privileges_dropped"), "{}", s.log());
    assert!(!s.log().contains("running_as_root"), "{}", s.log());
    send_as_alice(&s);
    assert_eq!(s.queue().len(), 1);
    // The lock, the control socket and the generated certificate were made
    // as root before the switch: handed over too.
    assert_eq!(owned_by_root(&s.data_dir()), Vec::<String>::new());
    assert_eq!(std::fs::metadata(s.data_dir()).unwrap().uid(), nobody);
    // Root's queue commands reach the server through the socket, as nobody.
    let id = s.queue()[0]["id"].as_str().unwrap().to_string();
    s.cli_ok(&["queue", "hold", &id]);
    s.send_term();
    assert!(
        s.wait_exit(Duration::from_secs(30)).success(),
        "{}",
        s.log()
    );
}

#[test]
fn a_data_dir_left_by_a_root_run_is_handed_over() {
    if !can_switch("a_data_dir_left_by_a_root_run_is_handed_over") {
        return;
    }
    let mut s = server("");
    s.spawn();
    assert_eq!(uids(s.pid())[1], 0);
    // Root without `user` keeps working, and says once that it could drop root.
    assert_eq!(s.log().matches("running_as_root").count(), 1, "{}", s.log());
    send_as_alice(&s);
    s.send_term();
    assert!(s.wait_exit(Duration::from_secs(30)).success());
    assert!(!owned_by_root(&s.data_dir()).is_empty());

    let config = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(&s.config, format!("{NOBODY}{config}")).unwrap();
    s.spawn();
    assert_eq!(uids(s.pid())[1], nobody_uid(), "{}", s.log());
    assert_eq!(owned_by_root(&s.data_dir()), Vec::<String>::new());
    assert!(s.log().contains("data_dir_owner"), "{}", s.log());
    // The message queued by root's run is there and new mail is taken.
    send_as_alice(&s);
    assert_eq!(s.queue().len(), 2, "{}", s.log());
}

#[test]
fn a_data_dir_the_user_cannot_reach_stops_the_start_with_the_reason() {
    if !can_switch("a_data_dir_the_user_cannot_reach_stops_the_start_with_the_reason") {
        return;
    }
    // A temp dir only root may enter: nobody cannot get to data_dir inside it.
    let s = TestServer::configure(&TestServer::config_for(NOBODY));
    std::fs::set_permissions(s.dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let stderr = fails(
        Command::new("timeout")
            .args(["30", BIN, "serve", "--config"])
            .arg(&s.config)
            .current_dir(s.dir.path()),
    );
    assert!(
        stderr.contains("user \"nobody\" cannot open data_dir")
            && stderr.contains("every directory above it must be searchable"),
        "{stderr}"
    );
}

#[test]
fn user_set_but_not_root_is_refused_and_unknown_accounts_are_named() {
    if !can_switch("user_set_but_not_root_is_refused_and_unknown_accounts_are_named") {
        return;
    }
    let s = server("user = \"daemon\"\n");
    let stderr = fails(
        Command::new("setpriv")
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", BIN])
            .args(["user", "list", "--config"])
            .arg(&s.config)
            .current_dir(s.dir.path()),
    );
    assert!(
        stderr.contains("user = \"daemon\" is set, but this process runs as uid"),
        "{stderr}"
    );

    let bad = s.dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "user = \"no-such-user-x\"\ngroup = \"no-such-group-x\"\n",
    )
    .unwrap();
    let stderr = fails(
        Command::new(BIN)
            .args(["config", "check", "--config"])
            .arg(&bad),
    );
    assert!(
        stderr.contains(":1: user: \"no-such-user-x\" is not a user on this host"),
        "{stderr}"
    );
}

/// Issue #14: run as `user`, the server cannot give Maildirs to another
/// owner, but it joins `[local] group` and gives them to it, so that Dovecot
/// (running as that group) can read and write them.
#[test]
fn run_as_user_the_maildirs_go_to_the_local_group_it_joins() {
    if !can_switch("run_as_user_the_maildirs_go_to_the_local_group_it_joins") {
        return;
    }
    let gid = |group: &str| -> u32 {
        let out = Command::new("getent")
            .args(["group", group])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split(':')
            .nth(2)
            .and_then(|g| g.trim().parse().ok())
            .unwrap_or_else(|| panic!("no group {group}"))
    };
    let mail = gid("mail");
    let mut s = server(&format!(
        "{NOBODY}[delivery]\nretry_min = 1\n[local]\ngroup = \"mail\"\nmode = \"0770\"\n"
    ));
    s.spawn();
    let status = std::fs::read_to_string(format!("/proc/{}/status", s.pid())).unwrap();
    let groups = status.lines().find(|l| l.starts_with("Groups:")).unwrap();
    assert!(
        groups.split_whitespace().any(|g| g == mail.to_string()),
        "{groups}"
    );
    let mut args = alice_to_bob("PLAIN");
    let to = args
        .iter()
        .position(|a| *a == "bob@remote.example")
        .unwrap();
    args[to] = "alice@example.com";
    args.push("-tls");
    let out = swaks(s.addr("submission"), &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let new = s.data_dir().join("mail/example.com/alice/new");
    let start = std::time::Instant::now();
    let file = loop {
        if let Some(entry) = std::fs::read_dir(&new).ok().and_then(|mut d| d.next()) {
            break entry.unwrap().path();
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{}", s.log());
        std::thread::sleep(Duration::from_millis(100));
    };
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (nobody_uid(), mail, 0o660),
        "{}",
        file.display()
    );
    let dir = std::fs::metadata(&new).unwrap();
    assert_eq!((dir.gid(), dir.mode() & 0o7777), (mail, 0o770));
    assert!(!s.log().contains("local_failed"), "{}", s.log());
}
