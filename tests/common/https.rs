//! An HTTPS server in Python for what Postern fetches and posts over HTTPS:
//! MTA-STS policies (GET) and TLS reports (POST), with a certificate the
//! test makes.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Serves `root/<Host>.txt` as the policy of the host asked for, and keeps
/// what is POSTed as `root/posted/<n>`.
const HTTPS_SERVER: &str = r#"
import http.server, ssl, sys, os
host, port, cert, key, root = sys.argv[1:6]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        name = self.headers.get("Host", "").split(":")[0]
        path = os.path.join(root, name + ".txt")
        if self.path != "/.well-known/mta-sts.txt" or not os.path.exists(path):
            self.send_response(404); self.end_headers(); return
        body = open(path, "rb").read()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        posted = os.path.join(root, "posted")
        os.makedirs(posted, exist_ok=True)
        name = os.path.join(posted, "%d" % len(os.listdir(posted)))
        open(name + ".tmp", "wb").write(body)
        os.rename(name + ".tmp", name)
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *a): pass
srv = http.server.ThreadingHTTPServer((host, int(port)), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(cert, key)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print("READY", flush=True)
srv.serve_forever()
"#;

pub struct HttpsServer(Child);

impl HttpsServer {
    pub fn start(addr: std::net::SocketAddr, cert: &Path, key: &Path, root: &Path) -> HttpsServer {
        let mut child = Command::new("python3")
            .args([
                "-c",
                HTTPS_SERVER,
                &addr.ip().to_string(),
                &addr.port().to_string(),
            ])
            .args([cert, key, root])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read");
        assert_eq!(line.trim(), "READY", "the policy server did not start");
        HttpsServer(child)
    }
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sums the TLS reports (RFC 8460) `received` by mail (a receiver's
/// messages) and POSTed to an `HttpsServer` serving `root`: one line per
/// policy domain and policy type, with whether it had a successful session
/// and its failures' kinds and hosts (`-` for none), e.g.
/// `good.test sts success>=1 failures=[]`.
pub fn tls_report_totals(received: &[serde_json::Value], root: &Path) -> String {
    let mail = root.join("mailed-reports.json");
    std::fs::write(&mail, serde_json::to_string(received).expect("json")).expect("write");
    let posted = root.join("posted");
    crate::common::text(&crate::common::python(
        READ_TLS_REPORTS,
        &[mail.to_str().expect("path"), posted.to_str().expect("path")],
    ))
}

const READ_TLS_REPORTS: &str = r#"
import email, email.policy, gzip, json, os, sys
reports = []
for received in json.load(open(sys.argv[1])):
    m = email.message_from_string(received["data"], policy=email.policy.default)
    part = next(p for p in m.walk() if p.get_content_type() == "application/tlsrpt+gzip")
    reports.append(json.loads(gzip.decompress(part.get_payload(decode=True))))
if os.path.isdir(sys.argv[2]):
    for name in os.listdir(sys.argv[2]):
        if not name.endswith(".tmp"):
            reports.append(json.loads(gzip.decompress(open(os.path.join(sys.argv[2], name), "rb").read())))
totals = {}
for report in reports:
    for p in report["policies"]:
        key = (p["policy"]["policy-domain"], p["policy"]["policy-type"])
        t = totals.setdefault(key, [0, set()])
        t[0] += p["summary"]["total-successful-session-count"]
        for f in p.get("failure-details", []):
            t[1].add(f["result-type"] + " " + (f.get("receiving-mx-hostname") or "-"))
for (d, kind), (ok, failures) in sorted(totals.items()):
    print(d, kind, "success>=1" if ok >= 1 else "success=0", "failures=" + str(sorted(failures)))
"#;
