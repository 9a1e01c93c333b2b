//! `postern check` (issue #4) from a client network built in namespaces
//! (check/lab.rs): an ISP that drops, resets and redirects ports in front of
//! the real `postern serve`; plus bad answers on loopback, the password and
//! test message, `--outbound`, and the exit codes.

mod fakes;

use std::io::Write;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::netlab::{HOST, ISP_IP, Lab, SERVER_IP};
use crate::common::{BIN, PASSWORD, TestServer, run_with_stdin};
use fakes::{MIMIC, ca_signed, fake, hold, http_400};

/// The real server in the server namespace: mail.test.example on 25, 26,
/// 465, 587 and 2525 (and HTTP on 80, for the port echo), with a CA-signed certificate for `cert_names`, the
/// domain example.com and alice@example.com. Returns it and the CA file.
fn real_server(lab: &Lab, cert_names: &[&str]) -> (TestServer, String) {
    let (ca, cert, key) = ca_signed(lab.dir.path(), cert_names);
    let mut toml = format!(
        "hostname = \"{HOST}\"\ndata_dir = \"data\"\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n\
         [delivery]\nhold = true\n[http]\naddr = \"{SERVER_IP}:80\"\n",
        cert.display(),
        key.display()
    );
    for (port, role) in [
        (25, "mta"),
        (26, "submission"),
        (465, "submissions"),
        (587, "submission"),
        (2525, "submission"),
    ] {
        toml.push_str(&format!(
            "[[listener]]\naddr = \"{SERVER_IP}:{port}\"\nrole = \"{role}\"\n"
        ));
    }
    let mut server = TestServer::configure(&toml);
    server.cli_ok(&["domain", "add", "example.com"]);
    server.cli_stdin_ok(
        &["user", "add", "alice@example.com", "--password-stdin"],
        PASSWORD,
    );
    server.spawn_in(Some(&lab.server));
    (server, ca.display().to_string())
}

/// The ISP's own mail relay, another Postern that calls itself
/// smtp.isp.example, on the ISP's address.
fn isp_relay(lab: &Lab, port: u16) -> TestServer {
    let mut relay = TestServer::configure(&format!(
        "hostname = \"smtp.isp.example\"\ndata_dir = \"data\"\n[[listener]]\n\
         addr = \"{ISP_IP}:{port}\"\nrole = \"mta\"\n"
    ));
    relay.spawn_in(Some(&lab.isp));
    relay
}

/// The ISP sends the client's port-25 traffic to its own host's `to_port`;
/// then the check runs over 25, 465 and 587.
fn redirect_25_and_check(lab: &Lab, ca: &str, to_port: u16) -> Output {
    lab.isp_rules(
        &[],
        &[&format!(
            "ip daddr {SERVER_IP} tcp dport 25 dnat ip to {ISP_IP}:{to_port}"
        )],
    );
    lab.check(&[
        HOST,
        "--json",
        "--timeout",
        "5",
        "--ca-file",
        ca,
        "--ports",
        "25,465,587",
    ])
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn port(report: &Value, port: u16) -> &Value {
    report["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["port"] == port)
        .unwrap_or_else(|| panic!("no port {port} in {report:#}"))
}

fn status(report: &Value, p: u16) -> &str {
    port(report, p)["status"].as_str().unwrap()
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn open_ports_show_tls_auth_size_and_the_recommendation() {
    let lab = Lab::new();
    let (_server, ca) = real_server(&lab, &[HOST]);
    let out = lab.check(&[HOST, "--json", "--timeout", "5", "--ca-file", &ca]);
    let r = json(&out);
    assert_eq!(code(&out), 0, "{r:#}");
    for p in [25, 26, 465, 587, 2525] {
        assert_eq!(status(&r, p), "open", "{r:#}");
        assert_eq!(port(&r, p)["seen_by_server"], true, "{r:#}");
    }
    // Nothing listens on 443: the server's own kernel answers RST.
    assert_eq!(status(&r, 443), "refused");
    let p465 = port(&r, 465);
    assert_eq!(p465["tls_mode"], "implicit");
    assert_eq!(p465["address"], SERVER_IP);
    assert!(p465["latency_ms"].is_u64());
    assert_eq!(p465["greeting"], "220 mail.test.example ESMTP Postern");
    assert_eq!(p465["tls"]["certificate_status"], "valid");
    assert_eq!(
        p465["tls"]["certificate"]["names"],
        serde_json::json!([HOST])
    );
    assert!(
        p465["tls"]["certificate"]["not_after"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    assert!(
        p465["tls"]["version"]
            .as_str()
            .unwrap()
            .starts_with("TLS 1.")
    );
    assert_eq!(
        p465["auth_mechanisms"],
        serde_json::json!(["PLAIN", "LOGIN"])
    );
    assert_eq!(p465["size"], 26_214_400);
    assert_eq!(r["echo"]["answered"], true);
    assert_eq!(
        r["settings"],
        serde_json::json!({"server": HOST, "port": 465, "security": "SSL/TLS"})
    );
    assert!(r["ok"].as_bool().unwrap());
    let rec = r["recommendation"].as_str().unwrap();
    assert!(rec.contains("port:      465"), "{rec}");
    assert!(
        rec.contains(
            "Also working: 587 (STARTTLS), 26 (STARTTLS), 2525 (STARTTLS), 25 (STARTTLS)."
        ),
        "{rec}"
    );
    // The table says the same in one screen.
    let out = lab.check(&[HOST, "--timeout", "5", "--ca-file", &ca]);
    let table = text(&out);
    assert_eq!(code(&out), 0, "{table}");
    assert!(table.lines().count() < 25, "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("465") && l.contains("SSL/TLS") && l.contains("open")),
        "{table}"
    );
    assert!(table.contains("security:  SSL/TLS"), "{table}");
}

#[test]
fn isp_drops_25_and_resets_587() {
    let lab = Lab::new();
    let (_server, ca) = real_server(&lab, &[HOST]);
    lab.isp_rules(
        &[
            "tcp dport 25 drop",
            "tcp dport 587 reject with tcp reset",
            "tcp dport 2525 reject with icmpx type admin-prohibited",
        ],
        &[],
    );
    let started = Instant::now();
    let out = lab.check(&[HOST, "--json", "--timeout", "3", "--ca-file", &ca]);
    let r = json(&out);
    assert!(started.elapsed() < Duration::from_secs(5), "{r:#}");
    assert_eq!(status(&r, 25), "filtered", "{r:#}");
    assert!(port(&r, 25)["reason"].as_str().unwrap().contains("dropped"));
    assert_eq!(status(&r, 587), "refused", "{r:#}");
    assert!(port(&r, 587)["reason"].as_str().unwrap().contains("RST"));
    // An ICMP reject from the ISP's router, while other ports connect.
    assert_eq!(status(&r, 2525), "refused", "{r:#}");
    assert!(
        port(&r, 2525)["reason"]
            .as_str()
            .unwrap()
            .contains("rejected on the way")
    );
    assert_eq!(status(&r, 465), "open");
    assert_eq!(status(&r, 26), "open");
    assert_eq!(r["settings"]["port"], 465);
    assert!(
        r["recommendation"]
            .as_str()
            .unwrap()
            .contains("Also working: 26 (STARTTLS)")
    );
    assert_eq!(code(&out), 0);
}

#[test]
fn isp_redirecting_25_to_its_relay_is_intercepted() {
    let mut lab = Lab::new();
    let (_server, ca) = real_server(&lab, &[HOST]);
    let _relay = isp_relay(&lab, 10025);
    let out = redirect_25_and_check(&lab, &ca, 10025);
    let r = json(&out);
    assert_eq!(status(&r, 25), "intercepted", "{r:#}");
    assert_eq!(port(&r, 25)["seen_by_server"], false);
    let reason = port(&r, 25)["reason"].as_str().unwrap();
    assert!(reason.contains("never saw this connection"), "{reason}");
    assert!(reason.contains("smtp.isp.example"), "{reason}");
    assert_eq!(r["echo"]["ports"], serde_json::json!([465, 587]));
    assert_eq!(status(&r, 465), "open");
    assert_eq!(code(&out), 0);

    // A relay that copies the server's greeting and lies about the echo is
    // caught all the same: the real server never saw the token on 25.
    lab.spawn_ready(&lab.isp.clone(), "python3", &["-c", MIMIC, ISP_IP, "10026"]);
    let out = redirect_25_and_check(&lab, &ca, 10026);
    let r = json(&out);
    assert_eq!(
        port(&r, 25)["greeting"],
        "220 mail.test.example ESMTP Postern",
        "{r:#}"
    );
    assert_eq!(status(&r, 25), "intercepted", "{r:#}");
    assert_eq!(status(&r, 587), "open");
}

/// The ISP's own submission relay, another Postern that calls itself
/// smtp.isp.example, on 587 of the ISP's address (AUTH after STARTTLS).
fn isp_submission_relay(lab: &Lab) -> TestServer {
    // The certificate real_server made, which names smtp.isp.example too.
    let dir = lab.dir.path();
    let mut relay = TestServer::configure(&format!(
        "hostname = \"smtp.isp.example\"\ndata_dir = \"data\"\n[tls]\ncert = \"{}\"\n\
         key = \"{}\"\n[[listener]]\naddr = \"{ISP_IP}:587\"\nrole = \"submission\"\n",
        dir.join("cert.pem").display(),
        dir.join("key.pem").display()
    ));
    relay.spawn_in(Some(&lab.isp));
    relay
}

/// Issue #16: every mail port to the host is blocked. The check learns the
/// network's public address from the host's HTTP port echo, its reverse
/// name (in the ISP's zone) and so the ISP's domain, finds the ISP's relay
/// on 587, and says whether the user's domain's SPF covers it: for a domain
/// whose SPF names the relay and one whose SPF does not.
#[test]
fn every_port_blocked_finds_the_isp_relay_and_judges_spf() {
    use std::net::IpAddr;
    let lab = Lab::new();
    let (_server, ca) = real_server(&lab, &[HOST, "smtp.isp.example"]);
    let _relay = isp_submission_relay(&lab);
    let dns = crate::common::dns::TestDns::start_in_netns(&lab.client);
    lab.client_resolves_locally();
    let client: IpAddr = "10.77.0.2".parse().unwrap();
    dns.ptr(client, "dsl-2.customers.isp.example");
    dns.ip("smtp.isp.example", ISP_IP.parse().unwrap());
    dns.txt("covered.example", &["v=spf1 a:smtp.isp.example -all"]);
    dns.txt("uncovered.example", &["v=spf1 ip4:192.0.2.1 -all"]);
    dns.txt("_dmarc.uncovered.example", &["v=DMARC1; p=reject"]);
    lab.isp_rules(
        &[
            "tcp dport { 25, 26, 465, 587, 2525 } drop",
            "tcp dport 443 reject with tcp reset",
        ],
        &[],
    );
    let started = Instant::now();
    let out = lab.check(&[
        HOST,
        "--timeout",
        "2",
        "--ca-file",
        &ca,
        "--domain",
        "uncovered.example",
    ]);
    assert!(started.elapsed() < Duration::from_secs(6));
    let table = text(&out);
    assert_eq!(code(&out), 1, "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("587") && l.contains("filtered")),
        "{table}"
    );
    for words in [
        "Every submission port is blocked from this network. If this used to work, the network \
         has started blocking these ports. The way out is your ISP's own outgoing mail server \
         (SMTP):\nThis network sends from",
        "This network sends from 10.77.0.2 (dsl-2.customers.isp.example), so your ISP is \
         isp.example. Its relay smtp.isp.example answers on 587 with STARTTLS; it will ask for \
         your ISP account's user name and password, not your mail password. Your address can \
         stay you@uncovered.example.",
        "fails SPF (fail), and nothing on this path signs it with DKIM, so DMARC will fail: add \
         a:smtp.isp.example to the SPF record of uncovered.example",
        "Outgoing mail server (SMTP) for your mail client:\n  server:    smtp.isp.example\n  \
         port:      587\n  security:  STARTTLS\n  user name: your ISP account's",
    ] {
        assert!(table.contains(words), "{words}\n---\n{table}");
    }
    assert!(String::from_utf8_lossy(&out.stderr).contains("no way to send mail"));

    let out = lab.check(&[
        HOST,
        "--json",
        "--timeout",
        "2",
        "--ca-file",
        &ca,
        "--domain",
        "covered.example",
    ]);
    let r = json(&out);
    let way = &r["way_out"];
    assert_eq!(way["public_address"], "10.77.0.2", "{r:#}");
    assert_eq!(way["address_source"], "port echo");
    assert_eq!(way["isp_domain"], "isp.example");
    assert_eq!(way["best"]["host"], "smtp.isp.example");
    assert_eq!(way["best"]["port"], 587);
    assert_eq!(way["best"]["security"], "STARTTLS");
    assert_eq!(way["best"]["certificate_valid"], true, "{way:#}");
    assert!(
        way["best"]["auth"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m == "PLAIN"),
        "{way:#}"
    );
    assert_eq!(way["verdict"]["spf"], "pass", "{way:#}");
    assert_eq!(way["verdict"]["dmarc_passes"], true);
    assert!(
        r["recommendation"]
            .as_str()
            .unwrap()
            .contains("passes SPF, so DMARC passes"),
        "{r:#}"
    );
}

#[test]
fn no_route_and_unknown_names_are_unreachable_once() {
    let lab = Lab::new();
    lab.sh(&lab.client, "ip route del default");
    let out = lab.check(&[SERVER_IP, "--json", "--timeout", "2"]);
    let r = json(&out);
    assert_eq!(code(&out), 1);
    assert!(
        r["unreachable"].as_str().unwrap().contains("no route"),
        "{r:#}"
    );
    for p in [25, 26, 465, 587, 2525, 443] {
        assert_eq!(status(&r, p), "unreachable");
    }
    let out = lab.check(&[SERVER_IP, "--timeout", "2"]);
    let table = text(&out);
    // Said once for the host, not once per port.
    assert_eq!(table.matches(": unreachable:").count(), 1, "{table}");
    assert!(!table.contains("PORT"), "{table}");
    assert!(table.contains("cannot be reached"), "{table}");

    let started = Instant::now();
    let out = lab.check(&["nonexistent.invalid", "--json", "--timeout", "2"]);
    let r = json(&out);
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(code(&out), 1);
    assert!(
        r["unreachable"]
            .as_str()
            .unwrap()
            .contains("does not resolve"),
        "{r:#}"
    );
    assert_eq!(status(&r, 587), "unreachable");
}

#[test]
fn a_certificate_for_another_name_is_tls_failed() {
    let lab = Lab::new();
    let (_server, ca) = real_server(&lab, &["wrong.test.example"]);
    let out = lab.check(&[
        HOST,
        "--json",
        "--timeout",
        "5",
        "--ca-file",
        &ca,
        "--ports",
        "465,587",
    ]);
    let r = json(&out);
    assert_eq!(code(&out), 1, "{r:#}");
    for p in [465, 587] {
        assert_eq!(status(&r, p), "tls-failed", "{r:#}");
        assert_eq!(port(&r, p)["tls"]["certificate_status"], "name-mismatch");
        let reason = port(&r, p)["reason"].as_str().unwrap();
        assert!(
            reason.contains("for wrong.test.example, not for mail.test.example"),
            "{reason}"
        );
    }
    let rec = r["recommendation"].as_str().unwrap();
    assert!(rec.contains("port 465 reaches"), "{rec}");
    assert!(
        rec.contains("use one of the certificate's names (wrong.test.example)"),
        "{rec}"
    );
    // Without the private CA, the same certificate has an unknown issuer.
    let out = lab.check(&[HOST, "--json", "--timeout", "5", "--ports", "465"]);
    let r = json(&out);
    assert_eq!(
        port(&r, 465)["tls"]["certificate_status"],
        "unknown-issuer",
        "{r:#}"
    );
    assert!(
        port(&r, 465)["reason"]
            .as_str()
            .unwrap()
            .contains("unknown authority")
    );
}

#[test]
fn the_password_is_tried_and_a_test_message_queued() {
    let lab = Lab::new();
    let (server, ca) = real_server(&lab, &[HOST]);
    let args = [
        HOST,
        "--json",
        "--timeout",
        "5",
        "--ca-file",
        &ca,
        "--ports",
        "465,587,25",
        "--user",
        "alice@example.com",
        "--password-stdin",
    ];
    let mut with_send = args.to_vec();
    with_send.extend(["--send-to", "alice@example.com"]);
    let out = lab.check_stdin(&with_send, &format!("{PASSWORD}\n"));
    let r = json(&out);
    assert_eq!(code(&out), 0, "{r:#}");
    for p in [465, 587, 25] {
        assert_eq!(port(&r, p)["auth"]["result"], "accepted", "{r:#}");
    }
    assert_eq!(r["send"]["accepted"], true, "{r:#}");
    assert_eq!(r["send"]["port"], 465);
    let id = r["send"]["queue_id"].as_str().unwrap();
    let queued = server.queue();
    assert!(
        queued.iter().any(|m| m["id"] == id),
        "{id} not in {queued:?}"
    );

    let out = lab.check_stdin(&args, "not the password\n");
    let r = json(&out);
    assert_eq!(code(&out), 1, "{r:#}");
    assert_eq!(port(&r, 465)["auth"]["result"], "refused");
    let rec = r["recommendation"].as_str().unwrap();
    assert!(rec.contains("refused the password: 535"), "{rec}");
}

#[test]
fn outbound_port_25_blocked_falls_back_to_the_relay() {
    let lab = Lab::new();
    let (_server, ca) = real_server(&lab, &[HOST]);
    lab.isp_rules(&["tcp dport 25 drop"], &[]);
    let password = lab.dir.path().join("relay-password");
    std::fs::write(&password, format!("{PASSWORD}\n")).unwrap();
    let with_relay = lab.dir.path().join("relay.toml");
    std::fs::write(
        &with_relay,
        format!(
            "hostname = \"client.test.example\"\ndata_dir = \"data\"\n[relay]\nhost = \"{HOST}\"\n\
             port = 587\ntls = \"starttls\"\nusername = \"alice@example.com\"\n\
             password_file = \"{}\"\n",
            password.display()
        ),
    )
    .unwrap();
    let mx = format!("{SERVER_IP}:25,{HOST}:25");
    // The relay needs time for TLS and AUTH; the blocked port 25 alone does not.
    let outbound = |config: &Path, timeout: &str| {
        lab.check(&[
            "--outbound",
            "--json",
            "--timeout",
            timeout,
            "--ca-file",
            &ca,
            "--mx-hosts",
            &mx,
            "--config",
            config.to_str().unwrap(),
        ])
    };
    let out = outbound(&with_relay, "3");
    let r = json(&out);
    assert_eq!(code(&out), 0, "{r:#}");
    assert_eq!(r["port25_blocked"], true);
    let targets = r["targets"].as_array().unwrap();
    assert_eq!(targets[0]["status"], "filtered");
    assert_eq!(targets[2]["kind"], "relay");
    assert_eq!(targets[2]["status"], "open", "{r:#}");
    assert_eq!(targets[2]["auth"]["result"], "accepted");
    let rec = r["recommendation"].as_str().unwrap();
    assert!(rec.contains("port 25 appears to be blocked"), "{rec}");
    // Issue #16: hosts named with --mx-hosts are not "well-known" ones.
    assert!(
        rec.contains(&format!(
            "none of the mail servers tried answered on it: {SERVER_IP}:25, {HOST}:25"
        )) && !rec.contains("well-known"),
        "{rec}"
    );
    assert!(rec.contains("[relay] mail.test.example:587 works"), "{rec}");

    let bare = lab.dir.path().join("bare.toml");
    std::fs::write(&bare, "hostname = \"client.test.example\"\n").unwrap();
    let out = outbound(&bare, "1.5");
    assert_eq!(code(&out), 1);
    assert!(
        json(&out)["recommendation"]
            .as_str()
            .unwrap()
            .contains("Set [relay]")
    );
}

#[test]
fn bad_answers_get_a_verdict_before_the_deadline() {
    let http = fake(http_400);
    let https_port = fake(http_400);
    let silent = fake(hold);
    let garbage = fake(|mut c| {
        let _ = c.write_all(&[0x16, 0x03, 0x01, 0xff, 0x00, 0x9a, 0x80]);
        hold(c);
    });
    let huge = fake(|mut c| {
        let _ = c.write_all(b"220 ");
        let _ = c.write_all(&vec![b'x'; 20 << 20]);
    });
    let closer = fake(drop);
    let ports = format!("{http},{silent},{garbage},{huge},{closer},{https_port}/tls");
    let started = Instant::now();
    let out = run_with_stdin(
        std::process::Command::new(BIN).args([
            "check",
            "127.0.0.1",
            "--json",
            "--timeout",
            "3",
            "--ports",
            &ports,
        ]),
        "",
    );
    let r = json(&out);
    assert!(started.elapsed() < Duration::from_millis(4500), "{r:#}");
    assert_eq!(code(&out), 1);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panick"));
    let cases = [
        (http, "intercepted", "in HTTP"),
        (silent, "filtered", "nothing spoke"),
        (garbage, "intercepted", "not SMTP"),
        (huge, "intercepted", "over 4096 octets"),
        (closer, "refused", "closed without a greeting"),
    ];
    let all = r["ports"].as_array().unwrap();
    for (p, want, words) in cases {
        let got = all
            .iter()
            .find(|x| x["port"] == p && x["tls_mode"] == "starttls")
            .unwrap();
        assert_eq!(got["status"], want, "{got:#}");
        assert!(got["reason"].as_str().unwrap().contains(words), "{got:#}");
    }
    let over_tls = all.iter().find(|x| x["tls_mode"] == "implicit").unwrap();
    assert_eq!(over_tls["status"], "tls-failed", "{over_tls:#}");
    assert!(
        over_tls["reason"]
            .as_str()
            .unwrap()
            .contains("does not speak TLS"),
        "{over_tls:#}"
    );
}

#[test]
fn usage_errors_exit_2() {
    let cases: [&[&str]; 5] = [
        &["check"],
        &["check", "mail.example.com", "--ports", "25,x"],
        &["check", "mail.example.com", "--send-to", "a@b.example"],
        &["check", "mail.example.com", "--outbound"],
        &["check", "mail.example.com", "--timeout", "0"],
    ];
    for args in cases {
        let out = run_with_stdin(std::process::Command::new(BIN).args(args), "");
        assert_eq!(
            code(&out),
            2,
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
