//! `[[sendmail]]`: which local Unix users may send through `postern sendmail`,
//! and as which addresses.

use crate::config::SendmailUser;
use crate::config::checker::{Checker, KeyPath};
use crate::config::file::SendmailFile;
use crate::policy::sender::SenderPattern;

pub(super) fn users(c: &mut Checker<'_>, raw: Vec<SendmailFile>) -> Vec<SendmailUser> {
    let base = KeyPath::default().key("sendmail");
    let mut out: Vec<SendmailUser> = Vec::new();
    for (i, entry) in raw.into_iter().enumerate() {
        let path = base.index(i);
        let unix_user = match entry.unix_user {
            Some(u) if is_user_name(&u) => u,
            Some(u) => {
                c.error(
                    &path.key("unix_user"),
                    format!("{u:?} is not a Unix user name"),
                );
                continue;
            }
            None => {
                c.error(&path, "needs unix_user, e.g. unix_user = \"web1\"");
                continue;
            }
        };
        if out.iter().any(|o| o.unix_user == unix_user) {
            c.error(
                &path.key("unix_user"),
                format!("{unix_user:?} has two [[sendmail]] entries; merge their senders"),
            );
        }
        let Some(texts) = entry.senders.filter(|s| !s.is_empty()) else {
            c.error(
                &path,
                "needs senders, the addresses it may send as, e.g. senders = [\"*@customer.example\", \"info@other.example\"]",
            );
            continue;
        };
        let mut senders = Vec::new();
        for (j, text) in texts.iter().enumerate() {
            match SenderPattern::parse(text) {
                Ok(p) => senders.push(p),
                Err(why) => c.error(&path.key("senders").index(j), format!("{text:?}: {why}")),
            }
        }
        out.push(SendmailUser { unix_user, senders });
    }
    out
}

/// What `useradd` accepts, roughly: no spaces, colons or slashes, so the name
/// is the one `getpwuid` gives back.
fn is_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '$'))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;
    use crate::policy::sender::SenderPattern;

    fn errors(text: &str) -> Vec<String> {
        match Config::from_text(text, Some(Path::new("p.toml"))) {
            Ok(_) => vec![],
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn entries_are_read_and_each_error_names_its_key() {
        let c = Config::from_text(
            "[[sendmail]]\nunix_user = \"web1\"\nsenders = [\"*@Customer1.example\", \"info@customer2.example\"]\n",
            None,
        )
        .expect("valid");
        assert_eq!(c.sendmail.len(), 1);
        assert_eq!(c.sendmail[0].unix_user, "web1");
        assert_eq!(
            c.sendmail[0].senders,
            [
                SenderPattern::Domain("customer1.example".into()),
                SenderPattern::Address("info@customer2.example".into())
            ]
        );
        assert!(Config::builtin().sendmail.is_empty());
        let errs = errors(
            "[[sendmail]]\nunix_user = \"web 1\"\nsenders = [\"a@b.example\"]\n\
             [[sendmail]]\nsenders = [\"a@b.example\"]\n\
             [[sendmail]]\nunix_user = \"web2\"\nsenders = []\n\
             [[sendmail]]\nunix_user = \"web3\"\nsenders = [\"ok@x.example\", \"*.x.example\"]\n\
             [[sendmail]]\nunix_user = \"web3\"\nsenders = [\"a@x.example\"]\ncolour = 1\n",
        );
        assert_eq!(errs.len(), 6, "{errs:#?}");
        for (err, want) in errs.iter().zip([
            "p.toml:2: sendmail[0].unix_user: \"web 1\" is not a Unix user name",
            "p.toml:4: sendmail[1]: needs unix_user",
            "p.toml:6: sendmail[2]: needs senders",
            "p.toml:11: sendmail[3].senders[1]: \"*.x.example\": a pattern is an address or *@domain",
            "p.toml:13: sendmail[4].unix_user: \"web3\" has two [[sendmail]] entries",
            "p.toml:15: sendmail[4].colour: unknown key; valid keys here are: unix_user, senders",
        ]) {
            assert!(err.starts_with(want), "{err}\nwanted: {want}");
        }
    }
}
