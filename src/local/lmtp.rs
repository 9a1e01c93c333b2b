//! Delivery to hosted mailboxes by LMTP (RFC 2033), when `[local] lmtp` names
//! a server for the recipients' domain (Dovecot's, so that its Sieve filters
//! and quotas apply). One session per delivery: greeting, LHLO, MAIL, a RCPT
//! per recipient, DATA, and then one reply per accepted recipient, which is
//! that recipient's result.
//!
//! mail-send speaks the commands (its `lhlo`, over any stream, so over a Unix
//! socket too) and smtp-proto parses the replies; the outbound client lends
//! its MAIL and RCPT commands and its DATA writer. Only the end is by hand:
//! mail-send's `data()` reads one reply after the body, where LMTP sends one
//! per recipient.

use std::time::Duration;

use mail_send::SmtpClient;
use smtp_proto::Response;
use tokio::net::{TcpStream, UnixStream};

use crate::config::{Config, Lmtp};
use crate::failure::{DeliveryFailure, Stage, render};
use crate::outbound::{
    Envelope, Rcpt, RecipientResult, check_capabilities, greeting, mail_command, rcpt_command,
    write_dot_stuffed,
};
use crate::smtp::Stream;

/// Delivers `env` to its recipients through the LMTP `server`; a result per
/// recipient. A server that cannot be reached defers them all.
pub async fn deliver(server: &Lmtp, config: &Config, env: &Envelope<'_>) -> Vec<RecipientResult> {
    let name = format!("LMTP server {server}");
    let mut results = Vec::with_capacity(env.recipients.len());
    let (mut client, accepted) = match envelope(server, &name, config, env, &mut results).await {
        Ok(Some(session)) => session,
        Ok(None) => return results,
        Err(f) => return every(env.recipients.iter(), &f),
    };
    match body(&mut client, &name, env, accepted.len()).await {
        Ok(replies) => results.extend(accepted.iter().zip(replies).map(|(r, reply)| {
            let result = if reply.code < 400 {
                Ok(format!("{name} said: {}", render(&reply)))
            } else {
                Err(DeliveryFailure::from_reply(&name, Stage::Data, &reply))
            };
            (r.idx, result)
        })),
        // A session cut after the body: nobody knows which recipients have
        // it, so all are tried again (RFC 5321 §6.1, as for SMTP).
        Err(f) => results.extend(every(accepted.iter().copied(), &f)),
    }
    let _ = client.cmd("QUIT\r\n").await;
    results
}

type Session<'e, 'a> = (SmtpClient<Box<dyn Stream>>, Vec<&'e Rcpt<'a>>);

/// Connects and sends the envelope; puts refused recipients in `results`
/// and returns the session with the accepted ones (`None` if none was).
async fn envelope<'e, 'a>(
    server: &Lmtp,
    name: &str,
    config: &Config,
    env: &'e Envelope<'a>,
    results: &mut Vec<RecipientResult>,
) -> Result<Option<Session<'e, 'a>>, DeliveryFailure> {
    let stream = connect(server, config.delivery.connect_timeout)
        .await
        .map_err(|e| DeliveryFailure::local(format!("cannot connect to the {name}: {e}")))?;
    let mut c = SmtpClient {
        stream,
        timeout: config.delivery.timeout,
    };
    greeting(&mut c, name).await?;
    let caps = c
        .lhlo(&config.hostname)
        .await
        .map_err(|e| DeliveryFailure::from_client_error(name, Stage::Ehlo, &e))?;
    check_capabilities(name, &caps, env)?;
    let mail = c
        .cmd(mail_command(env, &caps))
        .await
        .map_err(|e| DeliveryFailure::from_client_error(name, Stage::Mail, &e))?;
    if mail.code >= 400 {
        return Err(DeliveryFailure::from_reply(name, Stage::Mail, &mail));
    }
    let mut accepted = Vec::with_capacity(env.recipients.len());
    for r in &env.recipients {
        let reply = c
            .cmd(rcpt_command(r, &caps))
            .await
            .map_err(|e| DeliveryFailure::from_client_error(name, Stage::Rcpt, &e))?;
        if reply.code < 400 {
            accepted.push(r);
        } else {
            let f = DeliveryFailure::from_reply(name, Stage::Rcpt, &reply);
            results.push((r.idx, Err(f)));
        }
    }
    if accepted.is_empty() {
        let _ = c.cmd("QUIT\r\n").await;
        return Ok(None);
    }
    Ok(Some((c, accepted)))
}

/// DATA and the body; the `n` replies that follow (RFC 2033 §4.2), one per
/// accepted recipient in the order of their RCPTs.
async fn body(
    c: &mut SmtpClient<Box<dyn Stream>>,
    name: &str,
    env: &Envelope<'_>,
    n: usize,
) -> Result<Vec<Response<String>>, DeliveryFailure> {
    let data = c
        .cmd("DATA\r\n")
        .await
        .map_err(|e| DeliveryFailure::from_client_error(name, Stage::Data, &e))?;
    if data.code != 354 {
        return Err(DeliveryFailure::from_reply(name, Stage::Data, &data));
    }
    // As long as the outbound client gives the end of DATA: the server may
    // run a Sieve script per recipient before it answers.
    tokio::time::timeout(c.timeout * 5, async {
        write_dot_stuffed(&mut c.stream, env.body).await?;
        c.read_many(n).await
    })
    .await
    .map_err(|_| mail_send::Error::Timeout)
    .and_then(|replies| replies)
    .map_err(|e| DeliveryFailure::from_client_error(name, Stage::Data, &e))
}

async fn connect(server: &Lmtp, timeout: Duration) -> std::io::Result<Box<dyn Stream>> {
    let connecting = async {
        Ok::<Box<dyn Stream>, std::io::Error>(match server {
            Lmtp::Unix(path) => Box::new(UnixStream::connect(path).await?),
            Lmtp::Tcp(addr) => Box::new(TcpStream::connect(addr).await?),
        })
    };
    tokio::time::timeout(timeout, connecting)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"))?
}

fn every<'r, 'a: 'r>(
    recipients: impl Iterator<Item = &'r Rcpt<'a>>,
    f: &DeliveryFailure,
) -> Vec<RecipientResult> {
    recipients.map(|r| (r.idx, Err(f.clone()))).collect()
}
