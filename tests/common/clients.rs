//! The clients the tests talk through, none of them ours: swaks, Python's
//! smtplib and ssl, curl and openssl s_client. `Raw` sends exact bytes for the
//! protocol cases no client would send (smuggling, pipelining, limits).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Output};
use std::time::Duration;

use super::require_tool;
use super::server::run_with_stdin;

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// swaks against `addr` with extra arguments; returns its output and status.
pub fn swaks(addr: SocketAddr, args: &[&str]) -> Output {
    require_tool("swaks");
    let mut cmd = Command::new("swaks");
    cmd.args([
        "--server",
        &addr.ip().to_string(),
        "--port",
        &addr.port().to_string(),
        "--timeout",
        "20",
    ]);
    cmd.args(args);
    cmd.output().expect("run swaks")
}

/// swaks arguments for alice@example.com authenticating with `mechanism` and
/// sending, as herself, to bob@remote.example (the caller adds the TLS mode).
pub fn alice_to_bob(mechanism: &'static str) -> Vec<&'static str> {
    vec![
        "--auth",
        mechanism,
        "--auth-user",
        "alice@example.com",
        "--auth-password",
        super::PASSWORD,
        "--from",
        "alice@example.com",
        "--to",
        "bob@remote.example",
        "--header",
        "From: alice@example.com",
    ]
}

/// Runs a Python 3 script with arguments; stdout is the script's result.
pub fn python(script: &str, args: &[&str]) -> Output {
    require_tool("python3");
    run_with_stdin(Command::new("python3").arg("-c").arg(script).args(args), "")
}

/// Sends one message with smtplib. `mode` is "starttls", "ssl" or "plain".
/// Prints the final reply of DATA as `CODE TEXT`, or the exception.
pub const SMTPLIB_SEND: &str = r#"
import smtplib, ssl, sys
mode, host, port, user, password, sender, rcpt, body = sys.argv[1:9]
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
try:
    if mode == "ssl":
        s = smtplib.SMTP_SSL(host, int(port), context=ctx, timeout=20)
    else:
        s = smtplib.SMTP(host, int(port), timeout=20)
        if mode == "starttls":
            s.starttls(context=ctx)
    s.ehlo("client.test")
    if user:
        s.login(user, password)
    s.mail(sender)
    s.rcpt(rcpt)
    code, msg = s.data(body.encode().replace(b"\n", b"\r\n"))
    print(code, msg.decode())
    s.quit()
except smtplib.SMTPResponseException as e:
    print(e.smtp_code, e.smtp_error.decode())
except Exception as e:
    print("EXC", type(e).__name__, e)
"#;

pub fn smtplib_send(
    mode: &str,
    addr: SocketAddr,
    user: Option<(&str, &str)>,
    sender: &str,
    rcpt: &str,
    body: &str,
) -> String {
    let (u, p) = user.unwrap_or(("", ""));
    let out = python(
        SMTPLIB_SEND,
        &[
            mode,
            &addr.ip().to_string(),
            &addr.port().to_string(),
            u,
            p,
            sender,
            rcpt,
            body,
        ],
    );
    text(&out).trim().to_string()
}

/// alice@example.com submits `body` to bob@remote.example with smtplib over
/// STARTTLS; returns the final reply.
pub fn alice_submits(submission: SocketAddr, body: &str) -> String {
    smtplib_send(
        "starttls",
        submission,
        Some(("alice@example.com", super::PASSWORD)),
        "alice@example.com",
        "bob@remote.example",
        body,
    )
}

/// curl's SMTP client; `scheme` is "smtp" (with --ssl-reqd for STARTTLS) or "smtps".
pub fn curl_send(
    scheme: &str,
    addr: SocketAddr,
    user: &str,
    password: &str,
    sender: &str,
    rcpt: &str,
    body: &str,
) -> Output {
    require_tool("curl");
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-v", "-k", "--crlf", "--max-time", "20"])
        .arg(format!("{scheme}://{addr}"))
        .args([
            "--mail-from",
            sender,
            "--mail-rcpt",
            rcpt,
            "--user",
            &format!("{user}:{password}"),
            "--upload-file",
            "-",
        ]);
    if scheme == "smtp" {
        cmd.arg("--ssl-reqd");
    }
    run_with_stdin(&mut cmd, body)
}

/// `openssl s_client` with extra arguments, feeding `input` and closing.
pub fn s_client(addr: SocketAddr, args: &[&str], input: &str) -> Output {
    require_tool("openssl");
    let mut cmd = Command::new("timeout");
    cmd.args([
        "20",
        "openssl",
        "s_client",
        "-connect",
        &addr.to_string(),
        "-ign_eof",
    ])
    .args(args);
    run_with_stdin(&mut cmd, input)
}

/// A plain TCP conversation with exact bytes.
pub struct Raw {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Raw {
    /// Connects and reads the greeting.
    pub fn connect(addr: SocketAddr) -> (Raw, String) {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let writer = stream.try_clone().expect("clone");
        let mut raw = Raw {
            reader: BufReader::new(stream),
            writer,
        };
        let greeting = raw.reply();
        (raw, greeting)
    }

    /// Connects as `helo` and opens a transaction from a remote sender to
    /// alice@example.com, ready for DATA or BDAT.
    pub fn to_alice(addr: SocketAddr, helo: &str) -> Raw {
        let (mut c, _) = Raw::connect(addr);
        assert_eq!(code(&c.cmd(&format!("EHLO {helo}"))), 250);
        assert_eq!(code(&c.cmd("MAIL FROM:<a@remote.example>")), 250);
        assert_eq!(code(&c.cmd("RCPT TO:<alice@example.com>")), 250);
        c
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("write");
    }

    /// Reads one whole reply (all its lines); "" at end of stream.
    pub fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) | Err(_) => return all,
                Ok(_) => {}
            }
            all.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return all;
            }
        }
    }

    /// Sends a command line (CRLF added) and returns the reply.
    pub fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// The socket itself, for a test that goes on writing by hand.
    pub fn into_stream(self) -> TcpStream {
        self.writer
    }

    /// Whether the server has closed the connection.
    pub fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.reader.read(&mut b), Ok(0))
    }
}

/// The first three digits of a reply.
pub fn code(reply: &str) -> u16 {
    reply.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// Extracts the queue id from "250 2.0.0 Ok: queued as ID".
pub fn queued_id(reply: &str) -> Option<String> {
    reply
        .split("queued as ")
        .nth(1)
        .map(|s| s.split_whitespace().next().unwrap_or("").to_string())
}
