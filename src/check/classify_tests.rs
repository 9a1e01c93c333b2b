//! Table-driven tests of classify.rs: plain probe data in, words out.

use std::time::Duration;

use super::*;
use crate::check::probe::AuthOutcome;
use crate::check::recommend::*;
use crate::check::tls::{CertInfo, TlsFailure};
use crate::check::wire::{Ehlo, Reply};

const HOST: &str = "mail.example.com";

fn reply(code: u16, text: &str) -> Reply {
    Reply {
        code,
        lines: vec![text.to_string()],
    }
}

fn tls(verdict: CertVerdict, names: &[&str], id: &str) -> TlsSession {
    TlsSession {
        version: "TLS 1.3".into(),
        cipher: "TLS13_AES_256_GCM_SHA384".into(),
        cert: Some(CertInfo {
            names: names.iter().map(ToString::to_string).collect(),
            issuer: "Test CA".into(),
            not_after: 1_900_000_000,
            self_signed: verdict == CertVerdict::SelfSigned,
            id: id.into(),
        }),
        verdict,
    }
}

/// A port whose dialogue went to the end, greeting as `name`.
fn open(port: u16, name: &str, cert: TlsSession) -> PortProbe {
    let mut p = PortProbe::new(port, Security::for_port(port));
    p.address = Some([192, 0, 2, 1].into());
    p.latency = Some(Duration::from_millis(5));
    p.greeting = Some(reply(220, &format!("{name} ESMTP Postern")));
    p.ehlo_names = vec![name.to_string(), name.to_string()];
    p.ehlo = Some(Ehlo {
        name: Some(name.into()),
        auth: vec!["PLAIN".into(), "LOGIN".into()],
        size: Some(1000),
        ..Ehlo::default()
    });
    p.tls = Some(cert);
    p.token_sent = true;
    p
}

fn valid(port: u16) -> PortProbe {
    open(port, HOST, tls(CertVerdict::Valid, &[HOST], "ca/1"))
}

fn stopped(port: u16, stop: Stop) -> PortProbe {
    let mut p = PortProbe::new(port, Security::for_port(port));
    if !matches!(stop, Stop::Connect(_)) {
        p.latency = Some(Duration::from_millis(5));
    }
    p.stop = Some(stop);
    p
}

fn statuses(verdicts: &[Verdict]) -> Vec<&'static str> {
    verdicts.iter().map(|v| v.status.word()).collect()
}

#[test]
fn each_dialogue_gets_one_status_and_a_reason() {
    let not_smtp = |s: &str| {
        Stop::Greeting(WireError::NotSmtp {
            sample: s.to_string(),
        })
    };
    let mut http_over_tls = stopped(443, not_smtp("HTTP/1.1 400 Bad Request"));
    http_over_tls.tls = Some(tls(CertVerdict::Valid, &[HOST], "ca/1"));
    let name_mismatch = open(
        26,
        HOST,
        tls(CertVerdict::NameMismatch, &["other.example"], "x"),
    );
    let cases: Vec<(PortProbe, TlsPolicy, bool, Status, &str)> = vec![
        (
            valid(587),
            TlsPolicy::Valid,
            true,
            Status::Open,
            "valid certificate",
        ),
        (
            stopped(25, Stop::Connect(ConnectError::TimedOut)),
            TlsPolicy::Valid,
            true,
            Status::Filtered,
            "dropped",
        ),
        (
            stopped(587, Stop::Connect(ConnectError::Refused)),
            TlsPolicy::Valid,
            true,
            Status::Refused,
            "RST",
        ),
        (
            stopped(
                26,
                Stop::Connect(ConnectError::NoRoute("host unreachable".into())),
            ),
            TlsPolicy::Valid,
            true,
            Status::Refused,
            "host unreachable",
        ),
        (
            stopped(26, Stop::Connect(ConnectError::NoRoute("no route".into()))),
            TlsPolicy::Valid,
            false,
            Status::Unreachable,
            "no route",
        ),
        (
            stopped(2525, Stop::Greeting(WireError::Timeout)),
            TlsPolicy::Valid,
            true,
            Status::Filtered,
            "nothing spoke",
        ),
        (
            stopped(2525, Stop::Greeting(WireError::Closed)),
            TlsPolicy::Valid,
            true,
            Status::Refused,
            "closed without a greeting",
        ),
        (
            stopped(2525, not_smtp("HTTP/1.0 400 Bad request")),
            TlsPolicy::Valid,
            true,
            Status::Intercepted,
            "in HTTP",
        ),
        (
            stopped(2525, Stop::Greeting(WireError::Oversized(4096))),
            TlsPolicy::Valid,
            true,
            Status::Intercepted,
            "over 4096 octets",
        ),
        (
            http_over_tls,
            TlsPolicy::Valid,
            true,
            Status::Refused,
            "own server answers here",
        ),
        (
            stopped(
                25,
                Stop::Rejected {
                    step: Step::Greeting,
                    reply: reply(554, "go away"),
                },
            ),
            TlsPolicy::Valid,
            true,
            Status::Refused,
            "554 go away",
        ),
        (
            stopped(
                25,
                Stop::Rejected {
                    step: Step::Greeting,
                    reply: reply(554, "go away"),
                },
            ),
            TlsPolicy::Optional,
            true,
            Status::Open,
            "port open",
        ),
        (
            stopped(26, Stop::NoStartTls),
            TlsPolicy::Valid,
            true,
            Status::TlsFailed,
            "does not offer STARTTLS",
        ),
        (
            stopped(26, Stop::NoStartTls),
            TlsPolicy::Optional,
            true,
            Status::Open,
            "TLS does not work",
        ),
        (
            stopped(465, Stop::Tls(TlsFailure::Version)),
            TlsPolicy::Valid,
            true,
            Status::TlsFailed,
            "TLS 1.2 or 1.3",
        ),
        (
            stopped(26, Stop::Injected),
            TlsPolicy::Valid,
            true,
            Status::TlsFailed,
            "injection",
        ),
        (
            open(465, HOST, tls(CertVerdict::SelfSigned, &[HOST], "x")),
            TlsPolicy::Valid,
            true,
            Status::TlsFailed,
            "self-signed",
        ),
        (
            open(465, HOST, tls(CertVerdict::SelfSigned, &[HOST], "x")),
            TlsPolicy::Encrypted,
            true,
            Status::Open,
            "self-signed",
        ),
        (
            open(465, HOST, tls(CertVerdict::Expired, &[HOST], "x")),
            TlsPolicy::Valid,
            true,
            Status::TlsFailed,
            "expired on 2030-03-17",
        ),
        (
            name_mismatch,
            TlsPolicy::Valid,
            true,
            Status::TlsFailed,
            "for other.example, not for mail.example.com",
        ),
    ];
    for (probe, policy, any_connected, want, words) in cases {
        let got = base(&probe, policy, HOST, any_connected);
        assert_eq!(
            got.status, want,
            "port {} {:?}: {}",
            probe.port, probe.stop, got.reason
        );
        assert!(
            got.reason.contains(words),
            "port {}: {:?} lacks {words:?}",
            probe.port,
            got.reason
        );
    }
}

#[test]
fn a_different_name_on_one_port_is_interception() {
    let isp = open(
        25,
        "smtp.isp.example",
        tls(CertVerdict::SelfSigned, &["smtp.isp.example"], "isp/9"),
    );
    let probes = vec![isp, valid(465), valid(587)];
    let v = classify(HOST, &probes, None);
    assert_eq!(statuses(&v), ["intercepted", "open", "open"]);
    assert!(
        v[0].reason.contains("greets as smtp.isp.example"),
        "{}",
        v[0].reason
    );
    assert!(
        v[0].reason.contains("port 465 greets as mail.example.com"),
        "{}",
        v[0].reason
    );
}

#[test]
fn without_valid_certificates_the_majority_name_is_the_host() {
    let own = |port, name: &str| open(port, name, tls(CertVerdict::SelfSigned, &[name], "self/1"));
    let isp = || {
        open(
            25,
            "relay.isp.example",
            tls(CertVerdict::SelfSigned, &["relay.isp.example"], "isp/2"),
        )
    };
    // The host is an address: only the ports can be compared.
    let probes = vec![isp(), own(26, "mx.example.net"), own(465, "mx.example.net")];
    let v = classify("192.0.2.1", &probes, None);
    assert_eq!(statuses(&v), ["intercepted", "tls-failed", "tls-failed"]);
    // A name of the host's own domain is the host's server.
    let probes = vec![
        isp(),
        own(26, "mx1.example.com"),
        own(465, "mx1.example.com"),
    ];
    let v = classify(HOST, &probes, None);
    assert_eq!(statuses(&v), ["intercepted", "tls-failed", "tls-failed"]);
    // A lone answerer with an unrelated name and nothing to vouch for it.
    let v = classify(HOST, &[isp()], None);
    assert_eq!(statuses(&v), ["intercepted"]);
    assert!(
        v[0].reason.contains("unrelated to mail.example.com"),
        "{}",
        v[0].reason
    );
    // ... but a trusted certificate for its own name is a hosted server
    // reached by another name: a name mismatch to fix, not interception.
    let hosted = open(
        465,
        "smtp.provider.example",
        tls(
            CertVerdict::NameMismatch,
            &["smtp.provider.example"],
            "ca/3",
        ),
    );
    let v = classify(HOST, &[hosted], None);
    assert_eq!(statuses(&v), ["tls-failed"]);
}

#[test]
fn related_names() {
    let cases = [
        ("mail.example.com", "mx1.example.com", true),
        ("example.com", "mail.example.com", true),
        ("mail.example.co.uk", "mx.example.co.uk", true),
        ("mail.example.co.uk", "mx.other.co.uk", false),
        ("mail.example.com", "mx.example.net", false),
        ("MAIL.Example.COM.", "smtp.example.com", true),
    ];
    for (a, b, want) in cases {
        assert_eq!(related(a, b), want, "{a} {b}");
    }
}

#[test]
fn the_same_wrong_certificate_everywhere_is_a_tls_failure_not_interception() {
    let wrong = |port| {
        open(
            port,
            HOST,
            tls(CertVerdict::NameMismatch, &["wrong.example"], "ca/7"),
        )
    };
    let v = classify(HOST, &[wrong(26), wrong(465), wrong(587)], None);
    assert_eq!(statuses(&v), ["tls-failed"; 3]);
    assert!(v[0].reason.contains("wrong.example"));
}

#[test]
fn a_different_certificate_under_the_same_name_is_interception() {
    let mimic = open(25, HOST, tls(CertVerdict::UnknownIssuer, &[HOST], "mitm/1"));
    let v = classify(HOST, &[mimic, valid(587)], None);
    assert_eq!(statuses(&v), ["intercepted", "open"]);
    assert!(
        v[0].reason.contains("certificate differs"),
        "{}",
        v[0].reason
    );
}

#[test]
fn the_port_echo_overrides_names() {
    // Port 25 mimics the name perfectly, but the server never saw the token there.
    let mut mimic = valid(25);
    mimic.tls = Some(tls(CertVerdict::Valid, &[HOST], "ca/1"));
    let seen: BTreeSet<u16> = [465, 587].into();
    let v = classify(HOST, &[mimic, valid(465), valid(587)], Some(&seen));
    assert_eq!(statuses(&v), ["intercepted", "open", "open"]);
    assert_eq!(v[0].echo, Some(false));
    assert_eq!(v[1].echo, Some(true));
    assert!(
        v[0].reason.contains("never saw this connection"),
        "{}",
        v[0].reason
    );
    // A port whose name differs but which the server confirms stays open.
    let renamed = open(
        2525,
        "other-name.example.com",
        tls(CertVerdict::SelfSigned, &[HOST], "s/1"),
    );
    let seen: BTreeSet<u16> = [2525, 587].into();
    let v = classify(HOST, &[renamed, valid(587)], Some(&seen));
    assert_eq!(statuses(&v), ["tls-failed", "open"]);
}

#[test]
fn echo_answers_must_include_the_port_they_were_asked_on() {
    type Answers = Vec<(u16, Vec<u16>)>;
    let cases: Vec<(Answers, Option<Vec<u16>>)> = vec![
        (vec![], None),
        (vec![(587, vec![465, 587])], Some(vec![465, 587])),
        // An intercepting Postern on 25 saw the token on its own port 2525.
        (
            vec![(25, vec![2525]), (587, vec![26, 587])],
            Some(vec![26, 587]),
        ),
        (
            vec![(25, vec![25]), (587, vec![26, 465, 587])],
            Some(vec![26, 465, 587]),
        ),
        (vec![(25, vec![])], None),
    ];
    for (answers, want) in cases {
        let got = echo_home(&answers).map(|s| s.into_iter().collect::<Vec<_>>());
        assert_eq!(got, want, "{answers:?}");
    }
}

#[test]
fn unreachable_is_said_once_for_the_host() {
    let no_route = |port| {
        stopped(
            port,
            Stop::Connect(ConnectError::NoRoute("Network is unreachable".into())),
        )
    };
    assert!(
        host_unreachable(&[no_route(25), no_route(587)]).is_some_and(|r| r.contains("no route"))
    );
    assert_eq!(host_unreachable(&[no_route(25), valid(587)]), None);
    assert_eq!(host_unreachable(&[]), None);
}

#[test]
fn the_recommendation_prefers_465_then_587_then_26() {
    let probes = vec![valid(26), valid(587), valid(465), valid(25)];
    let v = classify(HOST, &probes, None);
    let r = recommend(HOST, &probes, &v, None, false);
    assert!(r.works);
    assert_eq!(
        r.settings,
        Some(Settings {
            server: HOST.into(),
            port: 465,
            security: "SSL/TLS".into()
        })
    );
    assert!(
        r.text
            .contains("Also working: 587 (STARTTLS), 26 (STARTTLS), 25 (STARTTLS)."),
        "{}",
        r.text
    );
    let probes = vec![
        valid(26),
        stopped(465, Stop::Connect(ConnectError::TimedOut)),
    ];
    let v = classify(HOST, &probes, None);
    let r = recommend(HOST, &probes, &v, None, false);
    assert_eq!(
        r.settings.map(|s| (s.port, s.security)),
        Some((26, "STARTTLS".into()))
    );
}

#[test]
fn the_recommendation_when_nothing_gets_through() {
    let probes = vec![
        open(
            25,
            "smtp.isp.example",
            tls(CertVerdict::SelfSigned, &["smtp.isp.example"], "i"),
        ),
        stopped(587, Stop::Connect(ConnectError::Refused)),
        stopped(465, Stop::Connect(ConnectError::TimedOut)),
    ];
    let v = classify(HOST, &probes, None);
    let r = recommend(HOST, &probes, &v, None, false);
    assert!(!r.works && r.settings.is_none() && r.blocked);
    assert!(r.text.starts_with(ALL_BLOCKED), "{}", r.text);
    // Issue #16: one sentence at a time (it ran "you@yourdomain" into the next).
    assert!(
        r.text.contains(
            "Every submission port is blocked from this network. Something on the way answers \
             in place of mail.example.com on port 25. If this used to work"
        ),
        "{}",
        r.text
    );
    assert!(
        r.text.contains("in place of mail.example.com on port 25"),
        "{}",
        r.text
    );
    let r = recommend(HOST, &probes, &v, Some("no route to the host"), false);
    assert!(r.text.contains("cannot be reached") && !r.text.contains(ALL_BLOCKED) && !r.blocked);
}

#[test]
fn the_recommendation_follows_the_password() {
    let mut p465 = valid(465);
    p465.auth = Some(AuthOutcome::Refused {
        reply: reply(535, "5.7.8 Authentication credentials invalid"),
    });
    let mut p587 = valid(587);
    p587.auth = Some(AuthOutcome::Accepted {
        mechanism: "PLAIN".into(),
    });
    let probes = vec![p465.clone(), p587];
    let v = classify(HOST, &probes, None);
    let r = recommend(HOST, &probes, &v, None, true);
    assert_eq!(r.settings.map(|s| s.port), Some(587));
    let probes = vec![p465];
    let v = classify(HOST, &probes, None);
    let r = recommend(HOST, &probes, &v, None, true);
    assert!(!r.works);
    assert!(r.text.contains("refused the password: 535"), "{}", r.text);
    // Issue #16: the advice ends with the settings it is about.
    assert!(
        r.text.ends_with(
            "Outgoing mail server (SMTP) for your mail client:\n  server:    mail.example.com\n  \
             port:      465\n  security:  SSL/TLS\n  user name: your full address; \
             authentication: normal password"
        ),
        "{}",
        r.text
    );
}

#[test]
fn the_recommendation_names_the_certificate_fix() {
    let cases = [
        (CertVerdict::SelfSigned, "Let's Encrypt"),
        (CertVerdict::Expired, "renew the certificate"),
        (
            CertVerdict::NameMismatch,
            "use one of the certificate's names (wrong.example)",
        ),
    ];
    for (verdict, words) in cases {
        let probes = vec![open(465, HOST, tls(verdict, &["wrong.example"], "c"))];
        let v = classify(HOST, &probes, None);
        let r = recommend(HOST, &probes, &v, None, false);
        assert!(!r.works);
        assert!(r.text.contains("port 465 reaches"), "{}", r.text);
        assert!(r.text.contains(words), "{}", r.text);
    }
    let mut mta_only = valid(25);
    mta_only.ehlo = Some(Ehlo::default());
    let probes = vec![mta_only];
    let v = classify(HOST, &probes, None);
    let r = recommend(HOST, &probes, &v, None, false);
    assert!(r.text.contains("offers no authentication"), "{}", r.text);
}

#[test]
fn unrelated_mx_hosts_with_one_greeting_are_a_redirect() {
    let mx = |host: &str, name: &str| {
        (
            host.to_string(),
            open(25, name, tls(CertVerdict::Valid, &[name], name)),
        )
    };
    let targets = vec![
        mx("a.example", "relay.isp.example"),
        mx("b.example", "relay.isp.example"),
        mx("c.example", "mx.c.example"),
    ];
    let mut v: Vec<Verdict> = targets
        .iter()
        .map(|(h, p)| base(p, TlsPolicy::Optional, h, true))
        .collect();
    outbound_interception(&targets, &mut v);
    assert_eq!(statuses(&v), ["intercepted", "intercepted", "open"]);
    assert!(v[0].reason.contains("2 unrelated mail servers"));
}
