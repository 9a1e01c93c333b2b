//! `[acme]`: the CA's directory, the account's address, and the checks that
//! the rest of the file can serve the challenges.

use std::time::Duration;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::config::checker::{Checker, KeyPath};
use crate::config::defaults as def;
use crate::config::file::AcmeFile;
use crate::config::{Acme, Http, TlsFiles};
use crate::smtp::address::Mailbox;

pub(super) fn acme(
    c: &mut Checker<'_>,
    raw: Option<AcmeFile>,
    tls: Option<&TlsFiles>,
    http: &Http,
) -> Option<Acme> {
    let raw = raw?;
    let p = KeyPath::default().key("acme");
    if tls.is_some() {
        c.error(
            &p,
            "[acme] obtains the certificate, [tls] names one: keep only one of them",
        );
    }
    if http.addr.is_none() && http.tls_addr.is_none() {
        c.error(
            &p,
            "needs [http] addr (HTTP-01 challenges, port 80) or tls_addr (TLS-ALPN-01, port 443)",
        );
    }
    let directory = match raw.directory {
        Some(url) if url.starts_with("https://") && url.len() > "https://".len() => url,
        Some(url) => {
            c.error(
                &p.key("directory"),
                format!("{url:?} is not an https URL; write the CA's directory, e.g. \"https://acme-v02.api.letsencrypt.org/directory\""),
            );
            url
        }
        None => {
            c.error(
                &p,
                "needs directory, the CA's URL, e.g. \"https://acme-v02.api.letsencrypt.org/directory\"",
            );
            String::new()
        }
    };
    let email = match raw.email {
        Some(email) if Mailbox::parse(&email, false).is_ok() => email,
        Some(email) => {
            c.error(&p.key("email"), format!("{email:?} is not a mail address"));
            email
        }
        None => {
            c.error(
                &p,
                "needs email, the address the CA writes to about the account",
            );
            String::new()
        }
    };
    let ca_roots = raw.ca_roots.map(|value| {
        let path = c.existing_file(p.key("ca_roots"), &value);
        // The HTTP client trusts the file's first certificate.
        if path.exists() && CertificateDer::from_pem_file(&path).is_err() {
            c.error(
                &p.key("ca_roots"),
                format!("{value:?} holds no PEM certificate"),
            );
        }
        path
    });
    let days = c.number(
        p.key("renew_before_days"),
        raw.renew_before_days,
        def::ACME_RENEW_BEFORE_DAYS,
        1,
        365,
    );
    Some(Acme {
        directory,
        email,
        ca_roots,
        renew_before: Duration::from_secs(days * 24 * 3600),
    })
}

#[cfg(test)]
mod tests {
    use crate::config::validate::from_text;
    use crate::config::validate::tests::errors;

    const HTTP: &str = "[http]\naddr = \"127.0.0.1:80\"\n";

    #[test]
    fn acme_needs_an_https_directory_an_address_and_a_listener_for_challenges() {
        let ok = format!(
            "{HTTP}[acme]\ndirectory = \"https://ca.example/dir\"\nemail = \"hostmaster@example.com\"\n"
        );
        let acme = from_text(&ok, None).expect("valid").acme.expect("acme");
        assert_eq!(acme.directory, "https://ca.example/dir");
        assert_eq!(acme.renew_before.as_secs(), 30 * 86_400);
        assert_eq!(from_text("", None).expect("defaults").acme, None);

        let errs = errors("[acme]\n");
        assert_eq!(errs.len(), 3, "{errs:#?}");
        assert!(
            errs.iter().any(|e| e.contains("needs [http] addr")),
            "{errs:#?}"
        );
        assert!(
            errs.iter().any(|e| e.contains("needs directory")),
            "{errs:#?}"
        );
        assert!(errs.iter().any(|e| e.contains("needs email")), "{errs:#?}");

        let errs = errors(&format!(
            "{HTTP}[acme]\ndirectory = \"http://ca.example/dir\"\nemail = \"nobody\"\nca_roots = \"/no/such.pem\"\ncolour = 1\n"
        ));
        assert_eq!(errs.len(), 4, "{errs:#?}");
        assert!(
            errs[0].starts_with(
                "p.toml:4: acme.directory: \"http://ca.example/dir\" is not an https URL"
            ),
            "{}",
            errs[0]
        );
        assert!(
            errs[1].starts_with("p.toml:5: acme.email: \"nobody\" is not a mail address"),
            "{}",
            errs[1]
        );
        assert!(
            errs[2].starts_with("p.toml:6: acme.ca_roots: cannot use"),
            "{}",
            errs[2]
        );
        assert!(errs[3].contains("acme.colour: unknown key; valid keys here are: directory, email, ca_roots, renew_before_days"), "{}", errs[3]);
    }

    #[test]
    fn acme_and_tls_exclude_each_other() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pem = dir.path().join("x.pem");
        std::fs::write(&pem, "not pem").expect("write");
        let errs = errors(&format!(
            "{HTTP}[tls]\ncert = {pem:?}\nkey = {pem:?}\n[acme]\ndirectory = \"https://ca.example/\"\nemail = \"a@example.com\"\nca_roots = {pem:?}\n"
        ));
        assert_eq!(errs.len(), 2, "{errs:#?}");
        assert!(
            errs[0].contains("acme: [acme] obtains the certificate, [tls] names one"),
            "{}",
            errs[0]
        );
        assert!(
            errs[1].contains("acme.ca_roots: ") && errs[1].contains("holds no PEM certificate"),
            "{}",
            errs[1]
        );
    }

    #[test]
    fn renew_before_days_is_checked_at_the_limit() {
        let with = |days: u64| {
            errors(&format!(
                "{HTTP}[acme]\ndirectory = \"https://ca.example/\"\nemail = \"a@example.com\"\nrenew_before_days = {days}\n"
            ))
        };
        assert!(with(1).is_empty() && with(365).is_empty());
        for days in [0, 366] {
            let errs = with(days);
            assert!(
                errs.len() == 1 && errs[0].contains("acme.renew_before_days: "),
                "{errs:#?}"
            );
        }
    }
}
