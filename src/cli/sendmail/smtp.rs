//! `sendmail -bs`: SMTP on standard input and output, for programs that
//! speak SMTP to a local sendmail. A minimal server: EHLO/HELO, MAIL, RCPT,
//! DATA, RSET, NOOP, VRFY, QUIT. Each RCPT is checked by the running server
//! (as `-bv` is), each message sent to it as `-bm` sends one; its refusals
//! come back as the SMTP replies they are. The caller is already who it is
//! (its Unix user), so there is no AUTH and no STARTTLS.

use std::io::{BufRead, Read, Write};

use smtp_proto::Request;
use smtp_proto::request::receiver::RequestReceiver;

use crate::config::Config;
use crate::sendmail::input::{Dots, read_message};
use crate::sendmail::{Answer, Envelope, client};
use crate::smtp::reply::Reply;

/// RFC 5321 §4.5.3.1.4 allows 512; more is read and refused.
const MAX_COMMAND: u64 = 4096;

/// The transaction between MAIL and the end of DATA.
struct Transaction {
    sender: String,
    recipients: Vec<String>,
}

pub async fn serve(config: &Config, full_name: Option<&str>) -> anyhow::Result<()> {
    let mut input = std::io::stdin().lock();
    let mut out = std::io::stdout().lock();
    let host = &config.hostname;
    let mut say = |reply: Reply| -> anyhow::Result<()> {
        let mut text = Vec::new();
        reply.write_to(&mut text);
        out.write_all(&text)?;
        out.flush()?;
        Ok(())
    };
    say(Reply::plain(
        220,
        format!("{host} ESMTP Postern (sendmail -bs)"),
    ))?;
    let mut tx: Option<Transaction> = None;
    loop {
        let mut line = Vec::new();
        (&mut input)
            .take(MAX_COMMAND)
            .read_until(b'\n', &mut line)?;
        if line.is_empty() {
            return Ok(());
        }
        if !line.ends_with(b"\n") {
            // Too long: the rest of it is not a command either.
            input.skip_until(b'\n')?;
            say(Reply::line_too_long())?;
            continue;
        }
        let request = RequestReceiver::default()
            .ingest(&mut line.iter())
            .map(Request::into_owned);
        let reply = match request {
            Ok(Request::Ehlo { .. }) => {
                tx = None;
                let size = config.limits.max_message_size;
                Reply::plain(250, format!("{host}\n8BITMIME\nSMTPUTF8\nSIZE {size}"))
            }
            Ok(Request::Helo { .. }) => {
                tx = None;
                Reply::plain(250, host.clone())
            }
            Ok(Request::Mail { from }) if tx.is_none() => {
                tx = Some(Transaction {
                    sender: from.address,
                    recipients: Vec::new(),
                });
                Reply::new(250, (1, 0), "Ok")
            }
            Ok(Request::Mail { .. }) => Reply::bad_sequence("Error: nested MAIL command"),
            Ok(Request::Rcpt { to }) => match &mut tx {
                None => Reply::bad_sequence("Error: need MAIL command"),
                Some(tx) => match recipient(config, &to.address).await {
                    Ok(()) => {
                        tx.recipients.push(to.address);
                        Reply::new(250, (1, 5), "Ok")
                    }
                    Err(reply) => reply,
                },
            },
            Ok(Request::Data) => match tx.take() {
                Some(t) if !t.recipients.is_empty() => {
                    say(Reply::plain(354, "End data with <CR><LF>.<CR><LF>"))?;
                    let message =
                        read_message(&mut input, Dots::Stuffed, config.limits.max_message_size)?;
                    let envelope = Envelope {
                        sender: Some(t.sender),
                        full_name: full_name.map(str::to_string),
                        recipients: t.recipients,
                        size: message.size,
                    };
                    queued(client::send(config, envelope, &message.message).await)
                }
                Some(_) => Reply::new(554, (5, 1), "Error: no valid recipients"),
                None => Reply::bad_sequence("Error: need MAIL command"),
            },
            Ok(Request::Rset) => {
                tx = None;
                Reply::ok()
            }
            Ok(Request::Noop { .. }) => Reply::ok(),
            Ok(Request::Vrfy { .. }) => {
                Reply::new(252, (5, 0), "Cannot VRFY user, but will accept message")
            }
            Ok(Request::Quit) => {
                say(Reply::new(221, (0, 0), "Bye"))?;
                return Ok(());
            }
            Ok(_) => Reply::new(502, (5, 5), "Error: command not implemented"),
            Err(_) => Reply::syntax("Error: syntax error"),
        };
        say(reply)?;
    }
}

/// A RCPT, checked by the server as `-bv` would be.
async fn recipient(config: &Config, address: &str) -> Result<(), Reply> {
    match client::verify(config, vec![address.to_string()]).await {
        Ok(Answer::Verified { results }) => match results.into_iter().next() {
            Some(None) => Ok(()),
            Some(Some(reply)) => Err(reply),
            None => Err(Reply::local_error()),
        },
        Ok(Answer::Refused { reply }) => Err(reply),
        Ok(_) => Err(Reply::local_error()),
        Err(e) => Err(unavailable(&e.to_string())),
    }
}

/// The reply to the end of DATA.
fn queued(sent: Result<Answer, client::ClientError>) -> Reply {
    match sent {
        Ok(Answer::Queued { id }) => Reply::new(250, (0, 0), format!("Ok: queued as {id}")),
        Ok(Answer::Refused { reply }) => reply,
        Ok(_) => Reply::local_error(),
        Err(e) => unavailable(&e.to_string()),
    }
}

/// The server could not be asked: try again later.
fn unavailable(why: &str) -> Reply {
    Reply::new(451, (3, 0), format!("Error: {why}"))
}
