//! What a probed server says to `postern check`, which talks to whatever
//! answers: each line through `wire::parse_line` as `Conn::read_reply` splits
//! them, then the reply through the EHLO, port-echo and queue-id parsers.
//! Checks: no panic; a parsed line keeps its code digits; a queue id is short
//! printable text.

use postern::check::wire::{Reply, parse_echo, parse_ehlo, parse_line, queue_id};

pub fn check(input: &[u8]) {
    let mut reply = Reply {
        code: 0,
        lines: Vec::new(),
    };
    for raw in input.split(|&b| b == b'\n') {
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        let Some((code, _more, text)) = parse_line(line) else {
            continue;
        };
        assert_eq!(line.get(..3), Some(format!("{code:03}").as_bytes()));
        assert_eq!(text.trim(), text);
        reply.code = code;
        reply.lines.push(text);
    }
    let _ = (reply.summary(), reply.first_word(), parse_ehlo(&reply));
    let _ = parse_echo(&reply);
    if let Some(id) = queue_id(&reply) {
        assert!(!id.is_empty() && !id.ends_with('.'));
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        );
    }
}
