//! Issue #9 item 7: the HTTP listeners against hostile clients, with Python
//! sockets and curl: a request head that never ends (slowloris), bodies and
//! heads over the caps, too many connections from one client or in total, and
//! `/metrics` only for `metrics_from` (or a scraper with the bearer token).

use std::net::SocketAddr;

use crate::common::*;

const HTTP: &str = "[http]\naddr = \"127.0.0.1:0\"\ntls_addr = \"127.0.0.1:0\"\n";

/// `slow TLS`: sends a request head a line every 0.25 s and never ends it;
/// prints `closed SECONDS` when the server hangs up (fails after 10 s).
/// `timely TLS`: sends a head in three parts over 1.6 s; prints the status
/// line, then `idle-closed SECONDS` when the server closes the idle
/// keep-alive connection. `held ADDR...`: connects to each address in turn
/// and prints `o` for a connection kept open, `x` for one closed at once; then
/// frees the first and prints the status of a request on a new connection to it.
const CLIENT: &str = r#"
import select, socket, ssl, sys, time
mode, args = sys.argv[1], sys.argv[2:]
def connect(addr, tls):
    host, port = addr.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=10)
    if tls:
        ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
        s = ctx.wrap_socket(s, server_hostname="mx.test.example")
    return s
def closed(s, wait):
    if not select.select([s], [], [], wait)[0]:
        return False
    try:
        return s.recv(4096) == b""
    except OSError:
        return True
def status(s):
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    return s.recv(4096).split(b"\r\n")[0].decode()
if mode == "slow":
    s = connect(args[0], args[1] == "tls")
    start = time.monotonic()
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
    while time.monotonic() - start < 10:
        if closed(s, 0.25):
            break
        try:
            s.sendall(b"X-Slow: 1\r\n")
        except OSError:
            break
    else:
        sys.exit("still open after 10 s")
    print("closed %.1f" % (time.monotonic() - start))
elif mode == "timely":
    s = connect(args[0], args[1] == "tls")
    for i, part in enumerate([b"GET /metrics HTTP/1.1\r\n", b"Host: x\r\n", b"\r\n"]):
        time.sleep(0.8 if i else 0)
        s.sendall(part)
    print(s.recv(65536).split(b"\r\n")[0].decode())
    start = time.monotonic()
    while not closed(s, 10):
        pass
    print("idle-closed %.1f" % (time.monotonic() - start))
elif mode == "held":
    conns, states = [], ""
    for a in args:
        # One at a time: each listener accepts on its own, in any order.
        conns.append(connect(a, False))
        states += "x" if closed(conns[-1], 0.5) else "o"
    print(states)
    conns[0].close(); time.sleep(0.3)
    print(status(connect(args[0], False)))
"#;

fn client(mode: &str, args: &[String]) -> String {
    let mut all = vec![mode];
    all.extend(args.iter().map(String::as_str));
    let out = python(CLIENT, &all);
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn seconds(line: &str, prefix: &str) -> f64 {
    line.strip_prefix(prefix)
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("not {prefix}SECONDS: {line:?}"))
}

fn curl_status(args: &[&str]) -> String {
    require_tool("curl");
    let out = std::process::Command::new("curl")
        .args([
            "-sk",
            "-o",
            "/dev/null",
            "--max-time",
            "20",
            "-w",
            "%{http_code}",
        ])
        .args(args)
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_request_head_must_arrive_within_request_timeout() {
    let s = TestServer::start(&format!("{HTTP}request_timeout = 2\n"));
    for (addr, mode) in s.http_addrs().into_iter().zip(["plain", "tls"]) {
        let args = [addr.to_string(), mode.to_string()];
        let slow = client("slow", &args);
        let t = seconds(slow.trim(), "closed ");
        assert!((1.8..=3.5).contains(&t), "{mode}: {slow}");
        let timely = client("timely", &args);
        let mut lines = timely.lines();
        assert_eq!(lines.next(), Some("HTTP/1.1 200 OK"), "{mode}: {timely}");
        let t = seconds(lines.next().unwrap_or(""), "idle-closed ");
        assert!((1.8..=3.5).contains(&t), "{mode}: {timely}");
    }
}

#[test]
fn request_bodies_and_heads_are_capped() {
    let s = TestServer::start(HTTP);
    let url = format!("http://{}/autodiscover/autodiscover.xml", s.http_addrs()[0]);
    let body = s.dir.path().join("body");
    // The body cap is 64 KiB: at the limit the request is read (and refused
    // as not Autodiscover XML), one octet more gets 413.
    for (size, expected) in [(65_536, "400"), (65_537, "413")] {
        std::fs::write(&body, vec![b'x'; size]).expect("write");
        let data = format!("@{}", body.display());
        let status = curl_status(&["-X", "POST", "--data-binary", &data, &url]);
        assert_eq!(status, expected, "{size} octets");
    }
    // The head cap is 16 KiB.
    for (size, expected) in [(15 * 1024, "400"), (17 * 1024, "431")] {
        let header = format!("X-Pad: {}", "p".repeat(size));
        let status = curl_status(&["-H", &header, &url]);
        assert_eq!(status, expected, "a head of {size} octets");
    }
}

fn held(addrs: &[SocketAddr]) -> Vec<String> {
    let args: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    client("held", &args).lines().map(str::to_string).collect()
}

#[test]
fn http_connections_are_capped_per_client_and_in_total() {
    let s = TestServer::start(&format!("{HTTP}max_connections_per_ip = 3\n"));
    let [plain, tls] = s.http_addrs()[..] else {
        panic!("two http addresses")
    };
    // Both listeners count together; the fourth is closed at once, and a
    // freed slot is reusable.
    assert_eq!(held(&[plain, tls, plain, tls]), ["ooox", "HTTP/1.1 200 OK"]);

    let s = TestServer::start(&format!(
        "trusted_networks = [\"127.0.0.1/32\"]\n{HTTP}max_connections = 3\nmax_connections_per_ip = 1\n"
    ));
    let [plain, tls] = s.http_addrs()[..] else {
        panic!("two http addresses")
    };
    // A trusted client is not capped per address, only in total.
    assert_eq!(held(&[plain, tls, plain, tls]), ["ooox", "HTTP/1.1 200 OK"]);
}

#[test]
fn metrics_are_served_only_to_metrics_from() {
    let s = TestServer::start(&format!("{HTTP}metrics_from = [\"192.0.2.0/24\"]\n"));
    let plain = s.http_addrs()[0];
    assert_eq!(curl_status(&[&format!("http://{plain}/metrics")]), "403");
    assert_eq!(
        curl_status(&[
            "-H",
            "Host: mta-sts.example.com",
            &format!("http://{plain}/.well-known/mta-sts.txt")
        ]),
        "200",
        "the other endpoints are for everyone"
    );
    let s = TestServer::start(&format!("{HTTP}metrics_from = [\"127.0.0.1\"]\n"));
    let plain = s.http_addrs()[0];
    assert_eq!(curl_status(&[&format!("http://{plain}/metrics")]), "200");
}

#[test]
fn a_bearer_token_opens_metrics_from_outside_metrics_from() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("metrics-token");
    let token = "0123456789abcdef0123456789abcdef";
    std::fs::write(&token_file, format!("{token}\n")).expect("write token");
    let s = TestServer::start(&format!(
        "{HTTP}metrics_from = [\"192.0.2.0/24\"]\nmetrics_token_file = \"{}\"\n",
        token_file.display()
    ));
    let url = format!("http://{}/metrics", s.http_addrs()[0]);
    let with = |auth: &str| curl_status(&["-H", auth, &url]);
    assert_eq!(curl_status(&[&url]), "403");
    assert_eq!(with(&format!("Authorization: Bearer {token}")), "200");
    assert_eq!(with(&format!("Authorization: Bearer {token}x")), "403");
    assert_eq!(
        with(&format!("Authorization: Bearer {}", &token[..31])),
        "403"
    );
    assert_eq!(with(&format!("Authorization: Basic {token}")), "403");

    // A token too short to be secret is a config error naming the key.
    std::fs::write(&token_file, "short\n").expect("write token");
    let out = s.cli(&["config", "check"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("http.metrics_token_file")
            && stderr.contains("holds 5 characters; a token needs at least 16"),
        "{stderr}"
    );
}
