//! `QueueId::parse` on what a user types. Checks: an accepted id is 14 printable
//! characters and parses back to itself, in either case.

use postern::spool::QueueId;

pub fn check(input: &[u8]) {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    if let Some(id) = QueueId::parse(text) {
        assert_eq!(id.as_str().len(), 14);
        assert!(id.as_str().bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(QueueId::parse(id.as_str()).as_ref(), Some(&id));
        assert_eq!(QueueId::parse(&id.as_str().to_lowercase()), Some(id));
    }
}
