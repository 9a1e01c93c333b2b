//! `/metrics` as Prometheus reads it: every metric described (HELP and
//! TYPE; `promtool check metrics` has nothing to say), counters at 0 before
//! the first event, the queue's gauges, refusals by reply code, and the time
//! from acceptance to delivery as a histogram.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;

const HTTP: &str = "[http]\naddr = \"127.0.0.1:0\"\n";

fn scrape(s: &TestServer) -> String {
    require_tool("curl");
    let out = Command::new("curl")
        .args(["-sf", &format!("http://{}/metrics", s.http_addrs()[0])])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", s.log());
    String::from_utf8(out.stdout).unwrap()
}

/// `promtool check metrics` on `body`: its complaints, empty when clean.
fn promtool(body: &str) -> String {
    require_tool("promtool");
    let out = run_with_stdin(Command::new("promtool").args(["check", "metrics"]), body);
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn value(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

#[test]
fn every_metric_is_described_counted_from_zero_and_clean_for_promtool() {
    let s = TestServer::start(HTTP);
    let body = scrape(&s);
    assert_eq!(promtool(&body), "", "{body}");
    let submission = s.port("submission");
    for series in [
        format!("postern_connections_total{{port=\"{submission}\",role=\"submission\"}}"),
        format!("postern_messages_queued_total{{port=\"{submission}\"}}"),
        format!("postern_auth_failures_total{{port=\"{submission}\"}}"),
        "postern_deliveries_total{result=\"bounced\"}".to_string(),
        "postern_dsn_suppressed_total".to_string(),
        "postern_user_holds_total".to_string(),
        "postern_users_held".to_string(),
        "postern_sending_limited_total{limit=\"new_recipients_per_day\"}".to_string(),
        "postern_queue_messages".to_string(),
        "postern_queue_recipients{state=\"held\"}".to_string(),
        "postern_queue_oldest_seconds".to_string(),
    ] {
        assert_eq!(value(&body, &series), Some(0.0), "{series} in {body}");
    }
    for line in body
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let name = line.split(['{', ' ']).next().unwrap();
        let family = name
            .trim_end_matches("_bucket")
            .trim_end_matches("_sum")
            .trim_end_matches("_count");
        assert!(
            body.contains(&format!("# HELP {family} "))
                && body.contains(&format!("# TYPE {family} ")),
            "{name} has no HELP or TYPE:\n{body}"
        );
    }

    // One message kept in the queue, one recipient refused.
    let out = swaks(
        s.addr("submission"),
        &[&["-tls"], &alice_to_bob("PLAIN")[..]].concat(),
    );
    assert!(
        text(&out).contains("250 2.0.0 Ok: queued"),
        "{}",
        text(&out)
    );
    let (mut c, _) = Raw::connect(s.addr("mta"));
    c.cmd("EHLO client.example");
    c.cmd("MAIL FROM:<x@elsewhere.example>");
    let refused = c.cmd("RCPT TO:<y@not-hosted.example>");
    assert!(refused.starts_with("554 5.7.1"), "{refused}");
    let body = scrape(&s);
    assert_eq!(promtool(&body), "", "{body}");
    assert_eq!(value(&body, "postern_queue_messages"), Some(1.0), "{body}");
    assert_eq!(
        value(&body, "postern_queue_recipients{state=\"queued\"}"),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        value(
            &body,
            "postern_rejections_total{code=\"554\",status=\"5.7.1\"}"
        ),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        value(
            &body,
            &format!("postern_messages_queued_total{{port=\"{submission}\"}}")
        ),
        Some(1.0)
    );
}

#[test]
fn the_time_to_delivery_is_a_histogram() {
    let s = TestServer::delivering(HTTP);
    let out = swaks(
        s.addr("mta"),
        &["--from", "x@elsewhere.example", "--to", "alice@example.com"],
    );
    assert!(
        text(&out).contains("250 2.0.0 Ok: queued"),
        "{}",
        text(&out)
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        let body = scrape(&s);
        if value(&body, "postern_deliveries_total{result=\"delivered\"}") == Some(1.0) {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "not delivered:\n{body}\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(promtool(&body), "", "{body}");
    assert_eq!(
        value(&body, "postern_delivery_seconds_count"),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        value(&body, "postern_delivery_seconds_bucket{le=\"432000\"}"),
        Some(1.0),
        "{body}"
    );
    assert!(
        body.contains("# TYPE postern_delivery_seconds histogram"),
        "{body}"
    );
}
