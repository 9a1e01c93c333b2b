//! MAIL FROM and RCPT TO: the envelope of a transaction, with the ESMTP
//! parameters we announce (SIZE, BODY, SMTPUTF8, DSN's RET/ENVID/NOTIFY/ORCPT).

use std::collections::HashSet;

use smtp_proto::{
    MAIL_BODY_BINARYMIME, MAIL_BY_NOTIFY, MAIL_BY_RETURN, MAIL_BY_TRACE, MAIL_CONPERM,
    MAIL_REQUIRETLS, MAIL_RET_FULL, MAIL_RET_HDRS, MAIL_SMTPUTF8, MailFrom, RCPT_CONNEG,
    RCPT_NOTIFY_DELAY, RCPT_NOTIFY_FAILURE, RCPT_NOTIFY_NEVER, RCPT_NOTIFY_SUCCESS,
    RCPT_RRVS_CONTINUE, RCPT_RRVS_REJECT, RcptTo,
};

use super::state::Transaction;
use super::{Flow, Session};
use crate::clock::now_unix;
use crate::context::ServerContext;
use crate::policy::Verdict;
use crate::policy::limits::{check_declared_size, check_recipient_count};
use crate::policy::relay::{ClientStanding, RecipientFacts, check_recipient};
use crate::policy::sender::{Sender, check_envelope_sender};
use crate::smtp::address::Mailbox;
use crate::smtp::reply::Reply;
use crate::smtp::xtext;
use crate::spool::{DsnEnvelope, NewRecipient};

/// Parameters smtp-proto understands but we do not announce: using one is a 555.
const UNANNOUNCED_MAIL_FLAGS: u64 = MAIL_BODY_BINARYMIME
    | MAIL_REQUIRETLS
    | MAIL_CONPERM
    | MAIL_BY_NOTIFY
    | MAIL_BY_RETURN
    | MAIL_BY_TRACE;
const UNANNOUNCED_RCPT_FLAGS: u64 = RCPT_CONNEG | RCPT_RRVS_REJECT | RCPT_RRVS_CONTINUE;

impl Session {
    fn check_mail(&self, from: &MailFrom<String>) -> Result<Option<Mailbox>, Reply> {
        if self.greeting.is_none() {
            return Err(Reply::bad_sequence("Error: send HELO/EHLO first"));
        }
        if self.tx.is_some() {
            return Err(Reply::bad_sequence("Error: nested MAIL command"));
        }
        if self.role.auth_required_for_mail() && self.identity.is_none() {
            return Err(if self.tls.is_none() {
                Reply::tls_required()
            } else {
                Reply::auth_required()
            });
        }
        // REQUIRETLS is announced, and taken, only over TLS (RFC 8689 §4.1).
        let unannounced = if self.tls.is_some() {
            UNANNOUNCED_MAIL_FLAGS & !MAIL_REQUIRETLS
        } else {
            UNANNOUNCED_MAIL_FLAGS
        };
        if from.flags & unannounced != 0
            || from.by != 0
            || from.hold_for != 0
            || from.hold_until != 0
            || from.mt_priority != 0
            || from.trans_id.is_some()
            || from.solicit.is_some()
            || from.mtrk.is_some()
        {
            return Err(Reply::new(
                555,
                (5, 4),
                "Error: MAIL FROM parameter not supported",
            ));
        }
        let utf8 = from.flags & MAIL_SMTPUTF8 != 0;
        let sender = if from.address.is_empty() {
            None
        } else {
            let m = Mailbox::parse(&from.address, utf8).map_err(|e| {
                Reply::new(
                    501,
                    (1, 7),
                    format!("<{}>: Bad sender address syntax: {e}", from.address),
                )
            })?;
            Some(m)
        };
        if let Verdict::Reject(r) =
            check_declared_size(from.size as u64, self.config.limits.max_message_size)
        {
            return Err(r);
        }
        if let Some(user) = &self.identity
            && let Verdict::Reject(r) =
                check_envelope_sender(&Sender::Account(user), sender.as_ref())
        {
            return Err(r);
        }
        // RFC 1870 §6.1: refuse before the body comes, not after.
        if self
            .ctx
            .queue
            .spool()
            .has_room_for(from.size as u64)
            .is_err()
        {
            return Err(Reply::insufficient_storage());
        }
        Ok(sender)
    }

    pub(super) async fn mail(&mut self, from: MailFrom<String>, line: &[u8]) -> Flow {
        let sender = match self.check_mail(&from) {
            Ok(s) => s,
            Err(reply) => return self.reply(reply),
        };
        if let Some(user) = &self.identity
            && let Err(reply) = self
                .ctx
                .watch
                .check_message(user, self.logged_in_at, now_unix())
                .await
        {
            return self.reply(reply);
        }
        let envid = match from
            .env_id
            .map(|_| dsn_parameter(line, "ENVID"))
            .transpose()
        {
            Ok(envid) => envid,
            Err(reply) => return self.reply(reply),
        };
        let ret = if from.flags & MAIL_RET_FULL != 0 {
            Some("FULL".to_string())
        } else if from.flags & MAIL_RET_HDRS != 0 {
            Some("HDRS".to_string())
        } else {
            None
        };
        self.tx = Some(Box::new(Transaction {
            sender,
            smtputf8: from.flags & MAIL_SMTPUTF8 != 0,
            requiretls: from.flags & MAIL_REQUIRETLS != 0,
            dsn: DsnEnvelope { ret, envid },
            recipients: Vec::new(),
            recipient_keys: HashSet::new(),
            first_time: 0,
            chunks: None,
            span: tracing::info_span!("transaction", qid = tracing::field::Empty),
        }));
        self.reply(Reply::new(250, (1, 0), "Ok"))
    }

    /// The recipient named by RCPT, or why it is refused before any lookup.
    fn check_rcpt(&self, to: &RcptTo<String>, line: &[u8]) -> Result<Mailbox, Reply> {
        let Some(tx) = &self.tx else {
            return Err(Reply::bad_sequence("Error: need MAIL command"));
        };
        if to.flags & UNANNOUNCED_RCPT_FLAGS != 0 || to.rrvs != 0 {
            return Err(Reply::new(
                555,
                (5, 4),
                "Error: RCPT TO parameter not supported",
            ));
        }
        if let Verdict::Reject(r) =
            check_recipient_count(tx.recipients.len(), self.config.limits.max_recipients)
        {
            return Err(r);
        }
        if to.address.is_empty() {
            // smtp-proto reports both <> and <postmaster> as an empty address;
            // RFC 5321 §4.5.1 requires accepting the bare postmaster.
            return if names_postmaster(line) {
                Ok(Mailbox {
                    local: "postmaster".into(),
                    domain: self.hostname().to_string(),
                })
            } else {
                Err(Reply::new(501, (1, 3), "Bad recipient address syntax"))
            };
        }
        Mailbox::parse(&to.address, tx.smtputf8).map_err(|e| {
            Reply::new(
                501,
                (1, 3),
                format!("<{}>: Bad recipient address syntax: {e}", to.address),
            )
        })
    }

    pub(super) async fn rcpt(&mut self, to: RcptTo<String>, line: &[u8]) -> Flow {
        let rcpt = match self.check_rcpt(&to, line) {
            Ok(r) => r,
            Err(reply) => return self.reply(reply),
        };
        let orcpt = match to.orcpt.map(|_| dsn_parameter(line, "ORCPT")).transpose() {
            Ok(orcpt) => orcpt,
            Err(reply) => return self.reply(reply),
        };
        let facts = match recipient_facts(&self.ctx, &rcpt).await {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(event = "store_error", error = %e);
                return self.reply(Reply::local_error());
            }
        };
        // rfc822 is the only address type smtp-proto accepts in ORCPT, so
        // the stored form names it again.
        let orcpt = orcpt.map(|a| format!("rfc822;{a}"));
        // A bounce to the SRS address of mail an alias forwarded goes on to
        // the original sender; one this server did not write, nowhere.
        if facts.hosted_domain
            && let Some(reversed) = self.ctx.srs.reverse(&rcpt.local, now_unix())
        {
            let original = reversed
                .map_err(|e| e.to_string())
                .and_then(|a| Mailbox::parse(&a, true).map_err(|e| e.to_string()));
            return match original {
                Ok(original) => {
                    tracing::info!(event = "srs_reversed", rcpt = %rcpt, to = %original);
                    let key = original.recipient_key(false);
                    self.add_recipient(key, original.to_string(), orcpt, notify_text(to.flags))
                        .await
                }
                Err(why) => self.reply(Reply::new(
                    550,
                    (1, 1),
                    format!("<{rcpt}>: invalid SRS address: {why}"),
                )),
            };
        }
        let standing = ClientStanding {
            authenticated: self.identity.is_some(),
            trusted_network: self.trusted_network,
        };
        if let Verdict::Reject(reply) = check_recipient(&rcpt, facts, standing) {
            tracing::info!(event = "rejected", rcpt = %rcpt, reply = %reply);
            return self.reply(reply);
        }
        let key = rcpt.recipient_key(facts.hosted_domain);
        self.add_recipient(key, rcpt.to_string(), orcpt, notify_text(to.flags))
            .await
    }

    /// Takes a recipient into the transaction, within the authenticated
    /// user's sending limits; one named twice gets its 250 again but one copy.
    async fn add_recipient(
        &mut self,
        key: String,
        address: String,
        orcpt: Option<String>,
        notify: Option<String>,
    ) -> Flow {
        let Some(tx) = &self.tx else {
            return self.reply(Reply::bad_sequence("Error: need MAIL command"));
        };
        if tx.recipient_keys.contains(&key) {
            return self.reply(Reply::new(250, (1, 5), "Ok"));
        }
        let mut first_time = false;
        if let Some(user) = &self.identity {
            let pending = (tx.recipients.len() as u64, tx.first_time);
            match self
                .ctx
                .watch
                .check_recipient(user, &address, pending, now_unix())
                .await
            {
                Ok(new) => first_time = new,
                Err(reply) => return self.reply(reply),
            }
        }
        if let Some(tx) = &mut self.tx {
            tx.recipient_keys.insert(key);
            tx.first_time += u64::from(first_time);
            tx.recipients.push(NewRecipient {
                address,
                orcpt,
                notify,
            });
        }
        self.reply(Reply::new(250, (1, 5), "Ok"))
    }
}

/// What the relay policy asks of a recipient, from the store: whether its
/// domain is ours and, if so, whether the mailbox (or an alias) exists.
/// RCPT and `postern sendmail`'s recipients both ask it.
pub(crate) async fn recipient_facts(
    ctx: &ServerContext,
    rcpt: &Mailbox,
) -> Result<RecipientFacts, crate::store::StoreError> {
    let store = &ctx.store;
    let in_store = store.is_hosted_domain(&rcpt.domain).await?;
    // The bare postmaster (and postmaster@our host name) is always ours,
    // also when the host name is not a hosted domain; when it is, its
    // accounts and aliases are looked up like any hosted domain's.
    let hosted_domain = in_store || rcpt.domain == ctx.config().hostname;
    let mailbox_exists = in_store && store.accepts(rcpt).await?;
    Ok(RecipientFacts {
        hosted_domain,
        mailbox_exists,
    })
}

/// The value of a DSN parameter smtp-proto accepted, decoded again from the
/// client's own text (see `smtp::xtext`): 501 5.5.4 when it is malformed or
/// stands for a control character, as Postfix answers.
fn dsn_parameter(line: &[u8], name: &str) -> Result<String, Reply> {
    let refuse = |why: &dyn std::fmt::Display| {
        Reply::new(501, (5, 4), format!("Bad {name} parameter syntax: {why}"))
    };
    let raw = std::str::from_utf8(line)
        .ok()
        .and_then(|l| xtext::parameter(l, name))
        .ok_or_else(|| refuse(&"it cannot be read"))?;
    // ORCPT is `addr-type;xtext`; the type was checked by smtp-proto.
    let encoded = match name {
        "ORCPT" => raw.split_once(';').map_or(raw, |(_, address)| address),
        _ => raw,
    };
    xtext::decode(encoded).map_err(|e| refuse(&e))
}

/// Whether the RCPT line's path is `<postmaster>` in any case.
fn names_postmaster(line: &[u8]) -> bool {
    let text = String::from_utf8_lossy(line).to_ascii_lowercase();
    text.split_once('<')
        .and_then(|(_, rest)| rest.split_once('>'))
        .is_some_and(|(path, _)| path.trim() == "postmaster")
}

fn notify_text(flags: u64) -> Option<String> {
    let names = [
        (RCPT_NOTIFY_NEVER, "NEVER"),
        (RCPT_NOTIFY_SUCCESS, "SUCCESS"),
        (RCPT_NOTIFY_FAILURE, "FAILURE"),
        (RCPT_NOTIFY_DELAY, "DELAY"),
    ];
    let set: Vec<&str> = names
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, n)| *n)
        .collect();
    (!set.is_empty()).then(|| set.join(","))
}
