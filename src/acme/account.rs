//! The account at the CA: created at the first order and kept in
//! data_dir/acme/account.json (0600: its key signs every request), reused
//! after that. An account belongs to one CA, so a new `directory` makes a
//! new one.

use std::path::Path;

use instant_acme::{Account, AccountBuilder, AccountCredentials, NewAccount};

use super::AcmeError;
use crate::config::Acme;

#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    directory: String,
    credentials: AccountCredentials,
}

/// The account for `acme`, read from `data_dir` or created at the CA.
pub(super) async fn account(acme: &Acme, data_dir: &Path) -> Result<Account, AcmeError> {
    let path = data_dir.join("acme").join("account.json");
    let stored = std::fs::read(&path)
        .ok()
        .and_then(|text| serde_json::from_slice::<Stored>(&text).ok())
        .filter(|s| s.directory == acme.directory);
    if let Some(stored) = stored {
        return Ok(builder(acme)?.from_credentials(stored.credentials).await?);
    }
    let contact = format!("mailto:{}", acme.email);
    let (account, credentials) = builder(acme)?
        .create(
            &NewAccount {
                contact: &[&contact],
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            acme.directory.clone(),
            None,
        )
        .await?;
    let stored = Stored {
        directory: acme.directory.clone(),
        credentials,
    };
    let json = serde_json::to_vec_pretty(&stored).map_err(instant_acme::Error::from)?;
    crate::tls::write_private(&path, &json)?;
    tracing::info!(event = "acme_account", id = account.id(), directory = %acme.directory, "created an account at the CA");
    Ok(account)
}

fn builder(acme: &Acme) -> Result<AccountBuilder, AcmeError> {
    Ok(match &acme.ca_roots {
        Some(roots) => Account::builder_with_root(roots)?,
        None => Account::builder()?,
    })
}
