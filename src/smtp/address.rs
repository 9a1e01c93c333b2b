//! Mailbox addresses as they arrive in MAIL FROM and RCPT TO, after smtp-proto has
//! removed the angle brackets, quotes and any source route. Here they are checked
//! (RFC 5321 §4.1.2, RFC 6531 for UTF-8) and split at the last `@`, with the domain
//! lower-cased and a trailing dot removed, so that policy compares like with like.

use std::fmt;

/// Why an address was refused; each variant becomes a 501/553 reply text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("address has no domain part")]
    NoDomain,
    #[error("local part is empty or longer than 64 octets")]
    LocalPartLength,
    #[error("address contains a control character or space")]
    ControlCharacter,
    #[error("non-ASCII address without SMTPUTF8")]
    NeedsSmtpUtf8,
    #[error("domain {0:?} is not a valid domain name or address literal")]
    BadDomain(String),
}

/// A `local@domain` address. The local part keeps its case (RFC 5321 §2.4); the
/// domain is lower-case without a trailing dot.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mailbox {
    pub local: String,
    pub domain: String,
}

impl Mailbox {
    /// Parses an address; `utf8` is whether the transaction declared SMTPUTF8.
    pub fn parse(address: &str, utf8: bool) -> Result<Mailbox, AddressError> {
        if address.chars().any(|c| c.is_control() || c == ' ') {
            return Err(AddressError::ControlCharacter);
        }
        if !utf8 && !address.is_ascii() {
            return Err(AddressError::NeedsSmtpUtf8);
        }
        let (local, domain) = address.rsplit_once('@').ok_or(AddressError::NoDomain)?;
        if local.is_empty() || local.len() > 64 {
            return Err(AddressError::LocalPartLength);
        }
        let domain =
            normalize_domain(domain).ok_or_else(|| AddressError::BadDomain(domain.to_string()))?;
        Ok(Mailbox {
            local: local.to_string(),
            domain,
        })
    }

    /// The form used for lookups: local part and domain both lower-cased. Hosted
    /// mailboxes are case-insensitive, as in every common mail server.
    pub fn canonical(&self) -> String {
        format!("{}@{}", self.local.to_lowercase(), self.domain)
    }

    /// What tells two recipients of one message apart: in a domain hosted
    /// here, the canonical form, since our mailboxes ignore case. Elsewhere the
    /// local part as given, with the lower-case domain: RFC 5321 §2.4 leaves it
    /// to the receiving server whether `Bob` and `bob` are one mailbox, and
    /// two copies for one mailbox beat no copy for one of two.
    pub fn recipient_key(&self, hosted: bool) -> String {
        if hosted {
            self.canonical()
        } else {
            self.to_string()
        }
    }

    /// Whether this is the domain's postmaster (RFC 5321 §4.5.1), in any case.
    pub fn is_postmaster(&self) -> bool {
        self.local.eq_ignore_ascii_case("postmaster")
    }
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

/// Lower-cases a domain and strips one trailing dot; `None` if it is neither a
/// host name (ASCII or UTF-8 labels) nor an address literal.
pub fn normalize_domain(domain: &str) -> Option<String> {
    // Lower-case before checking: lower-casing can lengthen a label or produce
    // a combining mark (U+0130 becomes "i\u{307}"), and what is stored must
    // pass the same check when it is read back.
    let domain = domain.strip_suffix('.').unwrap_or(domain).to_lowercase();
    if let Some(literal) = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
        let ok = match literal.strip_prefix("ipv6:") {
            Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
            None => literal.parse::<std::net::Ipv4Addr>().is_ok(),
        };
        return ok.then_some(domain);
    }
    let valid = !domain.is_empty()
        && domain.len() <= 255
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_alphanumeric() || c == '-')
        });
    valid.then_some(domain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn splits_at_the_last_at_sign() {
        let m = Mailbox::parse("user@other@Example.COM.", false).expect("valid");
        assert_eq!(
            (m.local.as_str(), m.domain.as_str()),
            ("user@other", "example.com")
        );
    }

    #[test]
    fn refuses_what_is_not_an_address() {
        assert_eq!(Mailbox::parse("user", false), Err(AddressError::NoDomain));
        assert_eq!(
            Mailbox::parse("@example.com", false),
            Err(AddressError::LocalPartLength)
        );
        assert_eq!(
            Mailbox::parse(&format!("{}@e.com", "a".repeat(65)), false),
            Err(AddressError::LocalPartLength)
        );
        assert!(Mailbox::parse(&format!("{}@e.com", "a".repeat(64)), false).is_ok());
        assert_eq!(
            Mailbox::parse("a\u{1}b@e.com", false),
            Err(AddressError::ControlCharacter)
        );
        assert_eq!(
            Mailbox::parse("jörg@e.com", false),
            Err(AddressError::NeedsSmtpUtf8)
        );
        assert!(Mailbox::parse("jörg@bücher.de", true).is_ok());
        assert!(matches!(
            Mailbox::parse("a@exa_mple.com", false),
            Err(AddressError::BadDomain(_))
        ));
        assert!(matches!(
            Mailbox::parse("a@-x.com", false),
            Err(AddressError::BadDomain(_))
        ));
        assert!(matches!(
            Mailbox::parse("a@[1.2.3]", false),
            Err(AddressError::BadDomain(_))
        ));
        assert!(Mailbox::parse("a@[127.0.0.1]", false).is_ok());
        assert!(Mailbox::parse("a@[IPv6:::1]", false).is_ok());
    }

    proptest! {
        #[test]
        fn parse_of_display_round_trips(local in "[a-zA-Z0-9._%+!-]{1,64}", domain in "[a-z0-9]{1,20}(\\.[a-z0-9]{1,20}){0,3}") {
            let m = Mailbox::parse(&format!("{local}@{domain}"), false).expect("generated addresses are valid");
            prop_assert_eq!(Mailbox::parse(&m.to_string(), false), Ok(m.clone()));
        }

        #[test]
        fn never_panics(s in "\\PC{0,80}") {
            let _ = Mailbox::parse(&s, true);
        }
    }
}
