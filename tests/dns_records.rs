//! `postern dns`: the records to publish, and `--check` against a DNS server the
//! test runs with a zone that is partly right and partly wrong.

use crate::common::*;

fn records(s: &TestServer, extra: &[&str]) -> (Vec<serde_json::Value>, Option<i32>) {
    let mut args = vec!["dns", "example.com", "--json"];
    args.extend(extra);
    let out = s.cli(&args);
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("json: {}", text(&out)));
    (v.as_array().expect("array").clone(), out.status.code())
}

fn find<'a>(all: &'a [serde_json::Value], name: &str, kind: &str) -> Vec<&'a serde_json::Value> {
    all.iter()
        .filter(|r| r["name"] == name && r["type"] == kind)
        .collect()
}

fn config(dns: &TestDns) -> String {
    format!(
        "hostname = \"mx.example.com\"\ndata_dir = \"data\"\n\
         [[listener]]\naddr = \"127.0.0.1:25\"\nrole = \"mta\"\n\
         [[listener]]\naddr = \"127.0.0.1:587\"\nrole = \"submission\"\n\
         [[listener]]\naddr = \"127.0.0.1:26\"\nrole = \"submission\"\n\
         [[listener]]\naddr = \"127.0.0.1:465\"\nrole = \"submissions\"\n\
         [delivery]\n{}",
        dns.config()
    )
}

#[test]
fn prints_every_record_ready_to_paste() {
    let dns = TestDns::start();
    let s = TestServer::configure(&config(&dns));
    s.cli_ok(&["domain", "add", "example.com"]);
    let zone = s.cli_ok(&["dns", "example.com"]);
    for line in [
        "example.com.                             3600 IN MX    10 mx.example.com.",
        "example.com.                             3600 IN TXT   \"v=spf1 mx ~all\"",
        "_submissions._tcp.example.com.           3600 IN SRV   0 1 465 mx.example.com.",
        "_submission._tcp.example.com.            3600 IN SRV   10 1 587 mx.example.com.",
        "_submission._tcp.example.com.            3600 IN SRV   20 1 26 mx.example.com.",
        "autoconfig.example.com.                  3600 IN CNAME mx.example.com.",
        "_autodiscover._tcp.example.com.          3600 IN SRV   0 1 443 mx.example.com.",
        "_smtp._tls.example.com.                  3600 IN TXT   \"v=TLSRPTv1; rua=mailto:postmaster@example.com\"",
    ] {
        assert!(zone.contains(line), "missing {line:?} in\n{zone}");
    }
    // Each record has its one-line comment, and the RSA key is split into
    // strings of at most 255 octets.
    let dkim = zone
        .lines()
        .find(|l| l.starts_with("postern._domainkey.example.com."))
        .expect("dkim line");
    let strings: Vec<&str> = dkim.split('"').skip(1).step_by(2).collect();
    assert!(
        strings.len() >= 2 && strings.iter().all(|s| s.len() <= 255),
        "{dkim}"
    );
    assert!(
        strings.concat().starts_with("v=DKIM1; k=rsa; p=MII"),
        "{dkim}"
    );
    let (records_part, ways) = zone.split_once("\n; How mail").expect("ways out");
    assert_eq!(
        records_part.lines().filter(|l| l.starts_with("; ")).count(),
        records_part
            .lines()
            .filter(|l| l.contains(" 3600 IN "))
            .count()
            + 1
    );
    assert!(
        ways.contains(";   straight from mx.example.com to each recipient's MX"),
        "{ways}"
    );
    let out = s.cli(&["dns", "unknown.example"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("domain unknown.example is not hosted here"));
}

#[test]
fn check_says_what_is_missing_or_wrong() {
    let dns = TestDns::start();
    let s = TestServer::configure(&config(&dns));
    s.cli_ok(&["domain", "add", "example.com"]);
    let (all, _) = records(&s, &[]);
    // Right: MX, SPF (any SPF will do), the DKIM key as published (split), 465 SRV, autoconfig.
    dns.mx("example.com", 10, "mx.example.com");
    dns.txt("example.com", &["v=spf1 include:_spf.example.net -all"]);
    let dkim = find(&all, "postern._domainkey.example.com.", "TXT")[0]["value"]
        .as_str()
        .expect("value")
        .to_string();
    let (a, b) = dkim.split_at(200);
    dns.txt("postern._domainkey.example.com", &[a, b]);
    dns.srv("_submissions._tcp.example.com", 0, 465, "mx.example.com");
    dns.cname("autoconfig.example.com", "mx.example.com");
    // Wrong: DMARC is fine to differ, but the 587 SRV points elsewhere.
    dns.txt("_dmarc.example.com", &["v=DMARC1; p=none"]);
    dns.srv(
        "_submission._tcp.example.com",
        10,
        587,
        "old-mail.example.net",
    );
    let (checked, code) = records(&s, &["--check"]);
    assert_eq!(code, Some(1), "problems make exit 1");
    let status = |name: &str, kind: &str| {
        find(&checked, name, kind)
            .iter()
            .map(|r| r["status"].as_str().expect("status").to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(status("example.com.", "MX"), ["ok"]);
    assert_eq!(status("example.com.", "TXT"), ["ok"]);
    assert_eq!(status("postern._domainkey.example.com.", "TXT"), ["ok"]);
    assert_eq!(status("_dmarc.example.com.", "TXT"), ["ok"]);
    assert_eq!(status("_submissions._tcp.example.com.", "SRV"), ["ok"]);
    assert_eq!(
        status("_submission._tcp.example.com.", "SRV"),
        ["wrong", "wrong"]
    );
    let wrong = find(&checked, "_submission._tcp.example.com.", "SRV")[0];
    assert!(
        wrong["found"]
            .as_str()
            .expect("found")
            .contains("old-mail.example.net"),
        "{wrong}"
    );
    assert_eq!(status("autoconfig.example.com.", "CNAME"), ["ok"]);
    assert_eq!(status("autodiscover.example.com.", "CNAME"), ["missing"]);
    assert_eq!(status("_mta-sts.example.com.", "TXT"), ["missing"]);
    let human = s.cli(&["dns", "example.com", "--check"]);
    let t = text(&human);
    assert!(
        t.contains(";   check: WRONG, found: 10 1 587 old-mail.example.net.")
            && t.contains(";   check: MISSING"),
        "{t}"
    );
    assert!(t.contains("records missing or wrong"), "{t}");
}

/// A domain whose mail leaves through an ISP's relay: `postern dns` puts the
/// relay in the SPF record, and `--check` says, from what DNS serves, whether
/// receivers will pass its mail on each way out.
#[test]
fn check_says_for_each_way_out_whether_dmarc_will_pass() {
    let dns = TestDns::start();
    let s = TestServer::configure(&format!(
        "{}[relay]\nhost = \"smtp.isp.example\"\nport = 587\ntls = \"starttls\"\n",
        config(&dns)
    ));
    s.cli_ok(&["domain", "add", "example.com"]);
    let zone = s.cli_ok(&["dns", "example.com"]);
    assert!(
        zone.contains("example.com.                             3600 IN TXT   \"v=spf1 mx a:smtp.isp.example ~all\""),
        "{zone}"
    );
    dns.ip("smtp.isp.example", "192.0.2.25".parse().expect("ip"));
    dns.mx("example.com", 10, "mx.example.com");
    dns.ip("mx.example.com", "192.0.2.10".parse().expect("ip"));
    // The SPF record the domain had before: the relay is not in it.
    dns.txt("example.com", &["v=spf1 mx -all"]);
    let check = |s: &TestServer| {
        let out = s.cli(&["dns", "example.com", "--check"]);
        (text(&out), out.status.code())
    };
    let (t, code) = check(&s);
    assert!(
        t.contains(";   FAILS: mail of example.com through smtp.isp.example ([relay]) (192.0.2.25) fails SPF (fail), and DMARC will fail: publish DKIM (the records above) or add a:smtp.isp.example to the SPF record"),
        "{t}"
    );
    assert_eq!(code, Some(1));
    assert!(t.contains("1 way out where DMARC will fail"), "{t}");
    // DKIM published: the signature carries DMARC through the relay.
    let published: Vec<serde_json::Value> =
        serde_json::from_str(&s.cli_ok(&["dns", "example.com", "--json"])).expect("json");
    for r in &published {
        let name = r["name"].as_str().expect("name");
        if name.contains("._domainkey.") {
            dns.txt_long(name, r["value"].as_str().expect("value"));
        }
    }
    let (t, _) = check(&s);
    assert!(
        t.contains(";   ok: mail of example.com through smtp.isp.example ([relay]) (192.0.2.25) fails SPF (fail); DKIM is aligned, so DMARC passes (add a:smtp.isp.example to the SPF record for SPF too)"),
        "{t}"
    );
    // The same verdicts in --json, after the records.
    let (all, _) = records(&s, &["--check"]);
    let path = find(&all, "through smtp.isp.example ([relay])", "PATH");
    assert_eq!(path.len(), 1, "{all:#?}");
    assert_eq!(
        (
            &path[0]["spf"],
            &path[0]["dkim_published"],
            &path[0]["dmarc_passes"]
        ),
        (&"fail".into(), &true.into(), &true.into())
    );
    assert_eq!(path[0]["addresses"][0], "192.0.2.25");
    // Issue #16: a user whose client sends through their ISP's own relay
    // (every port to this server blocked): nothing signs that mail with the
    // domain's key, so only SPF can carry DMARC, and it does not.
    dns.ip("smtp.other-isp.example", "192.0.2.77".parse().expect("ip"));
    let out = s.cli(&[
        "dns",
        "example.com",
        "--check",
        "--via",
        "smtp.other-isp.example",
    ]);
    let t = text(&out);
    assert!(
        t.contains(";   FAILS: mail of example.com through smtp.other-isp.example (a mail client's own relay, --via) (192.0.2.77) fails SPF (fail), and nothing on this path signs it with DKIM, so DMARC will fail: add a:smtp.other-isp.example to the SPF record of example.com"),
        "{t}"
    );
    assert_eq!(out.status.code(), Some(1));
    dns.remove("example.com");
    dns.mx("example.com", 10, "mx.example.com");
    dns.txt("example.com", &["v=spf1 mx a:smtp.other-isp.example -all"]);
    let t = text(&s.cli(&[
        "dns",
        "example.com",
        "--check",
        "--via",
        "smtp.other-isp.example",
    ]));
    assert!(
        t.contains(";   ok: mail of example.com through smtp.other-isp.example (a mail client's own relay, --via) (192.0.2.77) passes SPF, so DMARC passes"),
        "{t}"
    );
}

/// `postern check --outbound` says after the ways out whether each hosted
/// domain's mail is believed on each of them, as `postern dns --check` does.
#[test]
fn check_outbound_judges_each_hosted_domains_ways_out() {
    let dns = TestDns::start();
    dns.ip("relay.test", "127.0.0.93".parse().expect("ip"));
    dns.txt("example.com", &["v=spf1 -all"]);
    let closed = free_port();
    let s = TestServer::configure(&format!(
        "{}[relay]\nhost = \"relay.test\"\nport = {closed}\ntls = \"none\"\n",
        config(&dns)
    ));
    s.cli_ok(&["domain", "add", "example.com"]);
    let mx = format!("127.0.0.1:{closed}");
    let out = s.cli(&[
        "check",
        "--outbound",
        "--json",
        "--timeout",
        "2",
        "--mx-hosts",
        &mx,
    ]);
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("json: {}", text(&out)));
    let routes = report["routes"].as_array().expect("routes");
    assert_eq!(routes[0]["domain"], "example.com", "{report:#}");
    let relay = routes[0]["paths"]
        .as_array()
        .expect("paths")
        .iter()
        .find(|p| p["name"] == "through relay.test ([relay])")
        .unwrap_or_else(|| panic!("{report:#}"));
    assert_eq!(relay["dmarc_passes"], false, "{relay:#}");
    assert!(
        relay["value"]
            .as_str()
            .expect("sentence")
            .contains("DMARC will fail: publish DKIM"),
        "{relay:#}"
    );
    let table = text(&s.cli(&["check", "--outbound", "--timeout", "2", "--mx-hosts", &mx]));
    assert!(
        table.contains("How mail of example.com leaves:\n  FAILS: mail of example.com through relay.test ([relay]) (127.0.0.93) fails SPF"),
        "{table}"
    );
}
