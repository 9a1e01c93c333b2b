//! Replays every minimised crasher in `fuzz/regressions/<target>/` and every
//! committed seed `fuzz/corpus/<target>/seed-*` through the fuzz target's own
//! call and invariants (`fuzz/checks/<target>.rs`, shared with the cargo-fuzz
//! target), so a crash found once stays fixed in plain `cargo test`.

use std::path::Path;

#[path = "../fuzz/checks/address.rs"]
mod address;
#[path = "../fuzz/checks/check_reply.rs"]
mod check_reply;
#[path = "../fuzz/checks/config.rs"]
mod config;
#[path = "../fuzz/checks/message.rs"]
mod message;
#[path = "../fuzz/checks/queue_id.rs"]
mod queue_id;
#[path = "../fuzz/checks/sasl.rs"]
mod sasl;
#[path = "../fuzz/checks/sendmail_input.rs"]
mod sendmail_input;
#[path = "../fuzz/checks/smtp_command.rs"]
mod smtp_command;
#[path = "../fuzz/checks/smtp_data.rs"]
mod smtp_data;
#[path = "../fuzz/checks/xtext.rs"]
mod xtext;

/// Runs `check` on each input of `target` and fails naming every input that panics.
fn replay(target: &str, check: fn(&[u8])) {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files = Vec::new();
    for (dir, prefix) in [("regressions", ""), ("corpus", "seed-")] {
        let Ok(entries) = std::fs::read_dir(fuzz.join(dir).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("readable fuzz directory").path();
            let name = path.file_name().expect("file name").to_string_lossy();
            if name.starts_with(prefix) {
                files.push(path);
            }
        }
    }
    files.sort();
    assert!(!files.is_empty(), "no inputs for fuzz target {target}");
    let failed: Vec<String> = files
        .iter()
        .filter(|path| {
            let input = std::fs::read(path).expect("readable fuzz input");
            std::panic::catch_unwind(|| check(&input)).is_err()
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(failed.is_empty(), "{target} fails on {failed:#?}");
}

#[test]
fn replay_smtp_command() {
    replay("smtp_command", smtp_command::check);
}

#[test]
fn replay_smtp_data() {
    replay("smtp_data", smtp_data::check);
}

#[test]
fn replay_address() {
    replay("address", address::check);
}

#[test]
fn replay_sasl() {
    replay("sasl", sasl::check);
}

#[test]
fn replay_check_reply() {
    replay("check_reply", check_reply::check);
}

#[test]
fn replay_config() {
    replay("config", config::check);
}

#[test]
fn replay_message() {
    replay("message", message::check);
}

#[test]
fn replay_queue_id() {
    replay("queue_id", queue_id::check);
}

#[test]
fn replay_xtext() {
    replay("xtext", xtext::check);
}

#[test]
fn replay_sendmail_input() {
    replay("sendmail_input", sendmail_input::check);
}
