//! Accounts named in the configuration: top-level `user` and `group` (whom
//! the server becomes, `server/privileges.rs`) and `[local]`'s owner and
//! group, looked up in this host's databases once, when it is read.

use nix::unistd::{Gid, Group, User};

use crate::config::Named;
use crate::config::RunAs;
use crate::config::checker::{Checker, KeyPath};

/// `user` and `group` looked up in this host's account database; `group`
/// defaults to the user's primary group.
pub(super) fn run_as(
    c: &mut Checker<'_>,
    user: Option<String>,
    group: Option<String>,
) -> Option<RunAs> {
    let root = KeyPath::default();
    let Some(name) = user else {
        if group.is_some() {
            c.error(
                &root.key("group"),
                "needs user as well: the server switches to a user and its group",
            );
        }
        return None;
    };
    let user = match User::from_name(&name) {
        Ok(Some(user)) => user,
        Ok(None) => {
            c.error(&root.key("user"), format!("{name:?} is not a user on this host; create it (e.g. `useradd --system --home-dir /var/lib/postern {name}`) or remove the key"));
            return None;
        }
        Err(e) => {
            c.error(
                &root.key("user"),
                format!("{name:?}: cannot read the account database: {e}"),
            );
            return None;
        }
    };
    let (group, gid) = match group {
        None => {
            let gid = user.gid.as_raw();
            let group = match Group::from_gid(user.gid) {
                Ok(Some(g)) => g.name,
                _ => gid.to_string(),
            };
            (group, gid)
        }
        Some(name) => {
            let named = self::account(c, &root.key("group"), "group", name, Gid::from_raw, |n| {
                Group::from_name(n).map(|g| g.map(|g| g.gid))
            })?;
            (named.name, named.id.as_raw())
        }
    };
    if user.uid.is_root() {
        c.error(
            &root.key("user"),
            format!("{name:?} is root; name the unprivileged account the server should run as"),
        );
        return None;
    }
    Some(RunAs {
        user: name,
        uid: user.uid.as_raw(),
        group,
        gid,
    })
}

/// A user or group by name, or by number (an id with no name on this host,
/// as some Dovecot setups use, is taken as it is).
pub(super) fn account<Id>(
    c: &mut Checker<'_>,
    path: &KeyPath,
    kind: &str,
    name: String,
    from_number: fn(u32) -> Id,
    lookup: impl Fn(&str) -> nix::Result<Option<Id>>,
) -> Option<Named<Id>> {
    if let Ok(number) = name.parse::<u32>() {
        return Some(Named {
            name,
            id: from_number(number),
        });
    }
    match lookup(&name) {
        Ok(Some(id)) => Some(Named { name, id }),
        Ok(None) => {
            c.error(
                path,
                format!("there is no {kind} {name:?} on this host; create it (e.g. `useradd --system --user-group vmail`) or name one that exists"),
            );
            None
        }
        Err(e) => {
            c.error(path, format!("cannot look up the {kind} {name:?}: {e}"));
            None
        }
    }
}
