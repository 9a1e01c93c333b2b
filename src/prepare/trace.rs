//! The trace headers this server puts on top of a message: Delivered-To: for
//! forwarding aliases, Received:, and for submitted mail a missing Date: or
//! Message-ID: (RFC 6409 §8).

use mail_parser::{DateTime, HeaderName, MessageParser};

use crate::clock::now_unix;
use crate::spool::QueueId;

/// What the Received: header records about how the message arrived.
#[derive(Debug, Clone)]
pub struct Arrival<'a> {
    pub helo: &'a str,
    pub client_ip: std::net::IpAddr,
    pub hostname: &'a str,
    /// RFC 3848: SMTP, ESMTP, ESMTPS, ESMTPA or ESMTPSA.
    pub protocol: &'a str,
    /// TLS version and cipher suite, when the session was encrypted.
    pub tls: Option<(&'a str, &'a str)>,
    pub queue_id: &'a QueueId,
    /// Named in the header only when there is exactly one recipient, so a copy
    /// does not reveal the other (Bcc) recipients.
    pub single_recipient: Option<&'a str>,
    pub submission: bool,
    /// Aliases of ours this message passes through to other servers: each
    /// gets a `Delivered-To:`, so that a copy coming back is recognised.
    pub delivered_to: &'a [String],
    /// The Unix user id of a local program (`postern sendmail`), which
    /// Received: names instead of a client (as Postfix's "from userid").
    pub local_uid: Option<u32>,
}

/// The headers this server puts on top of the message: Received:, and for
/// submitted mail a missing Date: or Message-ID:. `body` need only hold the
/// message's header section (a large body is on disk while this runs).
pub fn trace_headers(arrival: &Arrival<'_>, body: &[u8]) -> Vec<u8> {
    let date = DateTime::from_timestamp(now_unix()).to_rfc822();
    let mut head = String::with_capacity(512);
    // On top, as Postfix's local delivery puts it. The addresses passed
    // Mailbox::parse, which refuses controls and spaces.
    for alias in arrival.delivered_to {
        head.push_str(&format!("Delivered-To: {alias}\r\n"));
    }
    match arrival.local_uid {
        Some(uid) => head.push_str(&format!(
            "Received: by {} (Postern, from userid {uid})\r\n\tid {}",
            arrival.hostname, arrival.queue_id
        )),
        None => {
            head.push_str(&format!(
                "Received: from {} ([{}])\r\n",
                sanitize(arrival.helo),
                arrival.client_ip
            ));
            head.push_str(&format!(
                "\tby {} (Postern) with {} id {}",
                arrival.hostname, arrival.protocol, arrival.queue_id
            ));
        }
    }
    if let Some((version, cipher)) = arrival.tls {
        head.push_str(&format!("\r\n\t(using {version} with cipher {cipher})"));
    }
    if let Some(rcpt) = arrival.single_recipient {
        head.push_str(&format!("\r\n\tfor <{}>", sanitize(rcpt)));
    }
    head.push_str(&format!(";\r\n\t{date}\r\n"));
    if arrival.submission {
        let parsed = MessageParser::default().parse_headers(body);
        let has = |name: HeaderName<'static>| {
            parsed
                .as_ref()
                .is_some_and(|m| m.header_raw(name).is_some())
        };
        if !has(HeaderName::Date) {
            head.push_str(&format!("Date: {date}\r\n"));
        }
        if !has(HeaderName::MessageId) {
            head.push_str(&format!(
                "Message-ID: <{}.{:08x}@{}>\r\n",
                arrival.queue_id,
                rand::random::<u32>(),
                arrival.hostname
            ));
        }
    }
    head.into_bytes()
}

/// Keeps client-chosen text (the HELO name, an address) from breaking the header:
/// no control characters, no parentheses that would end our comment.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() || c == '(' || c == ')' {
                '_'
            } else {
                c
            }
        })
        .take(255)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ListenerRole;
    use crate::policy::sender::Sender;
    use crate::prepare::Origin;

    fn arrival<'a>(id: &'a QueueId, submission: bool) -> Arrival<'a> {
        Arrival {
            helo: "client\r\nX-Evil: 1",
            client_ip: "192.0.2.7".parse().expect("ip"),
            hostname: "mx.example.com",
            protocol: "ESMTPSA",
            tls: Some(("TLSv1.3", "TLS13_AES_256_GCM_SHA384")),
            queue_id: id,
            single_recipient: Some("bob@example.org"),
            submission,
            delivered_to: &[],
            local_uid: None,
        }
    }

    /// The message as it is stored: the new headers, then what came.
    fn finish(arrival: &Arrival<'_>, body: &[u8]) -> Vec<u8> {
        [trace_headers(arrival, body), body.to_vec()].concat()
    }

    fn delivered_to(message: &[u8]) -> Vec<String> {
        crate::smtp::headers::HeaderFacts::scan(crate::smtp::headers::header_section(message))
            .delivered_to
    }

    #[test]
    fn protocol_names_extended_tls_and_auth() {
        let origin = |extended: bool, tls: bool, identity: bool| Origin {
            role: ListenerRole::Submission,
            client_ip: "192.0.2.7".parse().expect("ip"),
            trusted_network: false,
            greeting: Some(("client", extended)),
            tls: tls.then_some(("TLSv1.3", "TLS13_AES_256_GCM_SHA384")),
            identity: identity.then_some(Sender::Account("alice@example.com")),
        };
        for (extended, tls, identity, name) in [
            (false, true, true, "SMTP"),
            (true, false, false, "ESMTP"),
            (true, true, false, "ESMTPS"),
            (true, false, true, "ESMTPA"),
            (true, true, true, "ESMTPSA"),
        ] {
            assert_eq!(origin(extended, tls, identity).protocol(), name);
        }
        let none = Origin {
            greeting: None,
            ..origin(true, false, false)
        };
        assert_eq!(none.protocol(), "SMTP");
    }

    #[test]
    fn received_records_client_protocol_tls_and_id() {
        let id = QueueId::generate();
        let out = String::from_utf8(finish(&arrival(&id, false), b"Subject: x\r\n\r\nhi\r\n"))
            .expect("utf8");
        assert!(out.starts_with("Received: from client__X-Evil: 1 ([192.0.2.7])\r\n\tby mx.example.com (Postern) with ESMTPSA id "), "{out}");
        assert!(
            out.contains(&id.to_string())
                && out.contains("(using TLSv1.3 with cipher TLS13_AES_256_GCM_SHA384)")
        );
        assert!(out.contains("for <bob@example.org>;") && !out.contains("Message-ID"));
        let parsed = MessageParser::default()
            .parse(out.as_bytes())
            .expect("parses");
        assert_eq!(parsed.subject(), Some("x"));
    }

    #[test]
    fn submission_adds_missing_date_and_message_id_only() {
        let id = QueueId::generate();
        let out = String::from_utf8(finish(&arrival(&id, true), b"Subject: x\r\n\r\nhi\r\n"))
            .expect("utf8");
        assert!(out.contains("\r\nDate: ") && out.contains("\r\nMessage-ID: <"));
        let out = String::from_utf8(finish(
            &arrival(&id, true),
            b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <a@b>\r\n\r\nhi\r\n",
        ))
        .expect("utf8");
        assert_eq!(out.matches("Date:").count(), 1);
        assert_eq!(out.matches("Message-ID:").count(), 1);
    }

    /// `postern sendmail`: no client, no greeting, no TLS; the user's id.
    #[test]
    fn received_of_a_local_program_names_its_user_id() {
        let id = QueueId::generate();
        let arrival = Arrival {
            local_uid: Some(33),
            tls: None,
            ..arrival(&id, true)
        };
        let out = String::from_utf8(finish(&arrival, b"Subject: x\r\n\r\nhi\r\n")).expect("utf8");
        assert!(
            out.starts_with(&format!(
                "Received: by mx.example.com (Postern, from userid 33)\r\n\tid {id}\r\n\tfor <bob@example.org>;\r\n\t"
            )),
            "{out}"
        );
        assert!(
            !out.contains("192.0.2.7") && !out.contains("X-Evil"),
            "{out}"
        );
        assert!(out.contains("\r\nMessage-ID: <"), "{out}");
    }

    #[test]
    fn delivered_to_marks_are_written_and_read_back() {
        let id = QueueId::generate();
        let marks = ["sales@example.com".to_string(), "info@example.com".into()];
        let arrival = Arrival {
            delivered_to: &marks,
            ..arrival(&id, false)
        };
        let out = finish(
            &arrival,
            b"Delivered-To: <Old@Example.org>\r\nSubject: x\r\n\r\nhi\r\n",
        );
        assert!(
            out.starts_with(
                b"Delivered-To: sales@example.com\r\nDelivered-To: info@example.com\r\nReceived: "
            ),
            "{}",
            String::from_utf8_lossy(&out)
        );
        assert_eq!(
            delivered_to(&out),
            ["sales@example.com", "info@example.com", "old@example.org"]
        );
        assert!(delivered_to(b"Subject: none\r\n\r\nDelivered-To: x@y\r\n").is_empty());
    }
}
