//! MTA-STS (RFC 8461) for outbound mail, against a real DNS server, a real
//! HTTPS server for the policies (Python's, with a certificate from a CA the
//! server is told to trust through SSL_CERT_FILE) and real receivers: a
//! domain whose policy enforces gets mail only at the MX hosts it names,
//! over TLS with a valid certificate, and waits (saying why) otherwise; a
//! changed policy is fetched in the background; a policy in testing mode
//! only logs; and the domains that ask get TLS reports (RFC 8460) of it all,
//! read back with Python's email, gzip and json.

use std::path::Path;

use crate::common::https::{HttpsServer, tls_report_totals};
use crate::common::*;
use crate::delivery::{WAIT, at, ip, send, show_after_attempt, wait_log};

/// `domain` publishes `policy` (its TXT record and its policy file) and has
/// one MX, `mx.<domain>` at 127.0.0.`mx`.
fn publish(dns: &TestDns, policies: &Path, domain: &str, policy: &str, mx: u8) {
    dns.txt(&format!("_mta-sts.{domain}"), &["v=STSv1; id=20261130"]);
    dns.ip(&format!("mta-sts.{domain}"), ip(80));
    std::fs::write(policies.join(format!("mta-sts.{domain}.txt")), policy).expect("write");
    dns.mx(domain, 10, &format!("mx.{domain}"));
    dns.ip(&format!("mx.{domain}"), ip(mx));
}

#[test]
fn an_enforced_policy_sends_only_to_named_hosts_with_valid_certificates() {
    let dns = TestDns::start();
    let certs = tempfile::tempdir().expect("dir");
    let names = [
        "mta-sts.good.test",
        "mta-sts.elsewhere.test",
        "mta-sts.badcert.test",
        "mta-sts.trying.test",
        "mta-sts.expiring.test",
        "mx.good.test",
        "tlsrpt.test",
    ];
    let (ca, cert, key) = ca_signed(certs.path(), &names);
    let other = tempfile::tempdir().expect("dir");
    let (bad_cert, bad_key) = self_signed(other.path(), &["mx.badcert.test"]);
    let policies = tempfile::tempdir().expect("dir");
    let https_port = free_port();
    let _server = HttpsServer::start(at(80, https_port), &cert, &key, policies.path());
    let enforce = |mx: &str| format!("version: STSv1\nmode: enforce\nmx: {mx}\nmax_age: 86400\n");
    publish(
        &dns,
        policies.path(),
        "good.test",
        &enforce("mx.good.test"),
        81,
    );
    publish(
        &dns,
        policies.path(),
        "elsewhere.test",
        &enforce("mx.other.test"),
        82,
    );
    publish(
        &dns,
        policies.path(),
        "badcert.test",
        &enforce("*.badcert.test"),
        83,
    );
    publish(
        &dns,
        policies.path(),
        "trying.test",
        "version: STSv1\nmode: testing\nmx: mx.other.test\nmax_age: 86400\n",
        84,
    );
    let mx_port = free_port();
    let tls_peer = |last: u8, cert: &Path, key: &Path| {
        Peer::start(
            at(last, mx_port),
            &[
                "--cert",
                cert.to_str().expect("p"),
                "--key",
                key.to_str().expect("p"),
            ],
        )
    };
    let good = tls_peer(81, &cert, &key);
    let elsewhere = tls_peer(82, &cert, &key);
    let badcert = tls_peer(83, &bad_cert, &bad_key);
    let trying = tls_peer(84, &cert, &key);
    // Where the TLS reports of good.test and badcert.test go.
    dns.mx("reports.test", 10, "mx.reports.test");
    dns.ip("mx.reports.test", ip(85));
    let reports = Peer::start(at(85, mx_port), &[]);
    for domain in ["good.test", "badcert.test"] {
        dns.txt(
            &format!("_smtp._tls.{domain}"),
            &["v=TLSRPTv1; rua=mailto:tls@reports.test"],
        );
    }
    // expiring.test takes its reports over HTTPS, at the policy server.
    dns.ip("tlsrpt.test", ip(80));
    dns.txt(
        "_smtp._tls.expiring.test",
        &[&format!(
            "v=TLSRPTv1; rua=https://tlsrpt.test:{https_port}/tlsrpt"
        )],
    );

    let mut s = TestServer::configure(&TestServer::config_for(&format!(
        "trusted_networks = [\"127.0.0.1/32\"]\n[delivery]\nmx_port = {mx_port}\n\
         mta_sts_port = {https_port}\ntls_reports = true\ntls_report_interval = 6\n\
         {}retry_min = 1\nretry_max = 2\ntimeout = 5\nconnect_timeout = 3\n",
        dns.config()
    )));
    s.env
        .push(("SSL_CERT_FILE".into(), ca.to_str().expect("ca").into()));
    s.add_alice();
    s.spawn();
    let body = "Subject: sts\n\nx\n";
    send(&s, "app@example.com", &["bob@good.test"], body);
    let got = good.wait_for(1, WAIT);
    assert_eq!(got[0]["tls"], true, "over TLS");

    // A new policy that no longer names mx.good.test, under a new id: the
    // kept one serves the next message while the new one is fetched in the
    // background; the message after that waits.
    std::fs::write(
        policies.path().join("mta-sts.good.test.txt"),
        enforce("mx.other.test"),
    )
    .expect("write");
    dns.remove("_mta-sts.good.test");
    dns.txt("_mta-sts.good.test", &["v=STSv1; id=2"]);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    send(&s, "app@example.com", &["carol@good.test"], body);
    good.wait_for(2, WAIT);
    wait_log(&s, "event=\"mta_sts_policy\" domain=\"good.test\" id=\"2\"");
    let id = send(&s, "app@example.com", &["dave@good.test"], body);
    let show = show_after_attempt(&s, &id);
    assert!(
        show.contains("MTA-STS policy of good.test (enforce): none of its MX hosts"),
        "{show}"
    );

    let id = send(&s, "app@example.com", &["bob@elsewhere.test"], body);
    let show = show_after_attempt(&s, &id);
    assert!(
        show.contains("MTA-STS policy of elsewhere.test (enforce)")
            && show.contains("mx.elsewhere.test"),
        "{show}"
    );
    let id = send(&s, "app@example.com", &["bob@badcert.test"], body);
    let show = show_after_attempt(&s, &id);
    assert!(
        show.contains("MTA-STS policy of badcert.test (enforce)")
            && show.to_lowercase().contains("certificate"),
        "{show}"
    );
    // "TLS-Required: No" (RFC 8689 §3): the policy is not applied, and
    // the host gets the message over the TLS it offers, its certificate
    // unchecked; such sessions are left out of the reports.
    send(
        &s,
        "app@example.com",
        &["carol@badcert.test"],
        "TLS-Required: No\nSubject: waived\n\nx\n",
    );
    let got = badcert.wait_for(1, WAIT);
    assert!(
        got[0]["data"]
            .as_str()
            .expect("data")
            .contains("Subject: waived")
    );
    assert_eq!(got[0]["tls"], true, "TLS when offered");

    // A policy that expires while its host no longer serves it: the mail
    // waits while it holds, then goes as if there were none (RFC 8461 §5.1).
    let expiring = Peer::start(at(86, mx_port), &[]);
    publish(
        &dns,
        policies.path(),
        "expiring.test",
        "version: STSv1\nmode: enforce\nmx: mx.other.test\nmax_age: 3\n",
        86,
    );
    let id = send(&s, "app@example.com", &["bob@expiring.test"], body);
    let show = show_after_attempt(&s, &id);
    assert!(
        show.contains("MTA-STS policy of expiring.test (enforce)"),
        "{show}"
    );
    std::fs::remove_file(policies.path().join("mta-sts.expiring.test.txt")).expect("rm");
    expiring.wait_for(1, WAIT);
    wait_log(
        &s,
        "event=\"mta_sts_fetch_failed\" domain=\"expiring.test\"",
    );

    // Testing mode: delivered as without a policy, and what would have
    // failed is logged.
    send(&s, "app@example.com", &["bob@trying.test"], body);
    trying.wait_for(1, WAIT);
    wait_log(&s, "event=\"mta_sts_testing\" domain=\"trying.test\"");

    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(elsewhere.received().is_empty() && badcert.received().len() == 1);

    // The reports of the period, summed over however many came by now.
    std::thread::sleep(std::time::Duration::from_secs(7));
    let mailed = reports.received();
    assert!(
        mailed.iter().all(|m| m["data"]
            .as_str()
            .expect("data")
            .starts_with("TLS-Required: No\r\n")),
        "reports get through where TLS is broken (RFC 8460 §5.3)"
    );
    let read = tls_report_totals(&mailed, policies.path());
    // One session carried both of good.test's messages (it was kept).
    assert!(
        read.contains("good.test sts success>=1 failures=[]"),
        "{read}"
    );
    assert!(
        read.contains(
            "badcert.test sts success=0 failures=['certificate-not-trusted mx.badcert.test']"
        ),
        "{read}"
    );
    // Its policy could not be fetched any more, and its host took the
    // message without TLS as if it had none.
    assert!(
        read.contains("expiring.test sts success=0 failures=['sts-policy-fetch-error -']")
            && read.contains(
                "expiring.test no-policy-found success=0 failures=['starttls-not-supported mx.expiring.test']"
            ),
        "{read}"
    );
    assert!(
        !read.contains("trying.test"),
        "no TLSRPT record, no report: {read}"
    );
}

/// RFC 8461 §5.1: a policy holds for its max_age, across a restart too.
/// With the policy host gone after the restart (as an attacker would block
/// it), mail still waits for a host the policy names rather than going to
/// one it does not.
#[test]
fn a_policy_is_kept_across_a_restart() {
    let dns = TestDns::start();
    let certs = tempfile::tempdir().expect("dir");
    let (ca, cert, key) = ca_signed(certs.path(), &["mta-sts.kept.test"]);
    let policies = tempfile::tempdir().expect("dir");
    let https_port = free_port();
    let policy_host = HttpsServer::start(at(80, https_port), &cert, &key, policies.path());
    publish(
        &dns,
        policies.path(),
        "kept.test",
        "version: STSv1\nmode: enforce\nmx: mx.other.test\nmax_age: 86400\n",
        88,
    );
    let mx_port = free_port();
    let unnamed = Peer::start(at(88, mx_port), &[]);
    let mut s = TestServer::configure(&TestServer::config_for(&format!(
        "trusted_networks = [\"127.0.0.1/32\"]\n[delivery]\nmx_port = {mx_port}\n\
         mta_sts_port = {https_port}\n{}retry_min = 60\nretry_max = 120\ntimeout = 5\n\
         connect_timeout = 3\n",
        dns.config()
    )));
    s.env
        .push(("SSL_CERT_FILE".into(), ca.to_str().expect("ca").into()));
    s.add_alice();
    s.spawn();
    let waits = |s: &TestServer, rcpt: &str| {
        let id = send(s, "app@example.com", &[rcpt], "Subject: kept\n\nx\n");
        let show = show_after_attempt(s, &id);
        assert!(
            show.contains("MTA-STS policy of kept.test (enforce): none of its MX hosts"),
            "{show}\n{}",
            s.log()
        );
    };
    waits(&s, "bob@kept.test");
    drop(policy_host);
    s.kill();
    s.spawn();
    wait_log(&s, "event=\"mta_sts_loaded\" policies=1");
    waits(&s, "carol@kept.test");
    assert!(
        unnamed.received().is_empty(),
        "a host the policy does not name got mail"
    );
}
