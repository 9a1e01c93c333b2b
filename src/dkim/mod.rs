//! DKIM (RFC 6376) for mail from hosted domains: each domain's keys, made by
//! `postern domain add` and kept in `data_dir/dkim/` (the only place they
//! live), the TXT records that publish them (`postern dns`), and the
//! signatures `prepare` puts on submitted mail before it is queued, and
//! their rotation; and the ARC seals (`arc.rs`) of mail an alias forwards.

mod arc;
mod keys;
pub mod rotation;
mod sign;

pub use keys::{
    Algorithm, DkimError, DkimKeyError, DomainKey, KeyState, domain_keys, ensure_keys,
    public_records,
};
pub use sign::{SIGNED_HEADERS, Signer};
