//! What a program writes on `postern sendmail`'s standard input (web
//! applications put their users' text in it): the first byte picks how a
//! dot line is read and the second the size limit, the rest is the input.
//! Checks: no panic; what is kept is within the limit, whole CRLF lines, and
//! all of it when the size says so; -t's extraction leaves no Bcc: behind
//! (a second pass changes nothing) and never adds a byte.

use postern::sendmail::input::{Dots, extract_recipients, read_message};

pub fn check(input: &[u8]) {
    let [mode, limit, text @ ..] = input else {
        return;
    };
    let dots = match mode % 3 {
        0 => Dots::EndMessage,
        1 => Dots::AreText,
        _ => Dots::Stuffed,
    };
    let limit = u64::from(*limit) * 16;
    let read = read_message(&mut &text[..], dots, limit).expect("reading a slice cannot fail");
    assert!(read.message.len() as u64 <= limit);
    assert!(read.message.is_empty() || read.message.ends_with(b"\r\n"));
    assert_eq!(read.is_whole(), read.message.len() as u64 == read.size);
    for line in read.message.split_inclusive(|&b| b == b'\n') {
        assert!(line.ends_with(b"\r\n"), "{line:?}");
        assert!(!line[..line.len() - 1].contains(&b'\n'));
    }
    let (_, kept) = extract_recipients(&read.message);
    assert!(kept.len() <= read.message.len());
    assert_eq!(extract_recipients(&kept).1, kept, "a Bcc: is left");
}
