//! `[local]` and `[[local.domain]]`: who owns the Maildirs and with what mode,
//! and which mail goes to an LMTP server instead. Owner and group names are
//! resolved to ids here, once, so a name that does not exist on this host is
//! a config error and not a failure at each delivery.

use std::net::SocketAddr;
use std::path::PathBuf;

use nix::unistd::{Gid, Group, Uid, User};

use super::accounts::account;
use crate::config::checker::{Checker, KeyPath};
use crate::config::file::{LocalDomainFile, LocalFile};
use crate::config::{Lmtp, Local, LocalDomain, RunAs};

/// `run_as`: the account the server becomes (`user`, `group`), if any.
pub(super) fn local(c: &mut Checker<'_>, l: LocalFile, run_as: Option<&RunAs>) -> Local {
    let p = KeyPath::default().key("local");
    let owner = l.owner.and_then(|name| {
        account(c, &p.key("owner"), "user", name, Uid::from_raw, |n| {
            User::from_name(n).map(|u| u.map(|u| u.uid))
        })
    });
    // Giving a file to another user needs root (CAP_CHOWN), which the
    // server no longer has once it is `user`; a group it belongs to it may
    // give (`server::privileges` makes it a member of `[local] group`).
    if let (Some(owner), Some(run_as)) = (&owner, run_as)
        && owner.id.as_raw() != run_as.uid
    {
        c.error(
            &p.key("owner"),
            format!(
                "{:?}: the server runs as user {:?}, which cannot give Maildirs to another user; set [local] group = {:?} and a group-writable mode = \"0770\" instead (the server's user joins that group), or deliver through [local] lmtp",
                owner.name, run_as.user, owner.name
            ),
        );
    }
    let group = l.group.and_then(|name| {
        account(c, &p.key("group"), "group", name, Gid::from_raw, |n| {
            Group::from_name(n).map(|g| g.map(|g| g.gid))
        })
    });
    // The server joins it when it gives up root: root's group would keep it
    // much of what it gave up.
    if let (Some(group), Some(_)) = (&group, run_as)
        && group.id.as_raw() == 0
    {
        c.error(
            &p.key("group"),
            format!(
                "{:?} is gid 0, which the server would join as it gives up root; use a group of the mailboxes' own, such as \"vmail\"",
                group.name
            ),
        );
    }
    let mode = l.mode.and_then(|m| mode(c, &p.key("mode"), &m));
    let lmtp = l.lmtp.and_then(|v| lmtp(c, &p.key("lmtp"), &v));
    let domains = domains(c, &p.key("domain"), l.domain.unwrap_or_default());
    Local {
        owner,
        group,
        mode,
        lmtp,
        domains,
    }
}

/// An octal mode that leaves the owner every right on its Maildirs.
fn mode(c: &mut Checker<'_>, path: &KeyPath, value: &str) -> Option<u32> {
    let digits = value.strip_prefix("0o").unwrap_or(value);
    match u32::from_str_radix(digits, 8) {
        Ok(m) if !digits.is_empty() && (0o700..=0o777).contains(&m) => Some(m),
        Ok(_) => {
            c.error(path, format!("{value:?} is out of range; use an octal mode from \"0700\" to \"0777\" (the owner needs rwx on its Maildirs)"));
            None
        }
        Err(_) => {
            c.error(
                path,
                format!("{value:?} is not an octal mode; write e.g. \"0700\" or \"0770\""),
            );
            None
        }
    }
}

fn lmtp(c: &mut Checker<'_>, path: &KeyPath, value: &str) -> Option<Lmtp> {
    let parsed = match value.strip_prefix("unix:") {
        Some(socket) if socket.starts_with('/') => Some(Lmtp::Unix(PathBuf::from(socket))),
        Some(_) => None,
        None => value.parse::<SocketAddr>().ok().map(Lmtp::Tcp),
    };
    if parsed.is_none() {
        c.error(
            path,
            format!("{value:?} is not an LMTP server; write \"unix:/run/dovecot/lmtp\" (an absolute path) or \"127.0.0.1:24\""),
        );
    }
    parsed
}

fn domains(c: &mut Checker<'_>, base: &KeyPath, raw: Vec<LocalDomainFile>) -> Vec<LocalDomain> {
    let mut out: Vec<LocalDomain> = Vec::new();
    for (i, d) in raw.into_iter().enumerate() {
        let path = base.index(i);
        let lmtp = d.lmtp.and_then(|v| lmtp(c, &path.key("lmtp"), &v));
        let Some(name) = d.name.map(|n| n.trim_end_matches('.').to_ascii_lowercase()) else {
            c.error(
                &path,
                "needs name, the hosted domain, e.g. name = \"example.org\"",
            );
            continue;
        };
        if out.iter().any(|o| o.name == name) {
            c.error(&path.key("name"), format!("{name} is named twice"));
        }
        out.push(LocalDomain { name, lmtp });
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    /// `text` is refused with exactly these errors, in this order.
    fn assert_errors(text: &str, want: &[&str]) {
        let errs: Vec<String> = match Config::from_text(text, Some(Path::new("p.toml"))) {
            Ok(_) => vec![],
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        };
        assert_eq!(errs.len(), want.len(), "{errs:#?}");
        for (err, want) in errs.iter().zip(want) {
            assert!(err.contains(want), "{err:?} does not say {want:?}");
        }
    }

    #[test]
    fn owner_and_group_are_resolved_at_load() {
        let c = Config::from_text(
            "[local]\nowner = \"root\"\ngroup = \"root\"\nmode = \"0750\"\n",
            None,
        )
        .expect("valid");
        let (owner, group) = (c.local.owner.expect("owner"), c.local.group.expect("group"));
        assert_eq!((owner.name.as_str(), owner.id.as_raw()), ("root", 0));
        assert_eq!((group.name.as_str(), group.id.as_raw()), ("root", 0));
        assert_eq!(c.local.mode, Some(0o750));
        let c = Config::from_text("[local]\nowner = \"5000\"\ngroup = \"5000\"\n", None)
            .expect("numeric ids need no name");
        assert_eq!(c.local.owner.expect("owner").id.as_raw(), 5000);
        assert_errors(
            "[local]\nowner = \"no-such-user-here\"\ngroup = \"no-such-group-here\"\n",
            &[
                "p.toml:2: local.owner: there is no user \"no-such-user-here\" on this host",
                "p.toml:3: local.group: there is no group \"no-such-group-here\" on this host",
            ],
        );
        assert_eq!(Config::builtin().local, Default::default());
    }

    #[test]
    fn an_owner_other_than_the_servers_user_is_refused_and_a_group_is_not() {
        assert_errors(
            "user = \"nobody\"\n[local]\nowner = \"root\"\n",
            &[
                "p.toml:3: local.owner: \"root\": the server runs as user \"nobody\", which cannot give Maildirs to another user; set [local] group = \"root\"",
            ],
        );
        let c = Config::from_text(
            "user = \"nobody\"\n[local]\ngroup = \"4242\"\nmode = \"0770\"\n",
            None,
        )
        .expect("a group is the server user's to give");
        assert_eq!(c.local.group.expect("group").id.as_raw(), 4242);
        assert_errors(
            "user = \"nobody\"\n[local]\ngroup = \"root\"\n",
            &["p.toml:3: local.group: \"root\" is gid 0, which the server would join"],
        );
        Config::from_text("user = \"nobody\"\n[local]\nowner = \"nobody\"\n", None)
            .expect("its own user it may name");
    }

    #[test]
    fn the_mode_is_octal_and_leaves_the_owner_rwx() {
        for (mode, want) in [("0700", 0o700), ("777", 0o777), ("0o770", 0o770)] {
            let c =
                Config::from_text(&format!("[local]\nmode = \"{mode}\"\n"), None).expect("valid");
            assert_eq!(c.local.mode, Some(want), "{mode}");
        }
        for (mode, says) in [
            ("0677", "is out of range"),
            ("01777", "is out of range"),
            ("0", "is out of range"),
            ("0800", "is not an octal mode"),
            ("rwx", "is not an octal mode"),
            ("", "is not an octal mode"),
        ] {
            assert_errors(
                &format!("[local]\nmode = \"{mode}\"\n"),
                &[&format!("local.mode: \"{mode}\" {says}")],
            );
        }
    }

    #[test]
    fn lmtp_globally_and_per_domain() {
        let c = Config::from_text(
            "[local]\nlmtp = \"unix:/run/dovecot/lmtp\"\n[[local.domain]]\nname = \"Other.example\"\nlmtp = \"127.0.0.1:24\"\n[[local.domain]]\nname = \"files.example\"\n",
            None,
        )
        .expect("valid");
        let lmtp_for = |domain| c.local.lmtp_for(domain).map(ToString::to_string);
        assert_eq!(
            lmtp_for("example.com").as_deref(),
            Some("unix:/run/dovecot/lmtp")
        );
        assert_eq!(lmtp_for("other.example").as_deref(), Some("127.0.0.1:24"));
        assert_eq!(
            lmtp_for("files.example"),
            None,
            "a domain listed without lmtp keeps the Maildir"
        );
        assert_errors(
            "[local]\nlmtp = \"unix:run/lmtp\"\n[[local.domain]]\nlmtp = \"localhost\"\n[[local.domain]]\nname = \"a.example\"\ncolour = 1\n[[local.domain]]\nname = \"A.example\"\n",
            &[
                "local.lmtp: \"unix:run/lmtp\" is not an LMTP server",
                "local.domain[0]: needs name",
                "local.domain[0].lmtp: \"localhost\" is not an LMTP server",
                "local.domain[1].colour: unknown key; valid keys here are: name, lmtp",
                "local.domain[2].name: a.example is named twice",
            ],
        );
    }
}
