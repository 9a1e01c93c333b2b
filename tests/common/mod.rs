//! Shared test support: the real `postern` binary on ephemeral loopback ports
//! (`server.rs`) and the outside clients that talk to it (`clients.rs`).

pub mod certs;
pub mod clients;
pub mod dns;
pub mod https;
pub mod load;
pub mod netlab;
pub mod pebble;
pub mod peer;
pub mod rspamd;
pub mod server;
pub mod signed_dns;
pub mod tmpfs;

pub use certs::*;
pub use clients::*;
pub use dns::*;
pub use load::*;
pub use pebble::*;
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

/// Raises this process's soft limit on open files to at least `want`, up to
/// the hard limit; fails the test, saying why, if the hard limit is lower.
pub fn raise_open_file_limit(want: u64) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current.is_some_and(|c| c >= want) {
        return;
    }
    assert!(
        limit.maximum.is_none_or(|m| m >= want),
        "the hard limit on open files is {:?}, below {want}: raise it (ulimit -Hn)",
        limit.maximum
    );
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(want),
            maximum: limit.maximum,
        },
    )
    .expect("raise the open-file limit");
}
