//! Alias expansion before queueing (Postfix's virtual alias step): each
//! recipient that is an alias is replaced by its targets from `store`, so
//! each target has its own delivery state; a forwarding loop is refused.

use std::collections::HashSet;

use crate::smtp::reply::Reply;
use crate::spool::NewRecipient;
use crate::store::{MAX_ALIAS_EXPANSION, Store, StoreError};

/// The recipients of a transaction after alias expansion.
pub struct Expanded {
    pub recipients: Vec<NewRecipient>,
    /// Recipients that are aliases forwarding (at least in part) to other
    /// domains, canonical: the stored message gets a `Delivered-To:` for each.
    /// All recipients share one stored copy (one commit behind one 250), so
    /// every copy, local ones included, carries every mark: a Bcc'd alias is
    /// then visible in the others' copies, a smaller harm than a loop.
    pub forwarded: Vec<String>,
}

/// Replaces recipients that are aliases by their targets; the original
/// address is kept as ORCPT for DSNs. A recipient reached twice (named
/// twice, or through two aliases) is kept once. An alias the message's
/// `Delivered-To:` fields (`marks`) already name is a forwarding loop: the
/// message came back, and is refused.
pub async fn expand(
    store: &Store,
    recipients: &[NewRecipient],
    marks: &[String],
) -> Result<Expanded, Reply> {
    let mut out = Expanded {
        recipients: Vec::with_capacity(recipients.len()),
        forwarded: Vec::new(),
    };
    let mut seen = HashSet::new();
    for r in recipients {
        let targets = match store.expand(&r.address).await {
            Ok(t) => t,
            Err(StoreError::AliasTooLarge(alias)) => {
                tracing::error!(event = "alias_too_large", rcpt = %alias, limit = MAX_ALIAS_EXPANSION);
                // Postfix defers too: the administrator can mend the alias.
                return Err(Reply::new(
                    451,
                    (3, 0),
                    format!(
                        "<{alias}>: alias expands to more than {MAX_ALIAS_EXPANSION} addresses; try again later"
                    ),
                ));
            }
            Err(e) => {
                tracing::error!(event = "store_error", error = %e);
                return Err(Reply::local_error());
            }
        };
        let key = r.address.to_lowercase();
        if let [only] = targets.as_slice()
            && only.address.to_lowercase() == key
        {
            // No alias: the recipient keeps its own spelling.
            if seen.insert(only.address.clone()) {
                out.recipients.push(r.clone());
            }
            continue;
        }
        // An alias is in a hosted domain, where the key is the lower case.
        if marks.contains(&key) {
            tracing::info!(event = "rejected", rcpt = %r.address, reason = "forwarding loop");
            return Err(Reply::new(
                554,
                (4, 6),
                format!("mail forwarding loop for <{}>", r.address),
            ));
        }
        if targets.iter().any(|t| !t.hosted) {
            out.forwarded.push(key);
        }
        let orcpt = r
            .orcpt
            .clone()
            .or_else(|| Some(format!("rfc822;{}", r.address)));
        for target in targets {
            if seen.insert(target.address.clone()) {
                out.recipients.push(NewRecipient {
                    address: target.address,
                    orcpt: orcpt.clone(),
                    notify: r.notify.clone(),
                });
            }
        }
    }
    Ok(out)
}
