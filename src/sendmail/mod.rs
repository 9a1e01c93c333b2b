//! Local submission for programs (PHP's mail(), cron, scripts calling
//! `/usr/sbin/sendmail`): the server listens on `data_dir/run/submit.sock`,
//! which every local user may connect to, takes the caller's identity from
//! the socket's peer credentials (its uid; never from what it says), allows
//! it the senders of its `[[sendmail]]` entry, and hands the message to the
//! same `prepare` and spool as authenticated SMTP submission (`listen.rs`).
//! `client.rs` is the side `postern sendmail` runs; `input.rs` turns what a
//! program writes on standard input into a message.
//!
//! The protocol, one exchange per connection: the client sends a
//! [`Request`] as one JSON line. For `send`, the server answers
//! [`Answer::Proceed`] (or refuses), the client then sends exactly `size`
//! octets of message, and the server answers once the message is durable
//! ([`Answer::Queued`]) or refused. For `verify`, one answer. Each answer is
//! one JSON line; the connection then closes.

pub mod client;
pub mod input;
mod listen;
mod sender;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::smtp::reply::Reply;
use crate::spool::QueueId;

pub use listen::{SubmitSocket, bind, serve};

/// Where the running server takes local submissions.
pub fn socket_path(config: &Config) -> PathBuf {
    config.run_dir().join("submit.sock")
}

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Queue a message; `size` octets of it follow [`Answer::Proceed`].
    Send(Envelope),
    /// Whether each address would be accepted as a recipient (`-bv`).
    Verify { addresses: Vec<String> },
}

/// A message's envelope, as the command line gave it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// `-f`: the envelope sender (`""` or `"<>"`: the null sender); `None`:
    /// the server picks the user's one address, or the message's From:.
    pub sender: Option<String>,
    /// `-F`: the full name in the From: the server adds to a message that
    /// has none.
    pub full_name: Option<String>,
    pub recipients: Vec<String>,
    /// The message's length in octets (CRLF line ends).
    pub size: u64,
}

/// The server's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// The envelope is accepted: send the message.
    Proceed {},
    /// The message is on stable storage under this queue id.
    Queued { id: QueueId },
    /// Not done: the reply an SMTP client would have had.
    Refused { reply: Reply },
    /// For each address asked about, in order: `None` if it would be
    /// accepted, else the reply that refuses it.
    Verified { results: Vec<Option<Reply>> },
}

/// sendmail's exit codes (sysexits.h). Programs that call sendmail (PHP,
/// cron, mail(1), scripts) read its status this way: 75 means "try again
/// later", others "give up, and say why"; so `postern sendmail` exits with
/// these, not with the CLI's 0/1/2 (success is 0 in both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sysexit {
    /// A bad command line.
    Usage = 64,
    /// A bad message or address.
    DataErr = 65,
    /// A recipient that does not exist.
    NoUser = 67,
    /// Refused for another lasting reason.
    Unavailable = 69,
    /// The server answered something this client does not understand.
    Software = 70,
    /// Try again later: the server is not running, or cannot keep mail now.
    TempFail = 75,
    /// This user may not send, or not as this sender.
    NoPerm = 77,
    /// The configuration cannot be read.
    Config = 78,
}

impl Sysexit {
    /// The status for a refusal, by its reply: a temporary one is worth
    /// another try; a permanent one says what kind of problem it is.
    pub fn of(reply: &Reply) -> Sysexit {
        if reply.code < 500 {
            return Sysexit::TempFail;
        }
        match reply.enhanced.map(|e| (e.1, e.2)) {
            Some((7, _)) => Sysexit::NoPerm,
            Some((1, 1)) => Sysexit::NoUser,
            Some((1 | 3 | 6, _)) => Sysexit::DataErr,
            _ => Sysexit::Unavailable,
        }
    }

    /// The process exit code.
    pub fn code(self) -> u8 {
        self as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_answers_are_one_json_line() {
        let send = Request::Send(Envelope {
            sender: Some("a@b.example".into()),
            full_name: None,
            recipients: vec!["c@d.example".into()],
            size: 12,
        });
        let line = serde_json::to_string(&send).expect("json");
        assert_eq!(
            line,
            r#"{"send":{"sender":"a@b.example","full_name":null,"recipients":["c@d.example"],"size":12}}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&line).expect("parse"), send);
        for bad in [
            r#"{"send":{"recipients":[],"size":1,"user":"root"}}"#,
            r#"{"send":{"recipients":[]}}"#,
            r#"{"sudo":{}}"#,
        ] {
            assert!(serde_json::from_str::<Request>(bad).is_err(), "{bad}");
        }
        let refused = Answer::Refused {
            reply: Reply::new(550, (7, 1), "no"),
        };
        let line = serde_json::to_string(&refused).expect("json");
        assert!(!line.contains('\n'));
        assert_eq!(
            serde_json::from_str::<Answer>(&line).expect("parse"),
            refused
        );
    }

    #[test]
    fn a_refusal_gives_sendmails_exit_status() {
        for (code, enhanced, status) in [
            (451, (3, 0), Sysexit::TempFail),
            (452, (3, 1), Sysexit::TempFail),
            (550, (7, 1), Sysexit::NoPerm),
            (550, (1, 1), Sysexit::NoUser),
            (501, (1, 3), Sysexit::DataErr),
            (552, (3, 4), Sysexit::DataErr),
            (550, (6, 0), Sysexit::DataErr),
            (550, (5, 3), Sysexit::Unavailable),
        ] {
            assert_eq!(Sysexit::of(&Reply::new(code, enhanced, "x")), status);
        }
        assert_eq!(Sysexit::TempFail.code(), 75);
        assert_eq!(Sysexit::NoPerm.code(), 77);
    }
}
