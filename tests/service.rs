//! What an install puts on a host besides the binary: the systemd unit
//! (checked by systemd's own verifier), the Type=notify handshake with it,
//! the manual page, and the example configuration, which must pass `config
//! check` as shipped.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::*;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    require_tool("systemd-analyze");
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("postern.service");
    let text = std::fs::read_to_string(Path::new(ROOT).join("dist/postern.service")).unwrap();
    assert!(text.contains("ExecStart=/usr/local/bin/postern serve"));
    // verify checks that ExecStart's program exists: point it at this build.
    std::fs::write(&unit, text.replace("/usr/local/bin/postern", BIN)).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // systemd's own score of the sandbox: 0 is locked down, 10 is none; a
    // service with no hardening scores 9.6.
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--threshold=20", "--no-pager"])
        .arg(&unit)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Waits for the next notification on `socket`.
fn next(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 512];
    let n = socket.recv(&mut buf).expect("a notification within 30 s");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn systemd_is_told_ready_reloading_and_stopping() {
    let socket_dir = tempfile::tempdir().unwrap();
    let path = socket_dir.path().join("notify");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut s = TestServer::configure(&TestServer::config_for(""));
    s.env
        .push(("NOTIFY_SOCKET".into(), path.display().to_string()));
    s.spawn();
    // Ready once every listener is up, not merely when the process started.
    assert_eq!(next(&socket), "READY=1\n");
    s.send_hup();
    assert_eq!(next(&socket), "RELOADING=1\n");
    assert_eq!(next(&socket), "READY=1\n");
    s.send_term();
    assert_eq!(next(&socket), "STOPPING=1\n");
    assert!(s.wait_exit(Duration::from_secs(30)).success());
}

#[test]
fn the_manual_page_renders_and_names_every_command() {
    require_tool("groff");
    let page = Command::new(BIN).arg("manpage").output().unwrap();
    assert!(page.status.success());
    let text = String::from_utf8_lossy(&page.stdout);
    assert!(text.contains(".TH postern 8"), "{text}");
    for command in [
        "POSTERN SERVE",
        "POSTERN RELOAD",
        "POSTERN USER ADD",
        "POSTERN QUEUE RETRY",
        "POSTERN CONFIG CHECK",
        "POSTERN CHECK",
    ] {
        assert!(text.contains(command), "{command} missing:\n{text}");
    }
    assert!(!text.contains("POSTERN MANPAGE"));
    let out = run_with_stdin(
        Command::new("groff").args(["-man", "-Tutf8", "-ww", "-z"]),
        &text,
    );
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_example_configuration_passes_config_check() {
    let example = std::fs::read_to_string(Path::new(ROOT).join("postern.example.toml")).unwrap();
    // The account dist/install.sh creates; on a host without it, one that exists.
    let has_postern = Command::new("id")
        .arg("postern")
        .output()
        .is_ok_and(|o| o.status.success());
    let config_text = if has_postern {
        example
    } else {
        example.replace("user = \"postern\"", "user = \"nobody\"")
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("postern.toml");
    std::fs::write(&config, config_text).unwrap();
    let out = Command::new(BIN)
        .args(["config", "check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
}

/// `.ci/first-day.sh`: install with dist/install.sh (into a temporary
/// prefix; the `postern` account is created for real), start as root, add a
/// domain and user, send with swaks and with PHP's mail(), read the Maildir,
/// replace the certificate, read over IMAP with Dovecot as docs/dovecot.md
/// sets it up, SIGHUP a broken configuration. It prints each step; its
/// output is shown on failure.
#[test]
fn the_admins_first_day() {
    for tool in [
        "ip", "swaks", "openssl", "php", "dovecot", "python3", "runuser",
    ] {
        require_tool(tool);
    }
    let out = Command::new("bash")
        .arg(Path::new(ROOT).join(".ci/first-day.sh"))
        .arg(BIN)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
}
