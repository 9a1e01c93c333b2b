//! A small internet in network namespaces, for `postern check` and for the
//! blocked-port-25 delivery test:
//!
//! ```text
//!  client ns               isp ns                         server ns
//!  up0 10.77.0.2  <---->  dn0 10.77.0.1 | out0 10.77.1.1 <----> in0 10.77.1.2
//!  (postern check)        (nftables: drop, reset, DNAT;    (postern serve,
//!                          the ISP's own relay on .0.1)     mail.test.example)
//! ```
//!
//! Every namespace name carries the test process's PID and a counter, so
//! tests run in parallel; `Drop` kills what the lab started and deletes the
//! namespaces even when a test fails. Needs root, `ip` and `nft` (CI has them).

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::common::{BIN, require_tool, run_with_stdin};

pub const SERVER_IP: &str = "10.77.1.2";
/// Where the ISP's own services listen (the DNAT target of an interception).
pub const ISP_IP: &str = "10.77.0.1";
/// The name the client uses for the server (its hosts file maps it).
pub const HOST: &str = "mail.test.example";

const PREFIX: &str = "pcheck";

pub struct Lab {
    pub client: String,
    pub isp: String,
    pub server: String,
    children: Vec<Child>,
    etc: PathBuf,
    pub dir: tempfile::TempDir,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Namespaces left by a test process that was killed (no Drop ran): the PID
/// in their name no longer exists.
fn remove_stale() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if !PathBuf::from(format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", &name]).status();
            let _ = std::fs::remove_dir_all(format!("/etc/netns/{name}"));
        }
    }
}

/// A name no namespace of this or another running test process has (the
/// PID is in it); namespaces left by a test process that is gone are
/// deleted first.
fn unique_id() -> String {
    require_tool("ip");
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    remove_stale();
    format!(
        "{PREFIX}{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

impl Lab {
    /// The three namespaces, linked and routed, with no ISP rules yet.
    pub fn new() -> Lab {
        require_tool("nft");
        let id = unique_id();
        let lab = Lab {
            client: format!("{id}-c"),
            isp: format!("{id}-i"),
            server: format!("{id}-s"),
            children: Vec::new(),
            etc: PathBuf::from(format!("/etc/netns/{id}-c")),
            dir: tempfile::tempdir().expect("tempdir"),
        };
        // Created one by one so that Drop deletes whatever exists if a step fails.
        for ns in [lab.client.clone(), lab.isp.clone(), lab.server.clone()] {
            ip(&["netns", "add", &ns]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        let (c, i, s) = (lab.client.as_str(), lab.isp.as_str(), lab.server.as_str());
        ip(&[
            "-n", c, "link", "add", "up0", "type", "veth", "peer", "name", "dn0", "netns", i,
        ]);
        ip(&[
            "-n", i, "link", "add", "out0", "type", "veth", "peer", "name", "in0", "netns", s,
        ]);
        for (ns, dev, addr) in [
            (c, "up0", "10.77.0.2/24"),
            (i, "dn0", "10.77.0.1/24"),
            (i, "out0", "10.77.1.1/24"),
            (s, "in0", "10.77.1.2/24"),
        ] {
            ip(&["-n", ns, "addr", "add", addr, "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        ip(&["-n", c, "route", "add", "default", "via", "10.77.0.1"]);
        ip(&["-n", s, "route", "add", "default", "via", "10.77.1.1"]);
        lab.sh(i, "sysctl -qw net.ipv4.ip_forward=1");
        // `ip netns exec` mounts /etc/netns/<ns>/hosts over /etc/hosts: the
        // client resolves the server's name like a real one.
        std::fs::create_dir_all(&lab.etc).expect("mkdir /etc/netns");
        std::fs::write(lab.etc.join("hosts"), format!("{SERVER_IP} {HOST}\n"))
            .expect("write hosts");
        lab
    }

    /// Programs in the client's network ask the DNS server on 127.0.0.1:53
    /// there (`TestDns::start_in_netns(&lab.client)`), as they would their
    /// ISP's resolver.
    pub fn client_resolves_locally(&self) {
        std::fs::write(
            self.etc.join("resolv.conf"),
            "nameserver 127.0.0.1\noptions edns0\n",
        )
        .expect("write resolv.conf");
    }

    /// Runs a shell command inside `ns`, which must succeed.
    pub fn sh(&self, ns: &str, script: &str) {
        let out = Command::new("ip")
            .args(["netns", "exec", ns, "sh", "-c", script])
            .output()
            .expect("ip netns exec");
        assert!(
            out.status.success(),
            "{script:?} in {ns} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The ISP's policy for traffic from the client: `forward` rules (drop,
    /// reject) and `prerouting` rules (DNAT), in nftables syntax.
    pub fn isp_rules(&self, forward: &[&str], prerouting: &[&str]) {
        let chain = |rules: &[&str]| {
            rules
                .iter()
                .map(|r| format!("    iifname \"dn0\" {r}\n"))
                .collect::<String>()
        };
        let ruleset = format!(
            "flush ruleset\ntable inet isp {{\n  chain isp_pre {{\n    type nat hook prerouting \
             priority dstnat;\n{}  }}\n  chain isp_filter {{\n    type filter hook forward \
             priority filter;\n{}  }}\n}}\n",
            chain(prerouting),
            chain(forward)
        );
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.isp, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nft");
        {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(ruleset.as_bytes())
                .expect("write ruleset");
        }
        let out = child.wait_with_output().expect("nft");
        assert!(
            out.status.success(),
            "nft failed: {}\n{ruleset}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts a long-running program inside `ns` and waits for it to print
    /// `READY`; it is killed when the lab drops.
    pub fn spawn_ready(&mut self, ns: &str, program: &str, args: &[&str]) {
        use std::io::BufRead;
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, program])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn in namespace");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        self.children.push(child);
        assert!(
            line.starts_with("READY"),
            "{program} did not start: {line:?}"
        );
    }

    /// Runs `postern check ARGS` from the client's network.
    pub fn check(&self, args: &[&str]) -> Output {
        self.check_stdin(args, "")
    }

    pub fn check_stdin(&self, args: &[&str], stdin: &str) -> Output {
        run_with_stdin(
            Command::new("ip")
                .args(["netns", "exec", &self.client, BIN, "check"])
                .args(args)
                .current_dir(self.dir.path()),
            stdin,
        )
    }
}

/// One namespace with only its loopback, for programs that must be pointed
/// at a test service through files in /etc (`ip netns exec` mounts
/// /etc/netns/<name>/* over /etc/*); deleted on drop.
pub struct Netns {
    pub name: String,
    etc: PathBuf,
}

impl Netns {
    pub fn new() -> Netns {
        let name = unique_id();
        ip(&["netns", "add", &name]);
        let ns = Netns {
            etc: PathBuf::from(format!("/etc/netns/{name}")),
            name,
        };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// Programs run inside resolve names with the DNS server on
    /// 127.0.0.1:53 there (`TestDns::start_in_netns`).
    pub fn resolving_locally(&self) {
        std::fs::create_dir_all(&self.etc).expect("mkdir /etc/netns");
        std::fs::write(
            self.etc.join("resolv.conf"),
            "nameserver 127.0.0.1\noptions edns0\n",
        )
        .expect("write resolv.conf");
    }

    /// Runs `program ARGS` inside with `stdin`.
    pub fn run(&self, program: &str, args: &[&str], stdin: &[u8]) -> Output {
        use std::io::Write;
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ip netns exec");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin)
            .expect("write stdin");
        child.wait_with_output().expect("wait")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = std::fs::remove_dir_all(&self.etc);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in [&self.client, &self.isp, &self.server] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = std::fs::remove_dir_all(&self.etc);
    }
}
