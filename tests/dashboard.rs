//! The web dashboard (issue #15), driven by Python's urllib with a cookie
//! jar as a browser would: sign-in (a wrong password refused, the session
//! cookie HttpOnly and SameSite=Strict), the flow and stuck-mail pages, an
//! action refused without its CSRF token and done with it (a deferred
//! message retried and delivered, logged with the admin's name), the port
//! map, the accounts view, the session ended by `postern admin del`, and
//! clients outside `dashboard_from` or behind a proxy turned away. The same
//! in a real browser: dashboard_browser.rs.

use crate::common::*;
use crate::delivery::{send, show_after_attempt, wait_log};

const BROWSE: &str = r#"
import http.client, http.cookiejar, json, re, sys, urllib.error, urllib.parse, urllib.request
base, step = sys.argv[1], sys.argv[2]
jar = http.cookiejar.MozillaCookieJar(sys.argv[3])
try:
    jar.load(ignore_discard=True)
except FileNotFoundError:
    pass
opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
def go(path, form=None):
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    try:
        with opener.open(base + path, data=data, timeout=10) as r:
            return r.status, r.geturl(), r.read().decode(), r.headers.get_all("Set-Cookie") or []
    except urllib.error.HTTPError as e:
        return e.code, e.geturl(), e.read().decode(), []
out = {}
if step == "login":
    out["anonymous"] = go("/dashboard/queue")[1]
    out["slash"] = go("/dashboard/")[1]
    host, port = base.split("//")[1].split(":")
    raw = http.client.HTTPConnection(host, int(port), timeout=10)
    raw.request("POST", "/dashboard/login", urllib.parse.urlencode({"name": "root", "password": "s3cret pw"}),
                {"Content-Type": "application/x-www-form-urlencoded"})
    r = raw.getresponse()
    out["set_cookie"] = r.getheader("Set-Cookie")
    out["headers"] = [r.getheader(h) for h in ("Cache-Control", "X-Frame-Options", "Content-Security-Policy")]
    out["wrong"] = go("/dashboard/login", {"name": "root", "password": "nope"})[0]
    status, url, body, _ = go("/dashboard/login", {"name": "root", "password": "s3cret pw"})
    out["signed_in"] = [status, url, "Messages queued" in body]
    out["cookie"] = [f"{c.name} {c.path} {c.has_nonstandard_attr('HttpOnly')}" for c in jar]
elif step == "queue":
    status, _, body, _ = go("/dashboard/queue")
    out["status"] = status
    out["body"] = body
    out["csrf"] = re.search(r'name="csrf" value="([0-9a-f]+)"', body).group(1)
elif step == "act":
    qid, csrf = sys.argv[4], sys.argv[5]
    out["without"] = go(f"/dashboard/queue/{qid}/retry", {})[0]
    out["wrong"] = go(f"/dashboard/queue/{qid}/retry", {"csrf": "0" * 64})[0]
    out["with"] = go(f"/dashboard/queue/{qid}/retry", {"csrf": csrf})[:2]
elif step == "overview":
    status, _, body, _ = go("/dashboard")
    out["status"] = status
    out["body"] = body
elif step == "signed_out":
    out["queue"] = go("/dashboard/queue")[1]
elif step in ("ports", "accounts"):
    status, _, body, _ = go("/dashboard/" + step)
    out["status"] = status
    out["body"] = body
jar.save(ignore_discard=True)
print(json.dumps(out))
"#;

fn browse(base: &str, step: &str, jar: &std::path::Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![base, step, jar.to_str().expect("jar")];
    args.extend_from_slice(extra);
    let out = text(&python(BROWSE, &args));
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn an_admin_signs_in_sees_stuck_mail_and_retries_it_with_its_csrf_token() {
    let relay_port = free_port();
    let mut s = TestServer::configure(&TestServer::config_for(&format!(
        "trusted_networks = [\"127.0.0.1/32\"]\n[http]\naddr = \"127.0.0.1:0\"\ndashboard = true\n\
         tls_addr = \"127.0.0.1:0\"\nsubmission_on_tls = true\n\
         dashboard_from = [\"127.0.0.1/32\"]\n[delivery]\nretry_min = 600\nretry_max = 1200\n\
         connect_timeout = 2\n[relay]\nhost = \"127.0.0.1\"\nport = {relay_port}\ntls = \"none\"\n"
    )));
    s.add_alice();
    s.cli_stdin_ok(&["admin", "add", "root", "--password-stdin"], "s3cret pw\n");
    assert_eq!(s.cli_ok(&["admin", "list"]), "root\n");
    s.spawn();
    // The relay is down: the message waits; another is held.
    let stuck = |subject: &str| {
        let body = format!("Subject: {subject}\n\nx\n");
        send(&s, "app@example.com", &["bob@far.example"], &body)
    };
    let qid = stuck("stuck");
    show_after_attempt(&s, &qid);
    let held = stuck("held");
    s.cli_ok(&["queue", "hold", &held]);

    let base = format!("http://{}", s.http_addrs()[0]);
    let dir = tempfile::tempdir().expect("dir");
    let jar = dir.path().join("cookies");
    let login = browse(&base, "login", &jar, &[]);
    let url = |v: &serde_json::Value| v.as_str().expect("url").to_string();
    assert!(
        url(&login["anonymous"]).ends_with("/dashboard/login"),
        "{login}"
    );
    assert!(
        url(&login["slash"]).ends_with("/dashboard/login"),
        "{login}"
    );
    assert_eq!(login["wrong"], 401, "{login}");
    assert_eq!(
        login["signed_in"],
        serde_json::json!([200, format!("{base}/dashboard"), true]),
        "{login}"
    );
    let set_cookie = login["set_cookie"].as_str().expect("cookie");
    for part in ["Path=/dashboard", "HttpOnly", "SameSite=Strict"] {
        assert!(set_cookie.contains(part), "{set_cookie}");
    }
    assert!(
        !set_cookie.contains("Secure"),
        "plain HTTP to loopback: {set_cookie}"
    );
    assert_eq!(
        (&login["headers"][0], &login["headers"][1]),
        (&serde_json::json!("no-store"), &serde_json::json!("DENY")),
        "{login}"
    );
    assert!(
        url(&login["headers"][2]).contains("frame-ancestors 'none'"),
        "{login}"
    );
    let log = s.log();
    assert!(
        log.contains("event=\"dashboard_login_failed\" admin=root"),
        "{log}"
    );
    assert!(
        log.contains("event=\"dashboard_login\" admin=root"),
        "{log}"
    );

    let queue = browse(&base, "queue", &jar, &[]);
    let body = queue["body"].as_str().expect("body");
    assert!(body.contains(&qid) && body.contains(&held), "{body}");
    assert!(
        body.contains("<td>far.example</td><td>unreachable:"),
        "grouped by its last failure: {body}"
    );
    let csrf = queue["csrf"].as_str().expect("csrf");

    // The relay comes back; only a retry with the session's token acts.
    let relay = Peer::start(
        format!("127.0.0.1:{relay_port}").parse().expect("addr"),
        &[],
    );
    let act = browse(&base, "act", &jar, &[&qid, csrf]);
    assert_eq!(act["without"], 403, "{act}");
    assert_eq!(act["wrong"], 403, "{act}");
    assert_eq!(
        act["with"],
        serde_json::json!([200, format!("{base}/dashboard/queue")]),
        "{act}"
    );
    let got = relay.wait_for(1, std::time::Duration::from_secs(20));
    assert!(url(&got[0]["data"]).contains("Subject: stuck"));
    wait_log(&s, &format!("event=\"queue_retry\" qid={qid}"));
    let log = s.log();
    assert!(
        log.lines()
            .any(|l| l.contains("event=\"queue_retry\"") && l.contains("admin=\"root\"")),
        "the retry is logged with who asked"
    );
    assert_eq!(log.matches("event=\"dashboard_csrf_refused\"").count(), 2);

    // The flow chart and the last hour's counts, the minute not yet
    // written to the store included.
    let overview = browse(&base, "overview", &jar, &[]);
    let page = url(&overview["body"]);
    assert!(page.contains("<svg id=\"flow-chart\""), "{page}");
    let last_hour = |kind: &str| -> u64 {
        let cell = format!("<td id=\"last-hour-{kind}\">");
        let at = page.find(&cell).unwrap_or_else(|| panic!("{kind}: {page}")) + cell.len();
        page[at..]
            .split('<')
            .next()
            .and_then(|n| n.parse().ok())
            .expect("count")
    };
    assert_eq!(
        (last_hour("accepted"), last_hour("delivered")),
        (2, 1),
        "{page}"
    );
    // The held message may have been tried before it was held.
    assert!((1..=2).contains(&last_hour("deferred")), "{page}");

    // alice signs in on the HTTPS port only (the mta port is not a
    // submission port): her network reaches nothing else.
    let tls_port = s.http_addrs()[1];
    let login = swaks(
        tls_port,
        &[
            &["--tlsc", "--quit-after", "AUTH"],
            &alice_to_bob("PLAIN")[..],
        ]
        .concat(),
    );
    assert!(text(&login).contains("235 "), "{}", text(&login));
    // A `postern check` from this network whose probe reached the
    // submission port only, then asked the port echo.
    let token = "0123456789abcdef0123456789abcdef";
    let echo = text(&python(
        "import smtplib, sys\n\
         port, token = sys.argv[1], sys.argv[2]\n\
         s = smtplib.SMTP('127.0.0.1', int(port), local_hostname=f'check-{token}.postern.invalid', timeout=10)\n\
         s.ehlo()\n\
         print(s.docmd('NOOP', 'postern-echo ' + token)[1].decode())\n\
         s.quit()\n",
        &[&s.port("submission").to_string(), token],
    ));
    assert!(
        echo.contains(&format!("ports={}", s.port("submission"))),
        "{echo}"
    );
    let ports = browse(&base, "ports", &jar, &[]);
    assert_eq!(ports["status"], 200);
    let page = url(&ports["body"]);
    assert!(page.contains("Networks that switched ports"), "{page}");
    assert!(
        page.contains(&format!(
            "<h2>Networks that reach only port {}</h2>",
            tls_port.port()
        )) && page.contains("<tr><th>Network</th></tr><tr><td>127.0.0.0/24</td></tr>"),
        "{page}"
    );
    let checks = &page[page.find("<table id=\"checks\">").expect("checks table")..];
    let mut others = [s.port("mta"), s.port("submissions"), tls_port.port()];
    others.sort_unstable();
    let not_reached: Vec<String> = others.iter().map(u16::to_string).collect();
    assert!(
        checks.starts_with("<table id=\"checks\"><tr><th>Network</th><th>When</th>")
            && checks.contains(&format!(
                " ago</td><td>{}</td><td class=\"bad\">{}</td></tr></table>",
                s.port("submission"),
                not_reached.join(", ")
            )),
        "the check: reached the submission port, not the others: {checks}"
    );
    // Her login reaches the store within seconds (the port map writes it).
    let login_shown = format!("ago, port {}</td>", tls_port.port());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let accounts = loop {
        let accounts = browse(&base, "accounts", &jar, &[]);
        let body = url(&accounts["body"]);
        if body.contains(&login_shown) || std::time::Instant::now() > deadline {
            break body;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    assert!(
        accounts.contains(
            "<tr><td>alice@example.com</td><td>0</td><td>0</td><td><span class=\"default\">"
        ),
        "alice, who sent nothing, with the default limits: {accounts}"
    );
    assert!(accounts.contains(&login_shown), "{accounts}");

    // A deleted administrator's session ends with it.
    s.cli_ok(&["admin", "del", "root"]);
    let out = browse(&base, "signed_out", &jar, &[]);
    assert!(url(&out["queue"]).ends_with("/dashboard/login"), "{out}");
}

#[test]
fn the_dashboard_is_off_by_default_and_served_only_to_dashboard_from() {
    let s = TestServer::start("[http]\naddr = \"127.0.0.1:0\"\n");
    let base = format!("http://{}", s.http_addrs()[0]);
    let status = |base: &str, from: &str, proxied: &str| {
        let out = text(&python(
            "import sys, http.client\n\
             host, port = sys.argv[1].split('//')[1].split(':')\n\
             c = http.client.HTTPConnection(host, int(port), source_address=(sys.argv[2], 0), timeout=10)\n\
             headers = {'X-Forwarded-For': '203.0.113.9'} if sys.argv[3] == 'yes' else {}\n\
             c.request('GET', '/dashboard/login', headers=headers)\n\
             print(c.getresponse().status)\n",
            &[base, from, proxied],
        ));
        out.trim().to_string()
    };
    assert_eq!(
        status(&base, "127.0.0.1", "no"),
        "404",
        "off unless asked for"
    );

    let on = TestServer::start(
        "[http]\naddr = \"127.0.0.1:0\"\ndashboard = true\ndashboard_from = [\"127.0.0.1/32\"]\n",
    );
    let base = format!("http://{}", on.http_addrs()[0]);
    assert_eq!(status(&base, "127.0.0.1", "no"), "200");
    assert_eq!(
        status(&base, "127.0.0.2", "no"),
        "403",
        "outside dashboard_from"
    );
    assert_eq!(status(&base, "127.0.0.1", "yes"), "403", "through a proxy");
}

#[test]
fn sign_ins_that_keep_failing_are_throttled_as_smtp_logins_are() {
    let mut s = TestServer::configure(&TestServer::config_for(
        "[limits]\nauth_failures_per_ip_per_hour = 3\n[http]\naddr = \"127.0.0.1:0\"\n\
         dashboard = true\ndashboard_from = [\"127.0.0.1/32\"]\n",
    ));
    s.cli_stdin_ok(&["admin", "add", "root", "--password-stdin"], "s3cret pw\n");
    s.spawn();
    let base = format!("http://{}", s.http_addrs()[0]);
    let out = text(&python(
        "import sys, urllib.error, urllib.parse, urllib.request\n\
         for password in ['a', 'b', 'c', 'd', 's3cret pw']:\n\
         \x20   data = urllib.parse.urlencode({'name': 'root', 'password': password}).encode()\n\
         \x20   try:\n\
         \x20       urllib.request.urlopen(sys.argv[1] + '/dashboard/login', data, timeout=10)\n\
         \x20       print(200)\n\
         \x20   except urllib.error.HTTPError as e:\n\
         \x20       print(e.code, 'Too many failed sign-ins' in e.read().decode())\n",
        &[&base],
    ));
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "401 False",
            "401 False",
            "401 False",
            "401 False",
            "429 True"
        ],
        "the failure past the allowed 3 blocks the address; then even the right password waits: {out}"
    );
}
