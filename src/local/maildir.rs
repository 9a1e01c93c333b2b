//! Maildir delivery (the format Dovecot reads): the message is written to
//! `tmp/`, synced, renamed into `new/`, and the directory synced, so a delivered
//! message survives a crash and is never seen half-written. Mailboxes live in
//! `data_dir/mail/<domain>/<local part>/`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::smtp::address::Mailbox;

/// The Maildir of a hosted mailbox. The local part is encoded so that no
/// address can name a path outside `data_dir/mail` (no `/`, no leading dot).
pub fn maildir_path(data_dir: &Path, mailbox: &Mailbox) -> PathBuf {
    let local: String = mailbox
        .local
        .to_lowercase()
        .chars()
        .enumerate()
        .map(|(i, c)| match c {
            'a'..='z' | '0'..='9' | '_' | '+' | '-' => c.to_string(),
            '.' if i > 0 => ".".to_string(),
            other => other
                .to_string()
                .bytes()
                .map(|b| format!("%{b:02X}"))
                .collect(),
        })
        .collect();
    let domain = mailbox.domain.replace(['/', '\\'], "_");
    data_dir.join("mail").join(domain).join(local)
}

/// A file name unique across processes and time (the Maildir convention:
/// time, microseconds, pid, counter, host).
fn unique_name(hostname: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "{}.M{}P{}Q{}.{}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        hostname.replace(['/', ':'], "_")
    )
}

/// Writes one message into the mailbox's Maildir; returns the file's path.
/// Blocking: call from `spawn_blocking`.
pub fn deliver(
    data_dir: &Path,
    hostname: &str,
    mailbox: &Mailbox,
    sender: &str,
    body: &[u8],
) -> std::io::Result<PathBuf> {
    let root = maildir_path(data_dir, mailbox);
    for sub in ["tmp", "new", "cur"] {
        std::fs::create_dir_all(root.join(sub))?;
    }
    let name = unique_name(hostname);
    let tmp = root.join("tmp").join(&name);
    let new = root.join("new").join(&name);
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        // Return-Path records the envelope sender (RFC 5321 §4.4), Delivered-To
        // the mailbox; both are what an MDA like Dovecot's LDA would add.
        write!(f, "Return-Path: <{sender}>\r\nDelivered-To: {mailbox}\r\n")?;
        f.write_all(body)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &new)?;
    // The rename is durable only once the directory is synced.
    std::fs::File::open(root.join("new"))?.sync_all()?;
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivers_into_new_and_never_outside_the_mail_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = Mailbox::parse("Alice@Example.com", false).expect("address");
        let path = deliver(
            dir.path(),
            "mx.example",
            &m,
            "bob@remote.example",
            b"Subject: x\r\n\r\nhi\r\n",
        )
        .expect("deliver");
        assert!(path.starts_with(dir.path().join("mail/example.com/alice/new")));
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.starts_with(
            "Return-Path: <bob@remote.example>\r\nDelivered-To: Alice@example.com\r\nSubject: x"
        ));
        let evil = Mailbox::parse("../../etc/x@example.com", false).expect("address");
        let p = maildir_path(dir.path(), &evil);
        assert!(
            p.starts_with(dir.path().join("mail/example.com"))
                && !p.to_string_lossy().contains("/../"),
            "{p:?}"
        );
        let dotted = Mailbox::parse(".hidden@example.com", false).expect("address");
        assert!(maildir_path(dir.path(), &dotted).ends_with("%2Ehidden"));
    }
}
