//! Who a local user is to the sendmail socket, and as whom it sends:
//! root and the server's own user any hosted address, another user the
//! senders of its `[[sendmail]]` entry, and each its own `user@hostname`;
//! with no `-f`, the user's one address, the message's From: or that own
//! address; a bare name (cron's `root`) is taken at the host name; and the
//! From: added to a message without one.

use crate::config::Config;
use crate::policy::sender::{Sender, SenderPattern};
use crate::smtp::address::Mailbox;
use std::ops::Range;

use crate::smtp::headers::{Entry, HeaderFacts, SenderHeader, entries, header_section};
use crate::smtp::reply::Reply;

/// A local user, and the senders it may use.
#[derive(Debug)]
pub(super) struct LocalUser {
    pub(super) name: String,
    pub(super) uid: u32,
    /// root and the server's own user: any address of a hosted domain.
    pub(super) trusted: bool,
    pub(super) patterns: Vec<SenderPattern>,
    /// `name@hostname`, as sendmail's user@$myorigin: what mail that names
    /// no sender is from, and what the user may send as unless the host
    /// name is a hosted domain (where that address may be someone else's
    /// mailbox). `None` for a name that is no address's local part.
    pub(super) own: Option<Mailbox>,
}

impl LocalUser {
    pub(super) fn sender<'a>(&'a self, allowed: &'a [SenderPattern]) -> Sender<'a> {
        Sender::Local {
            user: &self.name,
            uid: self.uid,
            allowed,
        }
    }
}

/// Who may send as what: root and the server's own user any hosted
/// address (sendmail's trusted users), another user what its
/// `[[sendmail]]` entry says; a user without one nothing.
pub(super) fn rights(config: &Config, uid: u32, name: Option<&str>) -> Result<LocalUser, Reply> {
    let refuse = |why: String| Err(Reply::new(550, (7, 1), why));
    let Some(name) = name else {
        return refuse(format!(
            "Unix user id {uid} has no name in the user database, and [[sendmail]] entries name users"
        ));
    };
    let trusted = uid == 0 || uid == rustix::process::getuid().as_raw();
    let entry = config.sendmail.iter().find(|e| e.unix_user == name);
    if !trusted && entry.is_none() {
        let file = config.source.as_ref().map_or_else(
            || "the configuration file".to_string(),
            |p| p.display().to_string(),
        );
        return refuse(format!(
            "Unix user {name} may not send mail: add a [[sendmail]] entry with unix_user = \"{name}\" and its senders to {file}"
        ));
    }
    Ok(LocalUser {
        name: name.to_string(),
        uid,
        trusted,
        patterns: entry.map(|e| e.senders.clone()).unwrap_or_default(),
        // A name with an @ (SSSD's fully qualified names) is not taken at
        // the host name: it would be any address.
        own: (!name.contains('@'))
            .then(|| Mailbox::parse(&qualified(name, &config.hostname), true).ok())
            .flatten(),
    })
}

/// A bare name (`root`, as cron and many scripts write it) at the host
/// name, as Postfix appends @$myorigin to mail from local programs; an
/// address with a domain as it is.
pub(super) fn qualified(address: &str, hostname: &str) -> String {
    if address.contains('@') || address.is_empty() {
        address.to_string()
    } else {
        format!("{address}@{hostname}")
    }
}

/// `-f`'s address, with or without angle brackets; a bare name at
/// `hostname`.
pub(super) fn parse_sender(text: &str, hostname: &str) -> Result<Mailbox, Reply> {
    let address = text
        .strip_prefix('<')
        .and_then(|a| a.strip_suffix('>'))
        .unwrap_or(text);
    Mailbox::parse(&qualified(address, hostname), true).map_err(|e| {
        Reply::new(
            501,
            (1, 7),
            format!("<{}>: Bad sender address syntax: {e}", printable(address)),
        )
    })
}

/// With no `-f` and no single address of its own: the address of the
/// message's From: when there is exactly one (a bare name at `hostname`),
/// else the user's own address.
pub(super) fn from_header(
    facts: &HeaderFacts,
    user: &LocalUser,
    hostname: &str,
) -> Result<Mailbox, Reply> {
    let mut fields = facts.fields(SenderHeader::From);
    let only = match (fields.next(), fields.next()) {
        (Some(field), None) => match field.mailboxes.as_deref() {
            Ok([mailbox]) => Mailbox::parse(&qualified(&mailbox.address, hostname), true).ok(),
            _ => None,
        },
        _ => None,
    };
    only.or_else(|| user.own.clone()).ok_or_else(|| {
        Reply::new(
            550,
            (7, 1),
            format!(
                "No sender address: give -f ADDRESS, or a From: header with one address that Unix user {} may send as",
                user.name
            ),
        )
    })
}

/// A From: that names one bare name (`From: root (Cron Daemon)`, as cron
/// writes it): the field to put in its place, the name taken at
/// `hostname`, and where the old one lies in `head`. `None` for any other
/// From:, which is checked as it is.
pub(super) fn bare_from(head: &[u8], hostname: &str) -> Option<(Vec<u8>, Range<usize>)> {
    let mut froms = entries(header_section(head)).filter_map(|entry| match entry {
        Entry::Field(field) if field.name.eq_ignore_ascii_case(b"From") => Some(field),
        _ => None,
    });
    let (Some(field), None) = (froms.next(), froms.next()) else {
        return None;
    };
    let named = super::input::addresses(&field);
    let [(shown, Some(name))] = named.as_slice() else {
        return None;
    };
    if name.contains('@') {
        return None;
    }
    let mailbox = Mailbox::parse(&qualified(name, hostname), true).ok()?;
    Some((from_line(shown.as_deref(), &mailbox), field.raw))
}

/// `From: Full Name <sender>` (the name encoded as RFC 2047 asks when it
/// needs to be), for a message that came without one.
pub(super) fn from_line(full_name: Option<&str>, sender: &Mailbox) -> Vec<u8> {
    use mail_builder::headers::Header;
    use mail_builder::headers::address::Address;
    let name = full_name
        .map(|n| n.chars().filter(|c| !c.is_control()).collect::<String>())
        .filter(|n| !n.trim().is_empty());
    let mut line = b"From: ".to_vec();
    Address::new_address(name, sender.to_string()).write_header(&mut line, 6);
    line
}

/// Client text made safe for a reply line.
pub(super) fn printable(s: &str) -> String {
    s.chars()
        .take(100)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_trusted_a_user_has_its_entry_and_others_are_told_what_to_add() {
        let config = Config::from_text(
            "[[sendmail]]\nunix_user = \"web1\"\nsenders = [\"*@customer1.example\"]\n",
            Some(std::path::Path::new("/etc/postern/postern.toml")),
        )
        .expect("config");
        let root = rights(&config, 0, Some("root")).expect("root");
        assert!(root.trusted && root.patterns.is_empty());
        let web1 = rights(&config, 1001, Some("web1")).expect("web1");
        assert!(!web1.trusted);
        assert_eq!(
            web1.patterns,
            [SenderPattern::Domain("customer1.example".into())]
        );
        let refused = rights(&config, 33, Some("www-data")).expect_err("www-data");
        assert_eq!(
            (refused.code, refused.enhanced.map(|e| e.to_string())),
            (550, Some("5.7.1".into()))
        );
        assert_eq!(
            refused.text,
            "Unix user www-data may not send mail: add a [[sendmail]] entry with \
             unix_user = \"www-data\" and its senders to /etc/postern/postern.toml"
        );
        let nameless = rights(&config, 4242, None).expect_err("no name");
        assert!(
            nameless.text.contains("Unix user id 4242 has no name"),
            "{}",
            nameless.text
        );
    }

    #[test]
    fn an_added_from_encodes_the_full_name() {
        let sender = Mailbox::parse("web@customer1.example", false).expect("address");
        assert_eq!(
            from_line(Some("Web Shop"), &sender),
            b"From: \"Web Shop\" <web@customer1.example>\r\n"
        );
        assert_eq!(
            from_line(None, &sender),
            b"From: <web@customer1.example>\r\n"
        );
        let line = String::from_utf8(from_line(Some("Jörg\r\nBcc: x@y"), &sender)).expect("utf8");
        assert!(
            line.starts_with("From: =?utf-8?") && line.ends_with("<web@customer1.example>\r\n"),
            "{line}"
        );
        assert_eq!(line.matches("\r\n").count(), 1, "{line}");
    }

    #[test]
    fn the_sender_of_a_from_header_is_its_one_address_else_the_users_own() {
        let config = Config::from_text("hostname = \"mx.test.example\"\n", None).expect("config");
        let facts = |h: &str| HeaderFacts::scan(h.as_bytes());
        let root = rights(&config, 0, Some("root")).expect("root");
        let sender =
            |h: &str| from_header(&facts(h), &root, "mx.test.example").map(|m| m.to_string());
        assert_eq!(
            sender("From: Shop <shop@x.example>\r\n").expect("one"),
            "shop@x.example"
        );
        // Debian's cron writes this.
        assert_eq!(
            sender("From: root (Cron Daemon)\r\n").expect("bare"),
            "root@mx.test.example"
        );
        for none in [
            "Subject: x\r\n",
            "From: a@x.example, b@x.example\r\n",
            "From: a@x.example\r\nFrom: a@x.example\r\n",
        ] {
            assert_eq!(sender(none).expect(none), "root@mx.test.example");
        }
        let nameless = LocalUser {
            own: None,
            ..rights(&config, 0, Some("root")).expect("root")
        };
        let reply = from_header(&facts("Subject: x\r\n"), &nameless, "mx.test.example")
            .expect_err("no address at all");
        assert!(
            reply.text.contains("give -f ADDRESS") && reply.text.contains("Unix user root"),
            "{}",
            reply.text
        );
    }

    #[test]
    fn a_from_of_a_bare_name_is_replaced_by_one_at_the_host_name() {
        let head = b"Subject: x\r\nFrom: root (Cron Daemon)\r\nTo: root\r\n\r\nbody\r\n";
        let (line, field) = bare_from(head, "mx.example").expect("bare");
        assert_eq!(&head[field], b"From: root (Cron Daemon)\r\n");
        assert_eq!(line, b"From: \"Cron Daemon\" <root@mx.example>\r\n");
        for kept in [
            &b"From: root@mx.example\r\n\r\n"[..],
            b"From: a, b\r\n\r\n",
            b"From: a\r\nFrom: a\r\n\r\n",
            b"Subject: none\r\n\r\n",
        ] {
            assert_eq!(
                bare_from(kept, "mx.example"),
                None,
                "{}",
                String::from_utf8_lossy(kept)
            );
        }
    }

    #[test]
    fn bare_names_are_taken_at_the_host_name() {
        assert_eq!(qualified("root", "mx.example"), "root@mx.example");
        assert_eq!(qualified("bob@x.example", "mx.example"), "bob@x.example");
        assert_eq!(qualified("", "mx.example"), "");
        assert_eq!(
            parse_sender("<cron>", "mx.example")
                .expect("bare")
                .to_string(),
            "cron@mx.example"
        );
    }
}
