//! The message that tells a held user, and their domain's postmaster, why
//! their outgoing mail stopped and what each of them can do.

use mail_builder::MessageBuilder;
use mail_builder::headers::raw::Raw;

use crate::spool::NewMessage;

/// Whom the notice of `user`'s hold is for: the user and `postmaster@`
/// their domain.
pub fn addressed_to(user: &str, hostname: &str) -> [String; 2] {
    let domain = user.rsplit_once('@').map_or(hostname, |(_, d)| d);
    [user.to_string(), format!("postmaster@{domain}")]
}

/// The notice of `user`'s hold: from the mail system, to the user and to
/// their postmaster ([`addressed_to`]), delivered to `envelope` (those
/// addresses with their aliases expanded), with the null sender so that
/// nothing bounces back to it.
pub fn hold_notice(
    hostname: &str,
    user: &str,
    reason: &str,
    now: i64,
    envelope: &[String],
) -> NewMessage {
    let [_, postmaster] = addressed_to(user, hostname);
    let since = mail_parser::DateTime::from_timestamp(now).to_rfc822();
    let text = format!(
        "The outgoing mail of {user} is on hold since {since}:\r\n\
         {reason}.\r\n\
         \r\n\
         That is how mail sent with a stolen password looks, so what {user} sends\r\n\
         is accepted and kept, but not delivered.\r\n\
         \r\n\
         If you sent this mail yourself, ask your mail administrator to release it.\r\n\
         If you did not, change your password now: someone else may be using your\r\n\
         account. A new password lets new mail go out again; the mail held meanwhile\r\n\
         stays held until the administrator releases or deletes it.\r\n\
         \r\n\
         For the administrator of {hostname}:\r\n\
         \x20 postern queue list --user {user}    shows the held mail\r\n\
         \x20 postern user release {user}         delivers it and ends the hold\r\n\
         \x20 postern user purge-held {user}      deletes it\r\n\
         \x20 postern user passwd {user}          ends the hold for new mail\r\n"
    );
    let body = MessageBuilder::new()
        .from(("Mail System", format!("MAILER-DAEMON@{hostname}").as_str()))
        .to(vec![user, postmaster.as_str()])
        .subject(format!("Outgoing mail of {user} is on hold"))
        .date(now)
        .message_id(format!(
            "{now}.{:08x}.hold@{hostname}",
            rand::random::<u32>()
        ))
        .header("Auto-Submitted", Raw::new("auto-generated"))
        .text_body(text)
        .write_to_vec()
        .unwrap_or_default();
    let envelope: Vec<&str> = envelope.iter().map(String::as_str).collect();
    NewMessage::generated(String::new(), &envelope, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_parser::MessageParser;

    #[test]
    fn the_notice_names_the_reason_and_the_commands() {
        let to = addressed_to("alice@example.com", "mx.example.net");
        assert_eq!(to, ["alice@example.com", "postmaster@example.com"]);
        let envelope = ["alice@example.com".to_string(), "admin@example.org".into()];
        let m = hold_notice(
            "mx.example.net",
            "alice@example.com",
            "300 first-time recipients in the last hour",
            1_796_000_000,
            &envelope,
        );
        assert_eq!(m.sender, "");
        let rcpts: Vec<&str> = m.recipients.iter().map(|r| r.address.as_str()).collect();
        assert_eq!(rcpts, envelope);
        let parsed = MessageParser::default().parse(&m.body[..]).expect("parse");
        assert_eq!(
            parsed.subject(),
            Some("Outgoing mail of alice@example.com is on hold")
        );
        assert!(parsed.date().is_some() && parsed.message_id().is_some());
        let text = parsed.body_text(0).expect("text");
        assert!(
            text.contains("300 first-time recipients in the last hour."),
            "{text}"
        );
        assert!(
            text.contains("postern user release alice@example.com"),
            "{text}"
        );
    }
}
