//! Delivery to mailboxes hosted here.

pub mod maildir;
