//! The DSN parameters of a MAIL or RCPT line: `xtext::parameter` finds ENVID
//! and ORCPT as the client wrote them, `xtext::decode` decodes them. Checks: no
//! panic; what decodes is printable ASCII and encodes back to itself; the
//! encoding of any text decodes to it exactly when it is printable ASCII.

use postern::smtp::xtext::{decode, encode, parameter};

pub fn check(input: &[u8]) {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    for name in ["ENVID", "ORCPT"] {
        if let Some(value) = parameter(text, name) {
            // Parameters are split at ASCII white space (a vertical tab
            // stays, and then fails to decode).
            assert!(
                !value.contains(|c: char| c.is_ascii_whitespace()),
                "{value:?}"
            );
            let _ = decode(value);
        }
    }
    if let Ok(decoded) = decode(text) {
        assert!(
            decoded.bytes().all(|b| (b' '..=b'~').contains(&b)),
            "{decoded:?}"
        );
        assert_eq!(decode(&encode(&decoded)).as_deref(), Ok(decoded.as_str()));
    }
    let printable = !text.is_empty() && text.bytes().all(|b| (b' '..=b'~').contains(&b));
    assert_eq!(decode(&encode(text)).is_ok(), printable, "{text:?}");
}
