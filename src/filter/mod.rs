//! The spam and virus filter: rspamd, through its HTTP protocol (`POST
//! /checkv2` with the envelope in request headers, RFC-less but stable since
//! rspamd 1.6). Its action decides: reject (550 with rspamd's message),
//! soft reject and greylist (451), add header and rewrite subject (the
//! message goes to the Junk folder, marked, with the new Subject:), no
//! action. When rspamd does not answer, `[filter] rspamd_fail` decides.
//! `dnsbl`: the block lists asked about clients at connect.

pub mod dnsbl;

use std::net::IpAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use crate::config::Rspamd;
use crate::smtp::reply::Reply;

/// What rspamd's verdict means for the message.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// Take it, with these fields on top.
    Accept(Vec<u8>),
    /// Take it into the Junk folder, with these fields on top and the
    /// Subject: rspamd rewrote, if it did.
    Junk {
        fields: Vec<u8>,
        subject: Option<String>,
    },
    Refuse(Reply),
}

/// What rspamd is told besides the message.
pub struct Envelope<'a> {
    pub client_ip: IpAddr,
    pub helo: &'a str,
    pub sender: &'a str,
    pub recipients: &'a [String],
    /// The authenticated user, for submitted mail.
    pub user: Option<&'a str>,
}

#[derive(Debug, serde::Deserialize)]
struct Answer {
    action: String,
    #[serde(default)]
    score: f64,
    #[serde(default)]
    required_score: f64,
    #[serde(default)]
    messages: std::collections::HashMap<String, String>,
    subject: Option<String>,
}

#[derive(Debug, thiserror::Error)]
enum ScanError {
    #[error("cannot reach rspamd at {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("rspamd did not answer within {0} s")]
    Timeout(u64),
    #[error("rspamd: {0}")]
    Http(String),
    #[error("rspamd answered {0}")]
    Status(u16),
    #[error("rspamd's answer is not what /checkv2 gives: {0}")]
    Answer(String),
}

/// Scans `message` with rspamd and says what to do with it.
pub async fn scan(config: &Rspamd, envelope: &Envelope<'_>, message: &[u8]) -> Verdict {
    let asked = tokio::time::timeout(config.timeout, ask(config, envelope, message)).await;
    let answer = match asked {
        Ok(Ok(answer)) => answer,
        Ok(Err(error)) => return unanswered(config, &error),
        Err(_) => return unanswered(config, &ScanError::Timeout(config.timeout.as_secs())),
    };
    // rspamd's words go into a header field and a reply: printable ASCII
    // only, whatever a custom action or message holds.
    let answer = Answer {
        action: answer
            .action
            .chars()
            .filter(|c| c.is_ascii_lowercase() || *c == ' ')
            .take(40)
            .collect(),
        ..answer
    };
    tracing::info!(
        event = "scanned",
        action = %answer.action,
        score = answer.score,
        required = answer.required_score,
    );
    let said = |default: &str| {
        let text = answer
            .messages
            .get("smtp_message")
            .map_or(default, String::as_str);
        // One line of printable ASCII: it goes into an SMTP reply.
        text.chars()
            .map(|c| if c.is_ascii_graphic() { c } else { ' ' })
            .take(200)
            .collect::<String>()
    };
    let status = format!(
        "X-Spam-Status: {}, score={:.2} required={:.2} action={}\r\n",
        if answer.action == "no action" {
            "No"
        } else {
            "Yes"
        },
        answer.score,
        answer.required_score,
        answer.action
    );
    match answer.action.as_str() {
        "reject" => Verdict::Refuse(Reply::new(550, (7, 1), said("Spam message rejected"))),
        "soft reject" => Verdict::Refuse(Reply::new(451, (7, 1), said("Try again later"))),
        "greylist" => Verdict::Refuse(Reply::new(
            451,
            (7, 1),
            said("Greylisted, please try again later"),
        )),
        "add header" | "rewrite subject" => Verdict::Junk {
            fields: status.into_bytes(),
            subject: answer
                .subject
                .filter(|_| answer.action == "rewrite subject"),
        },
        _ => Verdict::Accept(status.into_bytes()),
    }
}

fn unanswered(config: &Rspamd, error: &ScanError) -> Verdict {
    tracing::warn!(event = "rspamd_unavailable", %error, fail_open = config.fail_open);
    if config.fail_open {
        Verdict::Accept(Vec::new())
    } else {
        Verdict::Refuse(Reply::new(
            451,
            (7, 1),
            "The spam filter is not available; try again later",
        ))
    }
}

async fn ask(
    config: &Rspamd,
    envelope: &Envelope<'_>,
    message: &[u8],
) -> Result<Answer, ScanError> {
    let stream = tokio::net::TcpStream::connect(&config.addr)
        .await
        .map_err(|e| ScanError::Connect(config.addr.clone(), e))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ScanError::Http(e.to_string()))?;
    tokio::spawn(connection);
    let mut request = hyper::Request::post("/checkv2")
        .header("Host", config.addr.as_str())
        .header("IP", envelope.client_ip.to_string())
        .header("Helo", header_text(envelope.helo))
        .header("From", header_text(envelope.sender));
    for rcpt in envelope.recipients {
        request = request.header("Rcpt", header_text(rcpt));
    }
    if let Some(user) = envelope.user {
        request = request.header("User", header_text(user));
    }
    let request = request
        .body(Full::new(Bytes::copy_from_slice(message)))
        .map_err(|e| ScanError::Http(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| ScanError::Http(e.to_string()))?;
    if !response.status().is_success() {
        return Err(ScanError::Status(response.status().as_u16()));
    }
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| ScanError::Http(e.to_string()))?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| ScanError::Answer(e.to_string()))
}

/// Client-chosen text made safe for an HTTP header value.
fn header_text(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(998).collect()
}

/// `message` with its Subject: replaced by `subject` (RFC 2047 encoded when
/// it is not ASCII), or given one.
pub fn with_subject(message: &[u8], subject: &str) -> Vec<u8> {
    use crate::smtp::headers::{Entry, entries, header_section};
    use base64::Engine;
    // Short enough for one header line, and encoded words of at most 75
    // characters (RFC 2047 §2), folded between them.
    let subject: String = subject
        .chars()
        .filter(|c| !c.is_control())
        .take(400)
        .collect();
    let value = if subject.is_ascii() {
        subject
    } else {
        let mut words = Vec::new();
        let mut chunk = String::new();
        for c in subject.chars() {
            if chunk.len() + c.len_utf8() > 45 {
                words.push(std::mem::take(&mut chunk));
            }
            chunk.push(c);
        }
        words.push(chunk);
        words
            .iter()
            .map(|w| {
                format!(
                    "=?utf-8?b?{}?=",
                    base64::engine::general_purpose::STANDARD.encode(w.as_bytes())
                )
            })
            .collect::<Vec<_>>()
            .join("\r\n ")
    };
    let field = format!("Subject: {value}\r\n");
    let old = entries(header_section(message)).find_map(|entry| match entry {
        Entry::Field(f) if f.name.eq_ignore_ascii_case(b"Subject") => Some(f.raw),
        _ => None,
    });
    match old {
        Some(range) => [
            &message[..range.start],
            field.as_bytes(),
            &message[range.end..],
        ]
        .concat(),
        None => [field.as_bytes(), message].concat(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_subject_is_replaced_or_added_and_encoded_when_not_ascii() {
        let message = b"From: a@b.example\r\nSubject: old\r\n folded\r\n\r\nSubject: body\r\n";
        assert_eq!(
            with_subject(message, "*** SPAM *** old folded"),
            b"From: a@b.example\r\nSubject: *** SPAM *** old folded\r\n\r\nSubject: body\r\n"
        );
        assert_eq!(
            with_subject(b"From: a@b.example\r\n\r\nhi\r\n", "[SPAM] \u{e9}t\u{e9}"),
            b"Subject: =?utf-8?b?W1NQQU1dIMOpdMOp?=\r\nFrom: a@b.example\r\n\r\nhi\r\n"
        );
    }
}
