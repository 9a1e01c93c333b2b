//! `Config`: the validated, typed configuration every other module reads, shared
//! as `Arc<Config>` (in the running server through `Live`, which a reload
//! replaces). Built from a TOML file (or the built-in defaults) by
//! `load`; all errors of a file are collected and each names file, line and key.

mod checker;
pub mod defaults;
mod file;
mod live;
mod role;
mod validate;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use nix::unistd::{Gid, Uid};

pub use live::Live;
pub use role::ListenerRole;

use crate::policy::sender::SenderPattern;
use crate::smtp::data::BareNewlines;

pub use checker::{ConfigError, ConfigErrors};

/// The whole server configuration after validation.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Where the configuration came from, for messages; `None` for built-in defaults.
    pub source: Option<PathBuf>,
    pub hostname: String,
    pub data_dir: PathBuf,
    /// The account the server switches to once its ports are bound, when
    /// started as root (`user`, `group`); `None`: it stays who it is.
    pub run_as: Option<RunAs>,
    pub trusted_networks: Vec<IpNet>,
    pub listeners: Vec<ListenerConfig>,
    pub tls: Option<TlsFiles>,
    pub limits: Limits,
    pub auth: Auth,
    pub bare_newlines: BareNewlines,
    /// How long a submission listener waits for a TLS ClientHello before it
    /// greets in plaintext (a client set to SSL/TLS on 587 still gets in).
    pub tls_detect: Duration,
    pub delivery: Delivery,
    pub relay: Option<Relay>,
    pub routes: Vec<Route>,
    pub fallback_relay: Option<Relay>,
    pub http: Http,
    pub store_url: Option<String>,
    pub local: Local,
    /// `[[sendmail]]`: the Unix users other than root and the server's own
    /// that may send through `postern sendmail`, and as whom.
    pub sendmail: Vec<SendmailUser>,
    /// `[acme]`: the certificate comes from an ACME CA (src/acme/).
    pub acme: Option<Acme>,
    /// `[dkim]`: how key rotation proceeds (src/dkim/rotation.rs).
    pub dkim: Dkim,
    /// `[filter] dmarc`: what the checks of mail from other servers do
    /// (src/dmarc/).
    pub dmarc: DmarcMode,
    /// `[filter] rspamd`: the spam filter mail is scanned by (src/filter/).
    pub rspamd: Option<Rspamd>,
    /// `[filter] dnsbl`: DNS block lists asked about each client of an mta
    /// listener at connect (none by default).
    pub dnsbl: Vec<String>,
    /// `[filter] dmarc_reports`: how often DMARC aggregate reports go to
    /// the domains that ask for them (src/dmarc/report.rs); `None`: never.
    pub dmarc_reports: Option<Duration>,
}

/// `[filter] rspamd` and the keys that go with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rspamd {
    /// Host and port of rspamd's normal worker (HTTP, on this host or a
    /// trusted network).
    pub addr: String,
    pub timeout: Duration,
    /// Mail is taken unscanned when rspamd does not answer (else 451).
    pub fail_open: bool,
    /// Mail users submit is scanned too.
    pub outgoing: bool,
}

/// `[filter] dmarc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmarcMode {
    /// SPF, DKIM and DMARC checked and recorded in Authentication-Results:;
    /// a domain's DMARC policy applied (reject: refused, quarantine: the
    /// Junk folder); mail claiming a hosted domain without proof refused.
    Enforce,
    /// Checked and recorded only.
    Tag,
    /// Not checked.
    Off,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dkim {
    /// How long keys replaced by a rotation stay published (and on disk).
    pub retire_after: Duration,
    /// How often the server looks whether DNS serves a rotation's keys.
    pub check_interval: Duration,
}

/// `user` and `group`, resolved on this host when the config is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub user: String,
    pub uid: u32,
    pub group: String,
    pub gid: u32,
}

/// One `[[sendmail]]` entry: a local Unix user and the sender addresses it
/// may use (`senders`, each an address or `*@domain`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendmailUser {
    pub unix_user: String,
    pub senders: Vec<SenderPattern>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    pub addr: SocketAddr,
    pub role: ListenerRole,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Every protocol and resource limit; each has a test at the limit.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub max_message_size: u64,
    pub max_recipients: usize,
    pub max_command_line: usize,
    pub max_text_line: usize,
    pub max_errors: u32,
    pub max_connections: usize,
    /// Per client address; `trusted_networks` count only in `max_connections`.
    pub max_connections_per_ip: usize,
    pub command_timeout: Duration,
    pub data_timeout: Duration,
    pub auth_failures_per_connection: u32,
    pub auth_failures_per_ip_per_hour: u32,
    pub shutdown_grace: Duration,
    /// Below this many free octets in `data_dir`, new mail is refused at MAIL
    /// (Postfix's queue_minfree); 0 turns the floor off.
    pub min_free_space: u64,
    /// What one user may send (`postern user limits` sets a user's own).
    pub messages_per_hour_per_user: u64,
    pub recipients_per_day_per_user: u64,
    pub new_recipients_per_day_per_user: u64,
    /// When a user's outgoing mail is held as a stolen account's;
    /// `None`: never (`hold_on_burst = false`).
    pub burst: Option<crate::policy::sending::Burst>,
}

/// `[auth]`: how successful logins are remembered (auth/cache.rs).
#[derive(Debug, Clone, PartialEq)]
pub struct Auth {
    /// How long a verified password is accepted again without argon2; zero
    /// turns the cache off.
    pub cache_ttl: Duration,
    /// Users remembered at once; beyond it the oldest verification goes.
    pub cache_size: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub mx_port: u16,
    pub nameservers: Vec<SocketAddr>,
    /// DANE (RFC 7672): MX hosts with signed TLSA records get mail only over
    /// TLS with a certificate that matches them.
    pub dane: bool,
    /// DNSKEY records to trust instead of the root zone's (a test zone, or
    /// a private DNSSEC tree).
    pub dnssec_trust_anchor: Option<PathBuf>,
    pub max_lifetime: Duration,
    /// The first retry's delay; also how long a destination that could not
    /// be reached is left alone (`scheduler/destinations.rs`).
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// Deliveries at once; waiting for a server to answer takes none.
    pub concurrency: usize,
    /// Deliveries at once to one destination, once it has been reached.
    pub destination_concurrency: usize,
    /// Accept and keep mail, deliver nothing (maintenance, tests).
    pub hold: bool,
    pub connect_timeout: Duration,
    /// How long the outbound client waits for each reply.
    pub timeout: Duration,
    /// Whether recipient domains' MTA-STS policies are fetched and applied
    /// (outbound/mta_sts.rs).
    pub mta_sts: bool,
    /// The port policies are fetched from: 443, but for tests.
    pub mta_sts_port: u16,
    /// How often TLS reports go to the domains that ask for them
    /// (outbound/tls_report.rs); `None`: never.
    pub tls_reports: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayTls {
    StartTls,
    Implicit,
    None,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relay {
    pub host: String,
    pub port: u16,
    pub tls: RelayTls,
    pub tls_verify: bool,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    /// AUTH over a connection without TLS (`tls = "none"`); off unless set,
    /// since the password then crosses the network in clear.
    pub allow_plaintext_auth: bool,
}

/// Which mail a `[[route]]` takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteMatch {
    RecipientDomain(String),
    SenderDomain(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub matches: RouteMatch,
    pub relay: Relay,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Http {
    pub addr: Option<SocketAddr>,
    pub tls_addr: Option<SocketAddr>,
    pub submission_on_tls: bool,
    /// Autoconfig lists first the ports that worked from the asking
    /// client's network (`portmap`), rather than one order for all.
    pub ports_by_network: bool,
    /// The incoming (IMAP over TLS) server mail clients are told about.
    pub imap_host: String,
    pub imap_port: u16,
    pub mta_sts_mode: MtaStsMode,
    /// Clients that may read `/metrics` (others get 403); by default loopback
    /// and `trusted_networks`.
    pub metrics_from: Vec<IpNet>,
    /// `metrics_token_file`'s token: a scraper that sends it as
    /// `Authorization: Bearer` may read `/metrics` from anywhere.
    pub metrics_token: Option<Secret>,
    /// The web dashboard (`dashboard`), and the clients it is served to
    /// (by default loopback and `trusted_networks`).
    pub dashboard: bool,
    pub dashboard_from: Vec<IpNet>,
    /// The time a client has for a request's head, and again for the rest.
    pub request_timeout: Duration,
    /// Caps over both HTTP listeners; `trusted_networks` count only in the total.
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
}

/// `[local]`: how mail for hosted mailboxes is stored (docs/dovecot.md).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Local {
    /// Owner of the Maildirs Postern writes, and of the messages in them;
    /// `None` keeps the server's own user.
    pub owner: Option<Named<Uid>>,
    /// Their group; `None` keeps the server's own group.
    pub group: Option<Named<Gid>>,
    /// Mode of the Maildir directories (0o700..=0o777); the message files get
    /// it without the x bits. `None` leaves what the umask gives (0700, 0600).
    pub mode: Option<u32>,
    /// Where hosted mail goes by LMTP instead of into the Maildir.
    pub lmtp: Option<Lmtp>,
    /// `[[local.domain]]`: a domain's own choice, over `lmtp`.
    pub domains: Vec<LocalDomain>,
}

impl Local {
    /// The LMTP server that takes `domain`'s mail; `None`: the Maildir.
    pub fn lmtp_for(&self, domain: &str) -> Option<&Lmtp> {
        match self.domains.iter().find(|d| d.name == domain) {
            Some(d) => d.lmtp.as_ref(),
            None => self.lmtp.as_ref(),
        }
    }
}

/// A user or group named in the configuration, with the id it had when the
/// configuration was loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named<Id> {
    pub name: String,
    pub id: Id,
}

/// An LMTP server (RFC 2033): a Unix socket or a TCP address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lmtp {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

impl std::fmt::Display for Lmtp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lmtp::Unix(path) => write!(f, "unix:{}", path.display()),
            Lmtp::Tcp(addr) => write!(f, "{addr}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct LocalDomain {
    pub name: String,
    /// `None`: this domain's mail is written to the Maildir, whatever `lmtp` says.
    pub lmtp: Option<Lmtp>,
}

/// `[acme]`: where and as whom certificates are ordered (RFC 8555).
#[derive(Debug, Clone, PartialEq)]
pub struct Acme {
    /// The CA's directory URL (https).
    pub directory: String,
    /// The account's contact address, for the CA's expiry and policy mail.
    pub email: String,
    /// The root certificate (PEM) that the CA's own HTTPS API is checked
    /// against, when it is not publicly trusted (a test CA such as pebble).
    pub ca_roots: Option<PathBuf>,
    /// A certificate with less than this left is renewed.
    pub renew_before: Duration,
}

/// A secret from a file named in the configuration; never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// RFC 8461 policy mode served at /.well-known/mta-sts.txt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MtaStsMode {
    #[default]
    Testing,
    Enforce,
    None,
}

impl MtaStsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            MtaStsMode::Testing => "testing",
            MtaStsMode::Enforce => "enforce",
            MtaStsMode::None => "none",
        }
    }
}

/// Whether `ip` is in one of `networks`; an IPv4 client on a dual-stack
/// socket (`::ffff:192.0.2.1`) counts as its IPv4 address.
pub fn in_networks(networks: &[IpNet], ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    networks.iter().any(|net| net.contains(&ip))
}

impl Config {
    /// The configuration used when no file is given.
    pub fn builtin() -> Config {
        match validate::from_text("", None) {
            Ok(config) => config,
            // The empty document is the definition of the defaults; it cannot fail
            // unless a default in defaults.rs is itself invalid, which unit tests catch.
            Err(errors) => unreachable!("built-in defaults are invalid: {errors}"),
        }
    }

    /// Reads and validates `path`. Every problem in the file is reported at once.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigErrors::single(ConfigError::unreadable(path, &e)))?;
        validate::from_text(&text, Some(path))
    }

    /// `load`, without looking at the files the configuration names
    /// (certificate, key, password files): for `postern sendmail`, which
    /// needs only the settings and is run by users who may not even see the
    /// server's keys.
    pub fn load_settings_only(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigErrors::single(ConfigError::unreadable(path, &e)))?;
        validate::from_text_checking(&text, Some(path), validate::Files::Skip)
    }

    /// Validates TOML text; `path` is only used to name the file in errors.
    pub fn from_text(text: &str, path: Option<&Path>) -> Result<Config, ConfigErrors> {
        validate::from_text(text, path)
    }

    /// The spool, store and generated files live here.
    pub fn run_dir(&self) -> PathBuf {
        self.data_dir.join("run")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv4_client_on_a_dual_stack_socket_is_in_its_ipv4_network() {
        let nets: Vec<IpNet> = vec![
            "127.0.0.1/32".parse().expect("net"),
            "2001:db8::/32".parse().expect("net"),
        ];
        for (ip, inside) in [
            ("127.0.0.1", true),
            ("::ffff:127.0.0.1", true),
            ("::ffff:127.0.0.2", false),
            ("2001:db8::5", true),
            ("::1", false),
        ] {
            assert_eq!(in_networks(&nets, ip.parse().expect("ip")), inside, "{ip}");
        }
    }
}
