//! MTA-STS (RFC 8461): a recipient domain's promise, published over HTTPS,
//! that its MX hosts take TLS with certificates valid for their names. The
//! policy is announced by a TXT record (`_mta-sts.<domain>`, whose `id`
//! changes with it) and fetched from `https://mta-sts.<domain>/.well-known/
//! mta-sts.txt` (the certificate verified, no redirect followed); it is kept
//! for its `max_age` and fetched again in the background, while the kept
//! one still serves, once its id changes or half its age has passed. With
//! `mode: enforce` mail goes only to the MX hosts the policy names, over TLS
//! with a certificate valid for the host (`outbound` asks); `testing` only
//! logs what would have failed. Policies are kept in the store as well,
//! and read back at start: a restart does not forget one before its
//! max_age (§5.1), so blocking the policy host then does not turn
//! enforcement off.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use mail_auth::report::tlsrpt::ResultType;
use tokio_rustls::TlsConnector;

use super::https::{self, HttpsFailure};
use super::tls_report::{Applied, Outcome, TlsResults};
use super::{Settings, TlsMode};
use crate::clock::now_unix;
use crate::dns::Dns;
use crate::failure::{DeliveryFailure, FailureKind, Severity};
use crate::store::{KeptPolicy, Store};

/// RFC 8461 §3.3: a policy body is at most 64 KiB.
const MAX_POLICY: usize = 64 * 1024;
/// RFC 8461 §3.3: about a minute for the whole fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one address of the policy host is waited for.
const PER_ADDRESS: Duration = Duration::from_secs(20);
/// How long after a failed fetch deliveries go without asking again.
const RETRY_FETCH_AFTER: i64 = 300;
/// RFC 8461 §3.2: max_age is at most a year.
const MAX_AGE: u64 = 31_557_600;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Enforce,
    Testing,
    None,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub mode: Mode,
    /// MX host patterns, lower case: a name, or `*.` and a name (one label).
    pub mx: Vec<String>,
    /// Seconds the policy may be kept.
    pub max_age: u64,
}

impl Policy {
    /// Parses a policy body (RFC 8461 §3.2): `key: value` lines, in any
    /// order; unknown keys are ignored; version, mode and max_age are
    /// required, and mx for any mode but none.
    pub fn parse(text: &str) -> Result<Policy, String> {
        let (mut version, mut mode, mut max_age) = (None, None, None);
        let mut mx = Vec::new();
        for line in text.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match key.trim() {
                "version" => version = Some(value.to_string()),
                "mode" => {
                    mode = Some(match value {
                        "enforce" => Mode::Enforce,
                        "testing" => Mode::Testing,
                        "none" => Mode::None,
                        other => return Err(format!("unknown mode {other:?}")),
                    })
                }
                "max_age" => {
                    max_age = Some(
                        value
                            .parse::<u64>()
                            .map_err(|_| format!("max_age {value:?} is not a number"))?
                            .min(MAX_AGE),
                    )
                }
                "mx" => mx.push(value.trim_end_matches('.').to_ascii_lowercase()),
                _ => {}
            }
        }
        if version.as_deref() != Some("STSv1") {
            return Err("not an STSv1 policy".into());
        }
        let mode = mode.ok_or("no mode")?;
        let max_age = max_age.ok_or("no max_age")?;
        if mx.is_empty() && mode != Mode::None {
            return Err("no mx".into());
        }
        Ok(Policy { mode, mx, max_age })
    }

    /// The policy as its lines, for TLS reports (RFC 8460 §4.4: the
    /// policy-string).
    pub fn lines(&self) -> Vec<String> {
        let mode = match self.mode {
            Mode::Enforce => "enforce",
            Mode::Testing => "testing",
            Mode::None => "none",
        };
        let mut lines = vec!["version: STSv1".to_string(), format!("mode: {mode}")];
        lines.extend(self.mx.iter().map(|mx| format!("mx: {mx}")));
        lines.push(format!("max_age: {}", self.max_age));
        lines
    }

    /// Whether MX host `host` is one the policy names (RFC 8461 §4.1: a
    /// wildcard stands for the leftmost label only).
    pub fn allows(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.mx
            .iter()
            .any(|pattern| match pattern.strip_prefix("*.") {
                Some(parent) => host
                    .split_once('.')
                    .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
                None => *pattern == host,
            })
    }
}

/// Why a policy could not be had, in RFC 8460's terms for TLS reports.
#[derive(Debug)]
struct FetchFailure {
    /// sts-policy-fetch-error, sts-webpki-invalid or sts-policy-invalid.
    result: ResultType,
    text: String,
}

impl FetchFailure {
    fn fetch(text: impl std::fmt::Display) -> FetchFailure {
        FetchFailure {
            result: ResultType::StsPolicyFetchError,
            text: text.to_string(),
        }
    }
}

impl std::fmt::Display for FetchFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// A policy as fetched: under which id, and when.
struct Kept {
    id: String,
    policy: Arc<Policy>,
    fetched: i64,
}

/// The policies of the domains mail went to, fetched when first needed.
pub struct Policies {
    dns: Dns,
    /// Verifies the policy host's certificate against the system's roots.
    connector: TlsConnector,
    /// 443, but for tests.
    port: u16,
    kept: Mutex<HashMap<String, Kept>>,
    /// Domains whose policy is being fetched in the background.
    fetching: Mutex<HashSet<String>>,
    /// When a domain's fetch last failed: one that hangs is not waited for
    /// again by every delivery for a while.
    failed: Mutex<HashMap<String, i64>>,
    /// Where failed fetches are counted for TLS reports.
    results: Arc<TlsResults>,
    /// Where policies are kept across restarts; none in unit tests.
    store: Option<Store>,
}

impl Policies {
    pub fn new(
        dns: Dns,
        connector: TlsConnector,
        port: u16,
        results: Arc<TlsResults>,
        store: Option<Store>,
    ) -> Policies {
        Policies {
            dns,
            connector,
            port,
            kept: Mutex::default(),
            fetching: Mutex::default(),
            failed: Mutex::default(),
            results,
            store,
        }
    }

    /// Takes up the policies the store kept that have not expired.
    pub async fn load(&self) {
        let Some(store) = &self.store else {
            return;
        };
        let rows = match store.mta_sts_policies(now_unix()).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!(event = "store_error", error = %e, "the kept MTA-STS policies cannot be read");
                return;
            }
        };
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        for row in rows {
            match Policy::parse(&row.policy) {
                Ok(policy) => {
                    kept.insert(
                        row.domain,
                        Kept {
                            id: row.id,
                            policy: Arc::new(policy),
                            fetched: row.fetched,
                        },
                    );
                }
                Err(e) => {
                    tracing::warn!(event = "mta_sts_kept_invalid", domain = %row.domain, error = %e)
                }
            }
        }
        tracing::info!(event = "mta_sts_loaded", policies = kept.len());
    }

    /// `domain`'s policy now, if it has one: the kept one while it is
    /// current (fetched again in the background when its id changed or it
    /// is half way to its max_age), else fetched now. A domain whose policy
    /// cannot be had (no TXT record, a fetch that fails) and that had none
    /// kept gets mail as if it had none (RFC 8461 §5.1).
    pub async fn policy(self: &Arc<Self>, domain: &str) -> Option<Arc<Policy>> {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let id = self.announced_id(&domain).await;
        let now = now_unix();
        let kept = {
            let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
            kept.get(&domain).and_then(|k| {
                let age = u64::try_from(now - k.fetched).unwrap_or(0);
                (age < k.policy.max_age).then(|| {
                    let stale =
                        id.as_ref().is_some_and(|id| *id != k.id) || age >= k.policy.max_age / 2;
                    (Arc::clone(&k.policy), stale)
                })
            })
        };
        match (kept, id) {
            (Some((policy, stale)), id) => {
                // A policy host that failed lately is not asked again by
                // every delivery meanwhile.
                if let (true, Some(id), false) = (stale, id, self.failed_lately(&domain, now)) {
                    self.refresh_in_background(domain, id);
                }
                Some(policy)
            }
            (None, Some(_)) if self.failed_lately(&domain, now) => None,
            (None, Some(id)) => self.fetch_and_keep(&domain, id).await,
            (None, None) => None,
        }
    }

    /// Whether the domain's last fetch failed less than `RETRY_FETCH_AFTER` ago.
    fn failed_lately(&self, domain: &str, now: i64) -> bool {
        self.failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(domain)
            .is_some_and(|at| now - at < RETRY_FETCH_AFTER)
    }

    /// The `id` of the domain's `v=STSv1` TXT record; `None` without one.
    async fn announced_id(&self, domain: &str) -> Option<String> {
        let record = self
            .dns
            .tagged_txt(&format!("_mta-sts.{domain}"), "v=STSv1")
            .await?;
        record.split(';').find_map(|field| {
            let (key, value) = field.trim().split_once('=')?;
            (key.trim() == "id").then(|| value.trim().to_string())
        })
    }

    fn refresh_in_background(self: &Arc<Self>, domain: String, id: String) {
        if !self
            .fetching
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(domain.clone())
        {
            return;
        }
        let policies = Arc::clone(self);
        tokio::spawn(async move {
            policies.fetch_and_keep(&domain, id).await;
            policies
                .fetching
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&domain);
        });
    }

    async fn fetch_and_keep(&self, domain: &str, id: String) -> Option<Arc<Policy>> {
        let fetched = tokio::time::timeout(FETCH_TIMEOUT, self.fetch(domain))
            .await
            .unwrap_or_else(|_| Err(FetchFailure::fetch("no answer within a minute")));
        match fetched {
            Ok(policy) => {
                tracing::info!(event = "mta_sts_policy", domain, id, mode = ?policy.mode, mx = ?policy.mx, max_age = policy.max_age);
                let policy = Arc::new(policy);
                let fetched = now_unix();
                if let Some(store) = &self.store {
                    let row = KeptPolicy {
                        domain: domain.to_string(),
                        id: id.clone(),
                        policy: policy.lines().join("\n"),
                        fetched,
                        expires: fetched.saturating_add_unsigned(policy.max_age),
                    };
                    if let Err(e) = store.keep_mta_sts_policy(&row).await {
                        // Still kept in memory; only a restart would forget it.
                        tracing::error!(event = "store_error", domain, error = %e, "the MTA-STS policy cannot be kept");
                    }
                }
                self.kept.lock().unwrap_or_else(|e| e.into_inner()).insert(
                    domain.to_string(),
                    Kept {
                        id,
                        policy: Arc::clone(&policy),
                        fetched,
                    },
                );
                Some(policy)
            }
            Err(error) => {
                tracing::warn!(event = "mta_sts_fetch_failed", domain, %error);
                let unfetched = Applied::Sts {
                    lines: Vec::new(),
                    mx: Vec::new(),
                };
                let outcome = Outcome::Failure {
                    result: error.result,
                    mx_host: None,
                    ip: None,
                    reason: error.text,
                };
                self.results.record(domain, &unfetched, outcome);
                let now = now_unix();
                self.failed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(domain.to_string(), now);
                // A policy kept and not expired goes on serving (RFC 8461
                // §5.1); an expired one is forgotten: the mail goes as if
                // there were none.
                let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
                let current = kept
                    .get(domain)
                    .filter(|k| u64::try_from(now - k.fetched).unwrap_or(0) < k.policy.max_age);
                match current {
                    Some(k) => Some(Arc::clone(&k.policy)),
                    None => {
                        kept.remove(domain);
                        None
                    }
                }
            }
        }
    }

    /// GET `https://mta-sts.<domain>/.well-known/mta-sts.txt`.
    async fn fetch(&self, domain: &str) -> Result<Policy, FetchFailure> {
        let host = format!("mta-sts.{domain}");
        let addrs = self
            .dns
            .addresses(&host)
            .await
            .map_err(FetchFailure::fetch)?;
        let mut last = FetchFailure::fetch(format!("{host} has no address"));
        for ip in addrs {
            // Each address its share of the minute: a dead first one must
            // not use it all.
            let fetched = tokio::time::timeout(
                PER_ADDRESS,
                self.fetch_from(&host, SocketAddr::new(ip, self.port)),
            )
            .await
            .unwrap_or_else(|_| {
                Err(FetchFailure::fetch(format!(
                    "no answer within {} s",
                    PER_ADDRESS.as_secs()
                )))
            });
            match fetched {
                Ok(policy) => return Ok(policy),
                Err(e) => {
                    last = FetchFailure {
                        text: format!("{host} ({ip}): {e}"),
                        ..e
                    }
                }
            }
        }
        Err(last)
    }

    async fn fetch_from(&self, host: &str, addr: SocketAddr) -> Result<Policy, FetchFailure> {
        let request = hyper::Request::get("/.well-known/mta-sts.txt")
            .header("Host", host)
            .body(Empty::<Bytes>::new())
            .map_err(FetchFailure::fetch)?;
        let response = https::send(&self.connector, host, addr, request)
            .await
            .map_err(|e| FetchFailure {
                result: match e {
                    HttpsFailure::Tls(_) => ResultType::StsWebpkiInvalid,
                    HttpsFailure::Other(_) => ResultType::StsPolicyFetchError,
                },
                text: e.to_string(),
            })?;
        // RFC 8461 §3.3: no redirects; only 200 is a policy.
        if response.status() != hyper::StatusCode::OK {
            return Err(FetchFailure::fetch(format!(
                "HTTP status {}",
                response.status()
            )));
        }
        let body = Limited::new(response.into_body(), MAX_POLICY)
            .collect()
            .await
            .map_err(|e| FetchFailure::fetch(format!("the policy: {e}")))?
            .to_bytes();
        let invalid = |text: String| FetchFailure {
            result: ResultType::StsPolicyInvalid,
            text,
        };
        let text =
            std::str::from_utf8(&body).map_err(|_| invalid("the policy is not UTF-8".into()))?;
        Policy::parse(text).map_err(|e| invalid(format!("the policy: {e}")))
    }
}

/// The MX hosts of `domain` mail may go to, and how, under its MTA-STS
/// `policy`: with `enforce`, only the hosts it names, over TLS with a
/// certificate valid for the host (none named: the mail waits, and says
/// why); with `testing` or none, every host, with TLS when offered.
pub(super) fn mx_settings(
    domain: &str,
    hosts: Vec<String>,
    policy: Option<&Policy>,
) -> Result<(Vec<String>, Settings), DeliveryFailure> {
    let opportunistic = Settings {
        tls: TlsMode::Opportunistic,
        verify: false,
        credentials: None,
        plaintext_auth: false,
        tls_required_by: String::new(),
        report: Some(Applied::None),
    };
    let Some(policy) = policy else {
        return Ok((hosts, opportunistic));
    };
    let opportunistic = Settings {
        report: Some(Applied::Sts {
            lines: policy.lines(),
            mx: policy.mx.clone(),
        }),
        ..opportunistic
    };
    // In preference order, as the hosts came.
    let named: Vec<String> = hosts.iter().filter(|h| policy.allows(h)).cloned().collect();
    let unnamed: Vec<&String> = hosts.iter().filter(|h| !policy.allows(h)).collect();
    match policy.mode {
        Mode::Enforce if named.is_empty() => Err(DeliveryFailure::new(
            Severity::Transient,
            FailureKind::Tls,
            format!(
                "MTA-STS policy of {domain} (enforce): none of its MX hosts ({}) is one the \
                 policy names ({}); the mail waits",
                hosts.join(", "),
                policy.mx.join(", ")
            ),
        )),
        Mode::Enforce => Ok((
            named,
            Settings {
                tls: TlsMode::Required,
                verify: true,
                tls_required_by: format!("the MTA-STS policy of {domain}"),
                ..opportunistic
            },
        )),
        mode => {
            if mode == Mode::Testing && !unnamed.is_empty() {
                tracing::warn!(
                    event = "mta_sts_testing",
                    domain,
                    hosts = ?unnamed,
                    "MX hosts the MTA-STS policy does not name; delivered, as the policy only tests"
                );
            }
            Ok((hosts, opportunistic))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_as_rfc_8461_writes_them() {
        let p = Policy::parse(
            "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.Example.NET\r\nmax_age: 604800\r\n",
        )
        .expect("policy");
        assert_eq!(p.mode, Mode::Enforce);
        assert_eq!(p.max_age, 604_800);
        assert!(p.allows("mail.example.com."));
        assert!(p.allows("MX1.example.net"));
        assert!(!p.allows("a.b.example.net"), "one label only");
        assert!(!p.allows("example.net"));
        assert!(!p.allows("evil.example.com"));
        for bad in [
            "mode: enforce\nmx: a.example\nmax_age: 1\n",
            "version: STSv1\nmode: sometimes\nmx: a.example\nmax_age: 1\n",
            "version: STSv1\nmode: enforce\nmax_age: 1\n",
            "version: STSv1\nmode: enforce\nmx: a.example\n",
            "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: soon\n",
        ] {
            assert!(Policy::parse(bad).is_err(), "{bad}");
        }
        let none =
            Policy::parse("version: STSv1\nmode: none\nmax_age: 99999999999\n").expect("none");
        assert_eq!((none.mode, none.max_age), (Mode::None, MAX_AGE));
    }
}
