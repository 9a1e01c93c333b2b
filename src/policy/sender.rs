//! An authenticated user may send only as an address it owns: the envelope
//! sender (MAIL FROM) and every address in the header From:.

use super::Verdict;
use crate::smtp::address::Mailbox;
use crate::smtp::reply::Reply;

/// Whether `user` (a canonical address) owns `address`.
fn owns(user: &str, address: &Mailbox) -> bool {
    address.canonical() == user
}

/// MAIL FROM of an authenticated user; `None` is the null sender `<>`, which a
/// client may use for its own notifications.
pub fn check_envelope_sender(user: &str, sender: Option<&Mailbox>) -> Verdict {
    match sender {
        Some(m) if !owns(user, m) => Verdict::Reject(Reply::new(
            550,
            (7, 1),
            format!("<{m}>: Sender address rejected: not owned by user {user}"),
        )),
        _ => Verdict::Accept,
    }
}

/// The header From: addresses of a message an authenticated user submitted.
pub fn check_header_from(user: &str, from: &[String]) -> Verdict {
    if from.is_empty() {
        return Verdict::Reject(Reply::new(
            550,
            (7, 1),
            "Message rejected: it has no From: header address",
        ));
    }
    for address in from {
        let owned = Mailbox::parse(address, true)
            .map(|m| owns(user, &m))
            .unwrap_or(false);
        if !owned {
            return Verdict::Reject(Reply::new(
                550,
                (7, 1),
                format!("Message rejected: header From: <{address}> is not owned by user {user}"),
            ));
        }
    }
    Verdict::Accept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mb(s: &str) -> Mailbox {
        Mailbox::parse(s, false).expect("address")
    }

    #[test]
    fn only_own_addresses() {
        assert_eq!(
            check_envelope_sender("alice@example.com", Some(&mb("Alice@EXAMPLE.com"))),
            Verdict::Accept
        );
        assert_eq!(
            check_envelope_sender("alice@example.com", None),
            Verdict::Accept
        );
        let Verdict::Reject(r) =
            check_envelope_sender("alice@example.com", Some(&mb("bob@example.com")))
        else {
            panic!("bob's address must be refused");
        };
        assert!(r.text.contains("<bob@example.com>") && r.code == 550);
        assert_eq!(
            check_header_from("alice@example.com", &["alice@example.com".into()]),
            Verdict::Accept
        );
        assert!(matches!(
            check_header_from(
                "alice@example.com",
                &["alice@example.com".into(), "eve@example.com".into()]
            ),
            Verdict::Reject(_)
        ));
        assert!(matches!(
            check_header_from("alice@example.com", &[]),
            Verdict::Reject(_)
        ));
    }
}
