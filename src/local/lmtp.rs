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
        // DATA refused: everyone's result. A session cut after the body:
        // nobody knows which recipients have it, so all are tried again
        // (RFC 5321 §6.1, as for SMTP).
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

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::UnixListener;

    use super::*;
    use crate::failure::{FailureKind, Severity};

    /// An LMTP server that refuses `bob` at RCPT and, after the body, answers
    /// the two others in one write: saved, then over quota.
    async fn lmtp_server(socket: &std::path::Path) -> tokio::task::JoinHandle<String> {
        let listener = UnixListener::bind(socket).expect("bind");
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            write.write_all(b"220 fake LMTP\r\n").await.expect("write");
            let mut seen = String::new();
            let mut in_body = false;
            while let Ok(Some(line)) = lines.next_line().await {
                seen.push_str(&line);
                seen.push('\n');
                let reply: &[u8] = match line.as_str() {
                    "." if in_body => {
                        in_body = false;
                        b"250 2.0.0 <a@example.com> saved\r\n452 4.2.2 <c@example.com> over quota\r\n"
                    }
                    _ if in_body => continue,
                    l if l.starts_with("LHLO") => b"250-fake\r\n250 PIPELINING\r\n",
                    l if l.contains("bob@") => b"550 5.1.1 <bob@example.com> no such user\r\n",
                    "DATA" => {
                        in_body = true;
                        b"354 go ahead\r\n"
                    }
                    "QUIT" => b"221 bye\r\n",
                    _ => b"250 ok\r\n",
                };
                write.write_all(reply).await.expect("write");
            }
            seen
        })
    }

    fn envelope<'a>(recipients: &[&'a str]) -> Envelope<'a> {
        Envelope {
            sender: "s@remote.example",
            recipients: recipients
                .iter()
                .zip(0..)
                .map(|(address, idx)| Rcpt {
                    idx,
                    address,
                    orcpt: None,
                    notify: None,
                })
                .collect(),
            body: b"Subject: x\r\n\r\n.dot\r\n",
            smtputf8: false,
            requiretls: false,
            ret: None,
            envid: None,
        }
    }

    /// RFC 2033 §4.2: after the body, each accepted recipient has its own
    /// reply, and that reply is its result; a refused RCPT is settled at once.
    #[tokio::test]
    async fn each_recipient_gets_its_own_reply_after_data() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("lmtp");
        let server = lmtp_server(&socket).await;
        let mut config = Config::builtin();
        config.hostname = "mx.example".into();
        let env = envelope(&["a@example.com", "bob@example.com", "c@example.com"]);
        let mut results = deliver(&Lmtp::Unix(socket.clone()), &config, &env).await;
        results.sort_by_key(|(idx, _)| *idx);
        let seen = server.await.expect("server");
        assert!(
            seen.starts_with("LHLO mx.example\nMAIL FROM:<s@remote.example>\nRCPT TO:<a@example.com>\nRCPT TO:<bob@example.com>\nRCPT TO:<c@example.com>\nDATA\nSubject: x\n\n..dot\n.\nQUIT"),
            "{seen}"
        );
        let [(0, Ok(saved)), (1, Err(bob)), (2, Err(full))] = &results[..] else {
            panic!("{results:?}");
        };
        assert_eq!(
            saved,
            &format!(
                "LMTP server unix:{} said: 250 2.0.0 <a@example.com> saved",
                socket.display()
            )
        );
        assert_eq!(
            (bob.severity, bob.kind),
            (Severity::Permanent, FailureKind::NoSuchMailbox)
        );
        assert_eq!(
            (full.severity, full.kind),
            (Severity::Transient, FailureKind::MailboxFull)
        );
        assert!(
            full.text.contains("said after DATA: 452 4.2.2"),
            "{}",
            full.text
        );
    }

    #[tokio::test]
    async fn a_server_that_is_not_there_defers_everyone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = Lmtp::Unix(dir.path().join("no-socket"));
        let results = deliver(
            &missing,
            &Config::builtin(),
            &envelope(&["a@x.example", "b@x.example"]),
        )
        .await;
        assert_eq!(results.len(), 2);
        for (_, r) in results {
            let f = r.expect_err("not delivered");
            assert_eq!(
                (f.severity, f.kind),
                (Severity::Transient, FailureKind::Local)
            );
            assert!(
                f.text
                    .starts_with("cannot connect to the LMTP server unix:"),
                "{}",
                f.text
            );
        }
    }
}
