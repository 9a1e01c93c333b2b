//! The Prometheus metrics served at `/metrics`: every metric described (HELP
//! and TYPE, as `promtool check metrics` wants), counters present at 0 from
//! the start (a rate over a counter that appears late misses its first
//! events), and the queue's gauges read from the spool when scraped.

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::spool::Spool;

/// Seconds from acceptance to delivery: minutes when a destination is
/// quick, hours when it is retried, days at most (the message lifetime).
const DELIVERY_BUCKETS: [f64; 12] = [
    0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14_400.0, 86_400.0, 432_000.0,
];

/// Installs the process-wide recorder (once) and returns the handle that
/// renders the exposition for `/metrics`.
pub fn handle() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("postern_delivery_seconds".into()),
                    &DELIVERY_BUCKETS,
                )
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first, in which case
            // the handle renders nothing: metrics are lost, service is not.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

fn describe() {
    describe_counter!(
        "postern_connections_total",
        "SMTP connections accepted, by port and listener role"
    );
    describe_counter!(
        "postern_tls_handshakes_total",
        "TLS handshakes completed on SMTP listeners, by port"
    );
    describe_counter!(
        "postern_auth_successes_total",
        "Successful SMTP AUTH logins, by port"
    );
    describe_counter!(
        "postern_auth_failures_total",
        "Failed SMTP AUTH attempts, by port"
    );
    describe_counter!(
        "postern_auth_cache_hits_total",
        "Logins verified from the login cache instead of argon2"
    );
    describe_counter!(
        "postern_messages_queued_total",
        "Messages accepted (250 after DATA) and queued, by port"
    );
    describe_counter!(
        "postern_rejections_total",
        "SMTP commands refused with a 4xx or 5xx reply, by reply code and enhanced status code"
    );
    describe_counter!(
        "postern_deliveries_total",
        "Delivery attempts per recipient, by result (delivered, deferred, bounced, expired)"
    );
    describe_counter!(
        "postern_delivered_by_path_total",
        "Recipients delivered, by way out: local, direct (an MX), relay, or fallback \
         ([fallback_relay] while port 25 is blocked)"
    );
    describe_counter!(
        "postern_dsn_suppressed_total",
        "Bounces not sent because the sender's budget of DSNs was spent"
    );
    describe_counter!(
        "postern_sending_limited_total",
        "Messages or recipients of a user refused at a sending limit, by limit"
    );
    describe_counter!(
        "postern_user_holds_total",
        "Accounts whose outgoing mail was put on hold after a burst (a stolen password's sign)"
    );
    describe_histogram!(
        "postern_delivery_seconds",
        Unit::Seconds,
        "Time from acceptance to delivery, per delivered recipient"
    );
    describe_gauge!(
        "postern_outbound_port25_blocked",
        "1 while outbound connections to port 25 appear to be blocked"
    );
    describe_gauge!(
        "postern_spool_free_bytes",
        Unit::Bytes,
        "Free space in data_dir"
    );
    describe_gauge!(
        "postern_spool_low_space",
        "1 while free space in data_dir is below min_free_space (new mail gets 452)"
    );
    describe_gauge!(
        "postern_users_held",
        "Accounts whose outgoing mail is on hold now"
    );
    describe_gauge!("postern_queue_messages", "Messages in the queue");
    describe_gauge!(
        "postern_queue_recipients",
        "Recipients still to deliver, by state (queued: not tried yet, deferred, held)"
    );
    describe_gauge!(
        "postern_queue_oldest_seconds",
        Unit::Seconds,
        "Age of the oldest message in the queue (0 when empty)"
    );
}

/// Sets every counter the server has at start to 0, for each label value it
/// can take here: the bound `(port, role)` listeners, the delivery results.
pub fn zero(listeners: &[(u16, &'static str)]) {
    let _ = handle();
    for &(port, role) in listeners {
        count_listener(port, role);
    }
    for result in ["delivered", "deferred", "bounced", "expired"] {
        metrics::counter!("postern_deliveries_total", "result" => result).absolute(0);
    }
    for path in ["local", "direct", "relay", "fallback"] {
        metrics::counter!("postern_delivered_by_path_total", "path" => path).absolute(0);
    }
    for limit in [
        "messages_per_hour",
        "recipients_per_day",
        "new_recipients_per_day",
    ] {
        metrics::counter!("postern_sending_limited_total", "limit" => limit).absolute(0);
    }
    for name in [
        "postern_auth_cache_hits_total",
        "postern_dsn_suppressed_total",
        "postern_user_holds_total",
    ] {
        metrics::counter!(name).absolute(0);
    }
    metrics::gauge!("postern_outbound_port25_blocked").set(0.0);
    // The watch sets it from the store at once; 0 until then.
    metrics::gauge!("postern_users_held").set(0.0);
}

/// Makes the counters of listener `(port, role)` present, at 0 unless it
/// counted before (a reload may serve a port again).
pub fn count_listener(port: u16, role: &'static str) {
    let port = port.to_string();
    metrics::counter!("postern_connections_total", "port" => port.clone(), "role" => role)
        .increment(0);
    for name in [
        "postern_tls_handshakes_total",
        "postern_auth_successes_total",
        "postern_auth_failures_total",
        "postern_messages_queued_total",
    ] {
        metrics::counter!(name, "port" => port.clone()).increment(0);
    }
}

/// Counts a refused command (`session::reply`).
pub fn rejected(code: u16, status: Option<impl std::fmt::Display>) {
    let status = status.map_or_else(String::new, |s| s.to_string());
    metrics::counter!("postern_rejections_total", "code" => code.to_string(), "status" => status)
        .increment(1);
}

/// Reads the queue's counts for the gauges, just before a scrape renders them.
/// One summary query (two index walks); a failure leaves the last values.
pub async fn read_queue(spool: &Spool, now: i64) {
    let Ok(summary) = spool.summary().await else {
        return;
    };
    metrics::gauge!("postern_queue_messages").set(summary.messages as f64);
    for (state, n) in [
        ("queued", summary.queued),
        ("deferred", summary.deferred),
        ("held", summary.held),
    ] {
        metrics::gauge!("postern_queue_recipients", "state" => state).set(n as f64);
    }
    let oldest = summary.oldest.map_or(0, |t| (now - t).max(0));
    metrics::gauge!("postern_queue_oldest_seconds").set(oldest as f64);
}
