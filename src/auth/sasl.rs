//! SASL PLAIN (RFC 4616) and LOGIN decoding: base64 lines from the client in,
//! credentials out. Pure and fuzzed; the session does the prompting.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    #[error("cannot decode the response: not base64")]
    NotBase64,
    #[error("the response is not of the form authzid NUL authcid NUL password")]
    Malformed,
    #[error("the response is not UTF-8")]
    NotUtf8,
    #[error("authorization identity must be empty or the same as the user name")]
    ForeignAuthzid,
    #[error("the client cancelled the exchange")]
    Cancelled,
}

/// Decodes one base64 line; `*` alone is the client's cancel (RFC 4954 §4).
pub fn decode_line(line: &str) -> Result<Vec<u8>, SaslError> {
    let line = line.trim_end_matches(['\r', '\n']).trim();
    if line == "*" {
        return Err(SaslError::Cancelled);
    }
    if line == "=" {
        return Ok(Vec::new());
    }
    STANDARD.decode(line).map_err(|_| SaslError::NotBase64)
}

/// PLAIN: `[authzid] NUL authcid NUL passwd`. An authzid naming anyone other than
/// the user is refused: we do not let one account act as another.
pub fn plain(decoded: &[u8]) -> Result<Credentials, SaslError> {
    let mut parts = decoded.split(|&b| b == 0);
    let (Some(authzid), Some(authcid), Some(passwd), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::Malformed);
    };
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| SaslError::NotUtf8);
    let (authzid, username, password) = (text(authzid)?, text(authcid)?, text(passwd)?);
    if username.is_empty() {
        return Err(SaslError::Malformed);
    }
    if !authzid.is_empty() && !authzid.eq_ignore_ascii_case(&username) {
        return Err(SaslError::ForeignAuthzid);
    }
    Ok(Credentials { username, password })
}

/// One LOGIN field (user name or password), decoded.
pub fn login_field(decoded: &[u8]) -> Result<String, SaslError> {
    String::from_utf8(decoded.to_vec()).map_err(|_| SaslError::NotUtf8)
}

/// The LOGIN prompts, already base64 ("Username:" and "Password:").
pub const LOGIN_USERNAME_PROMPT: &str = "VXNlcm5hbWU6";
pub const LOGIN_PASSWORD_PROMPT: &str = "UGFzc3dvcmQ6";

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &[u8]) -> String {
        STANDARD.encode(s)
    }

    #[test]
    fn plain_forms() {
        let c =
            plain(&decode_line(&b64(b"\0alice@example.com\0secret")).expect("b64")).expect("plain");
        assert_eq!(
            c,
            Credentials {
                username: "alice@example.com".into(),
                password: "secret".into()
            }
        );
        assert!(plain(b"Alice@example.com\0alice@example.com\0pw").is_ok());
        assert_eq!(
            plain(b"bob@example.com\0alice@example.com\0pw"),
            Err(SaslError::ForeignAuthzid)
        );
        assert_eq!(plain(b"\0alice\0pw\0extra"), Err(SaslError::Malformed));
        assert_eq!(plain(b"alice\0pw"), Err(SaslError::Malformed));
        assert_eq!(plain(b"\0\0pw"), Err(SaslError::Malformed));
        assert_eq!(plain(b"\0\xff\0pw"), Err(SaslError::NotUtf8));
    }

    #[test]
    fn lines() {
        assert_eq!(decode_line("*\r\n"), Err(SaslError::Cancelled));
        assert_eq!(decode_line("%%%"), Err(SaslError::NotBase64));
        assert_eq!(decode_line("="), Ok(vec![]));
        assert_eq!(
            decode_line(LOGIN_USERNAME_PROMPT).map(|v| String::from_utf8(v).unwrap_or_default()),
            Ok("Username:".into())
        );
    }
}
