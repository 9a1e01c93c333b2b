//! A load of concurrent SMTP clients (Python's smtplib, over plain SMTP,
//! STARTTLS or implicit TLS, with or without AUTH) that send numbered messages
//! until they are stopped, and report every answer: the fault tests compare
//! what got a `250` with what the spool or a sink holds afterwards.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use super::require_tool;

/// Each client sends message after message; each body carries its token
/// (unique across loads: it names the load's process) in
/// the subject and first line and a filler chosen by the message number, so
/// small bodies (kept in the database), medium ones (segment files) and large
/// ones (spilled to disk while they arrive) all occur. Prints `OK token qid`
/// for a 250, `NO token code` for any other final answer.
const LOAD: &str = r#"
import os, smtplib, ssl, sys, threading, time
run = os.getpid()
host, port, clients, mode, user, password, sender, rcpt, sizes = sys.argv[1:10]
port, clients = int(port), int(clients)
sizes = [int(s) for s in sizes.split(",")]
lock = threading.Lock()
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
def say(*words):
    with lock:
        print(*words, flush=True)
def connect():
    if mode == "ssl":
        s = smtplib.SMTP_SSL(host, port, context=ctx, timeout=20)
    else:
        s = smtplib.SMTP(host, port, timeout=20)
        if mode == "starttls":
            s.starttls(context=ctx)
    s.ehlo("load.test")
    if user:
        s.login(user, password)
    return s
def client(n):
    i = 0
    s = None
    while True:
        try:
            if s is None:
                s = connect()
            token = f"tok-{run}-{n}-{i}"
            filler = "filler line\r\n" * (sizes[i % len(sizes)] // 13)
            body = f"From: {sender}\r\nSubject: {token}\r\n\r\n{token}\r\n{filler}"
            i += 1
            code, _ = s.mail(sender)
            if code != 250:
                say("NO", token, code); s.rset(); time.sleep(0.05); continue
            code, _ = s.rcpt(rcpt)
            if code != 250:
                say("NO", token, code); s.rset(); continue
            say("TRY", token)
            code, msg = s.data(body.encode())
            if code == 250:
                say("OK", token, msg.decode().split()[-1])
            else:
                say("NO", token, code)
        except smtplib.SMTPResponseException as e:
            say("NO", token, e.smtp_code); s = None; time.sleep(0.05)
        except Exception as e:
            s = None; time.sleep(0.05)
ts = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(clients)]
for t in ts: t.start()
while True: time.sleep(3600)
"#;

/// How the load's clients reach the server and who they are.
pub struct LoadSpec<'a> {
    pub addr: SocketAddr,
    pub clients: usize,
    /// "plain", "starttls" or "ssl".
    pub mode: &'a str,
    /// AUTH user and password, if any.
    pub login: Option<(&'a str, &'a str)>,
    pub sender: &'a str,
    pub rcpt: &'a str,
    /// Body sizes in octets, used in turn.
    pub sizes: &'a [usize],
}

/// A running load; `stop` ends it and returns what each message got.
pub struct Load {
    child: Child,
    /// Reads the clients' lines as they come: a pipe nobody drains fills up
    /// (64 KiB), every client then blocks on its next line, and the line cut
    /// by the final kill loses a token's answer.
    output: Option<std::thread::JoinHandle<String>>,
}

/// What the load's messages got: token → queue id for each 250, the tokens
/// and codes of every other answer, and the tokens whose body was sent but
/// whose answer never came (the server died or hung up meanwhile).
#[derive(Debug, Default)]
pub struct LoadResult {
    pub accepted: HashMap<String, String>,
    pub refused: Vec<(String, u16)>,
    pub unanswered: HashSet<String>,
}

impl LoadResult {
    /// Adds what another load (or round) got.
    pub fn absorb(&mut self, other: LoadResult) {
        self.accepted.extend(other.accepted);
        self.refused.extend(other.refused);
        self.unanswered.extend(other.unanswered);
    }
}

impl Load {
    pub fn start(spec: &LoadSpec<'_>) -> Load {
        require_tool("python3");
        let (user, password) = spec.login.unwrap_or(("", ""));
        let sizes: Vec<String> = spec.sizes.iter().map(ToString::to_string).collect();
        let mut child = Command::new("python3")
            .args(["-c", LOAD])
            .args([
                &spec.addr.ip().to_string(),
                &spec.addr.port().to_string(),
                &spec.clients.to_string(),
                spec.mode,
                user,
                password,
                spec.sender,
                spec.rcpt,
                &sizes.join(","),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the load");
        let mut stdout = child.stdout.take().expect("the load's stdout");
        let output = std::thread::spawn(move || {
            use std::io::Read;
            let mut out = String::new();
            let _ = stdout.read_to_string(&mut out);
            out
        });
        Load {
            child,
            output: Some(output),
        }
    }

    /// Stops every client and collects their answers.
    pub fn stop(mut self) -> LoadResult {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let out = self
            .output
            .take()
            .and_then(|reader| reader.join().ok())
            .unwrap_or_default();
        parse(&out)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn parse(out: &str) -> LoadResult {
    let mut result = LoadResult::default();
    // Only whole lines: the kill may cut the last one.
    let whole = out.rfind('\n').map_or("", |end| &out[..end]);
    for line in whole.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let [_, token, ..] = words.as_slice() {
            result.unanswered.remove(*token);
        }
        match words.as_slice() {
            ["TRY", token] => {
                result.unanswered.insert((*token).to_string());
            }
            ["OK", token, qid] => {
                result
                    .accepted
                    .insert((*token).to_string(), (*qid).to_string());
            }
            ["NO", token, code] => result
                .refused
                .push(((*token).to_string(), code.parse().unwrap_or(0))),
            _ => {}
        }
    }
    result
}

/// The load tokens in message texts (`Subject: tok-N-M`), with how often
/// each occurs.
pub fn tokens_in<'a>(texts: impl IntoIterator<Item = &'a str>) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for text in texts {
        if let Some(token) = text
            .split("Subject: ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .filter(|t| t.starts_with("tok-"))
        {
            *seen.entry(token.to_string()).or_insert(0) += 1;
        }
    }
    seen
}

/// How what a sink (or spool) holds compares with what the load was told.
#[derive(Debug, Default)]
pub struct Tally {
    /// Unanswered messages that arrived all the same.
    pub unanswered_arrived: usize,
    /// Extra copies of messages that arrived more than once.
    pub duplicates: usize,
}

/// Checks that every message answered 250 is held, and nothing that was
/// refused: only accepted or unanswered messages may be there.
pub fn tally(held: &HashMap<String, usize>, result: &LoadResult) -> Tally {
    for (token, qid) in &result.accepted {
        assert!(
            held.contains_key(token),
            "{token} got 250 as {qid} but is not there"
        );
    }
    let mut tally = Tally::default();
    for (token, n) in held {
        tally.duplicates += n - 1;
        if !result.accepted.contains_key(token) {
            assert!(
                result.unanswered.contains(token),
                "{token} is there but was refused or never sent"
            );
            tally.unanswered_arrived += 1;
        }
    }
    tally
}
