//! A real rspamd (Debian's package) for the filter tests: its own
//! configuration directory over the packaged one, workers on free loopback
//! ports, DNS pointed at nothing (answers fail fast) and action thresholds
//! out of reach, so that only the test patterns decide: GTUBE and its
//! add-header and rewrite-subject variants, and two subjects forced to soft
//! reject and greylist. Stopped (SIGTERM to its main process) on drop.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, require_tool};

pub const GTUBE: &str = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";
/// rspamd's test pattern for "add header".
pub const GTUBE_ADD_HEADER: &str =
    "YJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";
/// rspamd's test pattern for "rewrite subject".
pub const GTUBE_REWRITE_SUBJECT: &str =
    "ZJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";
/// Subjects the test configuration answers with soft reject and greylist.
pub const SOFT_REJECT_SUBJECT: &str = "soft reject test";
pub const GREYLIST_SUBJECT: &str = "greylist test";

pub struct Rspamd {
    pub addr: SocketAddr,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Rspamd {
    pub fn start() -> Rspamd {
        require_tool("rspamd");
        let dir = tempfile::tempdir().expect("tempdir");
        let local = dir.path().join("local.d");
        for sub in ["local.d", "db", "run"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("mkdir");
        }
        let normal: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let controller = free_port();
        let files = [
            ("worker-normal.inc", format!("bind_socket = \"{normal}\";\ncount = 1;\n")),
            (
                "worker-controller.inc",
                format!("bind_socket = \"127.0.0.1:{controller}\";\ncount = 1;\n"),
            ),
            ("worker-proxy.inc", "enabled = false;\n".to_string()),
            ("worker-fuzzy.inc", "enabled = false;\n".to_string()),
            ("logging.inc", "type = \"console\";\nlevel = \"error\";\n".to_string()),
            ("redis.conf", String::new()),
            (
                "options.inc",
                "enable_test_patterns = true;\n\
                 dns { nameserver = [\"127.0.0.1:1\"]; timeout = 0.5s; retransmits = 1; }\n"
                    .to_string(),
            ),
            (
                "actions.conf",
                "reject = 500;\nrewrite_subject = 450;\nadd_header = 400;\ngreylist = 300;\n"
                    .to_string(),
            ),
            (
                "multimap.conf",
                format!(
                    "POSTERN_TEST_SOFT {{ type = \"header\"; header = \"Subject\"; regexp = true; \
                     map = [\"/^{SOFT_REJECT_SUBJECT}$/\"]; score = 0.0; }}\n\
                     POSTERN_TEST_GREY {{ type = \"header\"; header = \"Subject\"; regexp = true; \
                     map = [\"/^{GREYLIST_SUBJECT}$/\"]; score = 0.0; }}\n"
                ),
            ),
            (
                "force_actions.conf",
                "rules {\n\
                 POSTERN_TEST_SOFT { action = \"soft reject\"; expression = \"POSTERN_TEST_SOFT\"; \
                 message = \"Soft reject for the test\"; }\n\
                 POSTERN_TEST_GREY { action = \"greylist\"; expression = \"POSTERN_TEST_GREY\"; }\n}\n"
                    .to_string(),
            ),
        ];
        for (name, text) in files {
            std::fs::write(local.join(name), text).expect("write rspamd config");
        }
        // rspamd drops to its own account, which must reach all of it.
        let open = Command::new("chmod")
            .arg("-R")
            .arg("a+rwX")
            .arg(dir.path())
            .status()
            .expect("chmod");
        assert!(open.success());
        let var =
            |name: &str, sub: &str| format!("--var={name}={}", dir.path().join(sub).display());
        let child = Command::new("rspamd")
            .args([
                "-f",
                "-u",
                "_rspamd",
                "-g",
                "_rspamd",
                "-c",
                "/etc/rspamd/rspamd.conf",
            ])
            .arg(format!("--var=LOCAL_CONFDIR={}", dir.path().display()))
            .arg(var("DBDIR", "db"))
            .arg(var("RUNDIR", "run"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start rspamd");
        let rspamd = Rspamd {
            addr: normal,
            child,
            _dir: dir,
        };
        rspamd.wait_ready();
        rspamd
    }

    /// rspamd answers `/ping` once its workers are up.
    fn wait_ready(&self) {
        use std::io::{Read, Write};
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let pong = std::net::TcpStream::connect(self.addr)
                .ok()
                .and_then(|mut s| {
                    s.write_all(b"GET /ping HTTP/1.0\r\n\r\n").ok()?;
                    let mut answer = String::new();
                    s.read_to_string(&mut answer).ok()?;
                    answer.contains("pong").then_some(())
                });
            if pong.is_some() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "rspamd did not start on {}",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `[filter]` lines that point Postern at this rspamd.
    pub fn config(&self) -> String {
        format!("rspamd = \"http://{}\"\n", self.addr)
    }
}

impl Drop for Rspamd {
    fn drop(&mut self) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32);
        if let Some(pid) = pid {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let _ = self.child.wait();
    }
}
