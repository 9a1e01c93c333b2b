//! The DATA/BDAT body reader. The first 4 bytes choose the reader (bit 0: BDAT,
//! bit 1: normalise bare LF), the size limit, the line limit and where to split
//! the rest, which is the stream. Checks: feeding in two pieces is the same as
//! feeding whole; DATA ends exactly after the first CRLF.CRLF (or a leading
//! ".\r\n"), BDAT never ends; an accepted body has no bare CR or LF, keeps
//! to the size limit, and has a line over 998 octets exactly when the reader
//! said so.

use postern::smtp::data::{BareNewlines, BodyReader, MAX_MESSAGE_LINE};

pub fn check(input: &[u8]) {
    let Some((&[mode, size, line, cut], stream)) = input.split_first_chunk::<4>() else {
        return;
    };
    let bdat = mode & 1 != 0;
    let bare = match mode & 2 {
        0 => BareNewlines::Reject,
        _ => BareNewlines::Normalize,
    };
    let (max_size, max_line) = (u64::from(size) * 16, usize::from(line) * 4);
    let cut = usize::from(cut) * stream.len() / 255;
    let reader = || match bdat {
        true => BodyReader::bdat(max_size, max_line, bare),
        false => BodyReader::data(max_size, max_line, bare),
    };

    let mut whole = reader();
    let end = whole.feed(stream);
    let long_lines = whole.has_long_lines();
    let body = whole.finish();
    let mut split = reader();
    let split_end = split
        .feed(&stream[..cut])
        .or_else(|| split.feed(&stream[cut..]).map(|n| n + cut));
    assert_eq!((end, &body), (split_end, &split.finish()), "split at {cut}");

    let first_end = match stream.starts_with(b".\r\n") {
        true => Some(3),
        false => stream
            .windows(5)
            .position(|w| w == b"\r\n.\r\n")
            .map(|p| p + 5),
    };
    assert_eq!(end, if bdat { None } else { first_end });

    if let Ok(body) = body {
        for (i, &b) in body.iter().enumerate() {
            assert!(
                b != b'\n' || (i > 0 && body[i - 1] == b'\r'),
                "bare LF at {i}"
            );
            assert!(
                b != b'\r' || body.get(i + 1) == Some(&b'\n'),
                "bare CR at {i}"
            );
        }
        // The CRLF finish() may add to end a BDAT body's last line counts too.
        assert!(body.len() as u64 <= max_size, "{} > {max_size}", body.len());
        let longest = body
            .split(|&b| b == b'\n')
            .map(|l| l.len().saturating_sub(1))
            .max();
        assert_eq!(long_lines, longest.unwrap_or(0) > MAX_MESSAGE_LINE);
    }
}
