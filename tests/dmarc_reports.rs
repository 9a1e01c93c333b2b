//! DMARC aggregate reports (`[filter] dmarc_reports`): messages from another
//! server whose From: domain asks for reports are counted, and the report
//! goes to the addresses the domain named that accept it (RFC 7489 §7.1),
//! read back by Python's email, gzip and XML parsers, as a receiver of
//! reports would.

use std::time::Duration;

use crate::common::*;
use crate::delivery::{wait_log, wait_maildir};
use crate::dmarc::{dkimpy_key, dkimpy_signed, message, send_raw};

/// The report's envelope, and its XML's policy domain and records (one line
/// each: source, count, disposition, dkim, spf).
const READ_REPORT: &str = r#"
import email, email.policy, gzip, sys, json
import xml.etree.ElementTree as ET
m = email.message_from_string(json.load(open(sys.argv[1]))["data"], policy=email.policy.default)
print("subject:", m["Subject"])
part = next(p for p in m.walk() if p.get_content_type() == "application/gzip")
root = ET.fromstring(gzip.decompress(part.get_payload(decode=True)))
# Any namespace: RFC 7489's reports have none, DMARCbis's have one.
t = lambda path: root.findtext("/".join("{*}" + p for p in path.split("/")))
print("org:", t("report_metadata/org_name"))
print("domain:", t("policy_published/domain"), t("policy_published/p"))
for r in root.findall("{*}record"):
    f = lambda path: r.findtext("/".join("{*}" + p for p in path.split("/")))
    print("record:", f("row/source_ip"), f("row/count"), f("row/policy_evaluated/disposition"),
          f("row/policy_evaluated/dkim"), f("row/policy_evaluated/spf"), f("identifiers/header_from"))
"#;

#[test]
fn counted_results_go_to_the_addresses_that_accept_them() {
    let dns = TestDns::start();
    let keys = tempfile::tempdir().expect("dir");
    let key = dkimpy_key(keys.path(), &dns, "sel1", "signer.example");
    dns.txt("signer.example", &["v=spf1 ip4:192.0.2.1 -all"]);
    dns.txt(
        "_dmarc.signer.example",
        &["v=DMARC1; p=none; rua=mailto:dmarc@reports.example,mailto:agg@signer.example"],
    );
    // reports.example takes reports about signer.example; nobody takes
    // them for other.example at unauthorised.example.
    dns.txt(
        "signer.example._report._dmarc.reports.example",
        &["v=DMARC1"],
    );
    dns.txt(
        "_dmarc.other.example",
        &["v=DMARC1; p=none; rua=mailto:x@unauthorised.example"],
    );
    let peer = Peer::start(
        format!("127.0.0.1:{}", free_port()).parse().expect("addr"),
        &[],
    );
    let s = TestServer::delivering(&format!(
        "[filter]\ndmarc_reports = true\ndmarc_report_interval = 10\n\
         [delivery]\n{}[relay]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n",
        dns.config(),
        peer.addr.port()
    ));
    // All four messages go in the first period: ten seconds is far more
    // than sending them takes.
    let (mta, dir) = (s.addr("mta"), s.dir.path());
    let signed = dkimpy_signed(&key, "sel1", "dave@signer.example", "signed");
    for _ in 0..2 {
        assert_eq!(send_raw(mta, dir, "dave@signer.example", &signed), "250");
    }
    let unsigned = message("dave@signer.example", "unsigned", "");
    assert_eq!(send_raw(mta, dir, "dave@signer.example", &unsigned), "250");
    let other = message("olga@other.example", "other", "");
    assert_eq!(send_raw(mta, dir, "olga@other.example", &other), "250");
    wait_maildir(&s, "example.com", "alice", 4);

    let got = peer.wait_for(1, Duration::from_secs(30));
    let report = &got[0];
    let mut rcpts: Vec<&str> = report["rcpt_tos"]
        .as_array()
        .expect("rcpts")
        .iter()
        .filter_map(|r| r.as_str())
        .collect();
    rcpts.sort_unstable();
    assert_eq!(rcpts, ["agg@signer.example", "dmarc@reports.example"]);
    assert_eq!(report["mail_from"], "postmaster@mx.test.example");
    let path = dir.join("report.json");
    std::fs::write(&path, report.to_string()).expect("write");
    let read = text(&python(READ_REPORT, &[path.to_str().expect("path")]));
    assert!(
        read.contains("subject: Report Domain: signer.example Submitter: mx.test.example"),
        "{read}"
    );
    assert!(read.contains("org: mx.test.example"), "{read}");
    assert!(read.contains("domain: signer.example none"), "{read}");
    let mut records: Vec<&str> = read.lines().filter(|l| l.starts_with("record:")).collect();
    records.sort_unstable();
    assert_eq!(
        records,
        [
            "record: 127.0.0.1 1 none fail fail signer.example",
            "record: 127.0.0.1 2 none pass fail signer.example",
        ],
        "{read}"
    );
    wait_log(
        &s,
        "event=\"dmarc_report_unauthorised\" domain=other.example",
    );
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        peer.received().len(),
        1,
        "nothing for other.example, and no empty report"
    );
}
