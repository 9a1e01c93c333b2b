//! Hosted domain or relay: mail for a hosted domain needs an existing mailbox;
//! mail for anywhere else needs an authenticated client or one in
//! `trusted_networks`. Never an open relay: the address tricks (percent hack,
//! bang paths, quoted local parts, source routes) all reduce to one of these two
//! cases because the domain is taken after the last `@`, once routes are gone.

use super::Verdict;
use crate::smtp::address::Mailbox;
use crate::smtp::reply::Reply;

/// What the session has established about its client.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientStanding {
    pub authenticated: bool,
    pub trusted_network: bool,
}

/// What the store says about a recipient.
#[derive(Debug, Clone, Copy)]
pub struct RecipientFacts {
    pub hosted_domain: bool,
    pub mailbox_exists: bool,
}

pub fn check_recipient(rcpt: &Mailbox, facts: RecipientFacts, client: ClientStanding) -> Verdict {
    if facts.hosted_domain {
        if facts.mailbox_exists || rcpt.is_postmaster() {
            Verdict::Accept
        } else {
            Verdict::Reject(Reply::new(
                550,
                (1, 1),
                format!("<{rcpt}>: Recipient address rejected: User unknown"),
            ))
        }
    } else if client.authenticated || client.trusted_network {
        Verdict::Accept
    } else {
        Verdict::Reject(Reply::new(
            554,
            (7, 1),
            format!("<{rcpt}>: Relay access denied"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANON: ClientStanding = ClientStanding {
        authenticated: false,
        trusted_network: false,
    };

    fn verdict(addr: &str, hosted: bool, exists: bool, client: ClientStanding) -> u16 {
        let m = Mailbox::parse(addr, false).expect("address");
        match check_recipient(
            &m,
            RecipientFacts {
                hosted_domain: hosted,
                mailbox_exists: exists,
            },
            client,
        ) {
            Verdict::Accept => 250,
            Verdict::Reject(r) => r.code,
        }
    }

    #[test]
    fn table() {
        assert_eq!(verdict("a@hosted.example", true, true, ANON), 250);
        assert_eq!(verdict("nobody@hosted.example", true, false, ANON), 550);
        assert_eq!(verdict("PostMaster@hosted.example", true, false, ANON), 250);
        assert_eq!(verdict("a@remote.example", false, false, ANON), 554);
        assert_eq!(
            verdict(
                "a@remote.example",
                false,
                false,
                ClientStanding {
                    authenticated: true,
                    trusted_network: false
                }
            ),
            250
        );
        assert_eq!(
            verdict(
                "a@remote.example",
                false,
                false,
                ClientStanding {
                    authenticated: false,
                    trusted_network: true
                }
            ),
            250
        );
        // The percent hack names a local part that is no mailbox here.
        assert_eq!(
            verdict("user%remote.example@hosted.example", true, false, ANON),
            550
        );
    }
}
