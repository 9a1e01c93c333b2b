//! What one transaction says and checks before it starts: the MAIL and
//! RCPT commands with the parameters the message needs and the server
//! offers, whether the server can take the message at all (size, SMTPUTF8,
//! REQUIRETLS), and the 7-bit form for a server without 8BITMIME. Pure:
//! `client.rs` does the talking; LMTP delivery (`local/lmtp.rs`) shares
//! these too.

use smtp_proto::{EXT_8BIT_MIME, EXT_DSN, EXT_REQUIRE_TLS, EXT_SIZE, EXT_SMTP_UTF8, EhloResponse};

use super::client::{Envelope, Rcpt};
use crate::failure::{DeliveryFailure, FailureKind, Severity};
use crate::smtp::xtext;

/// `MAIL FROM:<…>` with the parameters the message needs and the server offers.
pub(crate) fn mail_command(env: &Envelope<'_>, caps: &EhloResponse<String>) -> String {
    let mut cmd = format!("MAIL FROM:<{}>", env.sender);
    if caps.has_capability(EXT_SIZE) {
        cmd.push_str(&format!(" SIZE={}", env.body.len()));
    }
    if !env.body.is_ascii() && caps.has_capability(EXT_8BIT_MIME) {
        cmd.push_str(" BODY=8BITMIME");
    }
    if env.smtputf8 {
        cmd.push_str(" SMTPUTF8");
    }
    if env.requiretls {
        cmd.push_str(" REQUIRETLS");
    }
    if caps.has_capability(EXT_DSN) {
        if let Some(ret) = env.ret {
            cmd.push_str(&format!(" RET={ret}"));
        }
        if let Some(envid) = env.envid {
            cmd.push_str(&format!(" ENVID={}", xtext::encode(envid)));
        }
    }
    cmd.push_str("\r\n");
    cmd
}

/// `RCPT TO:<…>`, with the DSN parameters when the server offers DSN.
pub(crate) fn rcpt_command(r: &Rcpt<'_>, caps: &EhloResponse<String>) -> String {
    let mut cmd = format!("RCPT TO:<{}>", r.address);
    if caps.has_capability(EXT_DSN) {
        if let Some(notify) = r.notify {
            cmd.push_str(&format!(" NOTIFY={notify}"));
        }
        if let Some(orcpt) = r.orcpt {
            let (kind, addr) = orcpt.split_once(';').unwrap_or(("rfc822", orcpt));
            cmd.push_str(&format!(" ORCPT={kind};{}", xtext::encode(addr)));
        }
    }
    cmd.push_str("\r\n");
    cmd
}

/// Checks what the server announced against what the message needs.
pub(crate) fn check_capabilities(
    host: &str,
    caps: &EhloResponse<String>,
    env: &Envelope<'_>,
) -> Result<(), DeliveryFailure> {
    if caps.has_capability(EXT_SIZE) && caps.size > 0 && env.body.len() > caps.size {
        return Err(DeliveryFailure::new(
            Severity::Permanent,
            FailureKind::TooLarge,
            format!(
                "the message ({} octets) is larger than {host} accepts ({} octets)",
                env.body.len(),
                caps.size
            ),
        ));
    }
    if env.smtputf8 && !caps.has_capability(EXT_SMTP_UTF8) {
        return Err(DeliveryFailure::new(
            Severity::Permanent,
            FailureKind::Unsupported,
            format!(
                "the message needs SMTPUTF8 (international addresses), which {host} does not support"
            ),
        ));
    }
    Ok(())
}

/// RFC 8689 §4.2.1: a REQUIRETLS message goes only over TLS with a
/// verified certificate (a relay with `tls_verify`, or an MX an MTA-STS
/// policy enforces), to a server that offers REQUIRETLS; otherwise it is
/// returned to its sender (5.7.30).
pub(super) fn check_requiretls(
    host: &str,
    tls_verified: bool,
    caps: &EhloResponse<String>,
    env: &Envelope<'_>,
) -> Result<(), DeliveryFailure> {
    if !env.requiretls {
        return Ok(());
    }
    let why = if !tls_verified {
        format!(
            "the message asks for REQUIRETLS, and the connection to {host} is not TLS with a \
             verified certificate (an MX host needs an MTA-STS policy in enforce mode)"
        )
    } else if !caps.has_capability(EXT_REQUIRE_TLS) {
        format!("the message asks for REQUIRETLS, which {host} does not support")
    } else {
        return Ok(());
    };
    Err(DeliveryFailure::new(
        Severity::Permanent,
        FailureKind::Tls,
        why,
    ))
}

/// RFC 6152 §3: a server that does not offer 8BITMIME is sent 7-bit text,
/// the message's 8-bit text parts made quoted-printable. A message with a
/// DKIM signature goes as it is: re-encoding would break the signature, and
/// most such servers take 8-bit text anyway (mail submitted here was made
/// 7-bit before it was signed).
pub(super) fn seven_bit_body(caps: &EhloResponse<String>, env: &Envelope<'_>) -> Option<Vec<u8>> {
    use crate::smtp::headers::{Entry, entries, header_section};
    if env.body.is_ascii() || caps.has_capability(EXT_8BIT_MIME) {
        return None;
    }
    let signed = entries(header_section(env.body)).any(
        |entry| matches!(entry, Entry::Field(f) if f.name.eq_ignore_ascii_case(b"DKIM-Signature")),
    );
    if signed {
        return None;
    }
    crate::smtp::reencode::reencode_to_7bit(env.body)
}
