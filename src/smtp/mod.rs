//! Wire-level SMTP types with no I/O, shared by the session (and later the
//! outbound client), and the header section of the message DATA carries
//! (RFC 5322), read for the checks. Command parsing itself is smtp-proto's.

pub mod address;
pub mod data;
pub mod headers;
pub mod mailbox_list;
pub mod reencode;
pub mod reply;
pub mod xtext;

/// A byte stream SMTP runs over: TCP, TLS over TCP, or an in-memory duplex in
/// tests. Sessions and the outbound client box it so that STARTTLS can swap
/// the stream underneath without changing types.
pub trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + Sync {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + Sync> Stream for T {}
