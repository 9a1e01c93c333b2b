//! Certificates from an ACME CA (RFC 8555, `[acme]`), for `hostname` and the
//! `autoconfig.` and `mta-sts.` names of every hosted domain, so that mail
//! clients and MTA-STS fetchers see a publicly trusted certificate without
//! an admin running certbot.
//!
//! - `renewal`: the task that decides when to order (at start, twice a day,
//!   and at a reload), with backoff after a failure; it installs the new pair
//!   the way a reload does, so every listener serves it from the next session.
//! - `names`: which names each certificate holds (at most 100 each), and
//!   when one is due.
//! - `account`: the CA account, created once and kept in data_dir.
//! - `order`: one order, from the names to the certificate chain.
//! - `challenges`: what the CA's validation finds while an order is open:
//!   HTTP-01 answers (served by `http` on `[http] addr`) and TLS-ALPN-01
//!   certificates (RFC 8737, answered by `alpn` on `tls_addr`).
//!
//! A failure is logged with the CA's problem detail and never stops the
//! server: the certificate in use stays.

mod account;
pub mod alpn;
pub mod challenges;
mod names;
mod order;
pub mod renewal;

use std::path::PathBuf;

pub use alpn::{ACME_TLS_ALPN, AlpnChallengeResolver};
pub use challenges::Challenges;
pub use renewal::Renewal;

#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    /// From the CA (its problem document, with the detail it gave) or from
    /// the way to it.
    #[error(transparent)]
    Ca(#[from] instant_acme::Error),
    #[error("the order failed: {0}")]
    Validation(String),
    /// The CA refused or could not validate these names; the others may
    /// be ordered without them.
    #[error("the order failed: {detail}")]
    NotValidated { names: Vec<String>, detail: String },
    #[error("no answer from the CA within {0:?}")]
    TimedOut(std::time::Duration),
    #[error(
        "the CA offers no http-01 or tls-alpn-01 challenge that this configuration can answer for {0}"
    )]
    NoChallenge(String),
    #[error("cannot make a key or certificate request: {0}")]
    Key(#[from] rcgen::Error),
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsSetupError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// An error and its sources, for the log: the HTTP client's own text says
/// only "client error (Connect)", its sources say what failed. A source
/// whose text is already there is left out.
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut text = self.0.to_string();
        let mut source = self.0.source();
        while let Some(error) = source {
            let more = error.to_string();
            if !text.contains(&more) {
                text.push_str(": ");
                text.push_str(&more);
            }
            source = error.source();
        }
        f.write_str(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("client error (Connect)")]
        Quiet(#[source] std::io::Error),
        #[error("reading: {0}")]
        Repeats(#[source] std::io::Error),
    }

    #[test]
    fn the_log_names_every_source_once() {
        let refused =
            || std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        assert_eq!(
            Chain(&Outer::Quiet(refused())).to_string(),
            "client error (Connect): Connection refused"
        );
        assert_eq!(
            Chain(&Outer::Repeats(refused())).to_string(),
            "reading: Connection refused"
        );
    }
}
