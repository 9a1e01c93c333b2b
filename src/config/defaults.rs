//! Every built-in default in one place (Postfix's DEF_* table, without globals).
//! `validate.rs` reads these when a key is absent; the README's reference repeats them.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::config::ListenerRole;

pub const DATA_DIR: &str = "./postern-data";

/// The four listeners of DESIGN.md: port 25 for other servers, 26 and 587 for
/// clients whose ISP blocks 25, and 465 for implicit TLS (RFC 8314). Each on
/// IPv6 and IPv4 at once (`listener::bind_tcp`; IPv4 only where the host has
/// no IPv6).
pub const LISTENERS: [(&str, ListenerRole); 4] = [
    ("[::]:25", ListenerRole::Mta),
    ("[::]:26", ListenerRole::Submission),
    ("[::]:587", ListenerRole::Submission),
    ("[::]:465", ListenerRole::Submissions),
];

pub const MAX_MESSAGE_SIZE: u64 = 26_214_400;
pub const MAX_RECIPIENTS: usize = 100;
/// RFC 5321 §4.5.3.1.4: 512 octets including the CRLF.
pub const MAX_COMMAND_LINE: usize = 512;
/// RFC 5321 §4.5.3.1.6 sets 1000 octets including the CRLF, but scripts, HTML
/// generators and PHP's mail() write longer lines and Postfix takes them; this
/// only bounds what one line may cost (submitted text is re-encoded).
pub const MAX_TEXT_LINE: usize = 65_536;
/// Postfix's smtpd_hard_error_limit is 20; a client that makes ten errors is
/// broken or probing, so we stop listening sooner.
pub const MAX_ERRORS: u32 = 10;
pub const MAX_CONNECTIONS: usize = 1000;
pub const MAX_CONNECTIONS_PER_IP: usize = 20;
/// RFC 5321 §4.5.3.2.7: the server waits at least 5 minutes for the next command.
pub const COMMAND_TIMEOUT_SECS: u64 = 300;
/// RFC 5321 §4.5.3.2.5/6: 3 minutes per data block; we apply it to every read of
/// the body.
pub const DATA_TIMEOUT_SECS: u64 = 180;
pub const AUTH_FAILURES_PER_CONNECTION: u32 = 3;
/// Failed AUTH attempts one client address may make per hour across connections.
pub const AUTH_FAILURES_PER_IP_PER_HOUR: u32 = 20;
/// How long a verified password is remembered (Dovecot's auth_cache_ttl is an
/// hour; a short time keeps a client that logs in per message off argon2 while
/// bounding how long a verification is trusted).
pub const AUTH_CACHE_TTL_SECS: u64 = 300;
/// Users with a remembered verification: about 150 octets each.
pub const AUTH_CACHE_SIZE: u64 = 10_000;
/// How long SIGTERM waits for open sessions before it stops them.
pub const SHUTDOWN_GRACE_SECS: u64 = 30;
/// The free-space floor in `data_dir`: room for two messages of the largest
/// size and 100 MiB besides, so that what is accepted can still be committed,
/// bounced and logged.
pub fn min_free_space(max_message_size: u64) -> u64 {
    2 * max_message_size + (100 << 20)
}

pub const MX_PORT: u16 = 25;
pub const MAX_LIFETIME_SECS: u64 = 5 * 24 * 3600;
/// First retry after a temporary failure; each later one waits twice as long.
pub const RETRY_MIN_SECS: u64 = 300;
/// The longest wait between two attempts.
pub const RETRY_MAX_SECS: u64 = 4 * 3600;
/// Deliveries in progress at once, over all destinations.
pub const CONCURRENCY: u64 = 100;
/// Deliveries in progress at once to one destination (a domain or a relay).
pub const DESTINATION_CONCURRENCY: u64 = 4;
/// Outbound: how long a TCP connection may take to open.
pub const CONNECT_TIMEOUT_SECS: u64 = 30;
/// Outbound: how long to wait for each reply. RFC 5321 §4.5.3.2 suggests up to 5
/// minutes for some; 2 keeps a hung server from holding a slot for long.
pub const REPLY_TIMEOUT_SECS: u64 = 120;
/// How long a submission listener waits for a TLS ClientHello before greeting.
pub const TLS_DETECT_MS: u64 = 300;

/// HTTP: how long a client may take to send a request's head (and, again, the
/// rest of the request); also how long an idle keep-alive connection stays.
pub const HTTP_REQUEST_TIMEOUT_SECS: u64 = 10;
/// HTTP connections at once, over both HTTP listeners. The pages are small and
/// quick; these caps only have to stop a client from holding many sockets.
pub const HTTP_MAX_CONNECTIONS: u64 = 256;
/// HTTP connections at once from one client address (a browser opens up to 6).
pub const HTTP_MAX_CONNECTIONS_PER_IP: u64 = 16;
/// `[acme]`: renew a certificate when fewer days than this remain (Let's
/// Encrypt's certificates last 90 days; certbot renews at 30 left).
pub const ACME_RENEW_BEFORE_DAYS: u64 = 30;
/// Who may read `/metrics` without `metrics_from`: this host, and `trusted_networks`.
pub const METRICS_FROM: [IpNet; 2] = [
    IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(127, 0, 0, 0), 8)),
    IpNet::V6(Ipv6Net::new_assert(Ipv6Addr::LOCALHOST, 128)),
];
/// `[dkim]`: keys replaced by a rotation stay published this long (7 days:
/// mail signed with them may wait in a queue for days before it is checked).
pub const DKIM_RETIRE_AFTER_SECS: u64 = 7 * 86_400;
/// What one user may send: enough for a person or a small shop's mailings,
/// far below what a stolen password is used for (Google Workspace allows
/// 2,000 messages a day; a spam run sends thousands an hour).
pub const MESSAGES_PER_HOUR_PER_USER: u64 = 300;
pub const RECIPIENTS_PER_DAY_PER_USER: u64 = 3_000;
pub const NEW_RECIPIENTS_PER_DAY_PER_USER: u64 = 1_000;
/// A day: what RFC 7489 §7.2 calls the default report interval.
pub const DMARC_REPORT_INTERVAL: u64 = 86_400;
/// A burst: ten times the user's busiest hour of the week, and at least
/// these floors, which a user with no history must pass first. Below the
/// hourly message limit, so that a thief is held before being limited.
pub const BURST_FACTOR: u64 = 10;
pub const BURST_MESSAGES_PER_HOUR: u64 = 200;
pub const BURST_NEW_RECIPIENTS_PER_HOUR: u64 = 200;
pub const BURST_BOUNCES_PER_HOUR: u64 = 50;
/// `[filter] rspamd_timeout`: rspamd answers in well under a second; this
/// covers its DNS lookups on a slow day without holding a client long.
pub const RSPAMD_TIMEOUT_SECS: u64 = 15;
/// `[dkim]`: how often the server looks whether DNS serves a rotation's keys.
pub const DKIM_CHECK_INTERVAL_SECS: u64 = 300;
