//! Debian's `pebble`, Let's Encrypt's ACME test server, on loopback ports:
//! its API's certificate made per run (`ca_signed`), its validation pointed
//! at a `TestDns` and at the ports of Postern's `[http]` listeners, no
//! artificial sleeps and no nonce rejections. Killed by PID on drop.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{TestDns, ca_signed, free_port};

pub struct Pebble {
    child: Child,
    dir: tempfile::TempDir,
    /// The ACME directory URL.
    pub directory: String,
    /// The CA certificate of pebble's own HTTPS API (`[acme] ca_roots`).
    pub api_ca: PathBuf,
    management: SocketAddr,
}

impl Pebble {
    /// Whether pebble is installed; when not, a test says it is skipped.
    pub fn installed() -> bool {
        let found = Command::new("sh")
            .args(["-c", "command -v pebble"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            eprintln!("SKIPPED: pebble is not installed (apt-get install pebble; .ci/run does)");
        }
        found
    }

    /// Starts pebble validating HTTP-01 on `http_port` and TLS-ALPN-01 on
    /// `tls_port` of the addresses `dns` gives; `extra` is merged into its
    /// configuration (e.g. `certificateValidityPeriod`, `domainBlocklist`).
    pub fn start(dns: &TestDns, http_port: u16, tls_port: u16, extra: serde_json::Value) -> Pebble {
        let dir = tempfile::tempdir().expect("tempdir");
        let (api_ca, cert, key) = ca_signed(dir.path(), &["127.0.0.1", "localhost"]);
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let management: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let mut config = serde_json::json!({
            "listenAddress": listen.to_string(),
            "managementListenAddress": management.to_string(),
            "certificate": cert,
            "privateKey": key,
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        });
        if let (Some(config), Some(extra)) = (config.as_object_mut(), extra.as_object()) {
            config.extend(extra.clone());
        }
        let config_file = dir.path().join("pebble.json");
        std::fs::write(
            &config_file,
            serde_json::json!({ "pebble": config }).to_string(),
        )
        .expect("write pebble config");
        let log = std::fs::File::create(dir.path().join("pebble.log")).expect("log");
        let child = Command::new("pebble")
            .arg("-config")
            .arg(&config_file)
            .arg("-dnsserver")
            .arg(dns.addr.to_string())
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            // Every order validates its names afresh.
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn pebble");
        let pebble = Pebble {
            child,
            dir,
            directory: format!("https://{listen}/dir"),
            api_ca,
            management,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(listen).is_err() || TcpStream::connect(management).is_err() {
            assert!(
                Instant::now() < deadline,
                "pebble did not start:\n{}",
                pebble.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        pebble
    }

    /// The `[acme]` section that points Postern at this pebble.
    pub fn acme_config(&self) -> String {
        format!(
            "[acme]\ndirectory = \"{}\"\nemail = \"hostmaster@example.com\"\nca_roots = \"{}\"\n",
            self.directory,
            self.api_ca.display()
        )
    }

    /// The root that pebble's certificates chain to (new at each start), as a
    /// PEM file.
    pub fn issuing_root(&self) -> PathBuf {
        let path = self.dir.path().join("issuing-root.pem");
        let out = Command::new("curl")
            .args(["-sSf", "--cacert"])
            .arg(&self.api_ca)
            .arg(format!("https://{}/roots/0", self.management))
            .output()
            .expect("curl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(&path, &out.stdout).expect("write root");
        path
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pebble.log")).unwrap_or_default()
    }

    /// Stops pebble, as a CA that is down.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop();
    }
}
