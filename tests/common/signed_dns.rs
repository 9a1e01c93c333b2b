//! A DNSSEC-signed zone served by a real BIND (`named`), for DANE: the test
//! writes the records, the zone is signed with one key (dnssec-keygen,
//! dnssec-signzone), and Postern is given that key as its trust anchor
//! (`[delivery] dnssec_trust_anchor`), as a validating resolver is given
//! the root's. Needs bind9 and bind9-utils (CI installs them).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{free_port, require_tool};

pub struct SignedZone {
    pub addr: SocketAddr,
    /// The zone's key as a DNSKEY record: the trust anchor.
    pub anchor: PathBuf,
    named: Child,
    dir: tempfile::TempDir,
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run a bind9 tool");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl SignedZone {
    /// Serves `origin` (e.g. `dane.test`) with `records` (zone-file lines,
    /// names relative to the origin or absolute), signed, on 127.0.0.1.
    pub fn start(origin: &str, records: &str) -> SignedZone {
        SignedZone::start_forged(origin, records, &[])
    }

    /// Like `start`, then, as an attacker on the path would, changes the
    /// data of some records after signing: (owner relative to the origin,
    /// type, new data). Their signatures no longer match.
    pub fn start_forged(origin: &str, records: &str, forged: &[(&str, &str, &str)]) -> SignedZone {
        for tool in ["named", "dnssec-keygen", "dnssec-signzone"] {
            require_tool(tool);
        }
        let dir = tempfile::tempdir().expect("dir");
        let d = dir.path();
        let zone = d.join("zone");
        std::fs::write(
            &zone,
            format!(
                "$ORIGIN {origin}.\n$TTL 60\n@ SOA ns.{origin}. hostmaster.{origin}. 1 3600 600 86400 60\n\
                 @ NS ns.{origin}.\nns A 127.0.0.1\n{records}\n"
            ),
        )
        .expect("write zone");
        // One key signs everything (-z below), so it alone is the anchor
        // and no DS is looked for above the zone.
        let key = run(Command::new("dnssec-keygen")
            .args(["-q", "-K"])
            .arg(d)
            .args(["-a", "ECDSAP256SHA256", "-f", "KSK", origin]));
        // One record per line (-O full), for the forgeries below.
        run(Command::new("dnssec-signzone")
            .args(["-q", "-z", "-S", "-O", "full", "-K"])
            .arg(d)
            // Its DS set too, not into the current directory.
            .arg("-d")
            .arg(d)
            .args(["-o", origin, "-f"])
            .arg(d.join("zone.signed"))
            .arg(&zone));
        if !forged.is_empty() {
            forge(&d.join("zone.signed"), origin, forged);
        }
        let dnskey: String = std::fs::read_to_string(d.join(format!("{key}.key")))
            .expect("key")
            .lines()
            .filter(|l| !l.starts_with(';'))
            .collect::<Vec<_>>()
            .join("\n");
        let anchor = d.join("anchor");
        std::fs::write(&anchor, format!("{dnskey}\n")).expect("write anchor");
        let port = free_port();
        std::fs::write(
            d.join("named.conf"),
            format!(
                "options {{ directory \"{dir}\"; pid-file \"{dir}/named.pid\"; \
                 listen-on port {port} {{ 127.0.0.1; }}; listen-on-v6 {{ none; }}; \
                 recursion no; dnssec-validation no; }};\n\
                 zone \"{origin}\" {{ type primary; file \"{dir}/zone.signed\"; }};\n",
                dir = d.display()
            ),
        )
        .expect("write named.conf");
        let named = Command::new("named")
            .args(["-g", "-u", "root", "-c"])
            .arg(d.join("named.conf"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("named.log")).expect("log"))
            .spawn()
            .expect("start named");
        let zone = SignedZone {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            anchor,
            named,
            dir,
        };
        zone.wait_until_serving(origin);
        zone
    }

    fn wait_until_serving(&self, origin: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let log =
                std::fs::read_to_string(self.dir.path().join("named.log")).unwrap_or_default();
            if log.contains("running") && log.contains(&format!("zone {origin}/IN: loaded")) {
                return;
            }
            assert!(Instant::now() < deadline, "named did not start:\n{log}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `[delivery]` lines that make Postern ask this server and trust its key.
    pub fn delivery_config(&self) -> String {
        format!(
            "nameservers = [\"{}\"]\ndnssec_trust_anchor = \"{}\"\n",
            self.addr,
            self.anchor.display()
        )
    }
}

/// Replaces the data of the records `forged` names in the zone file `path`.
fn forge(path: &std::path::Path, origin: &str, forged: &[(&str, &str, &str)]) {
    let text = std::fs::read_to_string(path).expect("signed zone");
    let mut changed = 0;
    let lines: Vec<String> = text
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let hit = forged.iter().find(|(owner, rtype, _)| {
                fields.len() > 4 && fields[0] == format!("{owner}.{origin}.") && fields[3] == *rtype
            });
            match hit {
                Some((_, _, data)) => {
                    changed += 1;
                    format!("{} {} IN {} {data}", fields[0], fields[1], fields[3])
                }
                None => line.to_string(),
            }
        })
        .collect();
    assert!(
        changed >= forged.len(),
        "forged {changed} records of {forged:?}"
    );
    std::fs::write(path, lines.join("\n") + "\n").expect("write forged zone");
}

impl Drop for SignedZone {
    fn drop(&mut self) {
        let _ = self.named.kill();
        let _ = self.named.wait();
    }
}
