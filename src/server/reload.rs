//! Reloading while the server runs (SIGHUP, `postern reload`, and a
//! certificate renewed on disk). The certificate and key are applied at once
//! (rustls reads them at each handshake, so new sessions get the new pair and
//! open ones keep theirs), the listeners too (`listeners.rs`, and
//! `http_listeners.rs` for `[http]`), and so are the settings that work reads
//! as it begins (`config::Live`): limits, relays and routes, `[local]`,
//! `[[sendmail]]`, the filters. Those that shaped what was built at start
//! (the data directory, the account, the resolvers, ...) keep their running
//! values until the next start; the report names each changed setting and
//! when it takes effect, so that an admin is never left guessing which file
//! the server runs on.

use std::time::Duration;

use crate::config::{Config, Delivery, Limits};
use crate::tls::{self, Certificates};

/// How often the certificate files are looked at for a renewal.
pub const CERTIFICATE_CHECK: Duration = Duration::from_secs(30);

/// Reads the configuration the server started from again and applies its
/// certificate; returns the configuration to run on (the new file's, with
/// the settings that wait for a restart as they are now), whose listeners
/// the caller applies, and what changed. A file that no longer validates,
/// or a certificate that does not read or match its key, is refused with
/// the reason, and everything stays as it was.
pub fn read_and_apply(running: &Config, certificates: &Certificates) -> Result<Reloaded, String> {
    let new = match &running.source {
        Some(path) => Config::load(path)
            .map_err(|e| format!("{e}; the server keeps running on the configuration it has"))?,
        // Built-in defaults: nothing to read but the certificate files.
        None => running.clone(),
    };
    // Settled first: the certificate files follow from the host name, the
    // data directory and [acme], which wait for the next start.
    let (config, changes) = settle(running, new);
    let files = tls::files(&config).map_err(|e| format!("{e}; the certificate in use stays"))?;
    certificates
        .replace(files.clone())
        .map_err(|e| format!("{e}; the certificate in use stays"))?;
    Ok(Reloaded {
        config,
        certificate: files.cert,
        changes,
        not_applied: Vec::new(),
    })
}

/// A reload's configuration, and what it changed.
pub struct Reloaded {
    pub config: Config,
    certificate: std::path::PathBuf,
    changes: Changes,
    /// Changes that could not be applied, and why.
    not_applied: Vec<String>,
}

impl Reloaded {
    /// Keeps `[http]` as `running` has it: its new listeners could not be
    /// bound (`why`).
    pub fn keep_http(&mut self, running: &Config, why: String) {
        self.config.http = running.http.clone();
        self.changes.applied.retain(|name| *name != "[http]");
        self.not_applied.push(format!(
            "[http] not applied: {why}; HTTP is served as it was"
        ));
    }

    /// What the reload did, for `postern reload` and the log.
    pub fn report(&self) -> String {
        let mut report = format!("certificate {} loaded", self.certificate.display());
        let changes = &self.changes;
        if !changes.applied.is_empty() {
            report.push_str(&format!("; applied: {}", changes.applied.join(", ")));
        }
        if !changes.at_next_start.is_empty() {
            report.push_str(&format!(
                "; changed, and applied only at the next start: {}",
                changes.at_next_start.join(", ")
            ));
        }
        for trouble in &self.not_applied {
            report.push_str(&format!("; {trouble}"));
        }
        report
    }
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
        tls,
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
    // `[http] imap` defaults to the host name: while the host name waits
    // for the next start, so does an IMAP host that follows it.
    if http.imap_host == *hostname && running.http.imap_host == running.hostname {
        http.imap_host.clone_from(&running.http.imap_host);
    }
    // Known to the certificate, the store, the DKIM and DMARC checks as
    // they were built. [http] is served anew by the caller
    // (`HttpListeners`) when it changes.
    c.defer(hostname, &running.hostname, "hostname");
    c.defer(data_dir, &running.data_dir, "data_dir");
    c.defer(run_as, &running.run_as, "user/group");
    c.defer(store_url, &running.store_url, "store_url");
    c.apply(http, &running.http, "[http]");
    // The certificate files follow [tls] (applied by the caller) unless
    // [acme] is on; a switch between them waits for [acme]'s next start,
    // or the renewal task would go on replacing the files' certificate.
    if *acme != running.acme {
        c.defer(tls, &running.tls, "[tls]");
    }
    c.defer(acme, &running.acme, "[acme]");
    c.defer(auth, &running.auth, "[auth]");
    c.defer(dkim, &running.dkim, "[dkim]");
    c.defer(dmarc, &running.dmarc, "[filter] dmarc");
    c.defer(
        dmarc_reports,
        &running.dmarc_reports,
        "[filter] dmarc_reports",
    );
    // Limits and Delivery are taken apart too, for the same reason; what is
    // not deferred here is taken, so the section is applied if it still
    // differs once the deferred fields are put back.
    let Limits {
        max_connections,
        auth_failures_per_ip_per_hour,
        min_free_space,
        max_message_size: _,
        max_recipients: _,
        max_command_line: _,
        max_text_line: _,
        max_errors: _,
        max_connections_per_ip: _,
        command_timeout: _,
        data_timeout: _,
        auth_failures_per_connection: _,
        shutdown_grace: _,
        messages_per_hour_per_user: _,
        recipients_per_day_per_user: _,
        new_recipients_per_day_per_user: _,
        burst: _,
    } = limits;
    let was = &running.limits;
    // The connection cap is a semaphore sized at start; the per-address
    // login throttle and the free-space floor were built with theirs.
    c.defer(
        max_connections,
        &was.max_connections,
        "[limits] max_connections",
    );
    c.defer(
        auth_failures_per_ip_per_hour,
        &was.auth_failures_per_ip_per_hour,
        "[limits] auth_failures_per_ip_per_hour",
    );
    c.defer(
        min_free_space,
        &was.min_free_space,
        "[limits] min_free_space",
    );
    c.apply(limits, was, "[limits]");
    let Delivery {
        hold,
        mx_port,
        nameservers,
        dane,
        dnssec_trust_anchor,
        retry_min,
        concurrency,
        destination_concurrency,
        mta_sts,
        mta_sts_port,
        tls_reports,
        max_lifetime: _,
        retry_max: _,
        connect_timeout: _,
        timeout: _,
    } = delivery;
    let was = &running.delivery;
    // The scheduler stops at start with hold; the port-25 watch, the
    // resolvers, the delivery slots, the MTA-STS cache and the report timer
    // were built with theirs; retry_min is also how long a destination that
    // could not be reached is left alone (`scheduler/destinations.rs`).
    c.defer(hold, &was.hold, "[delivery] hold");
    c.defer(mx_port, &was.mx_port, "[delivery] mx_port");
    c.defer(nameservers, &was.nameservers, "[delivery] nameservers");
    c.defer(dane, &was.dane, "[delivery] dane");
    c.defer(
        dnssec_trust_anchor,
        &was.dnssec_trust_anchor,
        "[delivery] dnssec_trust_anchor",
    );
    c.defer(retry_min, &was.retry_min, "[delivery] retry_min");
    c.defer(concurrency, &was.concurrency, "[delivery] concurrency");
    c.defer(
        destination_concurrency,
        &was.destination_concurrency,
        "[delivery] destination_concurrency",
    );
    c.defer(mta_sts, &was.mta_sts, "[delivery] mta_sts");
    c.defer(mta_sts_port, &was.mta_sts_port, "[delivery] mta_sts_port");
    c.defer(tls_reports, &was.tls_reports, "[delivery] tls_reports");
    c.apply(delivery, was, "[delivery]");
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
    // The server joined [local] group when it gave up root, and validated
    // the owner against the user it became: both as at start.
    c.defer(&mut local.owner, &running.local.owner, "[local] owner");
    c.defer(&mut local.group, &running.local.group, "[local] group");
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
                // `[http] metrics_from` follows trusted_networks.
                applied: vec![
                    "[http]",
                    "[limits]",
                    "[delivery]",
                    "trusted_networks",
                    "[relay]"
                ],
                at_next_start: vec![
                    "hostname",
                    "[limits] max_connections",
                    "[delivery] concurrency"
                ],
            }
        );
        assert_eq!(settled.hostname, running.hostname);
        // `[http] imap` follows the host name, which waits.
        assert_eq!(settled.http.imap_host, "mx.test.example");
        assert_eq!(settled.http.metrics_from, new.http.metrics_from);
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
    fn a_switch_between_acme_and_certificate_files_waits_for_the_next_start() {
        let http = "[http]\naddr = \"127.0.0.1:80\"\n";
        let running = config(&format!(
            "{http}[acme]\ndirectory = \"https://ca.test.example/dir\"\nemail = \"a@test.example\"\n"
        ));
        let files = tempfile::tempdir().expect("tempdir");
        let (cert, key) = (files.path().join("cert.pem"), files.path().join("key.pem"));
        for file in [&cert, &key] {
            std::fs::write(file, "").expect("write");
        }
        let new = config(&format!(
            "{http}[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            cert.display(),
            key.display()
        ));
        let (settled, changes) = settle(&running, new);
        assert_eq!(changes.at_next_start, ["[tls]", "[acme]"]);
        assert_eq!((settled.tls, settled.acme), (running.tls, running.acme));
    }

    #[test]
    fn the_local_group_and_retry_min_wait_and_the_mode_is_taken() {
        let running = config("");
        let new = config("[delivery]\nretry_min = 7\n[local]\ngroup = \"root\"\nmode = \"0770\"\n");
        let (settled, changes) = settle(&running, new);
        assert_eq!(changes.applied, ["[local]"]);
        assert_eq!(
            changes.at_next_start,
            ["[delivery] retry_min", "[local] group"]
        );
        assert_eq!(settled.local.group, None);
        assert_eq!(settled.local.mode, Some(0o770));
        assert_eq!(settled.delivery.retry_min, running.delivery.retry_min);
    }

    #[test]
    fn an_unchanged_file_changes_nothing() {
        let running = config("[relay]\nhost = \"relay.test\"\nport = 2525\n");
        let (settled, changes) = settle(&running, running.clone());
        assert_eq!(changes, Changes::default());
        assert_eq!(settled, running);
    }
}
