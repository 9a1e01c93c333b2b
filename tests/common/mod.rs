//! Shared test support: the real `postern` binary on ephemeral loopback ports
//! (`server.rs`) and the outside clients that talk to it (`clients.rs`).

pub mod certs;
pub mod clients;
pub mod dns;
pub mod load;
pub mod netlab;
pub mod peer;
pub mod server;
pub mod tmpfs;

pub use certs::*;
pub use clients::*;
pub use dns::*;
pub use load::*;
pub use peer::*;
pub use server::*;
pub use tmpfs::*;

/// Fails loudly when a tool the tests need is missing, with the install hint;
/// a test never skips quietly.
pub fn require_tool(tool: &str) {
    let found = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "{tool} is not installed: run `bash .ci/run` once, or `apt-get install {tool}`"
    );
}
