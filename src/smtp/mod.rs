//! Wire-level SMTP types with no I/O, shared by the session (and later the
//! outbound client). Command parsing itself is smtp-proto's.

pub mod address;
pub mod data;
pub mod reply;
