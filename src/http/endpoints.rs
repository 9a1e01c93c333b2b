//! The submission ports a mail client is told about, in order of preference:
//! implicit TLS first (465, RFC 8314 prefers it), then STARTTLS ports (587, then
//! 26, then any other), then SMTP on the HTTPS port for networks that block
//! every mail port. Autoconfig, Autodiscover, the Apple profile and the SRV
//! records of `postern dns` all use this one order. Pure.

use crate::config::ListenerRole;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubmissionEndpoint {
    pub port: u16,
    /// TLS from the first byte ("SSL/TLS" in clients) rather than STARTTLS.
    pub implicit_tls: bool,
}

/// `listeners`: the ports and roles being served; `https_submission`: the
/// HTTPS port when it also takes SMTP submission.
pub fn submission_endpoints(
    listeners: &[(u16, ListenerRole)],
    https_submission: Option<u16>,
) -> Vec<SubmissionEndpoint> {
    let rank = |port: u16, preferred: &[u16]| {
        preferred
            .iter()
            .position(|p| *p == port)
            .unwrap_or(preferred.len())
    };
    let mut implicit: Vec<u16> = listeners
        .iter()
        .filter(|(_, r)| *r == ListenerRole::Submissions)
        .map(|(p, _)| *p)
        .collect();
    let mut starttls: Vec<u16> = listeners
        .iter()
        .filter(|(_, r)| *r == ListenerRole::Submission)
        .map(|(p, _)| *p)
        .collect();
    implicit.sort_by_key(|p| (rank(*p, &[465]), *p));
    starttls.sort_by_key(|p| (rank(*p, &[587, 26]), *p));
    implicit.dedup();
    starttls.dedup();
    let mut out: Vec<SubmissionEndpoint> = implicit
        .into_iter()
        .map(|port| SubmissionEndpoint {
            port,
            implicit_tls: true,
        })
        .collect();
    out.extend(starttls.into_iter().map(|port| SubmissionEndpoint {
        port,
        implicit_tls: false,
    }));
    if let Some(port) = https_submission
        && !out.iter().any(|e| e.port == port)
    {
        out.push(SubmissionEndpoint {
            port,
            implicit_tls: true,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ListenerRole::*;

    #[test]
    fn order_of_preference() {
        let listeners = [
            (25, Mta),
            (2525, Submission),
            (26, Submission),
            (587, Submission),
            (4650, Submissions),
            (465, Submissions),
            (587, Submission),
        ];
        let got: Vec<(u16, bool)> = submission_endpoints(&listeners, Some(443))
            .iter()
            .map(|e| (e.port, e.implicit_tls))
            .collect();
        assert_eq!(
            got,
            [
                (465, true),
                (4650, true),
                (587, false),
                (26, false),
                (2525, false),
                (443, true)
            ]
        );
        assert!(submission_endpoints(&[(25, Mta)], None).is_empty());
    }
}
