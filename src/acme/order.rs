//! One order (RFC 8555 §7.4): the names, a challenge answered for each
//! authorization, then a fresh key's certificate request and the chain.

use std::time::Duration;

use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewOrder, Order, OrderStatus,
    RetryPolicy,
};
use rcgen::{CertificateParams, DistinguishedName, KeyPair};

use super::{AcmeError, Challenges};

/// How long the CA may take to validate, and again to issue.
const POLL: Duration = Duration::from_secs(90);

/// The challenge types this server can answer, in order of preference.
pub(super) fn answerable(http: &crate::config::Http) -> Vec<ChallengeType> {
    let mut types = Vec::new();
    if http.addr.is_some() {
        types.push(ChallengeType::Http01);
    }
    if http.tls_addr.is_some() {
        types.push(ChallengeType::TlsAlpn01);
    }
    types
}

/// A certificate chain and its key, both PEM.
pub(super) struct Issued {
    pub chain: String,
    pub key: String,
}

/// Orders a certificate for `names`, answering each challenge with the first
/// of `types` that the CA offers; `challenges` holds the answers meanwhile.
pub(super) async fn issue(
    account: &Account,
    names: &[String],
    types: &[ChallengeType],
    challenges: &Challenges,
) -> Result<Issued, AcmeError> {
    let identifiers: Vec<Identifier> = names.iter().cloned().map(Identifier::Dns).collect();
    let mut order = match account.new_order(&NewOrder::new(&identifiers)).await {
        Ok(order) => order,
        Err(instant_acme::Error::Api(problem)) => return Err(refused(problem)),
        Err(e) => return Err(e.into()),
    };
    // The CA may find a name invalid while later ones are being answered
    // (it validates as soon as a challenge is ready), and then refuses
    // those: which names failed is asked of the order, as when polling.
    match answer(&mut order, types, challenges).await {
        Ok(()) => {}
        Err(AcmeError::Ca(instant_acme::Error::Api(problem))) => {
            return Err(failed(&mut order, problem.to_string()).await);
        }
        Err(e) => return Err(e),
    }
    let retries = RetryPolicy::new().timeout(POLL);
    match order.poll_ready(&retries).await {
        Ok(OrderStatus::Ready) => {}
        Ok(status) => {
            let otherwise = format!("the order is {status:?}").to_lowercase();
            return Err(failed(&mut order, otherwise).await);
        }
        Err(instant_acme::Error::Api(problem)) => {
            return Err(failed(&mut order, problem.to_string()).await);
        }
        Err(e) => return Err(e.into()),
    }
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(names.to_vec())?;
    params.distinguished_name = DistinguishedName::new();
    let request = params.serialize_request(&key)?;
    order.finalize_csr(request.der()).await?;
    let chain = order.poll_certificate(&retries).await?;
    Ok(Issued {
        chain,
        key: key.serialize_pem(),
    })
}

/// Answers a challenge of each pending authorization of `order` with the
/// first of `types` that the CA offers; `challenges` holds the answers.
async fn answer(
    order: &mut Order,
    types: &[ChallengeType],
    challenges: &Challenges,
) -> Result<(), AcmeError> {
    let mut authorizations = order.authorizations();
    while let Some(authorization) = authorizations.next().await {
        let mut authorization = authorization?;
        // A name validated recently for this account needs nothing.
        if authorization.status != AuthorizationStatus::Pending {
            continue;
        }
        let name = authorization.identifier().to_string();
        let Some(kind) = types
            .iter()
            .find(|t| authorization.challenges.iter().any(|c| c.r#type == **t))
            .cloned()
        else {
            return Err(AcmeError::NoChallenge(name));
        };
        let Some(mut challenge) = authorization.challenge(kind.clone()) else {
            return Err(AcmeError::NoChallenge(name));
        };
        let key_authorization = challenge.key_authorization();
        match kind {
            ChallengeType::Http01 => {
                challenges.add_http(&challenge.token, key_authorization.as_str())
            }
            _ => challenges.add_tls_alpn(&name, key_authorization.digest().as_ref())?,
        }
        challenge.set_ready().await?;
    }
    Ok(())
}

/// A new order refused: the names its subproblems name (RFC 8555 §6.7.1,
/// e.g. one the CA's policy forbids) can be left out of the next.
fn refused(problem: instant_acme::Problem) -> AcmeError {
    let names: Vec<String> = problem
        .subproblems
        .iter()
        .filter_map(|sub| match &sub.identifier {
            Some(Identifier::Dns(name)) => Some(name.clone()),
            _ => None,
        })
        .collect();
    if names.is_empty() {
        return AcmeError::Ca(instant_acme::Error::Api(problem));
    }
    AcmeError::NotValidated {
        names,
        detail: problem.to_string(),
    }
}

/// Why an order became invalid: each name the CA did not validate, with the
/// problem it reported for the challenge; `otherwise` when it names none.
async fn failed(order: &mut Order, otherwise: String) -> AcmeError {
    let mut reasons = Vec::new();
    let mut names = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authorization)) = authorizations.next().await {
        let Ok(state) = authorization.refresh().await else {
            continue;
        };
        if state.status == AuthorizationStatus::Valid {
            continue;
        }
        let problems: Vec<String> = state
            .challenges
            .iter()
            .filter_map(|c| c.error.as_ref().map(ToString::to_string))
            .collect();
        // Only a name the CA gave up on is to blame: the others of an
        // invalid order may merely not have been validated yet.
        if let (AuthorizationStatus::Invalid, Identifier::Dns(name)) =
            (state.status, state.identifier().identifier)
        {
            names.push(name.clone());
        }
        reasons.push(format!(
            "{} not validated: {}",
            state.identifier(),
            if problems.is_empty() {
                format!("{:?}", state.status).to_lowercase()
            } else {
                problems.join("; ")
            }
        ));
    }
    if names.is_empty() {
        return AcmeError::Validation(if reasons.is_empty() {
            otherwise
        } else {
            reasons.join(", ")
        });
    }
    AcmeError::NotValidated {
        names,
        detail: reasons.join(", "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(json: serde_json::Value) -> instant_acme::Problem {
        serde_json::from_value(json).expect("problem document")
    }

    #[test]
    fn a_refused_order_names_the_identifiers_of_its_subproblems() {
        let rejected = problem(serde_json::json!({
            "type": "urn:ietf:params:acme:error:rejectedIdentifier",
            "detail": "Order included forbidden identifiers",
            "status": 400,
            "subproblems": [
                {
                    "type": "urn:ietf:params:acme:error:rejectedIdentifier",
                    "detail": "autoconfig.bad.example is forbidden",
                    "identifier": { "type": "dns", "value": "autoconfig.bad.example" }
                },
                {
                    "type": "urn:ietf:params:acme:error:malformed",
                    "detail": "no identifier"
                }
            ]
        }));
        match refused(rejected) {
            AcmeError::NotValidated { names, detail } => {
                assert_eq!(names, ["autoconfig.bad.example"]);
                assert!(
                    detail.contains("autoconfig.bad.example is forbidden"),
                    "{detail}"
                );
            }
            other => panic!("{other:?}"),
        }
        // Without a named identifier, the order as a whole failed.
        let whole = problem(serde_json::json!({
            "type": "urn:ietf:params:acme:error:rateLimited",
            "detail": "too many orders"
        }));
        assert!(matches!(refused(whole), AcmeError::Ca(_)));
    }
}
