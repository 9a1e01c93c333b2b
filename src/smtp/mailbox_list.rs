//! The mailboxes of a From:-like header field (RFC 5322 §3.4 mailbox-list),
//! read strictly: a value that mail readers could take in two ways is an error
//! here, not a guess. Display names and comments are kept, encoded words
//! (RFC 2047) decoded wherever they appear, because that is what readers show.

use mail_parser::parsers::MessageStream;

/// A mailbox named in a header field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderMailbox {
    /// `local@domain` as written, without comments or folding whitespace; a
    /// quoted local part keeps its quotes.
    pub address: String,
    /// What a reader may show beside the address: the display name and any
    /// comments, each as written and, when it differs, decoded.
    pub shown: Vec<String>,
}

/// Why a header field's value gives no mailbox that can be trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MailboxListError {
    #[error("it is not valid UTF-8")]
    NotUtf8,
    #[error("it contains a control character")]
    ControlCharacter,
    #[error("it names no address")]
    Empty,
    #[error("it uses group syntax, which names no sender")]
    Group,
    #[error("it cannot be parsed ({0})")]
    Syntax(&'static str),
    /// `bob@x <alice@x>`: not RFC 5322, and readers show it in different
    /// ways; the name is kept to say what it looked like.
    #[error("a display name has an @ outside quotes")]
    UnquotedAt(String),
}

/// No sender field of a real message comes near this; a longer one is not
/// read, so that a hostile one costs no more than its own size.
pub const MAX_VALUE: usize = 8192;

/// Parses an unfolded field value (the bytes after the colon).
pub fn parse(value: &[u8]) -> Result<Vec<HeaderMailbox>, MailboxListError> {
    if value.len() > MAX_VALUE {
        return Err(MailboxListError::Syntax("longer than 8192 octets"));
    }
    let value = std::str::from_utf8(value).map_err(|_| MailboxListError::NotUtf8)?;
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err(MailboxListError::ControlCharacter);
    }
    let mut p = Parser {
        tokens: tokenize(value)?,
        pos: 0,
        comments: Vec::new(),
    };
    let mut out = Vec::new();
    loop {
        match p.peek() {
            None => break,
            // obs-mbox-list (RFC 5322 §4.4): empty elements between commas.
            Some(Token::Special(',')) => p.pos += 1,
            Some(_) => {
                out.push(p.mailbox()?);
                match p.next() {
                    None | Some(Token::Special(',')) => {}
                    Some(_) => return Err(MailboxListError::Syntax("text after an address")),
                }
            }
        }
    }
    if out.is_empty() {
        return Err(MailboxListError::Empty);
    }
    Ok(out)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Atom(String),
    Quoted(String),
    DomainLiteral(String),
    Comment(String),
    Special(char),
    Space,
}

/// RFC 5322 §3.2.3 atext, with any non-ASCII character (RFC 6532 §3.2).
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii()
}

fn tokenize(value: &str) -> Result<Vec<Token>, MailboxListError> {
    let mut tokens = Vec::new();
    let mut chars = value.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        match c {
            ' ' | '\t' => {
                if tokens.last() != Some(&Token::Space) {
                    tokens.push(Token::Space);
                }
            }
            '"' => tokens.push(Token::Quoted(delimited(&mut chars, '"', false)?)),
            '(' => tokens.push(Token::Comment(delimited(&mut chars, ')', true)?)),
            '[' => tokens.push(Token::DomainLiteral(delimited(&mut chars, ']', false)?)),
            '<' | '>' | '@' | ',' | ';' | ':' | '.' => tokens.push(Token::Special(c)),
            c if is_atext(c) => {
                let mut end = start + c.len_utf8();
                while let Some(&(i, c)) = chars.peek() {
                    if !is_atext(c) {
                        break;
                    }
                    end = i + c.len_utf8();
                    chars.next();
                }
                tokens.push(Token::Atom(value[start..end].to_string()));
            }
            _ => return Err(MailboxListError::Syntax("a character outside any word")),
        }
    }
    Ok(tokens)
}

/// The text up to `close` (quoted pairs resolved); comments nest (RFC 5322 §3.2.2).
fn delimited(
    chars: &mut impl Iterator<Item = (usize, char)>,
    close: char,
    nests: bool,
) -> Result<String, MailboxListError> {
    let mut text = String::new();
    let mut depth = 0usize;
    while let Some((_, c)) = chars.next() {
        match c {
            '\\' if close != ']' => match chars.next() {
                Some((_, quoted)) => text.push(quoted),
                None => break,
            },
            '(' if nests => {
                depth += 1;
                text.push(c);
            }
            c if c == close && depth == 0 => return Ok(text),
            c => {
                if c == close {
                    depth -= 1;
                }
                text.push(c);
            }
        }
    }
    Err(MailboxListError::Syntax(
        "an unclosed quote, comment or literal",
    ))
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    /// Comments met since the last mailbox was finished.
    comments: Vec<String>,
}

impl Parser {
    /// The next token that is neither space nor a comment; comments are set
    /// aside, as a reader may show them as the mailbox's name.
    fn peek(&mut self) -> Option<&Token> {
        loop {
            match self.tokens.get(self.pos) {
                Some(Token::Comment(c)) => self.comments.push(c.clone()),
                Some(Token::Space) => {}
                _ => return self.tokens.get(self.pos),
            }
            self.pos += 1;
        }
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.peek().cloned();
        self.pos += usize::from(token.is_some());
        token
    }

    /// name-addr or addr-spec (RFC 5322 §3.4).
    fn mailbox(&mut self) -> Result<HeaderMailbox, MailboxListError> {
        let (start, comments) = (self.pos, self.comments.len());
        // Readers show whatever precedes a "<" as the name, at signs included:
        // `bob@x <alice@x>` is not RFC 5322, but it is what a forger sends.
        let mut name = String::new();
        let mut joins = true;
        let mut at = false;
        loop {
            match self.peek() {
                Some(Token::Atom(w) | Token::Quoted(w)) => {
                    if !joins {
                        name.push(' ');
                    }
                    name.push_str(w);
                    joins = false;
                }
                // obs-phrase (RFC 5322 §4.1) has dots: "John Q. Public".
                Some(Token::Special(c @ ('.' | '@'))) => {
                    at |= *c == '@';
                    name.push(*c);
                    joins = true;
                }
                _ => break,
            }
            self.pos += 1;
        }
        let mut shown = Vec::new();
        let address = match self.peek() {
            Some(Token::Special('<')) if at => return Err(MailboxListError::UnquotedAt(name)),
            Some(Token::Special('<')) => {
                shown.push(name);
                self.angle_addr()?
            }
            Some(Token::Special(':')) => return Err(MailboxListError::Group),
            _ => {
                // No name: the words were the address; read them again as one.
                self.pos = start;
                self.comments.truncate(comments);
                self.addr_spec()?
            }
        };
        // Comments up to the next comma belong to this mailbox.
        self.peek();
        shown.append(&mut self.comments);
        shown.retain(|s| !s.trim().is_empty());
        let decoded: Vec<String> = shown
            .iter()
            .map(|s| decode_encoded_words(s))
            .filter(|d| !shown.contains(d))
            .collect();
        shown.extend(decoded);
        Ok(HeaderMailbox { address, shown })
    }

    /// "<" addr-spec ">", at the "<".
    fn angle_addr(&mut self) -> Result<String, MailboxListError> {
        self.pos += 1;
        let address = self.addr_spec()?;
        if self.next() != Some(Token::Special('>')) {
            return Err(MailboxListError::Syntax("no closing angle bracket"));
        }
        Ok(address)
    }

    /// local-part "@" domain, in one piece: whitespace or a comment inside an
    /// address (obsolete syntax, RFC 5322 §4.4) is refused, because readers
    /// split such an address in different places.
    fn addr_spec(&mut self) -> Result<String, MailboxListError> {
        let mut parts: [Vec<Token>; 2] = [Vec::new(), Vec::new()];
        let mut token = self.next();
        let mut side = 0;
        while let Some(t) = token {
            match t {
                Token::Special('@') if side == 0 => side = 1,
                Token::Atom(_)
                | Token::Quoted(_)
                | Token::DomainLiteral(_)
                | Token::Special('.') => parts[side].push(t),
                _ => return Err(MailboxListError::Syntax("not an address")),
            }
            token = match self.tokens.get(self.pos) {
                Some(
                    next @ (Token::Atom(_)
                    | Token::Quoted(_)
                    | Token::DomainLiteral(_)
                    | Token::Special('.' | '@')),
                ) => {
                    self.pos += 1;
                    Some(next.clone())
                }
                _ => None,
            };
        }
        let [local, domain] = parts;
        let word = |t: &Token| matches!(t, Token::Atom(_) | Token::Quoted(_));
        let atom = |t: &Token| matches!(t, Token::Atom(_));
        let literal = matches!(domain.as_slice(), [Token::DomainLiteral(_)]);
        if side == 0 || !dotted(&local, word) || !(literal || dotted(&domain, atom)) {
            return Err(MailboxListError::Syntax(
                "an address without local part, @ and domain in one piece",
            ));
        }
        let text = |t: &Token| match t {
            Token::Quoted(w) => format!("\"{}\"", quote(w)),
            Token::DomainLiteral(d) => format!("[{d}]"),
            Token::Atom(w) => w.clone(),
            _ => ".".to_string(),
        };
        let local: String = local.iter().map(text).collect();
        let domain: String = domain.iter().map(text).collect();
        Ok(format!("{local}@{domain}"))
    }
}

/// Whether `tokens` are words (as `word` says) joined by single dots.
fn dotted(tokens: &[Token], word: impl Fn(&Token) -> bool) -> bool {
    tokens.len() % 2 == 1
        && tokens.iter().enumerate().all(|(i, t)| {
            if i % 2 == 0 {
                word(t)
            } else {
                *t == Token::Special('.')
            }
        })
}

/// A quoted string's content written back with its quoted pairs.
fn quote(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Decodes every RFC 2047 encoded word in `text`, wherever it stands (some
/// readers decode them inside words and quoted strings too); whitespace
/// between two encoded words goes, as §6.2 says.
pub fn decode_encoded_words(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut pos = 0;
    let mut after_word: Option<usize> = None;
    while let Some(found) = memchr::memmem::find(&bytes[pos..], b"=?") {
        let start = pos + found;
        // RFC 2047 §2 caps an encoded word at 75 characters; a bound keeps a
        // hostile run of "=?" from costing quadratic time.
        let mut stream = MessageStream::new(&bytes[start + 1..bytes.len().min(start + 256)]);
        let Some(decoded) = stream.decode_rfc2047() else {
            out.push_str(&text[pos..start + 2]);
            pos = start + 2;
            after_word = None;
            continue;
        };
        let gap = &text[pos..start];
        if after_word.is_none() || !gap.chars().all(|c| c == ' ' || c == '\t') {
            out.push_str(gap);
        }
        out.push_str(&decoded);
        pos = start + 1 + stream.offset();
        after_word = Some(pos);
    }
    out.push_str(&text[pos..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn one(value: &str) -> HeaderMailbox {
        let mut list = parse(value.as_bytes()).expect(value);
        assert_eq!(list.len(), 1, "{value}");
        list.remove(0)
    }

    #[test]
    fn the_usual_forms() {
        assert_eq!(one(" alice@example.com").address, "alice@example.com");
        let m = one(" Alice Liddell <alice@example.com>");
        assert_eq!(
            (m.address.as_str(), m.shown.as_slice()),
            ("alice@example.com", &["Alice Liddell".to_string()][..])
        );
        let m = one(" \"Liddell, Alice\" <alice@example.com>");
        assert_eq!(m.shown, ["Liddell, Alice"]);
        assert_eq!(one(" John Q. Public <jqp@x.org>").shown, ["John Q.Public"]);
        let m = one(" alice@example.com (Alice)");
        assert_eq!(m.shown, ["Alice"]);
        assert_eq!(one(" \"a b\"@x.org").address, "\"a b\"@x.org");
        assert_eq!(one(" a@[192.0.2.1]").address, "a@[192.0.2.1]");
        assert_eq!(
            parse(b" b@y.org <a@x.org>"),
            Err(MailboxListError::UnquotedAt("b@y.org".into()))
        );
        let list = parse(b" a@x.org, B <b@y.org>,, c@z.org").expect("list");
        let got: Vec<_> = list.iter().map(|m| m.address.as_str()).collect();
        assert_eq!(got, ["a@x.org", "b@y.org", "c@z.org"]);
    }

    #[test]
    fn encoded_words_are_decoded_for_what_readers_show() {
        let m = one(" =?utf-8?b?Ym9iQGV2aWwuZXhhbXBsZQ==?= <alice@example.com>");
        assert!(m.shown.contains(&"bob@evil.example".to_string()), "{m:?}");
        assert_eq!(
            decode_encoded_words("=?utf-8?q?a?= =?utf-8?q?b?= c"),
            "ab c"
        );
        assert_eq!(decode_encoded_words("x=?utf-8?q?bob=40y?=z"), "xbob@yz");
        assert_eq!(decode_encoded_words("=?utf-7?q?bob+AEA-y?="), "bob@y");
        assert_eq!(decode_encoded_words("=?bad"), "=?bad");
        assert_eq!(decode_encoded_words("Jörg =?"), "Jörg =?");
    }

    #[test]
    fn what_is_refused() {
        for (value, err) in [
            (&b" undisclosed-recipients:;"[..], MailboxListError::Group),
            (b" team: a@x.org;", MailboxListError::Group),
            (b" ", MailboxListError::Empty),
            (b" (just a comment)", MailboxListError::Empty),
            (b" a@x.org\0", MailboxListError::ControlCharacter),
            (b" \xff <a@x.org>", MailboxListError::NotUtf8),
            (
                &[&b" a@x.org"[..], &[b' '; MAX_VALUE - 7]].concat(),
                MailboxListError::Syntax("longer than 8192 octets"),
            ),
        ] {
            assert_eq!(parse(value), Err(err), "{}", String::from_utf8_lossy(value));
        }
        assert!(parse(&[&b" a@x.org"[..], &[b' '; MAX_VALUE - 8]].concat()).is_ok());
        for value in [
            " Alice",
            " alice@x.org bob@y.org",
            " <alice@x.org",
            " \"unclosed <a@x.org>",
            " (unclosed a@x.org",
            " <@route:a@x.org>",
            " <>",
            " a@",
            " a@x..org",
            " @x.org",
            " a\\b@x.org",
            " alice (c) @ example (d) . com",
            " alice @example.com",
            " alice(c)@example.com",
            " alice@example .com",
            " .a@x.org",
            " a.@x.org",
            " a@[1.2.3.4].org",
        ] {
            assert!(
                matches!(parse(value.as_bytes()), Err(MailboxListError::Syntax(_))),
                "{value}: {:?}",
                parse(value.as_bytes())
            );
        }
    }

    proptest! {
        #[test]
        fn never_panics(value in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse(&value);
        }

        #[test]
        fn written_mailboxes_parse_back(
            names in proptest::collection::vec("[ -~]{0,20}", 1..4),
            locals in proptest::collection::vec("[a-z0-9_+-]{1,5}(\\.[a-z0-9_+-]{1,5}){0,2}", 1..4),
        ) {
            let mut value = String::new();
            let mut expected = Vec::new();
            for (i, (name, local)) in names.iter().zip(&locals).enumerate() {
                let address = format!("{local}@d{i}.example");
                value.push_str(&format!("\"{}\" <{address}>, ", quote(name)));
                expected.push(address);
            }
            let parsed = parse(value.as_bytes()).expect("a written list parses");
            let got: Vec<String> = parsed.iter().map(|m| m.address.clone()).collect();
            prop_assert_eq!(got, expected);
            for (m, name) in parsed.iter().zip(&names) {
                if !name.trim().is_empty() {
                    prop_assert_eq!(&m.shown[0], name);
                }
            }
        }
    }
}
