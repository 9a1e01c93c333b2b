//! Who the process runs as. Started as root with `user` set (Postfix's
//! mail_owner, OpenSMTPD's _smtpd), the server binds its ports and reads its
//! certificate key first, then becomes that user for good; every command that
//! touches `data_dir` does the same at once, so nothing in it is left owned by
//! root where the server could no longer write it.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::unistd::{Gid, Uid};

use crate::config::{Config, RunAs};

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error(
        "user = {user:?} is set, but this process runs as uid {uid}, not root, and cannot become it; start it as root or as {user}, or remove the key"
    )]
    NotRoot { user: String, uid: u32 },
    #[error("cannot become user {user:?} (uid {uid}, gid {gid}): {error}")]
    Switch {
        user: String,
        uid: u32,
        gid: u32,
        error: nix::Error,
    },
    #[error("after becoming {user:?} the process could still regain root; refusing to run")]
    StillRoot { user: String },
    #[error("cannot give {path} to user {user:?}: {error}")]
    Chown {
        path: String,
        user: String,
        error: std::io::Error,
    },
    #[error(
        "user {user:?} cannot open data_dir {path}: {error}; every directory above it must be searchable by that user (chmod o+x, or move data_dir e.g. to /var/lib/postern)"
    )]
    Unreachable {
        path: String,
        user: String,
        error: std::io::Error,
    },
}

/// Whether the process could switch users: it runs as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Before a root process becomes `run_as`: creates `data_dir` if needed and
/// gives it to the user. A data_dir that root owns was made or used by a run
/// without `user`: everything root owns in it goes to the user (Postfix's
/// `set-permissions`). Otherwise only the first two levels are looked at:
/// the lock, socket and generated certificate the server made as root
/// before switching.
fn give_data_dir(config: &Config, run_as: &RunAs) -> Result<(), PrivilegeError> {
    let data_dir = &config.data_dir;
    let chown_failed = |path: &Path, error| PrivilegeError::Chown {
        path: path.display().to_string(),
        user: run_as.user.clone(),
        error,
    };
    crate::sqlite::create_data_dir(data_dir).map_err(|e| chown_failed(data_dir, e))?;
    let root_owned = std::fs::symlink_metadata(data_dir)
        .map_err(|e| chown_failed(data_dir, e))?
        .uid()
        == 0;
    let depth = if root_owned { usize::MAX } else { 2 };
    let given =
        give_root_owned(data_dir, run_as, depth).map_err(|(path, e)| chown_failed(&path, e))?;
    if root_owned {
        tracing::info!(
            event = "data_dir_owner",
            data_dir = %data_dir.display(),
            user = %run_as.user,
            files = given,
            "data_dir was root's: it and what root owned in it now belong to the server's user"
        );
    }
    Ok(())
}

/// Gives every entry under `path` (itself included, down to `depth`
/// levels) that root owns to `run_as`; returns how many. Links are changed,
/// never followed.
fn give_root_owned(
    path: &Path,
    run_as: &RunAs,
    depth: usize,
) -> Result<usize, (std::path::PathBuf, std::io::Error)> {
    let failed = |e| (path.to_path_buf(), e);
    let meta = std::fs::symlink_metadata(path).map_err(failed)?;
    let mut given = 0;
    if meta.uid() == 0 {
        std::os::unix::fs::lchown(path, Some(run_as.uid), Some(run_as.gid)).map_err(failed)?;
        given += 1;
    }
    if meta.is_dir() && depth > 0 {
        for entry in std::fs::read_dir(path).map_err(failed)? {
            let entry = entry.map_err(failed)?;
            given += give_root_owned(&entry.path(), run_as, depth - 1)?;
        }
    }
    Ok(given)
}

/// Becomes `config`'s user for good when running as root, giving it
/// `data_dir` first; a process not running as root must already be that
/// user. Without `user`, nothing changes. Returns the account switched to,
/// if there was a switch.
pub fn drop_root(config: &Config) -> Result<Option<&RunAs>, PrivilegeError> {
    let Some(run_as) = &config.run_as else {
        return Ok(None);
    };
    let uid = nix::unistd::geteuid().as_raw();
    if uid == run_as.uid {
        return Ok(None);
    }
    if uid != 0 {
        return Err(PrivilegeError::NotRoot {
            user: run_as.user.clone(),
            uid,
        });
    }
    give_data_dir(config, run_as)?;
    let (new_uid, new_gid) = (Uid::from_raw(run_as.uid), Gid::from_raw(run_as.gid));
    // `[local] group` too: a member may give its Maildirs to it (for Dovecot,
    // running as that group), where a chown to another owner needs root.
    let mut groups = vec![new_gid];
    groups.extend(config.local.group.as_ref().map(|g| g.id));
    groups.dedup();
    // Supplementary groups first (root's would stay otherwise), then the
    // group, then the user: after setuid the other two are no longer allowed.
    // glibc applies each to every thread of the process.
    nix::unistd::setgroups(&groups)
        .and_then(|()| nix::unistd::setgid(new_gid))
        .and_then(|()| nix::unistd::setuid(new_uid))
        .map_err(|error| PrivilegeError::Switch {
            user: run_as.user.clone(),
            uid: run_as.uid,
            gid: run_as.gid,
            error,
        })?;
    // OpenSMTPD's check: a switch that could be undone did not happen.
    if nix::unistd::setuid(Uid::from_raw(0)).is_ok() || nix::unistd::geteuid().is_root() {
        return Err(PrivilegeError::StillRoot {
            user: run_as.user.clone(),
        });
    }
    if let Err(error) = std::fs::read_dir(&config.data_dir) {
        return Err(PrivilegeError::Unreachable {
            path: config.data_dir.display().to_string(),
            user: run_as.user.clone(),
            error,
        });
    }
    Ok(Some(run_as))
}

/// Says at start when `[local]` names an owner or a group this process cannot
/// give Maildirs to (not root, not that user, not in that group: under
/// systemd's `User=` without `SupplementaryGroups=`, say); each local
/// delivery would otherwise find out alone and wait.
pub fn warn_if_maildirs_cannot_be_given(config: &Config) {
    if is_root() {
        return;
    }
    if let Some(owner) = &config.local.owner
        && owner.id != nix::unistd::geteuid()
    {
        tracing::warn!(
            event = "local_owner_impossible",
            owner = %owner.name,
            "[local] owner = {:?} needs root or CAP_CHOWN, which this process has not: local deliveries will wait; set [local] group instead, or deliver by [local] lmtp",
            owner.name
        );
    }
    if let Some(group) = &config.local.group {
        let member = nix::unistd::getegid() == group.id
            || nix::unistd::getgroups().is_ok_and(|groups| groups.contains(&group.id));
        if !member {
            tracing::warn!(
                event = "local_group_impossible",
                group = %group.name,
                "this process is not in [local] group = {:?}: local deliveries will wait; add it to the group (systemd: SupplementaryGroups={})",
                group.name,
                group.name
            );
        }
    }
}
