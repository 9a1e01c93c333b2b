//! `ConfigFile`: serde structs that mirror the TOML keys one to one (ripgrep's
//! LowArgs). Nothing here is checked beyond its TOML type; `validate.rs` turns it
//! into a `Config` and explains what is wrong.

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
pub struct ConfigFile {
    pub hostname: Option<String>,
    pub data_dir: Option<String>,
    pub user: Option<String>,
    pub group: Option<String>,
    pub trusted_networks: Option<Vec<String>>,
    pub listener: Option<Vec<ListenerFile>>,
    pub tls: Option<TlsFile>,
    pub limits: Option<LimitsFile>,
    pub auth: Option<AuthFile>,
    pub smtp: Option<SmtpFile>,
    pub delivery: Option<DeliveryFile>,
    pub relay: Option<RelayFile>,
    pub route: Option<Vec<RouteFile>>,
    pub fallback_relay: Option<RelayFile>,
    pub http: Option<HttpFile>,
    pub store: Option<StoreFile>,
    pub local: Option<LocalFile>,
    pub sendmail: Option<Vec<SendmailFile>>,
    pub acme: Option<AcmeFile>,
    pub dkim: Option<DkimFile>,
    pub filter: Option<FilterFile>,
}

#[derive(Debug, Deserialize)]
pub struct ListenerFile {
    pub addr: Option<String>,
    pub role: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct TlsFile {
    pub cert: Option<String>,
    pub key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct LimitsFile {
    pub max_message_size: Option<u64>,
    pub max_recipients: Option<u64>,
    pub max_command_line: Option<u64>,
    pub max_text_line: Option<u64>,
    pub max_errors: Option<u64>,
    pub max_connections: Option<u64>,
    pub max_connections_per_ip: Option<u64>,
    pub command_timeout: Option<u64>,
    pub data_timeout: Option<u64>,
    pub auth_failures_per_connection: Option<u64>,
    pub auth_failures_per_ip_per_hour: Option<u64>,
    pub shutdown_grace: Option<u64>,
    pub min_free_space: Option<u64>,
    pub messages_per_hour_per_user: Option<u64>,
    pub recipients_per_day_per_user: Option<u64>,
    pub new_recipients_per_day_per_user: Option<u64>,
    pub hold_on_burst: Option<bool>,
    pub burst_factor: Option<u64>,
    pub burst_messages_per_hour: Option<u64>,
    pub burst_new_recipients_per_hour: Option<u64>,
    pub burst_bounces_per_hour: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct AuthFile {
    pub cache_ttl: Option<u64>,
    pub cache_size: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct SmtpFile {
    pub bare_newlines: Option<String>,
    pub tls_detect_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct DeliveryFile {
    pub mx_port: Option<u64>,
    pub nameservers: Option<Vec<String>>,
    pub dane: Option<bool>,
    pub dnssec_trust_anchor: Option<String>,
    pub max_lifetime: Option<u64>,
    pub retry_min: Option<u64>,
    pub retry_max: Option<u64>,
    pub concurrency: Option<u64>,
    pub destination_concurrency: Option<u64>,
    pub hold: Option<bool>,
    pub connect_timeout: Option<u64>,
    pub timeout: Option<u64>,
    pub mta_sts: Option<bool>,
    pub mta_sts_port: Option<u64>,
    pub tls_reports: Option<bool>,
    pub tls_report_interval: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RelayFile {
    pub host: Option<String>,
    pub port: Option<u64>,
    pub tls: Option<String>,
    pub tls_verify: Option<bool>,
    pub username: Option<String>,
    pub password_file: Option<String>,
    pub allow_plaintext_auth: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RouteFile {
    pub domain: Option<String>,
    pub sender_domain: Option<String>,
    pub host: Option<String>,
    pub port: Option<u64>,
    pub tls: Option<String>,
    pub tls_verify: Option<bool>,
    pub username: Option<String>,
    pub password_file: Option<String>,
    pub allow_plaintext_auth: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub struct HttpFile {
    pub addr: Option<String>,
    pub tls_addr: Option<String>,
    pub submission_on_tls: Option<bool>,
    pub ports_by_network: Option<bool>,
    pub imap: Option<String>,
    pub mta_sts_mode: Option<String>,
    pub metrics_from: Option<Vec<String>>,
    pub metrics_token_file: Option<String>,
    pub dashboard: Option<bool>,
    pub dashboard_from: Option<Vec<String>>,
    pub request_timeout: Option<u64>,
    pub max_connections: Option<u64>,
    pub max_connections_per_ip: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct SendmailFile {
    pub unix_user: Option<String>,
    pub senders: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct AcmeFile {
    pub directory: Option<String>,
    pub email: Option<String>,
    pub ca_roots: Option<String>,
    pub renew_before_days: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct FilterFile {
    pub dmarc: Option<String>,
    pub rspamd: Option<String>,
    pub rspamd_timeout: Option<u64>,
    pub rspamd_fail: Option<String>,
    pub rspamd_outgoing: Option<bool>,
    pub dnsbl: Option<Vec<String>>,
    pub dmarc_reports: Option<bool>,
    pub dmarc_report_interval: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct DkimFile {
    pub retire_after: Option<u64>,
    pub check_interval: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct StoreFile {
    pub url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct LocalFile {
    pub owner: Option<String>,
    pub group: Option<String>,
    pub mode: Option<String>,
    pub lmtp: Option<String>,
    pub domain: Option<Vec<LocalDomainFile>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct LocalDomainFile {
    pub name: Option<String>,
    pub lmtp: Option<String>,
}
