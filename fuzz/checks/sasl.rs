//! SASL PLAIN and LOGIN decoding, on a client's base64 line (read lossily, as
//! the session does) and on raw decoded bytes. Checks: no panic, PLAIN
//! credentials have a user name and re-encode to the same credentials.

use postern::auth::sasl::{decode_line, login_field, plain};

pub fn check(input: &[u8]) {
    let decoded = decode_line(&String::from_utf8_lossy(input)).unwrap_or_default();
    for bytes in [input, &decoded[..]] {
        assert_eq!(
            login_field(bytes).is_ok(),
            std::str::from_utf8(bytes).is_ok()
        );
        if let Ok(c) = plain(bytes) {
            assert!(!c.username.is_empty());
            let again = format!("\0{}\0{}", c.username, c.password);
            assert_eq!(plain(again.as_bytes()), Ok(c));
        }
    }
}
