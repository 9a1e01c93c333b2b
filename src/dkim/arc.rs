//! ARC sets (RFC 8617) for mail an alias forwards: what this server found
//! when the message arrived (its Authentication-Results), signed with the
//! forwarding domain's RSA key, so that the next server can tell a forward
//! whose SPF no longer passes from a forgery. RSA-SHA256 only: RFC 8617
//! names no other algorithm, and the domain's published RSA key serves.

use std::sync::Arc;

use mail_auth::arc::ArcSealer;
use mail_auth::common::crypto::{Algorithm as KeyAlgorithm, SigningKey};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::Canonicalization;
use mail_auth::{ArcOutput, AuthenticatedMessage, AuthenticationResults};

use super::sign::{SIGNED_HEADERS, SharedKey, Signer};

impl Signer {
    /// The ARC set (ARC-Seal, ARC-Message-Signature and
    /// ARC-Authentication-Results fields) that seals `message` for `domain`
    /// with `results`, continuing the chain `arc` found (with cv=fail when
    /// it did not validate here); empty when the domain has no RSA key, when
    /// its last seal already says cv=fail (RFC 8617 §5.1.2: sealed by no one
    /// after), or when it is too broken to read as sets (a new i=1 would
    /// claim there was no chain). Blocking: two RSA signatures.
    pub fn seal(
        &self,
        domain: &str,
        message: &AuthenticatedMessage<'_>,
        results: &AuthenticationResults<'_>,
        arc: &ArcOutput<'_>,
    ) -> Vec<u8> {
        let unreadable = arc.sets().is_empty() && *arc.result() != mail_auth::DkimResult::None;
        if !arc.can_be_sealed() || unreadable {
            return Vec::new();
        }
        let keys = self.keys(domain);
        let Some(key) = keys
            .iter()
            .find(|k| k.key.algorithm() == KeyAlgorithm::RsaSha256)
        else {
            return Vec::new();
        };
        // The original signatures are part of what the next server trusts
        // this server to have seen unchanged.
        let headers = SIGNED_HEADERS.iter().copied().chain(["DKIM-Signature"]);
        let sealed = ArcSealer::from_key(SharedKey(Arc::clone(&key.key)))
            .domain(domain)
            .selector(&key.selector)
            .headers(headers)
            .header_canonicalization(Canonicalization::Relaxed)
            .body_canonicalization(Canonicalization::Relaxed)
            .seal(message, results, arc);
        match sealed {
            Ok(set) => set.to_header().into_bytes(),
            Err(e) => {
                tracing::warn!(event = "arc_not_sealed", domain, selector = %key.selector, error = %e);
                Vec::new()
            }
        }
    }
}
