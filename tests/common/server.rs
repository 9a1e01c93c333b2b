//! `TestServer`: a temp data_dir and postern.toml with listeners on 127.0.0.1:0,
//! the real binary started with `serve`, ports read from
//! data_dir/run/listeners.json; killed by PID on drop.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_postern");
pub const PASSWORD: &str = "correct horse battery staple";

pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    child: Option<Child>,
    log: PathBuf,
    pub listeners: Vec<(SocketAddr, String)>,
    /// Environment variables `spawn` adds for the server.
    pub env: Vec<(String, String)>,
}

/// The listeners every test server gets, plus whatever `extra` adds.
const HEAD: &str = "hostname = \"mx.test.example\"\ndata_dir = \"data\"\n";
const LISTENERS: &str = r#"
[[listener]]
addr = "127.0.0.1:0"
role = "mta"
[[listener]]
addr = "127.0.0.1:0"
role = "submission"
[[listener]]
addr = "127.0.0.1:0"
role = "submissions"
"#;

impl TestServer {
    /// A server with the base listeners, `extra` TOML appended, the domain
    /// example.com and the user alice@example.com (password `PASSWORD`), that
    /// keeps what it accepts in the queue (`[delivery] hold`, unless `extra` has
    /// its own `[delivery]`), so tests can look at it there.
    pub fn start(extra: &str) -> TestServer {
        TestServer::with_config(&TestServer::config_for(extra))
    }

    /// The configuration `start(extra)` runs with, for a test that sets up
    /// more (`configure`, then `add_alice` and `spawn`) before the server starts.
    pub fn config_for(extra: &str) -> String {
        let hold = if extra.contains("[delivery]") {
            ""
        } else {
            "[delivery]\nhold = true\n"
        };
        format!("{HEAD}{extra}{LISTENERS}{hold}")
    }

    /// Like `start`, but delivering.
    pub fn delivering(extra: &str) -> TestServer {
        TestServer::with_config(&format!("{HEAD}{extra}{LISTENERS}"))
    }

    fn with_config(toml: &str) -> TestServer {
        let mut s = TestServer::configure(toml);
        s.add_alice();
        s.spawn();
        s
    }

    /// Hosts example.com with the user alice@example.com (password `PASSWORD`).
    pub fn add_alice(&self) {
        self.cli_ok(&["domain", "add", "example.com"]);
        self.cli_stdin_ok(
            &["user", "add", "alice@example.com", "--password-stdin"],
            PASSWORD,
        );
    }

    /// Writes the config and data dir without starting the server.
    pub fn configure(toml: &str) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("postern.toml");
        // data_dir is relative: make it relative to the temp dir, as the server
        // runs there.
        std::fs::write(&config, toml).expect("write config");
        let log = dir.path().join("server.log");
        TestServer {
            dir,
            config,
            child: None,
            log,
            listeners: Vec::new(),
            env: Vec::new(),
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts `postern serve` and waits until its listeners are bound.
    pub fn spawn(&mut self) {
        self.spawn_in(None);
    }

    /// Like `spawn`, inside network namespace `netns` (`ip netns exec`, which
    /// execs the binary, so the PID is still the server's).
    pub fn spawn_in(&mut self, netns: Option<&str>) {
        match netns {
            Some(ns) => self.spawn_with(&["ip", "netns", "exec", ns]),
            None => self.spawn_with(&[]),
        }
    }

    /// Like `spawn`, as the Unix user `user` and its group (`setpriv`, which
    /// execs the binary, so the PID is still the server's). Needs root.
    pub fn spawn_as(&mut self, user: &str, group: &str) {
        let (reuid, regid) = (format!("--reuid={user}"), format!("--regid={group}"));
        self.spawn_with(&["setpriv", &reuid, &regid, "--clear-groups"]);
    }

    /// Starts the binary through `wrapper` (a command that execs it).
    fn spawn_with(&mut self, wrapper: &[&str]) {
        let listeners_file = self.data_dir().join("run/listeners.json");
        let _ = std::fs::remove_file(&listeners_file);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        let child = command
            .args(["serve", "--config"])
            .arg(&self.config)
            .current_dir(self.dir.path())
            .env(
                "RUST_LOG",
                std::env::var("POSTERN_TEST_LOG").unwrap_or_else(|_| "postern=trace,info".into()),
            )
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn postern serve");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(text) = std::fs::read_to_string(&listeners_file)
                && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
            {
                self.listeners = v
                    .as_array()
                    .expect("array")
                    .iter()
                    .map(|l| {
                        (
                            l["addr"]
                                .as_str()
                                .expect("addr")
                                .parse()
                                .expect("socket addr"),
                            l["role"].as_str().expect("role").to_string(),
                        )
                    })
                    .collect();
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "postern serve exited with {status} before listening:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "postern serve did not start in 30 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The first listener with this role.
    pub fn addr(&self, role: &str) -> SocketAddr {
        self.listeners
            .iter()
            .find(|(_, r)| r == role)
            .unwrap_or_else(|| panic!("no {role} listener"))
            .0
    }

    /// The `[http]` addresses the server bound: `[plain, tls]` as configured.
    pub fn http_addrs(&self) -> Vec<SocketAddr> {
        let text =
            std::fs::read_to_string(self.data_dir().join("run/http.json")).expect("run/http.json");
        serde_json::from_str(&text).expect("http.json")
    }

    pub fn port(&self, role: &str) -> u16 {
        self.addr(role).port()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Runs a postern subcommand against this server's config.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_stdin(args, "")
    }

    pub fn cli_stdin(&self, args: &[&str], stdin: &str) -> Output {
        run_with_stdin(
            Command::new(BIN)
                .args(args)
                .arg("--config")
                .arg(&self.config)
                .current_dir(self.dir.path()),
            stdin,
        )
    }

    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "postern {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn cli_stdin_ok(&self, args: &[&str], stdin: &str) -> String {
        let out = self.cli_stdin(args, stdin);
        assert!(
            out.status.success(),
            "postern {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `postern queue list --json`.
    pub fn queue(&self) -> Vec<serde_json::Value> {
        let out = self.cli_ok(&["queue", "list", "--json"]);
        serde_json::from_str::<serde_json::Value>(&out)
            .expect("queue json")
            .as_array()
            .expect("array")
            .clone()
    }

    /// Waits until every message has left the queue (delivered or bounced).
    pub fn wait_until_queue_empty(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let left = self.queue();
            if left.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} messages still queued: {:?}\n{}",
                left.len(),
                left.iter().map(|m| &m["id"]).collect::<Vec<_>>(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The stored message text of one queued message.
    pub fn queued_body(&self, id: &str) -> String {
        self.cli_ok(&["queue", "show", id, "--body"])
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM without waiting, for tests that watch the drain.
    pub fn send_term(&self) {
        signal(self.pid(), "TERM");
    }

    pub fn send_hup(&self) {
        signal(self.pid(), "HUP");
    }

    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "postern did not exit:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn signal(pid: u32, name: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "kill -{name} {pid} failed");
}

pub fn run_with_stdin(cmd: &mut Command, stdin: &str) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    if let Some(mut input) = child.stdin.take() {
        let _ = input.write_all(stdin.as_bytes());
    }
    child.wait_with_output().expect("wait")
}
