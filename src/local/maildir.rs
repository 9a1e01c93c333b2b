//! Maildir delivery (the format Dovecot reads): the message is written to
//! `tmp/`, synced, renamed into `new/`, and the directory synced, so a delivered
//! message survives a crash and is never seen half-written. Mailboxes live in
//! `data_dir/mail/<domain>/<local part>/`; the directories from `mail/` down
//! and the messages get the owner, group and mode `[local]` asks for, so that
//! Dovecot, running as that user, can read and write them.

use std::fs::{File, Permissions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::LocalError;
use crate::config::Local;
use crate::smtp::address::Mailbox;
use crate::store::maildir_of;

/// The Maildir of a hosted mailbox (`store::maildir_of`, under `data_dir/mail`).
pub fn maildir_path(data_dir: &Path, mailbox: &Mailbox) -> PathBuf {
    data_dir.join("mail").join(maildir_of(mailbox))
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

/// Writes one message into the mailbox's Maildir, made as `local` says;
/// returns the file's path. Blocking: call from `spawn_blocking`.
///
/// Below `data_dir` every step is taken from the handle of the directory
/// above, never following a symbolic link: the Maildirs may belong to
/// another user (`[local] owner`), who must not be able to send this
/// server, which may be root, writing or giving away files elsewhere.
pub fn deliver(
    data_dir: &Path,
    hostname: &str,
    local: &Local,
    mailbox: &Mailbox,
    sender: &str,
    body: &[u8],
) -> Result<PathBuf, LocalError> {
    let relative = maildir_of(mailbox);
    let mut path = data_dir.to_path_buf();
    let mut dir = File::open(data_dir).map_err(LocalError::Write)?;
    // data_dir is the server's own, so `mail` in it may be a link its admin
    // made (the mail on another disk); below it, in directories the
    // Maildirs' owner may change, none is followed.
    path.push("mail");
    dir = sub_dir(&dir, "mail", &path, local, Links::Follow)?;
    for name in relative.split('/') {
        path.push(name);
        dir = sub_dir(&dir, name, &path, local, Links::Refuse)?;
    }
    // Mail the sender checks put aside goes to the Junk folder (Maildir++,
    // as Dovecot lays out folders).
    if body.starts_with(crate::dmarc::JUNK_MARK) {
        path.push(".Junk");
        dir = sub_dir(&dir, ".Junk", &path, local, Links::Refuse)?;
    }
    let tmp = sub_dir(&dir, "tmp", &path.join("tmp"), local, Links::Refuse)?;
    let new = sub_dir(&dir, "new", &path.join("new"), local, Links::Refuse)?;
    sub_dir(&dir, "cur", &path.join("cur"), local, Links::Refuse)?;
    let name = unique_name(hostname);
    let written = write_message(&tmp, &name, &path.join("tmp"), local, mailbox, sender, body);
    if written.is_err() {
        let _ = rustix::fs::unlinkat(&tmp, name.as_str(), rustix::fs::AtFlags::empty());
    }
    written?;
    rustix::fs::renameat(&tmp, name.as_str(), &new, name.as_str())
        .map_err(|e| LocalError::Write(e.into()))?;
    // The rename is durable only once the directory is synced.
    new.sync_all().map_err(LocalError::Write)?;
    Ok(path.join("new").join(name))
}

fn write_message(
    tmp: &File,
    name: &str,
    tmp_path: &Path,
    local: &Local,
    mailbox: &Mailbox,
    sender: &str,
    body: &[u8],
) -> Result<(), LocalError> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut f = File::from(
        rustix::fs::openat(tmp, name, flags, Mode::from_raw_mode(0o600))
            .map_err(|e| LocalError::Write(e.into()))?,
    );
    set_access(&f, &tmp_path.join(name), false, local)?;
    // Return-Path records the envelope sender (RFC 5321 §4.4), Delivered-To
    // the mailbox; both are what an MDA like Dovecot's LDA would add.
    write!(f, "Return-Path: <{sender}>\r\nDelivered-To: {mailbox}\r\n")
        .and_then(|()| f.write_all(body))
        .and_then(|()| f.sync_all())
        .map_err(LocalError::Write)
}

/// Whether a directory may be reached through a symbolic link.
#[derive(PartialEq)]
enum Links {
    Follow,
    Refuse,
}

/// The directory `name` in `parent` (at `path`), made if it is missing and
/// given what `[local]` asks for.
fn sub_dir(
    parent: &File,
    name: &str,
    path: &Path,
    local: &Local,
    links: Links,
) -> Result<File, LocalError> {
    match rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o700)) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
        Err(e) => return Err(LocalError::Write(e.into())),
    }
    let mut flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    if links == Links::Refuse {
        flags |= OFlags::NOFOLLOW;
    }
    let dir = match rustix::fs::openat(parent, name, flags, Mode::empty()) {
        Ok(fd) => File::from(fd),
        Err(rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR) => {
            return Err(LocalError::NotADirectory(path.to_path_buf()));
        }
        Err(e) => return Err(LocalError::Write(e.into())),
    };
    set_access(&dir, path, true, local)?;
    Ok(dir)
}

/// Gives `file` (at `path`) the owner, group and mode `[local]` asks for,
/// where it has not got them already; a file gets the mode without the x
/// bits. The one place Postern changes who owns a mailbox: a chown needs root
/// or CAP_CHOWN, and a failed one defers the message.
fn set_access(file: &File, path: &Path, is_dir: bool, local: &Local) -> Result<(), LocalError> {
    if local.owner.is_none() && local.group.is_none() && local.mode.is_none() {
        return Ok(());
    }
    let meta = file.metadata().map_err(LocalError::Write)?;
    let uid = local
        .owner
        .as_ref()
        .map(|o| o.id)
        .filter(|u| u.as_raw() != meta.uid());
    let gid = local
        .group
        .as_ref()
        .map(|g| g.id)
        .filter(|g| g.as_raw() != meta.gid());
    if uid.is_some() || gid.is_some() {
        nix::unistd::fchown(file, uid, gid).map_err(|e| LocalError::Owner {
            path: path.to_path_buf(),
            owner: owner_words(local),
            reason: e.desc().to_string(),
        })?;
    }
    if let Some(mode) = local.mode {
        let mode = if is_dir { mode } else { mode & 0o666 };
        // After the chown, which may clear set-id bits.
        if meta.mode() & 0o7777 != mode || uid.is_some() || gid.is_some() {
            file.set_permissions(Permissions::from_mode(mode))
                .map_err(LocalError::Write)?;
        }
    }
    Ok(())
}

/// "owner vmail, group vmail", for a failed chown.
fn owner_words(local: &Local) -> String {
    let owner = local.owner.as_ref().map(|o| format!("owner {}", o.name));
    let group = local.group.as_ref().map(|g| format!("group {}", g.name));
    [owner, group]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(", ")
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
            &Local::default(),
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

    #[test]
    fn a_message_marked_as_junk_goes_to_the_junk_folder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = Mailbox::parse("alice@example.com", false).expect("address");
        let to_alice = |body: &[u8]| {
            deliver(dir.path(), "mx", &Local::default(), &m, "b@r.example", body).expect("deliver")
        };
        let path = to_alice(&[crate::dmarc::JUNK_MARK, b"Subject: x\r\n\r\nhi\r\n"].concat());
        assert!(
            path.starts_with(dir.path().join("mail/example.com/alice/.Junk/new")),
            "{path:?}"
        );
        // The mark anywhere but first is what a sender wrote: the inbox.
        let path = to_alice(&[b"Subject: x\r\n", crate::dmarc::JUNK_MARK, b"\r\nhi\r\n"].concat());
        assert!(path.starts_with(dir.path().join("mail/example.com/alice/new")));
    }

    fn mode_and_owner(path: &Path) -> (u32, u32, u32) {
        let meta = std::fs::metadata(path).expect("metadata");
        (meta.mode() & 0o7777, meta.uid(), meta.gid())
    }

    /// Issue #14: Dovecot, running as `[local] owner`, can write what Postern
    /// delivered. As root the owner is set; as anyone else the chown fails,
    /// and says who was asked for and why.
    #[test]
    fn maildirs_and_messages_get_the_configured_owner_group_and_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = Mailbox::parse("alice@example.com", false).expect("address");
        let local = Local {
            owner: Some(crate::config::Named {
                name: "vmail".into(),
                id: nix::unistd::Uid::from_raw(5000),
            }),
            group: Some(crate::config::Named {
                name: "mailers".into(),
                id: nix::unistd::Gid::from_raw(5001),
            }),
            mode: Some(0o750),
            ..Local::default()
        };
        let delivered = deliver(dir.path(), "mx", &local, &m, "", b"x\r\n");
        if !nix::unistd::geteuid().is_root() {
            let e = delivered.expect_err("only root may give files away");
            assert!(!e.is_permanent(), "{e}");
            assert!(
                e.to_string()
                    .contains("to owner vmail, group mailers ([local]): Operation not permitted"),
                "{e}"
            );
            return;
        }
        let file = delivered.expect("delivered");
        assert_eq!(mode_and_owner(&file), (0o640, 5000, 5001));
        let mail = dir.path().join("mail");
        for sub in [
            "",
            "example.com",
            "example.com/alice",
            "example.com/alice/tmp",
            "example.com/alice/new",
            "example.com/alice/cur",
        ] {
            assert_eq!(
                mode_and_owner(&mail.join(sub)),
                (0o750, 5000, 5001),
                "mail/{sub}"
            );
        }
        // A new mode reaches Maildirs made before it at their next delivery.
        let open = Local {
            mode: Some(0o777),
            ..Local::default()
        };
        let file = deliver(dir.path(), "mx", &open, &m, "", b"x\r\n").expect("delivered");
        assert_eq!(mode_and_owner(&file).0, 0o666);
        assert_eq!(
            mode_and_owner(&mail.join("example.com/alice/new")),
            (0o777, 5000, 5001)
        );
    }

    /// The Maildirs may be another user's: a symbolic link put in the place
    /// of one of its directories sends no write and no chown elsewhere.
    #[test]
    fn a_symbolic_link_in_a_mailbox_is_not_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let victim = dir.path().join("victim");
        std::fs::create_dir(&victim).expect("mkdir");
        let before = mode_and_owner(&victim);
        let m = Mailbox::parse("alice@example.com", false).expect("address");
        deliver(dir.path(), "mx", &Local::default(), &m, "", b"x\r\n").expect("delivered");
        let local = Local {
            owner: Some(crate::config::Named {
                name: "vmail".into(),
                id: nix::unistd::Uid::from_raw(5000),
            }),
            ..Local::default()
        };
        let maildir = dir.path().join("mail/example.com/alice");
        for swapped in [maildir.join("tmp"), dir.path().join("mail/example.com")] {
            let aside = swapped.with_extension("aside");
            std::fs::rename(&swapped, &aside).expect("move aside");
            std::os::unix::fs::symlink(&victim, &swapped).expect("symlink");
            let e = deliver(dir.path(), "mx", &local, &m, "", b"x\r\n").expect_err("refused");
            assert!(!e.is_permanent(), "{e}");
            assert_eq!(
                e.to_string(),
                format!(
                    "{} is not a directory: a symbolic link is not followed in a mailbox",
                    swapped.display()
                )
            );
            assert_eq!(mode_and_owner(&victim), before);
            assert_eq!(std::fs::read_dir(&victim).expect("read").count(), 0);
            std::fs::remove_file(&swapped).expect("unlink");
            std::fs::rename(&aside, &swapped).expect("move back");
        }
        // data_dir is the server's: `mail` in it may be its admin's link.
        let disk = dir.path().join("other-disk");
        std::fs::rename(dir.path().join("mail"), &disk).expect("move");
        std::os::unix::fs::symlink(&disk, dir.path().join("mail")).expect("symlink");
        deliver(dir.path(), "mx", &Local::default(), &m, "", b"x\r\n").expect("delivered");
        assert_eq!(
            std::fs::read_dir(disk.join("example.com/alice/new"))
                .expect("new")
                .count(),
            2
        );
    }
}
