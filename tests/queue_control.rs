//! `postern queue retry|delete|hold|release` on a running server go through
//! its control socket (the server makes the change and logs it with the queue
//! id); with no server listening they work on the files. Hold keeps a message
//! from delivery until release; `queue list --summary` counts.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::common::*;
use crate::delivery::{WAIT, at, ip, send, sender, wait_log, wait_queue};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

/// The log lines about `qid` with `event`.
fn logged(s: &TestServer, event: &str, qid: &str) -> usize {
    s.log()
        .lines()
        .filter(|l| l.contains(&format!("event=\"{event}\"")) && l.contains(&format!("qid={qid}")))
        .count()
}

fn state(s: &TestServer, id: &str) -> String {
    s.cli_ok(&["queue", "show", id])
        .lines()
        .find_map(|l| l.strip_prefix("state:"))
        .expect("a state line")
        .trim()
        .to_string()
}

#[test]
fn queue_actions_go_through_the_running_server_and_are_logged() {
    let mut s = TestServer::start("");
    let socket = s.data_dir().join("run/control.sock");
    assert_eq!(mode(&socket), 0o600, "the socket is the owner's only");
    let ids: Vec<String> = (0..3)
        .map(|n| {
            let body = format!("Subject: {n}\n\nhi\n");
            send(&s, "x@remote.example", &["alice@example.com"], &body)
        })
        .collect();

    assert_eq!(
        s.cli_ok(&["queue", "hold", &ids[0]]),
        format!("held {} (1 recipient)\n", ids[0])
    );
    assert_eq!(logged(&s, "queue_hold", &ids[0]), 1, "{}", s.log());
    assert_eq!(state(&s, &ids[0]), "held");
    assert!(
        s.cli_ok(&["queue", "show", &ids[0]])
            .contains("(queued, held, 0 attempts")
    );
    assert!(s.cli_ok(&["queue", "list"]).contains("held"));
    let out = s.cli(&["queue", "retry", &ids[0]]);
    assert_eq!(out.status.code(), Some(1), "a held message is not retried");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no queued recipient"),
        "{out:?}"
    );

    assert!(
        s.cli_ok(&["queue", "retry", "--all"])
            .contains("2 recipients due now")
    );
    assert_eq!(logged(&s, "queue_retry", "all"), 1, "{}", s.log());
    assert_eq!(
        s.cli_ok(&["queue", "release", &ids[0]]),
        format!("released {} (1 recipient due now)\n", ids[0])
    );
    assert_eq!(logged(&s, "queue_release", &ids[0]), 1);
    assert_eq!(state(&s, &ids[0]), "queued");
    let out = s.cli(&["queue", "release", &ids[0]]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not held"));

    assert!(s.cli_ok(&["queue", "delete", &ids[1]]).contains("deleted"));
    assert_eq!(logged(&s, "queue_delete", &ids[1]), 1);
    assert_eq!(s.queue().len(), 2);
    assert!(
        s.cli_ok(&["queue", "retry", &ids[2]])
            .contains("1 recipient due now")
    );
    assert_eq!(logged(&s, "queue_retry", &ids[2]), 1);

    // Stopped cleanly, the server takes its socket away, and the CLI works on
    // the files, quietly.
    s.send_term();
    assert!(s.wait_exit(WAIT).success());
    assert!(!socket.exists());
    let log_before = s.log();
    let out = s.cli(&["queue", "hold", &ids[2]]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(state(&s, &ids[2]), "held");
    assert!(s.cli_ok(&["queue", "delete", &ids[0]]).contains("deleted"));
    assert_eq!(s.queue().len(), 1);
    assert_eq!(s.log(), log_before, "no server, nothing logged");

    // A socket left by a server that died: refused, so the files again; the
    // next server replaces it.
    s.spawn();
    s.kill();
    assert!(socket.exists());
    let out = s.cli(&["queue", "release", &ids[2]]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(state(&s, &ids[2]), "queued");
    s.spawn();
    assert!(s.cli_ok(&["queue", "hold", &ids[2]]).contains("held"));
    assert_eq!(logged(&s, "queue_hold", &ids[2]), 1);
}

#[test]
fn a_second_server_on_the_same_data_dir_is_refused() {
    let s = TestServer::start("");
    let out = s.cli(&["serve"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another server runs on"), "{err}");
    // The first one still answers.
    assert!(
        s.cli_ok(&["queue", "retry", "--all"])
            .contains("0 recipients due now")
    );
    // Its socket gone, the server still runs: the CLI says so and changes
    // nothing behind its back, and a second server is still refused.
    let id = send(
        &s,
        "x@remote.example",
        &["alice@example.com"],
        "Subject: s\n\nx\n",
    );
    std::fs::remove_file(s.data_dir().join("run/control.sock")).expect("remove the socket");
    let out = s.cli(&["queue", "hold", &id]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("but does not answer on"), "{err}");
    assert_eq!(state(&s, &id), "queued");
    let out = s.cli(&["serve"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("another server runs on"));
}

/// What is not a request gets an answer saying so, and is logged; the
/// connection is not left hanging.
#[test]
fn the_control_socket_answers_what_is_not_a_request() {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixStream;
    let s = TestServer::start("");
    let socket = s.data_dir().join("run/control.sock");
    let ask = |line: &[u8]| {
        let mut c = UnixStream::connect(&socket).expect("connect");
        c.set_read_timeout(Some(WAIT)).expect("timeout");
        c.write_all(line).expect("write");
        let mut answer = String::new();
        BufReader::new(c).read_line(&mut answer).expect("answer");
        answer
    };
    let answer = ask(b"{\"command\":\"retry\"}\n");
    assert!(answer.contains("not a request"), "{answer}");
    let long = [b'x'; 5000];
    let answer = ask(&long);
    assert!(answer.contains("at most 4096 octets"), "{answer}");
    assert!(s.log().contains("event=\"control_refused\""), "{}", s.log());
}

#[test]
fn a_held_message_is_not_delivered_until_released() {
    let dns = TestDns::start();
    let port = free_port();
    dns.mx("remote.example", 10, "mx.remote.example");
    dns.ip("mx.remote.example", ip(70));
    let s = sender(&dns, port, "");
    let id = send(
        &s,
        "app@example.com",
        &["bob@remote.example"],
        "Subject: held\n\nx\n",
    );
    // Nothing listens yet: deferred, then held.
    wait_log(&s, "event=\"deferred\"");
    assert!(s.cli_ok(&["queue", "hold", &id]).contains("held"));
    let peer = Peer::start(at(70, port), &[]);
    // Retries come every 1-2 s (retry_max = 2) and `retry` makes mail due
    // now: neither moves a held message.
    s.cli_ok(&["queue", "retry", "--all"]);
    std::thread::sleep(Duration::from_secs(4));
    assert!(peer.received().is_empty(), "a held message was delivered");
    assert_eq!(wait_queue(&s, 1)[0]["id"], id.as_str());
    assert!(s.cli_ok(&["queue", "release", &id]).contains("released"));
    peer.wait_for(1, WAIT);
    wait_queue(&s, 0);
}

#[test]
fn the_summary_counts_by_state_and_destination() {
    let s = TestServer::start("trusted_networks = [\"127.0.0.1/32\"]\n");
    let send_to = |rcpts: &[&str]| send(&s, "app@example.com", rcpts, "Subject: s\n\nx\n");
    let held = send_to(&["a@one.example", "b@two.example"]);
    send_to(&["c@one.example"]);
    send_to(&["d@One.Example", "alice@example.com"]);
    s.cli_ok(&["queue", "hold", &held]);
    let text = s.cli_ok(&["queue", "list", "--summary"]);
    let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    assert!(lines[0].starts_with("3 messages, the oldest "), "{text}");
    let counts: Vec<Vec<&str>> = lines[1..]
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        counts,
        [
            vec!["recipients", "to", "deliver:"],
            vec!["queued", "3"],
            vec!["deferred", "0"],
            vec!["held", "2"],
            vec!["by", "destination:"],
            vec!["one.example", "3"],
            vec!["example.com", "1"],
            vec!["two.example", "1"],
        ],
        "{text}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&s.cli_ok(&["queue", "list", "--summary", "--json"])).expect("json");
    assert_eq!(json["messages"], 3);
    assert_eq!(json["held"], 2);
    assert_eq!(json["destinations"][0]["domain"], "one.example");
    assert_eq!(json["destinations"][0]["recipients"], 3);
}

/// Issue #11 item 5: `queue list` pages through the spool; `--limit`,
/// `--state` and `--to-domain` select in the query, and a bad value is a
/// usage error naming it.
#[test]
fn the_list_takes_a_limit_a_state_and_a_domain() {
    let s = TestServer::start("trusted_networks = [\"127.0.0.1/32\"]\n");
    let send_to = |rcpts: &[&str]| send(&s, "app@example.com", rcpts, "Subject: s\n\nx\n");
    let held = send_to(&["a@one.example", "b@two.example"]);
    let second = send_to(&["c@two.example"]);
    let third = send_to(&["d@One.Example"]);
    s.cli_ok(&["queue", "hold", &held]);
    let mut ids = vec![held.clone(), second.clone(), third.clone()];
    ids.sort();

    let rows = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["queue", "list"];
        all.extend_from_slice(args);
        let text = s.cli_ok(&all);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("id "), "{text}");
        lines[1..lines.len() - 1]
            .iter()
            .map(|l| l.split_whitespace().next().expect("an id").to_string())
            .collect()
    };
    assert_eq!(rows(&[]), ids);
    assert_eq!(rows(&["--limit", "2"]), ids[..2]);
    let text = s.cli_ok(&["queue", "list", "--limit", "2"]);
    assert!(
        text.ends_with("2 messages (the limit; more match)\n"),
        "{text}"
    );
    assert!(s.cli_ok(&["queue", "list"]).ends_with("\n3 messages\n"));
    assert_eq!(rows(&["--state", "held"]), [held.as_str()]);
    let mut not_held = vec![second.clone(), third.clone()];
    not_held.sort();
    assert_eq!(rows(&["--state", "queued"]), not_held);
    assert!(rows(&["--state", "deferred"]).is_empty());
    let mut at_one = vec![held.clone(), third.clone()];
    at_one.sort();
    assert_eq!(rows(&["--to-domain", "ONE.example"]), at_one);
    assert_eq!(
        rows(&[
            "--to-domain",
            "one.example",
            "--state",
            "held",
            "--limit",
            "5"
        ]),
        [held.as_str()]
    );
    assert!(rows(&["--to-domain", "nowhere.example"]).is_empty());

    // JSON stays one array, whatever the filter.
    let json: serde_json::Value = serde_json::from_str(&s.cli_ok(&[
        "queue",
        "list",
        "--json",
        "--to-domain",
        "two.example",
        "--limit",
        "1",
    ]))
    .expect("json");
    let listed = json.as_array().expect("an array");
    assert_eq!(listed.len(), 1);
    let mut at_two = [held.clone(), second.clone()];
    at_two.sort();
    assert_eq!(listed[0]["id"], at_two[0].as_str());
    let json: serde_json::Value =
        serde_json::from_str(&s.cli_ok(&["queue", "list", "--json", "--state", "deferred"]))
            .expect("json");
    assert_eq!(json, serde_json::json!([]));

    for (args, names) in [
        (&["--state", "nonsense"][..], "nonsense"),
        (&["--limit", "0"][..], "0"),
        (&["--limit", "many"][..], "many"),
        (&["--summary", "--limit", "3"][..], "--limit"),
    ] {
        let mut all = vec!["queue", "list"];
        all.extend_from_slice(args);
        let out = s.cli(&all);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(names), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    let err =
        String::from_utf8_lossy(&s.cli(&["queue", "list", "--state", "x"]).stderr).into_owned();
    assert!(err.contains("queued, deferred, held"), "{err}");
}
