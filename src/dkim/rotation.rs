//! Key rotation (`postern domain dkim rotate`): new keys are made pending,
//! and the running server switches signing to them only once DNS serves
//! their records, so that no message is signed with a key receivers cannot
//! find. The keys they replace stay published for `[dkim] retire_after`
//! (mail signed with them may still be queued somewhere), then are deleted.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::proto::rr::RecordType;
use tokio_util::sync::CancellationToken;

use super::keys::{
    Algorithm, DkimError, DkimKeyError, DomainKey, KeyState, dir, domain_keys, generate,
    public_records, save_keys,
};
use super::sign::Signer;
use crate::dns::Dns;

/// Holds the domain's key list for one read-modify-write: the CLI and the
/// server both change it.
fn lock(data_dir: &Path, domain: &str) -> Result<File, DkimError> {
    use rustix::fs::{FlockOperation, flock};
    let path = dir(data_dir).join(format!("{domain}.lock"));
    let open = || {
        std::fs::create_dir_all(dir(data_dir))?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        flock(&file, FlockOperation::LockExclusive)?;
        Ok(file)
    };
    open().map_err(|e| DkimError::Write(path.clone(), e))
}

/// Makes a pending RSA and Ed25519 key for `domain`, with selectors named
/// after today (`postern-20261130`, `postern-20261130-ed25519`); returns
/// them. Refused while an earlier rotation still waits for DNS.
pub fn rotate(data_dir: &Path, domain: &str, now: i64) -> Result<Vec<DomainKey>, DkimError> {
    let _lock = lock(data_dir, domain)?;
    let mut keys = domain_keys(data_dir, domain)?;
    if keys.is_empty() {
        return Err(DkimKeyError::Missing {
            domain: domain.to_string(),
            dir: dir(data_dir),
        }
        .into());
    }
    let waiting: Vec<&str> = keys
        .iter()
        .filter(|k| k.state == KeyState::Pending)
        .map(|k| k.selector.as_str())
        .collect();
    if !waiting.is_empty() {
        return Err(DkimError::RotationWaiting {
            domain: domain.to_string(),
            selectors: waiting.join(" and "),
        });
    }
    let date = time::OffsetDateTime::from_unix_timestamp(now)
        .map(|t| t.date())
        .unwrap_or(time::Date::MIN);
    let day = format!(
        "postern-{:04}{:02}{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    );
    let taken = |s: &str| keys.iter().any(|k| k.selector.starts_with(s));
    let base = (1..)
        .map(|n| match n {
            1 => day.clone(),
            n => format!("{day}-{n}"),
        })
        .find(|s| !taken(s))
        .unwrap_or(day);
    let mut made = Vec::new();
    for algorithm in Algorithm::BOTH {
        let selector = match algorithm {
            Algorithm::Rsa => base.clone(),
            Algorithm::Ed25519 => format!("{base}-ed25519"),
        };
        let file = format!("{domain}.{selector}.pem");
        generate(data_dir, &file, algorithm)?;
        made.push(DomainKey {
            selector,
            algorithm,
            file,
            state: KeyState::Pending,
            retire_at: None,
        });
    }
    keys.extend(made.iter().cloned());
    save_keys(data_dir, domain, &keys)?;
    Ok(made)
}

/// What one look at a domain's keys changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Advanced {
    /// Pending selectors that now sign (DNS serves every one of them).
    pub switched: Vec<String>,
    /// Selectors that stopped signing and stay published until then.
    pub retired: Vec<String>,
    /// Selectors whose time was up: deleted.
    pub deleted: Vec<String>,
    /// Pending selectors DNS does not serve yet.
    pub waiting: Vec<String>,
}

/// Moves the domain's keys on: pending ones become active once DNS serves
/// all of them (the active ones then retire for `retire_after`), and retired
/// ones past their time are deleted.
pub async fn advance(
    data_dir: &Path,
    domain: &str,
    dns: &Dns,
    retire_after: Duration,
    now: i64,
) -> Result<Advanced, DkimError> {
    // DNS first, without the lock: a rotation that comes meanwhile is seen
    // (and left for the next look) once the list is read again under it.
    let mut served = Vec::new();
    let mut waiting = Vec::new();
    for (key, record) in public_records(data_dir, domain)? {
        if key.state != KeyState::Pending {
            continue;
        }
        let name = format!("{}._domainkey.{domain}", key.selector);
        let found = dns
            .lookup_values(&name, RecordType::TXT)
            .await
            .unwrap_or_default();
        if found.iter().any(|f| same_key(f, &record)) {
            served.push(key.selector);
        } else {
            waiting.push(key.selector);
        }
    }
    let _lock = lock(data_dir, domain)?;
    let mut keys = domain_keys(data_dir, domain)?;
    let mut done = Advanced::default();
    let pending = keys.iter().filter(|k| k.state == KeyState::Pending);
    if waiting.is_empty() && pending.clone().all(|k| served.contains(&k.selector)) {
        let switch = pending.count() > 0;
        for key in keys.iter_mut().filter(|_| switch) {
            match key.state {
                KeyState::Pending => {
                    key.state = KeyState::Active;
                    done.switched.push(key.selector.clone());
                }
                KeyState::Active => {
                    key.state = KeyState::Retired;
                    key.retire_at = Some(now.max(0) as u64 + retire_after.as_secs());
                    done.retired.push(key.selector.clone());
                }
                KeyState::Retired => {}
            }
        }
    }
    keys.retain(|key| {
        let over = key.state == KeyState::Retired
            && key.retire_at.is_some_and(|at| at <= now.max(0) as u64);
        if over {
            let _ = std::fs::remove_file(key.path(data_dir));
            done.deleted.push(key.selector.clone());
        }
        !over
    });
    if !(done.switched.is_empty() && done.deleted.is_empty()) {
        save_keys(data_dir, domain, &keys)?;
    }
    done.waiting = waiting;
    Ok(done)
}

/// Whether a TXT record found in DNS publishes the same public key as
/// `record` (tags may be spaced or ordered otherwise; `p=` decides).
fn same_key(found: &str, record: &str) -> bool {
    let key = |text: &str| {
        text.split(';')
            .filter_map(|tag| tag.split_once('='))
            .find(|(name, _)| name.trim() == "p")
            .map(|(_, value)| value.split_whitespace().collect::<String>())
    };
    key(found).is_some_and(|k| !k.is_empty() && Some(k) == key(record))
}

/// The domains whose keys were ever rotated (they have a key list).
fn rotated_domains(data_dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir(data_dir)) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".json").map(str::to_string)
        })
        .collect()
}

/// The server's side of rotation: every `interval`, moves each rotated
/// domain's keys on (`advance`), logs what changed and has `signer` read
/// the keys of a domain that switched at once.
pub async fn watch(
    data_dir: std::path::PathBuf,
    dns: Dns,
    retire_after: Duration,
    interval: Duration,
    signer: Arc<Signer>,
    stop: CancellationToken,
) {
    loop {
        for domain in rotated_domains(&data_dir) {
            let now = crate::clock::now_unix();
            match advance(&data_dir, &domain, &dns, retire_after, now).await {
                Ok(done) => {
                    if !done.switched.is_empty() {
                        signer.forget(&domain);
                        tracing::info!(
                            event = "dkim_switched",
                            domain,
                            signing = done.switched.join(" "),
                            retired = done.retired.join(" "),
                            published_for_secs = retire_after.as_secs(),
                        );
                    }
                    if !done.deleted.is_empty() {
                        tracing::info!(
                            event = "dkim_key_deleted",
                            domain,
                            selectors = done.deleted.join(" "),
                        );
                    }
                    if !done.waiting.is_empty() {
                        tracing::debug!(
                            event = "dkim_waiting_for_dns",
                            domain,
                            selectors = done.waiting.join(" "),
                        );
                    }
                }
                Err(error) => tracing::error!(event = "dkim_rotation_failed", domain, %error),
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dkim::ensure_keys;

    #[test]
    fn a_found_record_is_the_same_key_when_p_is() {
        let ours = "v=DKIM1; k=rsa; p=MIIBabc";
        assert!(same_key("v=DKIM1;k=rsa;p=MIIB abc", ours));
        assert!(same_key("k=rsa; v=DKIM1; p=MIIBabc", ours));
        assert!(!same_key("v=DKIM1; k=rsa; p=MIIBabd", ours));
        assert!(!same_key("v=DKIM1; k=rsa; p=", "v=DKIM1; k=rsa; p="));
        assert!(!same_key("v=spf1 mx ~all", ours));
    }

    #[test]
    fn a_rotation_adds_pending_keys_named_after_the_day_and_one_at_a_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        ensure_keys(dir.path(), "example.com").expect("keys");
        let made = rotate(dir.path(), "example.com", 1_796_000_000).expect("rotate");
        let selectors: Vec<&str> = made.iter().map(|k| k.selector.as_str()).collect();
        assert_eq!(selectors, ["postern-20261130", "postern-20261130-ed25519"]);
        assert!(made.iter().all(|k| k.state == KeyState::Pending));
        let keys = domain_keys(dir.path(), "example.com").expect("list");
        assert_eq!(keys.len(), 4);
        let err = rotate(dir.path(), "example.com", 1_796_000_000).expect_err("waiting");
        assert!(
            err.to_string()
                .contains("postern-20261130 and postern-20261130-ed25519"),
            "{err}"
        );
        assert!(matches!(
            rotate(dir.path(), "example.org", 1_796_000_000),
            Err(DkimError::Key(DkimKeyError::Missing { .. }))
        ));
    }
}
