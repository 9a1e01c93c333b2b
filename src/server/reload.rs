//! Reloading while the server runs (SIGHUP, `postern reload`, and a
//! certificate renewed on disk). The certificate and key are applied at once
//! (rustls reads them at each handshake, so new sessions get the new pair and
//! open ones keep theirs), the listeners too (`listeners.rs`), and so are the
//! settings that work reads as it begins (`config::Live`): limits, relays and
//! routes, `[local]`, `[[sendmail]]`, the filters. Those that shaped what
//! was built at start (the data directory, the account, the resolvers, the
//! HTTP listeners, ...) keep their running values until the next start; the
//! report names each changed setting and when it takes effect, so that an
//! admin is never left guessing which file the server runs on.

use std::time::Duration;

use crate::config::Config;
use crate::tls::{self, Certificates};

/// How often the certificate files are looked at for a renewal.
pub const CERTIFICATE_CHECK: Duration = Duration::from_secs(30);

/// Reads the configuration the server started from again and applies its
/// certificate; returns the report so far and the configuration to run on
/// (the new file's, with the settings that wait for a restart as they are
/// now), whose listeners the caller applies. A file that no longer
/// validates, or a certificate that does not read or match its key, is
/// refused with the reason, and everything stays as it was.
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
    let (settled, changes) = settle(running, new);
    if !changes.applied.is_empty() {
        report.push_str(&format!("; applied: {}", changes.applied.join(", ")));
    }
    if !changes.at_next_start.is_empty() {
        report.push_str(&format!(
            "; changed, and applied only at the next start: {}",
            changes.at_next_start.join(", ")
        ));
    }
    Ok((report, settled))
}

/// The settings a reload changed, by when they take effect.
#[derive(Debug, Default, PartialEq)]
struct Changes {
    applied: Vec<&'static str>,
    at_next_start: Vec<&'static str>,
}

impl Changes {
    /// A setting that work reads as it begins: `new` is taken.
    fn apply<T: PartialEq>(&mut self, new: &T, running: &T, name: &'static str) {
        if new != running {
            self.applied.push(name);
        }
    }

    /// A setting that shaped what was built at start: `new` is put back to
    /// the running value until the next start.
    fn defer<T: PartialEq + Clone>(&mut self, new: &mut T, running: &T, name: &'static str) {
        if new != running {
            self.at_next_start.push(name);
            *new = running.clone();
        }
    }
}

/// `new` with every setting that waits for a restart as `running` has it,
/// and what changed. `new` is taken apart field by field, so that a setting
/// added to `Config` does not compile until it is sorted here too. The
/// certificate files and the listeners are applied by the caller.
fn settle(running: &Config, mut new: Config) -> (Config, Changes) {
    let mut changes = Changes::default();
    let c = &mut changes;
    let Config {
        source: _,
        tls: _,
        listeners: _,
        hostname,
        data_dir,
        run_as,
        trusted_networks,
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
    } = &mut new;
    // Known to the certificate, the store, the DKIM and DMARC checks and
    // the HTTP listeners as they were built.
    c.defer(hostname, &running.hostname, "hostname");
    c.defer(data_dir, &running.data_dir, "data_dir");
    c.defer(run_as, &running.run_as, "user/group");
    c.defer(store_url, &running.store_url, "store_url");
    c.defer(http, &running.http, "[http]");
    c.defer(acme, &running.acme, "[acme]");
    c.defer(auth, &running.auth, "[auth]");
    c.defer(dkim, &running.dkim, "[dkim]");
    c.defer(dmarc, &running.dmarc, "[filter] dmarc");
    c.defer(
        dmarc_reports,
        &running.dmarc_reports,
        "[filter] dmarc_reports",
    );
    let (was, now) = (&running.limits, &mut *limits);
    c.defer(
        &mut now.max_connections,
        &was.max_connections,
        "[limits] max_connections",
    );
    c.defer(
        &mut now.auth_failures_per_ip_per_hour,
        &was.auth_failures_per_ip_per_hour,
        "[limits] auth_failures_per_ip_per_hour",
    );
    c.defer(
        &mut now.min_free_space,
        &was.min_free_space,
        "[limits] min_free_space",
    );
    c.apply(now, was, "[limits]");
    let (was, now) = (&running.delivery, &mut *delivery);
    c.defer(&mut now.hold, &was.hold, "[delivery] hold");
    c.defer(&mut now.mx_port, &was.mx_port, "[delivery] mx_port");
    c.defer(
        &mut now.nameservers,
        &was.nameservers,
        "[delivery] nameservers",
    );
    c.defer(&mut now.dane, &was.dane, "[delivery] dane");
    c.defer(
        &mut now.dnssec_trust_anchor,
        &was.dnssec_trust_anchor,
        "[delivery] dnssec_trust_anchor",
    );
    c.defer(
        &mut now.concurrency,
        &was.concurrency,
        "[delivery] concurrency",
    );
    c.defer(
        &mut now.destination_concurrency,
        &was.destination_concurrency,
        "[delivery] destination_concurrency",
    );
    c.defer(&mut now.mta_sts, &was.mta_sts, "[delivery] mta_sts");
    c.defer(
        &mut now.mta_sts_port,
        &was.mta_sts_port,
        "[delivery] mta_sts_port",
    );
    c.defer(
        &mut now.tls_reports,
        &was.tls_reports,
        "[delivery] tls_reports",
    );
    c.apply(now, was, "[delivery]");
    c.apply(
        trusted_networks,
        &running.trusted_networks,
        "trusted_networks",
    );
    c.apply(bare_newlines, &running.bare_newlines, "bare_newlines");
    c.apply(tls_detect, &running.tls_detect, "tls_detect");
    c.apply(relay, &running.relay, "[relay]");
    c.apply(routes, &running.routes, "[[route]]");
    c.apply(fallback_relay, &running.fallback_relay, "[fallback_relay]");
    c.apply(local, &running.local, "[local]");
    c.apply(sendmail, &running.sendmail, "[[sendmail]]");
    c.apply(rspamd, &running.rspamd, "[filter] rspamd");
    c.apply(dnsbl, &running.dnsbl, "[filter] dnsbl");
    (new, changes)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::from_text(&format!("hostname = \"mx.test.example\"\n{text}"), None).expect("config")
    }

    #[test]
    fn settings_built_at_start_keep_their_running_values_and_the_rest_are_taken() {
        let running = config("[limits]\nmax_recipients = 5\n");
        let new = Config::from_text(
            "hostname = \"other.test.example\"\ntrusted_networks = [\"10.0.0.0/8\"]\n\
             [limits]\nmax_recipients = 9\nmax_connections = 3\n\
             [delivery]\nconcurrency = 2\nretry_max = 99\n\
             [relay]\nhost = \"relay.test\"\nport = 2525\n",
            None,
        )
        .expect("config");
        let (settled, changes) = settle(&running, new.clone());
        assert_eq!(
            changes,
            Changes {
                applied: vec!["[limits]", "[delivery]", "trusted_networks", "[relay]"],
                // `[http] imap_host` defaults to the host name.
                at_next_start: vec![
                    "hostname",
                    "[http]",
                    "[limits] max_connections",
                    "[delivery] concurrency"
                ],
            }
        );
        assert_eq!(settled.hostname, running.hostname);
        assert_eq!(
            settled.limits.max_connections,
            running.limits.max_connections
        );
        assert_eq!(settled.delivery.concurrency, running.delivery.concurrency);
        assert_eq!(settled.limits.max_recipients, 9);
        assert_eq!(settled.delivery.retry_max, new.delivery.retry_max);
        assert_eq!(settled.trusted_networks, new.trusted_networks);
        assert_eq!(settled.relay, new.relay);
    }

    #[test]
    fn an_unchanged_file_changes_nothing() {
        let running = config("[relay]\nhost = \"relay.test\"\nport = 2525\n");
        let (settled, changes) = settle(&running, running.clone());
        assert_eq!(changes, Changes::default());
        assert_eq!(settled, running);
    }
}
