//! The message body as it arrives after DATA (dot-stuffed, ended by CRLF.CRLF) or
//! in BDAT chunks (RFC 3030). Written by hand rather than with smtp-proto's
//! DataReceiver because the smuggling defence needs what that reader does not do:
//! only a real `<CRLF>.<CRLF>` ends DATA, bare CR and bare LF are found (and refused
//! or normalised), over-long lines and the size limit are enforced while reading.

/// RFC 5322 §2.1.1: a line of a message is at most 998 octets, CRLF excluded.
/// Longer lines are accepted up to `max_text_line`, but noted: some servers
/// refuse them, so a submitted message gets its text re-encoded.
pub const MAX_MESSAGE_LINE: usize = 998;

/// What to do with a bare CR or LF inside a message (SMTP smuggling, CVE-2023-51764).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BareNewlines {
    /// Refuse the whole message with a 5xx (the default).
    Reject,
    /// Turn a bare LF into CRLF, as Postfix 3.9's `smtpd_forbid_bare_newline = normalize`;
    /// a bare CR is still refused.
    Normalize,
}

/// What was wrong with a body; the whole message is refused with this reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyViolation {
    BareCr,
    BareLf,
    LineTooLong,
    TooBig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line that followed a real CRLF (or the start of the body).
    LineStart,
    /// At the start of a line that followed a bare LF made into CRLF: a dot here
    /// must not end DATA (CVE-2023-51764), so it is plain content.
    LineStartAfterBareLf,
    /// A dot at the start of a line.
    Dot,
    /// A dot and a CR at the start of a line: the end if LF follows.
    DotCr,
    InLine,
    /// A CR inside a line: CRLF if LF follows, else a bare CR.
    Cr,
}

/// Reads one message body from the wire, byte stream in, unstuffed body out.
#[derive(Debug)]
pub struct BodyReader {
    dot_stuffed: bool,
    max_size: u64,
    /// Octets allowed on one line, CRLF excluded.
    max_line: usize,
    bare: BareNewlines,
    state: State,
    line_len: usize,
    /// The current line began with a dot that was stuffing, not content.
    stuffed: bool,
    /// Some line of the message was longer than `MAX_MESSAGE_LINE`.
    long_lines: bool,
    /// Octets not yet taken by `take_held`.
    body: Vec<u8>,
    /// Octets of body produced so far, taken or not.
    total: u64,
    violation: Option<BodyViolation>,
}

impl BodyReader {
    /// A reader for the DATA command's dot-stuffed stream.
    pub fn data(max_size: u64, max_text_line: usize, bare: BareNewlines) -> BodyReader {
        BodyReader::new(true, max_size, max_text_line, bare)
    }

    /// A reader for BDAT chunks: raw octets, no dot-stuffing, no terminator.
    pub fn bdat(max_size: u64, max_text_line: usize, bare: BareNewlines) -> BodyReader {
        BodyReader::new(false, max_size, max_text_line, bare)
    }

    fn new(
        dot_stuffed: bool,
        max_size: u64,
        max_text_line: usize,
        bare: BareNewlines,
    ) -> BodyReader {
        BodyReader {
            dot_stuffed,
            max_size,
            max_line: max_text_line.saturating_sub(2),
            bare,
            state: State::LineStart,
            line_len: 0,
            stuffed: false,
            long_lines: false,
            body: Vec::with_capacity(4096),
            total: 0,
            violation: None,
        }
    }

    /// Octets of body produced so far (after unstuffing), taken or not.
    pub fn len(&self) -> u64 {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Makes room for `octets` more without reallocating: a caller that takes
    /// what is held at a threshold avoids a doubling past it (the untouched
    /// part of the room costs address space, not memory).
    pub fn reserve(&mut self, octets: usize) {
        self.body.reserve(octets);
    }

    /// Octets produced and not yet taken.
    pub fn held(&self) -> usize {
        self.body.len()
    }

    /// Takes the octets produced so far, for a caller that keeps a large
    /// body elsewhere (on disk) as it arrives; `finish` then returns only
    /// what came after. Nothing is held once the body is refused.
    pub fn take_held(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.body)
    }

    /// Whether a line of the message (after unstuffing) was longer than
    /// `MAX_MESSAGE_LINE` octets, found while reading.
    pub fn has_long_lines(&self) -> bool {
        self.long_lines
    }

    /// Consumes input. For DATA, returns `Some(n)` when the terminating
    /// CRLF.CRLF ends at `input[n - 1]`, leaving the rest for the command reader;
    /// `None` when all of `input` was body.
    pub fn feed(&mut self, input: &[u8]) -> Option<usize> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::LineStart if self.dot_stuffed && b == b'.' => {
                    self.state = State::Dot;
                    self.line_len = 1;
                }
                State::Dot if b == b'\r' => self.state = State::DotCr,
                State::Dot => {
                    // RFC 5321 §4.5.2: the leading dot was stuffing; drop it.
                    self.state = State::InLine;
                    self.stuffed = true;
                    continue;
                }
                State::DotCr if b == b'\n' => {
                    self.state = State::LineStart;
                    return Some(i + 1);
                }
                State::DotCr => {
                    self.flag(BodyViolation::BareCr);
                    self.state = State::InLine;
                    continue;
                }
                State::Cr if b == b'\n' => self.end_line(true),
                State::Cr => {
                    self.flag(BodyViolation::BareCr);
                    self.push(b"\r");
                    self.state = State::InLine;
                    continue;
                }
                State::LineStart | State::LineStartAfterBareLf | State::InLine => {
                    self.state = State::InLine;
                    match b {
                        b'\r' => self.state = State::Cr,
                        b'\n' => {
                            if self.bare == BareNewlines::Reject {
                                self.flag(BodyViolation::BareLf);
                            }
                            self.end_line(false);
                        }
                        _ => {
                            // The common case, a run of ordinary octets up to the
                            // next CR or LF, is copied in one piece.
                            let run = memchr::memchr2(b'\r', b'\n', &input[i..])
                                .unwrap_or(input.len() - i);
                            // Whichever limit a byte crosses first is the
                            // reason, so the answer does not depend on how the
                            // stream was cut into reads.
                            let within = self.max_line.saturating_sub(self.line_len).min(run);
                            self.push(&input[i..i + within]);
                            if within < run {
                                self.flag(BodyViolation::LineTooLong);
                            }
                            self.line_len += run;
                            if self.line_len - usize::from(self.stuffed) > MAX_MESSAGE_LINE {
                                self.long_lines = true;
                            }
                            i += run;
                            continue;
                        }
                    }
                }
            }
            i += 1;
        }
        None
    }

    fn end_line(&mut self, real_crlf: bool) {
        self.push(b"\r\n");
        self.line_len = 0;
        self.stuffed = false;
        self.state = if real_crlf {
            State::LineStart
        } else {
            State::LineStartAfterBareLf
        };
    }

    fn push(&mut self, bytes: &[u8]) {
        if self.violation.is_some() {
            // The message is refused anyway; keep reading to the end without
            // holding what would be thrown away.
            return;
        }
        if self.total + bytes.len() as u64 > self.max_size {
            self.flag(BodyViolation::TooBig);
            return;
        }
        self.total += bytes.len() as u64;
        self.body.extend_from_slice(bytes);
    }

    fn flag(&mut self, v: BodyViolation) {
        if self.violation.is_none() {
            self.violation = Some(v);
            self.body = Vec::new();
        }
    }

    /// The finished body (what `take_held` did not take), ending in CRLF,
    /// or why it is refused.
    pub fn finish(mut self) -> Result<Vec<u8>, BodyViolation> {
        if self.state == State::Cr {
            self.flag(BodyViolation::BareCr);
        }
        if let Some(v) = self.violation {
            return Err(v);
        }
        // A line in progress is an unterminated last line: only BDAT ends so
        // (DATA ends after a CRLF).
        let mid_line = !matches!(self.state, State::LineStart | State::LineStartAfterBareLf);
        if self.total > 0 && mid_line {
            // A BDAT body may end without CRLF; a message on disk always ends a
            // line, and the CRLF counts against the size limit too.
            if self.total + 2 > self.max_size {
                return Err(BodyViolation::TooBig);
            }
            self.body.extend_from_slice(b"\r\n");
        }
        Ok(self.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn data(input: &[u8]) -> (Option<usize>, Result<Vec<u8>, BodyViolation>) {
        data_with(input, BareNewlines::Reject)
    }

    fn data_with(
        input: &[u8],
        bare: BareNewlines,
    ) -> (Option<usize>, Result<Vec<u8>, BodyViolation>) {
        let mut r = BodyReader::data(1 << 20, 1000, bare);
        let end = r.feed(input);
        (end, r.finish())
    }

    #[test]
    fn ends_at_crlf_dot_crlf_and_unstuffs() {
        let (end, body) = data(b"Subject: x\r\n\r\n..leading\r\n.\r\nQUIT\r\n");
        assert_eq!(end, Some(28));
        assert_eq!(body.expect("valid"), b"Subject: x\r\n\r\n.leading\r\n");
    }

    #[test]
    fn empty_body_ends_at_once() {
        let (end, body) = data(b".\r\n");
        assert_eq!(end, Some(3));
        assert_eq!(body.expect("valid"), b"");
    }

    #[test]
    fn smuggling_sequences_do_not_end_data() {
        // The CVE-2023-51764 family: each of these would end DATA in a lax reader.
        for bad in [
            &b"a\r\n\n.\r\nMAIL FROM:<x@y>\r\n"[..],
            b"a\n.\nMAIL",
            b"a\r\n.\nMAIL",
            b"a\n.\r\nMAIL",
            b"a\r.\r\nMAIL",
            b"a\r\n.\rMAIL",
        ] {
            let mut r = BodyReader::data(1 << 20, 1000, BareNewlines::Reject);
            assert_eq!(r.feed(bad), None, "{:?}", String::from_utf8_lossy(bad));
            let mut n = BodyReader::data(1 << 20, 1000, BareNewlines::Normalize);
            assert_eq!(
                n.feed(bad),
                None,
                "normalize {:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn bare_newlines_are_refused_or_normalised() {
        assert_eq!(data(b"a\nb\r\n.\r\n").1, Err(BodyViolation::BareLf));
        assert_eq!(data(b"a\rb\r\n.\r\n").1, Err(BodyViolation::BareCr));
        let (end, body) = data_with(b"a\nb\r\n.\r\n", BareNewlines::Normalize);
        assert!(end.is_some());
        assert_eq!(body.expect("normalised"), b"a\r\nb\r\n");
        assert_eq!(
            data_with(b"a\rb\r\n.\r\n", BareNewlines::Normalize).1,
            Err(BodyViolation::BareCr)
        );
    }

    #[test]
    fn line_length_is_checked_at_the_limit() {
        let ok = [vec![b'x'; 998], b"\r\n.\r\n".to_vec()].concat();
        assert!(data(&ok).1.is_ok());
        let long = [vec![b'x'; 999], b"\r\n.\r\n".to_vec()].concat();
        assert_eq!(data(&long).1, Err(BodyViolation::LineTooLong));
        // A stuffed dot counts on the wire line, as the peer will send it again.
        let dotted = [b".".to_vec(), vec![b'x'; 998], b"\r\n.\r\n".to_vec()].concat();
        assert_eq!(data(&dotted).1, Err(BodyViolation::LineTooLong));
    }

    #[test]
    fn long_lines_are_noted_at_998_octets() {
        let read = |body: &[u8], dot_stuffed: bool| {
            let mut r = if dot_stuffed {
                BodyReader::data(1 << 20, 65536, BareNewlines::Reject)
            } else {
                BodyReader::bdat(1 << 20, 65536, BareNewlines::Reject)
            };
            r.feed(body);
            (r.has_long_lines(), r.finish().is_ok())
        };
        let line = |n: usize| [vec![b'x'; n], b"\r\n".to_vec()].concat();
        assert_eq!(
            read(&[line(998), b".\r\n".to_vec()].concat(), true),
            (false, true)
        );
        assert_eq!(
            read(&[line(999), b".\r\n".to_vec()].concat(), true),
            (true, true)
        );
        // The stuffing dot is not part of the message's line.
        let dotted = [b".".to_vec(), line(998), b".\r\n".to_vec()].concat();
        assert_eq!(read(&dotted, true), (false, true));
        assert_eq!(
            read(&[b"a\r\n".to_vec(), line(999), line(3)].concat(), false),
            (true, true)
        );
        // Split across chunks, a line still counts whole.
        let mut r = BodyReader::bdat(1 << 20, 65536, BareNewlines::Reject);
        r.feed(&[b'x'; 500]);
        r.feed(&[b'x'; 499]);
        assert!(r.has_long_lines());
    }

    #[test]
    fn the_first_limit_crossed_is_the_reason_however_the_stream_is_cut() {
        // 10 octets of body allowed, lines of 8 (10 with the CRLF).
        for (input, reason) in [
            (&b"123456789\r\n.\r\n"[..], BodyViolation::LineTooLong),
            (b"12345678901\r\n.\r\n", BodyViolation::LineTooLong),
            // The 11th octet of body comes before the 9th of the line.
            (b"1234\r\n123456789\r\n.\r\n", BodyViolation::TooBig),
            (b"1234567\r\n1234\r\n.\r\n", BodyViolation::TooBig),
        ] {
            for cut in 0..input.len() {
                let mut r = BodyReader::data(10, 10, BareNewlines::Reject);
                assert_eq!(r.feed(&input[..cut]), None);
                assert!(r.feed(&input[cut..]).is_some());
                assert_eq!(
                    r.finish(),
                    Err(reason),
                    "{:?} cut at {cut}",
                    String::from_utf8_lossy(input)
                );
            }
        }
    }

    #[test]
    fn size_is_checked_at_the_limit() {
        let mut r = BodyReader::data(10, 1000, BareNewlines::Reject);
        assert!(r.feed(b"12345678\r\n.\r\n").is_some());
        assert_eq!(r.finish().map(|b| b.len()), Ok(10));
        let mut r = BodyReader::data(10, 1000, BareNewlines::Reject);
        assert!(r.feed(b"123456789\r\n.\r\n").is_some());
        assert_eq!(r.finish(), Err(BodyViolation::TooBig));
    }

    #[test]
    fn bdat_is_raw_and_spans_chunks() {
        let mut r = BodyReader::bdat(1 << 20, 1000, BareNewlines::Reject);
        assert_eq!(r.feed(b".x\r"), None);
        assert_eq!(r.feed(b"\n.\r\n"), None);
        assert_eq!(r.finish().expect("valid"), b".x\r\n.\r\n");
        let mut r = BodyReader::bdat(1 << 20, 1000, BareNewlines::Reject);
        r.feed(b"x\r");
        assert_eq!(r.finish(), Err(BodyViolation::BareCr));
        // The CRLF that ends an unterminated BDAT body counts against the limit.
        let mut r = BodyReader::bdat(10, 1000, BareNewlines::Reject);
        r.feed(b"12345678");
        assert_eq!(r.finish().map(|b| b.len()), Ok(10));
        let mut r = BodyReader::bdat(10, 1000, BareNewlines::Reject);
        r.feed(b"123456789");
        assert_eq!(r.finish(), Err(BodyViolation::TooBig));
    }

    proptest! {
        #[test]
        fn split_feeding_matches_whole_feeding(body in proptest::collection::vec(any::<u8>(), 0..300), cut in 0usize..300) {
            let input = [body.clone(), b"\r\n.\r\n".to_vec()].concat();
            let cut = cut.min(input.len());
            let mut whole = BodyReader::data(1 << 20, 1000, BareNewlines::Reject);
            let w_end = whole.feed(&input);
            let mut split = BodyReader::data(1 << 20, 1000, BareNewlines::Reject);
            let s_end = split.feed(&input[..cut]).or_else(|| split.feed(&input[cut..]).map(|n| n + cut));
            prop_assert_eq!(w_end, s_end);
            prop_assert_eq!(whole.finish(), split.finish());
        }

        #[test]
        fn taking_what_is_held_on_the_way_loses_nothing(body in proptest::collection::vec(any::<u8>(), 0..300), cuts in proptest::collection::vec(0usize..300, 0..4), bdat in any::<bool>()) {
            let input = if bdat { body.clone() } else { [body.clone(), b"\r\n.\r\n".to_vec()].concat() };
            let new = || if bdat {
                BodyReader::bdat(1 << 20, 1000, BareNewlines::Normalize)
            } else {
                BodyReader::data(1 << 20, 1000, BareNewlines::Normalize)
            };
            let mut whole = new();
            whole.feed(&input);
            let mut taken = new();
            let mut got = Vec::new();
            let mut at = 0;
            let mut cuts = cuts;
            cuts.sort_unstable();
            for cut in cuts.into_iter().map(|c| c.min(input.len())).chain([input.len()]) {
                if cut >= at && taken.feed(&input[at..cut]).is_none() {
                    got.extend(taken.take_held());
                }
                at = at.max(cut);
            }
            prop_assert_eq!(taken.len(), whole.len());
            match (whole.finish(), taken.finish()) {
                (Ok(w), Ok(rest)) => prop_assert_eq!(w, [got, rest].concat()),
                (w, t) => prop_assert_eq!(w.err(), t.err()),
            }
        }

        #[test]
        fn accepted_bodies_have_no_bare_newlines(body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut r = BodyReader::bdat(1 << 20, 1000, BareNewlines::Normalize);
            r.feed(&body);
            if let Ok(out) = r.finish() {
                for (i, &b) in out.iter().enumerate() {
                    if b == b'\n' { prop_assert!(i > 0 && out[i - 1] == b'\r'); }
                    if b == b'\r' { prop_assert_eq!(out.get(i + 1), Some(&b'\n')); }
                }
            }
        }
    }
}
