//! Reloading while the server runs (SIGHUP, `postern reload`, and a
//! certificate renewed on disk). What it applies at once is the certificate
//! and key (rustls reads them at each handshake, so new sessions get the new
//! pair and open ones keep theirs) and the listeners (`listeners.rs`). Other
//! settings still take effect at the next start; the report names those that
//! changed, so that an admin is never left guessing which file the server
//! runs on.

use std::time::Duration;

use crate::config::Config;
use crate::tls::{self, Certificates};

/// How often the certificate files are looked at for a renewal.
pub const CERTIFICATE_CHECK: Duration = Duration::from_secs(30);

/// Reads the configuration the server started from again and applies its
/// certificate; returns the report so far and the new configuration, whose
/// listeners the caller applies. A file that no longer validates, or a
/// certificate that does not read or match its key, is refused with the
/// reason, and everything stays as it was.
pub fn read_and_apply(
    running: &Config,
    certificates: &Certificates,
) -> Result<(String, Config), String> {
    let new = match &running.source {
        Some(path) => Config::load(path)
            .map_err(|e| format!("{e}; the server keeps running on the configuration it has"))?,
        // Built-in defaults: nothing to read but the certificate files.
        None => running.clone(),
    };
    let files = tls::files(&new).map_err(|e| format!("{e}; the certificate in use stays"))?;
    certificates
        .replace(files.clone())
        .map_err(|e| format!("{e}; the certificate in use stays"))?;
    let mut report = format!("certificate {} loaded", files.cert.display());
    let changed = changed_settings(running, &new);
    if !changed.is_empty() {
        report.push_str(&format!(
            "; changed, and applied only at the next start: {}",
            changed.join(", ")
        ));
    }
    Ok((report, new))
}

/// The settings (top-level keys and sections) that differ, the certificate
/// files and the listeners aside. `running` is taken apart field by field, so that a setting
/// added to `Config` does not compile until it is reported here too.
fn changed_settings(running: &Config, new: &Config) -> Vec<&'static str> {
    let Config {
        source: _,
        tls: _,
        hostname,
        data_dir,
        run_as,
        trusted_networks,
        listeners: _,
        limits,
        auth,
        bare_newlines,
        tls_detect,
        delivery,
        relay,
        routes,
        fallback_relay,
        http,
        store_url,
        local,
        sendmail,
        acme,
        dkim,
        dmarc,
        rspamd,
        dnsbl,
        dmarc_reports,
    } = running;
    [
        ("hostname", *hostname != new.hostname),
        ("data_dir", *data_dir != new.data_dir),
        ("user/group", *run_as != new.run_as),
        (
            "trusted_networks",
            *trusted_networks != new.trusted_networks,
        ),
        ("[limits]", *limits != new.limits),
        ("[auth]", *auth != new.auth),
        ("bare_newlines", *bare_newlines != new.bare_newlines),
        ("tls_detect", *tls_detect != new.tls_detect),
        ("[delivery]", *delivery != new.delivery),
        ("[relay]", *relay != new.relay),
        ("[[route]]", *routes != new.routes),
        ("[fallback_relay]", *fallback_relay != new.fallback_relay),
        ("[http]", *http != new.http),
        ("store_url", *store_url != new.store_url),
        ("[local]", *local != new.local),
        ("[[sendmail]]", *sendmail != new.sendmail),
        ("[acme]", *acme != new.acme),
        ("[dkim]", *dkim != new.dkim),
        ("[filter] dmarc", *dmarc != new.dmarc),
        ("[filter] rspamd", *rspamd != new.rspamd),
        ("[filter] dnsbl", *dnsbl != new.dnsbl),
        (
            "[filter] dmarc_reports",
            *dmarc_reports != new.dmarc_reports,
        ),
    ]
    .into_iter()
    .filter_map(|(name, changed)| changed.then_some(name))
    .collect()
}

/// Replaces the certificate if its files changed on disk; a renewal written
/// in place needs no signal.
pub fn certificate_if_changed(certificates: &Certificates) {
    match certificates.reload_if_changed() {
        Ok(true) => tracing::info!(
            event = "certificate_reloaded",
            cert = %certificates.files().cert.display(),
            "the certificate changed on disk; new sessions use it"
        ),
        Ok(false) => {}
        Err(e) => tracing::warn!(
            event = "certificate_reload_failed",
            error = %e,
            "the certificate files changed but do not read; the one in use stays"
        ),
    }
}
