//! Certificates from an ACME CA, against Debian's pebble: HTTP-01 on the
//! `[http] addr` listener and TLS-ALPN-01 on `tls_addr` give a certificate for
//! hostname and the autoconfig./mta-sts. names of each hosted domain, served
//! at once on the SMTP and HTTPS listeners; a reload renews one near expiry
//! and picks up a new domain; a CA that refuses or is down is logged and the
//! certificate in use stays. Skipped, saying so, where pebble is missing.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Pebble's certificates last a week in these tests: under the default
/// renew_before_days (30), so each check renews.
const A_WEEK: u64 = 7 * 24 * 3600;

/// Which `[http]` listeners the server has: the challenge it can answer
/// follows (HTTP-01 on `addr`, TLS-ALPN-01 on `tls_addr`).
enum Listeners {
    Both,
    Plain,
    Https,
}

/// Pebble, the DNS server that sends its validation here, and a server
/// hosting example.com (and `hosted`, in the store only) whose certificate
/// comes from that pebble; `dns` are the domains whose names lead here.
struct Setup {
    s: TestServer,
    pebble: Pebble,
    /// The HTTPS listener (`tls_addr`).
    https: SocketAddr,
    /// The port pebble validates HTTP-01 on (`addr`'s, where it is set).
    http_port: u16,
    _dns: TestDns,
}

fn setup(dns: &[&str], hosted: &[&str], listeners: Listeners, pebble: serde_json::Value) -> Setup {
    let (http, tls) = (free_port(), free_port());
    let zone = TestDns::start();
    zone.ip("mx.test.example", LOOPBACK);
    for domain in dns {
        zone.ip(&format!("autoconfig.{domain}"), LOOPBACK);
        zone.ip(&format!("mta-sts.{domain}"), LOOPBACK);
    }
    let pebble = Pebble::start(&zone, http, tls, pebble);
    let section = match listeners {
        Listeners::Both => format!("addr = \"127.0.0.1:{http}\"\ntls_addr = \"127.0.0.1:{tls}\"\n"),
        Listeners::Plain => format!("addr = \"127.0.0.1:{http}\"\n"),
        Listeners::Https => format!("tls_addr = \"127.0.0.1:{tls}\"\n"),
    };
    let mut s = TestServer::configure(&TestServer::config_for(&format!(
        "[http]\n{section}{}",
        pebble.acme_config()
    )));
    s.add_alice();
    for domain in hosted {
        s.cli_ok(&["domain", "add", domain]);
    }
    s.spawn();
    Setup {
        s,
        pebble,
        https: format!("127.0.0.1:{tls}").parse().expect("addr"),
        http_port: http,
        _dns: zone,
    }
}

/// The first line the server logged for `event`.
fn logged(s: &TestServer, event: &str) -> String {
    let needle = format!("event=\"{event}\"");
    s.log()
        .lines()
        .find(|l| l.contains(&needle))
        .unwrap_or_else(|| panic!("no {event}:\n{}", s.log()))
        .to_string()
}

/// Waits until the server has logged `event` `n` times.
fn wait_for_event(s: &TestServer, event: &str, n: usize) {
    wait_for_event_within(s, event, n, Duration::from_secs(15));
}

fn wait_for_event_within(s: &TestServer, event: &str, n: usize, limit: Duration) {
    let needle = format!("event=\"{event}\"");
    let start = Instant::now();
    while s.log().matches(&needle).count() < n {
        assert!(
            start.elapsed() < limit,
            "{event} not logged {n} times:\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What a new TLS session on `addr` asking for `name` is served, checked
/// against `root`: s_client's report, and the leaf's serial and names.
struct Served {
    report: String,
    leaf: String,
}

fn served(addr: SocketAddr, name: &str, root: &Path, input: &str) -> Served {
    let out = s_client(
        addr,
        &[
            "-servername",
            name,
            "-CAfile",
            root.to_str().expect("path"),
            "-alpn",
            if input.starts_with("GET") {
                "http/1.1"
            } else {
                "smtp"
            },
        ],
        input,
    );
    let report = text(&out);
    let begin = report
        .find("-----BEGIN CERTIFICATE-----")
        .unwrap_or_else(|| panic!("no certificate:\n{report}"));
    let end = report[begin..]
        .find("-----END CERTIFICATE-----")
        .expect("end")
        + begin;
    let pem = &report[begin..end + "-----END CERTIFICATE-----".len()];
    let x509 = run_with_stdin(
        Command::new("openssl").args(["x509", "-noout", "-serial", "-ext", "subjectAltName"]),
        &format!("{pem}\n"),
    );
    Served {
        report,
        leaf: text(&x509),
    }
}

const HTTP_GET: &str = "GET / HTTP/1.1\r\nHost: mx.test.example\r\nConnection: close\r\n\r\n";

impl Served {
    /// Issued by pebble and verified against its root.
    fn assert_from_pebble(&self) {
        assert!(
            self.report.contains("Pebble Intermediate CA")
                && self.report.contains("Verify return code: 0 (ok)"),
            "not pebble's certificate:\n{}",
            self.report
        );
    }

    fn assert_names(&self, names: &[&str]) {
        for name in names {
            assert!(
                self.leaf.contains(&format!("DNS:{name}")),
                "{name}: {}",
                self.leaf
            );
        }
    }

    fn serial(&self) -> String {
        self.leaf
            .lines()
            .find(|l| l.starts_with("serial="))
            .unwrap_or_else(|| panic!("{}", self.leaf))
            .to_string()
    }
}

fn assert_owner_only(path: &Path) {
    let mode = std::fs::metadata(path).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", path.display());
}

#[test]
fn http01_gives_every_listener_a_certificate_a_reload_renews_it_and_a_ca_that_is_down_changes_nothing()
 {
    if !Pebble::installed() {
        return;
    }
    let Setup {
        s,
        mut pebble,
        https,
        _dns,
        ..
    } = setup(
        &["example.com"],
        &[],
        Listeners::Both,
        serde_json::json!({ "certificateValidityPeriod": A_WEEK }),
    );
    wait_for_event(&s, "acme_installed", 1);
    let root = pebble.issuing_root();
    let smtp = served(s.addr("submissions"), "mx.test.example", &root, "QUIT\r\n");
    smtp.assert_from_pebble();
    smtp.assert_names(&[
        "mx.test.example",
        "autoconfig.example.com",
        "mta-sts.example.com",
    ]);
    let web = served(https, "mta-sts.example.com", &root, HTTP_GET);
    web.assert_from_pebble();
    assert_eq!(
        web.serial(),
        smtp.serial(),
        "one certificate for every listener"
    );
    assert!(
        pebble.log().contains("validate w/ HTTP"),
        "{}",
        pebble.log()
    );
    let acme = s.data_dir().join("acme");
    for file in ["key.pem", "cert.pem", "account.json"] {
        assert_owner_only(&acme.join(file));
    }

    // A week left, under 30 days: the reload's check renews, with the same
    // account, and new sessions get the new certificate.
    let account = std::fs::read(acme.join("account.json")).expect("account");
    s.cli_ok(&["reload"]);
    wait_for_event(&s, "acme_installed", 2);
    let renewed = served(s.addr("submissions"), "mx.test.example", &root, "QUIT\r\n");
    renewed.assert_from_pebble();
    assert_ne!(renewed.serial(), smtp.serial(), "renewed");
    assert_eq!(
        std::fs::read(acme.join("account.json")).expect("account"),
        account
    );
    assert_eq!(
        s.log().matches("event=\"acme_account\"").count(),
        1,
        "one account"
    );

    // The CA is down: the check fails, says why, and the renewed certificate stays.
    pebble.stop();
    s.cli_ok(&["reload"]);
    wait_for_event(&s, "acme_failed", 1);
    let failure = logged(&s, "acme_failed");
    assert!(failure.contains("Connection refused"), "{failure}");
    let kept = served(s.addr("submissions"), "mx.test.example", &root, "QUIT\r\n");
    kept.assert_from_pebble();
    assert_eq!(kept.serial(), renewed.serial());
}

#[test]
fn tls_alpn01_on_the_https_port_alone_then_a_new_domain_over_http01_on_the_listener_a_reload_adds()
{
    if !Pebble::installed() {
        return;
    }
    // No plain HTTP listener: TLS-ALPN-01 is the only way.
    let Setup {
        s,
        pebble,
        https,
        http_port,
        _dns,
    } = setup(
        &["example.com", "example.org"],
        &[],
        Listeners::Https,
        serde_json::json!({}),
    );
    wait_for_event(&s, "acme_installed", 1);
    let root = pebble.issuing_root();
    let first = served(https, "autoconfig.example.com", &root, HTTP_GET);
    first.assert_from_pebble();
    assert!(!first.leaf.contains("example.org"), "{}", first.leaf);
    assert!(
        pebble.log().contains("set VALID") && !pebble.log().contains("validate w/ HTTP"),
        "{}",
        pebble.log()
    );

    // Five years left, but a name is missing: the next check orders again,
    // and answers on the HTTP listener the same reload adds.
    let config = std::fs::read_to_string(&s.config).expect("config");
    let with_http = config.replace(
        "[http]\n",
        &format!("[http]\naddr = \"127.0.0.1:{http_port}\"\n"),
    );
    assert_ne!(with_http, config);
    std::fs::write(&s.config, with_http).expect("write config");
    s.cli_ok(&["domain", "add", "example.org"]);
    s.cli_ok(&["reload"]);
    wait_for_event(&s, "acme_installed", 2);
    assert!(
        pebble.log().contains("validate w/ HTTP"),
        "{}",
        pebble.log()
    );
    let second = served(s.addr("submissions"), "mx.test.example", &root, "QUIT\r\n");
    second.assert_from_pebble();
    second.assert_names(&[
        "autoconfig.example.org",
        "mta-sts.example.org",
        "mta-sts.example.com",
    ]);
}

#[test]
fn a_name_the_ca_cannot_validate_is_left_out_and_the_others_are_certified() {
    if !Pebble::installed() {
        return;
    }
    // A hosted domain whose names do not lead here: the certificate covers
    // the rest, the hostname first of all, and the log says what is left out
    // and why.
    let Setup {
        s, pebble, _dns, ..
    } = setup(
        &["example.com"],
        &["example.net"],
        Listeners::Plain,
        serde_json::json!({}),
    );
    wait_for_event(&s, "acme_installed", 1);
    // Left out with the CA's reason, in one order or over two (the CA may
    // find one invalid before the other has been tried).
    let log = s.log();
    let left_out: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("event=\"acme_names_left_out\""))
        .collect();
    let named: String = left_out
        .iter()
        .filter_map(|l| l.split(" names=").nth(1)?.split(" error=").next())
        .collect();
    assert!(
        named.contains("mta-sts.example.net")
            && named.contains("autoconfig.example.net")
            && !named.contains("example.com")
            && left_out
                .iter()
                .all(|l| l.contains(" not validated: API error: ")),
        "{left_out:?}"
    );
    assert!(!s.log().contains("event=\"acme_failed\""), "{}", s.log());
    let root = pebble.issuing_root();
    let served = served(s.addr("submissions"), "mx.test.example", &root, "QUIT\r\n");
    served.assert_from_pebble();
    served.assert_names(&["mx.test.example", "autoconfig.example.com"]);
    assert!(!served.leaf.contains("example.net"), "{}", served.leaf);
}

#[test]
fn a_ca_that_refuses_the_order_is_logged_with_its_problem_and_the_self_signed_certificate_stays() {
    if !Pebble::installed() {
        return;
    }
    // Bound, not `..`: pebble and the DNS server must outlive the check.
    let Setup {
        s,
        pebble: _pebble,
        _dns,
        ..
    } = setup(
        &["example.com"],
        &[],
        Listeners::Plain,
        serde_json::json!({ "domainBlocklist": ["mx.test.example"] }),
    );
    wait_for_event(&s, "acme_failed", 1);
    let failure = logged(&s, "acme_failed");
    assert!(
        // Said in the problem's detail (pebble 2.4) or in a subproblem
        // (RFC 8555 §6.7.1): the hostname is never left out.
        failure.contains("mx.test.example")
            && failure.contains("(urn:ietf:params:acme:error:rejectedIdentifier)"),
        "the CA's problem detail: {failure}"
    );
    // Still serving, with the certificate it had.
    let out = s_client(s.addr("submissions"), &[], "QUIT\r\n");
    let report = text(&out);
    assert!(
        report.contains("220 ") && !report.contains("Pebble"),
        "{report}"
    );
    assert!(!s.data_dir().join("acme/cert.pem").exists());
}

#[test]
fn past_a_hundred_names_a_second_certificate_is_served_to_the_clients_that_ask_for_its_names() {
    if !Pebble::installed() {
        return;
    }
    // The hostname and 50 domains' two names (example.com, hosted by the
    // test configuration, is the last in the store's order): 101, one more
    // than Let's Encrypt puts in a certificate.
    let domains: Vec<String> = (0..49).map(|i| format!("d{i}.example")).collect();
    let hosted: Vec<&str> = domains.iter().map(String::as_str).collect();
    let dns: Vec<&str> = hosted.iter().copied().chain(["example.com"]).collect();
    let Setup {
        s,
        pebble,
        https,
        _dns,
        ..
    } = setup(&dns, &hosted, Listeners::Both, serde_json::json!({}));
    wait_for_event_within(&s, "acme_installed", 2, Duration::from_secs(60));
    let root = pebble.issuing_root();
    let main = served(s.addr("submissions"), "mx.test.example", &root, "QUIT\r\n");
    main.assert_from_pebble();
    main.assert_names(&["mx.test.example", "autoconfig.example.com"]);
    assert_eq!(main.leaf.matches("DNS:").count(), 100, "{}", main.leaf);
    let more = served(https, "mta-sts.example.com", &root, HTTP_GET);
    more.assert_from_pebble();
    more.assert_names(&["mta-sts.example.com"]);
    assert_ne!(more.serial(), main.serial(), "{}", s.log());
    // A client that names nothing, or another name, gets the first.
    assert_eq!(
        served(https, "autoconfig.d3.example", &root, HTTP_GET).serial(),
        main.serial()
    );
    let acme = s.data_dir().join("acme");
    for file in ["key-1.pem", "cert-1.pem"] {
        assert_owner_only(&acme.join(file));
    }

    // Served again after a restart; and once its domain is gone, the second
    // certificate is removed and no longer served.
    let mut s = s;
    s.kill();
    s.spawn();
    let again = served(https, "mta-sts.example.com", &root, HTTP_GET);
    assert_eq!(again.serial(), more.serial());
    s.cli_ok(&["domain", "del", "example.com"]);
    s.cli_ok(&["reload"]);
    wait_for_event(&s, "acme_retired", 1);
    assert!(!acme.join("cert-1.pem").exists());
    assert_eq!(
        served(https, "mta-sts.example.com", &root, HTTP_GET).serial(),
        main.serial()
    );
}
