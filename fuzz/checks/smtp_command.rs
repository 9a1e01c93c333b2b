//! One SMTP command line, as the session reads it from a client: smtp-proto's
//! parser, then what the session parses further: the MAIL FROM / RCPT TO address
//! (`Mailbox::parse`) and the EHLO name (`portecho::token_of_ehlo`). No panic.

use postern::portecho::token_of_ehlo;
use postern::smtp::address::Mailbox;
use smtp_proto::Request;
use smtp_proto::request::receiver::RequestReceiver;

pub fn check(line: &[u8]) {
    let mut receiver = RequestReceiver::default();
    let address = match receiver.ingest(&mut line.iter()) {
        Ok(Request::Mail { from }) => from.address,
        Ok(Request::Rcpt { to }) => to.address,
        Ok(Request::Ehlo { host }) => {
            if let Some(token) = token_of_ehlo(&host) {
                assert_eq!(token.len(), 32);
            }
            return;
        }
        _ => return,
    };
    let _ = Mailbox::parse(&address, false);
    let _ = Mailbox::parse(&address, true);
}
