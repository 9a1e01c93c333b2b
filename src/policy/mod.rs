//! Pure policy decisions: given what the session knows, accept or refuse with a
//! reply. No I/O here; the session looks facts up and hands them in.

pub mod limits;
pub mod relay;
pub mod sender;
pub mod sending;

use crate::smtp::reply::Reply;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Reject(Reply),
}
