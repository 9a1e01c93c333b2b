//! The web dashboard (issue #15), driven by Python's urllib with a cookie
//! jar as a browser would: sign-in (a wrong password refused, the session
//! cookie HttpOnly and SameSite=Strict), the flow and stuck-mail pages, an
//! action refused without its CSRF token and done with it (a deferred
//! message retried and delivered, logged with the admin's name), the port
//! map, and a client outside `dashboard_from` turned away.

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
elif step == "ports":
    status, _, body, _ = go("/dashboard/ports")
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
         dashboard_from = [\"127.0.0.1/32\"]\n[delivery]\nretry_min = 600\nretry_max = 1200\n\
         connect_timeout = 2\n[relay]\nhost = \"127.0.0.1\"\nport = {relay_port}\ntls = \"none\"\n"
    )));
    s.add_alice();
    s.cli_stdin_ok(&["admin", "add", "root", "--password-stdin"], "s3cret pw\n");
    assert_eq!(s.cli_ok(&["admin", "list"]), "root\n");
    s.spawn();
    // The relay is down: the message waits.
    let qid = send(
        &s,
        "app@example.com",
        &["bob@far.example"],
        "Subject: stuck\n\nx\n",
    );
    show_after_attempt(&s, &qid);

    let base = format!("http://{}", s.http_addrs()[0]);
    let dir = tempfile::tempdir().expect("dir");
    let jar = dir.path().join("cookies");
    let login = browse(&base, "login", &jar, &[]);
    assert!(
        login["anonymous"]
            .as_str()
            .expect("url")
            .ends_with("/dashboard/login"),
        "{login}"
    );
    assert_eq!(login["wrong"], 401, "{login}");
    assert_eq!(
        login["signed_in"],
        serde_json::json!([200, format!("{base}/dashboard"), true]),
        "{login}"
    );
    assert_eq!(
        login["cookie"],
        serde_json::json!(["postern_session /dashboard True"])
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
    assert!(
        body.contains(&qid) && body.contains("far.example"),
        "{body}"
    );
    assert!(
        body.contains("unreachable:"),
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
    relay.wait_for(1, std::time::Duration::from_secs(20));
    wait_log(&s, &format!("event=\"queue_retry\" qid={qid}"));
    assert!(
        s.log()
            .lines()
            .any(|l| l.contains("event=\"queue_retry\"") && l.contains("admin=\"root\"")),
        "the retry is logged with who asked"
    );
    assert_eq!(
        s.log().matches("event=\"dashboard_csrf_refused\"").count(),
        2
    );

    let ports = browse(&base, "ports", &jar, &[]);
    assert_eq!(ports["status"], 200);
    assert!(
        ports["body"]
            .as_str()
            .expect("body")
            .contains("Networks that switched ports")
    );
}

#[test]
fn the_dashboard_is_off_by_default_and_served_only_to_dashboard_from() {
    let s = TestServer::start("[http]\naddr = \"127.0.0.1:0\"\n");
    let base = format!("http://{}", s.http_addrs()[0]);
    let status = |base: &str, from: &str| {
        let out = text(&python(
            "import sys, urllib.request, urllib.error\n\
             import http.client\n\
             host, port = sys.argv[1].split('//')[1].split(':')\n\
             c = http.client.HTTPConnection(host, int(port), source_address=(sys.argv[2], 0), timeout=10)\n\
             c.request('GET', '/dashboard/login')\n\
             print(c.getresponse().status)\n",
            &[base, from],
        ));
        out.trim().to_string()
    };
    assert_eq!(status(&base, "127.0.0.1"), "404", "off unless asked for");

    let on = TestServer::start(
        "[http]\naddr = \"127.0.0.1:0\"\ndashboard = true\ndashboard_from = [\"127.0.0.1/32\"]\n",
    );
    let base = format!("http://{}", on.http_addrs()[0]);
    assert_eq!(status(&base, "127.0.0.1"), "200");
    assert_eq!(status(&base, "127.0.0.2"), "403", "outside dashboard_from");
}
