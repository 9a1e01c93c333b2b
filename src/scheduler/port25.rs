//! The scheduler's side of a blocked port 25 (`outbound::port25` finds
//! it): what changes when it is found blocked or open again, and the status
//! file `postern queue` reads.

use super::Delivery;
use crate::config::Config;
use crate::failure::FailureKind;

/// Port 25 is now `blocked` (or not), `before` as last seen (`None` at
/// start): the status file and the gauge say so, and on a change the mail
/// waiting for it is made due.
pub(super) async fn changed(delivery: &Delivery, before: Option<bool>, blocked: bool) {
    if before.is_some() {
        mail_waiting_for_it(delivery, blocked).await;
    }
    write_status(&delivery.config(), blocked);
    metrics::gauge!("postern_outbound_port25_blocked").set(if blocked { 1.0 } else { 0.0 });
}

/// Port 25 was found blocked, or open again: the mail that waits for it is
/// due at once (through the fallback relay, or direct again), and the MX
/// destinations left alone because of it are tried again.
async fn mail_waiting_for_it(delivery: &Delivery, blocked: bool) {
    let unreachable = FailureKind::Unreachable {
        port: delivery.config().delivery.mx_port,
    };
    if !blocked {
        delivery.destinations.forget_down(|f| f.kind == unreachable);
    } else if !delivery.outbound.port25.detouring() {
        // Nowhere else to send it: it waits for port 25 as it did.
        return;
    }
    match delivery
        .queue
        .spool()
        .retry_kind(&unreachable.token(), None)
        .await
    {
        Ok(due) => {
            tracing::info!(
                event = "port25_retry",
                blocked,
                recipients = due,
                "mail that waited for port 25 is due now"
            );
            delivery.queue.changed();
        }
        Err(e) => tracing::error!(event = "spool_error", error = %e),
    }
}

/// What `postern queue` shows about delivery as a whole: `run/delivery.json`.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct DeliveryStatus {
    pub port25_blocked: bool,
    /// While port 25 is blocked: the relay (`host:port`) MX-bound mail
    /// takes instead, if there is one.
    #[serde(default)]
    pub fallback: Option<String>,
}

impl DeliveryStatus {
    pub fn path(config: &Config) -> std::path::PathBuf {
        config.run_dir().join("delivery.json")
    }

    /// The status a running (or the last) server wrote, if any.
    pub fn read(config: &Config) -> Option<DeliveryStatus> {
        serde_json::from_slice(&std::fs::read(DeliveryStatus::path(config)).ok()?).ok()
    }
}

fn write_status(config: &Config, port25_blocked: bool) {
    let path = DeliveryStatus::path(config);
    let status = DeliveryStatus {
        port25_blocked,
        fallback: crate::router::mx_fallback(config)
            .filter(|_| port25_blocked)
            .map(|r| format!("{}:{}", r.host, r.port)),
    };
    let json = serde_json::to_vec(&status).unwrap_or_default();
    let tmp = path.with_extension("tmp");
    if let Err(e) = std::fs::create_dir_all(config.run_dir())
        .and_then(|()| std::fs::write(&tmp, json))
        .and_then(|()| std::fs::rename(&tmp, &path))
    {
        tracing::warn!(event = "status_write_failed", path = %path.display(), error = %e);
    }
}
