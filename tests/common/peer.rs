//! Receiving SMTP servers for delivery tests, written with Python's aiosmtpd
//! (nobody on the team wrote it): each records what it receives as JSON lines
//! and can be told to defer, reject (or answer with terminal escapes), hang,
//! never accept a connection (`full-backlog`), drop the connection during
//! DATA, require STARTTLS and AUTH, offer only TLS that modern clients refuse
//! (`--legacy-tls`), leave 8BITMIME out of EHLO (`--no-8bitmime`), announce
//! a SIZE limit, or send each message back (`--return-to host,port,rcpt`, as
//! a forwarding server would). Like aiosmtpd itself, it refuses a message with
//! a line over 1001 octets ("500 Line too long").

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::require_tool;

const PEER: &str = r#"
import asyncio, json, sys, ssl, argparse, socket, time
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
p = argparse.ArgumentParser()
p.add_argument("--host"); p.add_argument("--port", type=int); p.add_argument("--log")
p.add_argument("--mode", default="normal")
p.add_argument("--cert"); p.add_argument("--key")
p.add_argument("--require-tls", action="store_true")
p.add_argument("--legacy-tls", action="store_true")
p.add_argument("--no-8bitmime", action="store_true")
p.add_argument("--auth")
p.add_argument("--size", type=int, default=0)
p.add_argument("--no-utf8", action="store_true")
p.add_argument("--return-to")
a = p.parse_args()

def send_back(envelope):
    import smtplib
    host, port, rcpt = a.return_to.split(",")
    try:
        with smtplib.SMTP(host, int(port), timeout=20) as s:
            s.sendmail(envelope.mail_from, [rcpt], envelope.original_content)
        return {"returned": 250}
    except smtplib.SMTPResponseException as e:
        return {"returned": e.smtp_code, "reply": e.smtp_error.decode()}
    except smtplib.SMTPRecipientsRefused as e:
        code, text = list(e.recipients.values())[0]
        return {"returned": code, "reply": text.decode()}

if a.mode == "full-backlog":
    # A backlog of 0 holds one connection, made here and never accepted:
    # the SYNs of any connection after it are dropped, as by a firewall.
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((a.host, a.port)); s.listen(0)
    filler = socket.create_connection((a.host, a.port))
    print("READY", flush=True)
    while True:
        time.sleep(3600)

if a.mode == "hang":
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((a.host, a.port)); s.listen(16)
    print("READY", flush=True)
    conns = []
    while True:
        c, _ = s.accept(); conns.append(c)

class Handler:
    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        if a.no_8bitmime:
            responses = [r for r in responses if "8BITMIME" not in r]
        return responses
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@")[0].lower()
        if local.startswith("defer"):
            return "451 4.2.0 Try again later"
        if local.startswith("reject"):
            return "550 5.1.1 <%s>: Recipient address rejected: User unknown" % address
        if local.startswith("escape"):
            return "451 4.2.0 \x1b[31mred\x1b[0m\x07\x7f\u009b2J try later"
        if local.startswith("hostile"):
            return "550 5.1.1 no\x1b]0;owned\x07 such\x00user"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.append(rcpt_options)
        return "250 2.1.5 OK"
    async def handle_DATA(self, server, session, envelope):
        if a.mode == "drop-data":
            server.transport.abort()
            return "451 never sent"
        record = {
            "mail_from": envelope.mail_from, "mail_options": envelope.mail_options,
            "rcpt_tos": envelope.rcpt_tos, "rcpt_options": envelope.rcpt_options,
            "data": envelope.original_content.decode("utf-8", "replace"),
            "tls": session.ssl is not None, "peer_port": session.peer[1], "auth": str(session.auth_data or ""),
            "time": time.time(),
        }
        if a.return_to:
            loop = asyncio.get_running_loop()
            record.update(await loop.run_in_executor(None, send_back, envelope))
        with open(a.log, "a") as f:
            f.write(json.dumps(record) + "\n")
        return "250 2.0.0 Ok: queued by peer"

def authenticator(server, session, envelope, mechanism, auth_data):
    user, pw = a.auth.split(":")
    ok = isinstance(auth_data, LoginPassword) and auth_data.login.decode() == user and auth_data.password.decode() == pw
    return AuthResult(success=ok, handled=False, auth_data=user if ok else None)

kw = dict(hostname=a.host, port=a.port, enable_SMTPUTF8=not a.no_utf8, data_size_limit=a.size or None)
if a.cert:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(a.cert, a.key)
    if a.legacy_tls:
        # An old server: TLS 1.2 at most, RSA key exchange only (no forward
        # secrecy), which modern clients such as rustls refuse.
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2; ctx.set_ciphers("AES128-SHA:@SECLEVEL=0")
    kw.update(tls_context=ctx, require_starttls=a.require_tls)
if a.auth:
    kw.update(authenticator=authenticator, auth_required=True, auth_require_tls=bool(a.cert))
c = Controller(Handler(), **kw)
c.start()
print("READY", flush=True)
while True:
    time.sleep(3600)
"#;

pub struct Peer {
    child: Child,
    pub addr: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Peer {
    /// Starts a receiver on `addr` with extra options (`--mode defer`, …).
    pub fn start(addr: SocketAddr, options: &[&str]) -> Peer {
        Peer::start_in(None, addr, options)
    }

    /// Like `start`, inside network namespace `ns` when given.
    pub fn start_in(ns: Option<&str>, addr: SocketAddr, options: &[&str]) -> Peer {
        require_tool("python3");
        let check = Command::new("python3")
            .args(["-c", "import aiosmtpd"])
            .status()
            .map(|s| s.success());
        assert!(
            matches!(check, Ok(true)),
            "python3 module aiosmtpd is missing: `pip install aiosmtpd` (bash .ci/run does)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("received.jsonl");
        let mut command = match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "python3"]);
                c
            }
            None => Command::new("python3"),
        };
        let mut child = command
            .args([
                "-c",
                PEER,
                "--host",
                &addr.ip().to_string(),
                "--port",
                &addr.port().to_string(),
            ])
            .arg("--log")
            .arg(&log)
            .args(options)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.path().join("stderr")).expect("peer stderr"))
            .spawn()
            .expect("start peer");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("peer output");
        assert!(
            line.starts_with("READY") && Instant::now() < deadline,
            "peer did not start on {addr}: {line}{}",
            std::fs::read_to_string(dir.path().join("stderr")).unwrap_or_default()
        );
        Peer {
            child,
            addr,
            log,
            _dir: dir,
        }
    }

    /// Everything received so far, one JSON object per message.
    pub fn received(&self) -> Vec<serde_json::Value> {
        // Only whole lines: the peer may be writing the last one right now.
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .split_inclusive('\n')
            .filter(|l| l.ends_with('\n'))
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect()
    }

    /// Waits until `n` messages have arrived (or fails after `within`).
    pub fn wait_for(&self, n: usize, within: Duration) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + within;
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "peer {} got {} of {n} messages",
                self.addr,
                got.len()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port number free on every 127.0.0.x address the test uses: the MX port is
/// one setting, so all the test's receivers listen on it, each on its own address.
/// A port no other test of this process was given, free when asked, and out
/// of the kernel's ephemeral range: a port the kernel chose (`:0`) could be
/// handed again to one of the thousands of client connections a load test
/// opens before the peer meant to take it starts (a CI run failed on that).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    const LOW: u32 = 10_000;
    if ephemeral_low <= LOW + 1_000 {
        return kernel_chosen_port();
    }
    let span = ephemeral_low - LOW;
    // Test binaries that run at the same time start in different places.
    let start = std::process::id() * 7919 % span;
    for _ in 0..span {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = LOW + (start + offset) % span;
        if std::net::TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return port as u16;
        }
    }
    kernel_chosen_port()
}

fn kernel_chosen_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A relay that breaks in one way, written as a bare socket server because
/// no real server fails on purpose: `421` greets with 421 and hangs up;
/// `hang-after-data` takes the whole message and never answers the final dot;
/// `drop-mid-body` hangs up halfway through the body.
const BROKEN: &str = r#"
import socket, sys, threading
host, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((host, port)); s.listen(64)
print("READY", flush=True)
held = []
def serve(c):
    f = c.makefile("rb")
    def say(line):
        c.sendall(line.encode() + b"\r\n")
    if mode == "421":
        say("421 4.3.2 broken.test Service not available"); c.close(); return
    say("220 broken.test ESMTP")
    while True:
        line = f.readline()
        if not line:
            return
        verb = line[:4].upper()
        if verb in (b"EHLO", b"HELO"):
            say("250-broken.test"); say("250 8BITMIME")
        elif verb == b"DATA":
            say("354 go ahead")
            received = 0
            while True:
                body = f.readline()
                if not body:
                    return
                received += len(body)
                if mode == "drop-mid-body" and received > 200:
                    c.close(); return
                if body == b".\r\n":
                    break
            held.append(c)
            return
        elif verb == b"QUIT":
            say("221 bye"); c.close(); return
        else:
            say("250 ok")
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// A relay that fails in the way `mode` names (see `BROKEN`).
pub struct BrokenPeer {
    child: Child,
}

impl BrokenPeer {
    pub fn start(addr: SocketAddr, mode: &str) -> BrokenPeer {
        require_tool("python3");
        let mut child = Command::new("python3")
            .args([
                "-c",
                BROKEN,
                &addr.ip().to_string(),
                &addr.port().to_string(),
                mode,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start broken peer");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("broken peer output");
        assert!(
            line.starts_with("READY"),
            "broken peer did not start: {line}"
        );
        BrokenPeer { child }
    }
}

impl Drop for BrokenPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
