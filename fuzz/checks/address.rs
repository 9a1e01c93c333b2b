//! `Mailbox::parse` on any text; the first byte says whether SMTPUTF8 was
//! declared. Checks: no panic, and what parses prints back to the same mailbox.

use postern::smtp::address::Mailbox;

pub fn check(input: &[u8]) {
    let Some((&flag, rest)) = input.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let utf8 = flag & 1 != 0;
    if let Ok(m) = Mailbox::parse(text, utf8) {
        assert_eq!(Mailbox::parse(&m.to_string(), utf8), Ok(m));
    }
}
