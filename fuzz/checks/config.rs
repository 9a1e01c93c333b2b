//! `Config::from_text` on any text: it must return a config or errors, never
//! panic, and the errors must print.

use postern::config::Config;

pub fn check(input: &[u8]) {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    if let Err(errors) = Config::from_text(text, None) {
        assert!(!errors.0.is_empty());
        let _ = errors.to_string();
    }
}
